package main

import (
	"fmt"

	"github.com/brokerauth/broker/internal/mail"
	"github.com/brokerauth/broker/internal/server"
)

// emailOptions wires email magic links (and the password features' mail)
// when email.sender is set: "smtp" sends through email.smtp, "log" writes
// each link to the log (development only; outside development mode the
// broker warns at start).
func emailOptions(d featureDeps) (*server.EmailOptions, error) {
	if !d.cfg.EmailEnabled() {
		return nil, nil
	}
	e := d.cfg.Email
	var sender mail.Sender
	switch e.Sender {
	case "log":
		if !d.cfg.Dev {
			d.log.Warn("email.sender is log: sign-in and reset links are written to this log instead of being sent; use smtp in production")
		}
		sender = mail.NewLogSender(d.log.With("component", "mail"))
	case "smtp":
		s, err := mail.NewSMTP(mail.SMTPConfig{
			Host: e.SMTP.Host, Port: e.SMTP.Port, Username: e.SMTP.Username, Password: e.SMTP.Password,
			TLS: e.SMTP.TLS, From: e.From,
		})
		if err != nil {
			return nil, fmt.Errorf("email.smtp: %w", err)
		}
		sender = s
	default:
		return nil, fmt.Errorf("email.sender: %q is not log or smtp", e.Sender)
	}
	return &server.EmailOptions{
		Sender:     sender,
		LinkTTL:    e.LinkTTL,
		MaxSends:   d.cfg.Limits.EmailSends.Max,
		SendWindow: d.cfg.Limits.EmailSends.Window,
	}, nil
}
