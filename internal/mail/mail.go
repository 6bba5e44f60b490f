package mail

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	gomail "github.com/wneessen/go-mail"
)

// Message is one email to one recipient.
type Message struct {
	To      string // the recipient's address
	Subject string
	Text    string // the plain-text body
	HTML    string // an HTML alternative; empty for none
	// Link is the link the message carries (sign-in, reset or
	// confirmation). Only [LogSender] reads it.
	Link string
}

// Sender delivers messages. Implementations are safe for concurrent use.
type Sender interface {
	Send(ctx context.Context, m Message) error
}

// TLS modes of [SMTPConfig].
const (
	TLSNone     = "none"     // plain SMTP; credentials only with a challenge-response mechanism
	TLSStartTLS = "starttls" // STARTTLS is required (usually port 587)
	TLSImplicit = "tls"      // TLS from the first byte (usually port 465)
)

// SMTPConfig configures [NewSMTP].
type SMTPConfig struct {
	Host     string
	Port     int // default 587
	Username string
	Password string
	// TLS is "none", "starttls" (the default) or "tls".
	TLS string
	// From is the sender, an RFC 5322 address ("Broker <login@example.com>").
	From string
	// Timeout bounds one delivery: connecting, the SMTP dialogue and the
	// data (default 15s).
	Timeout time.Duration
	// TLSConfig replaces the default TLS settings (system roots, server name
	// Host, TLS 1.2 or later), for private CAs and tests.
	TLSConfig *tls.Config
	// HELO is the name the client greets with; empty means the host name.
	HELO string
}

// SMTP sends messages through an SMTP server. It opens one connection per
// message.
type SMTP struct {
	cfg SMTPConfig
}

var _ Sender = (*SMTP)(nil)

// NewSMTP checks cfg and returns an SMTP sender. It does not connect.
//
// With a Username, the client authenticates with the best mechanism the
// server offers; PLAIN and LOGIN, which send the password as is, are only
// used on an encrypted connection, so with TLS "none" the server must offer
// SCRAM or CRAM-MD5.
func NewSMTP(cfg SMTPConfig) (*SMTP, error) {
	if cfg.Host == "" {
		return nil, errors.New("mail: smtp: host is required")
	}
	if cfg.Port == 0 {
		cfg.Port = 587
	}
	if cfg.Port < 1 || cfg.Port > 65535 {
		return nil, fmt.Errorf("mail: smtp: port %d out of range", cfg.Port)
	}
	if cfg.TLS == "" {
		cfg.TLS = TLSStartTLS
	}
	switch cfg.TLS {
	case TLSNone, TLSStartTLS, TLSImplicit:
	default:
		return nil, fmt.Errorf("mail: smtp: tls %q: want none, starttls or tls", cfg.TLS)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 15 * time.Second
	}
	if err := gomail.NewMsg().From(cfg.From); err != nil {
		return nil, fmt.Errorf("mail: smtp: from: %w", err)
	}
	return &SMTP{cfg: cfg}, nil
}

// client returns a go-mail client for one delivery. A client is not shared
// between deliveries: go-mail records the negotiated authentication in it.
func (s *SMTP) client() (*gomail.Client, error) {
	c := s.cfg
	tlsConf := c.TLSConfig
	if tlsConf == nil {
		tlsConf = &tls.Config{ServerName: c.Host, MinVersion: tls.VersionTLS12}
	}
	opts := []gomail.Option{gomail.WithPort(c.Port), gomail.WithTimeout(c.Timeout), gomail.WithTLSConfig(tlsConf)}
	switch c.TLS {
	case TLSNone:
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
	case TLSStartTLS:
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory))
	case TLSImplicit:
		opts = append(opts, gomail.WithSSL(), gomail.WithTLSPolicy(gomail.NoTLS))
	}
	if c.Username != "" {
		opts = append(opts, gomail.WithSMTPAuth(gomail.SMTPAuthAutoDiscover),
			gomail.WithUsername(c.Username), gomail.WithPassword(c.Password))
	}
	if c.HELO != "" {
		opts = append(opts, gomail.WithHELO(c.HELO))
	}
	return gomail.NewClient(c.Host, opts...)
}

// Send delivers m. Errors never contain the message body (which holds the
// link).
func (s *SMTP) Send(ctx context.Context, m Message) error {
	msg := gomail.NewMsg()
	if err := msg.From(s.cfg.From); err != nil {
		return fmt.Errorf("mail: smtp: from: %w", err)
	}
	if err := msg.To(m.To); err != nil {
		return fmt.Errorf("mail: smtp: recipient: %w", err)
	}
	msg.Subject(m.Subject)
	msg.SetDate()
	msg.SetMessageID()
	msg.SetBodyString(gomail.TypeTextPlain, m.Text)
	if m.HTML != "" {
		msg.AddAlternativeString(gomail.TypeTextHTML, m.HTML)
	}
	c, err := s.client()
	if err != nil {
		return fmt.Errorf("mail: smtp: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	if err := c.DialAndSendWithContext(ctx, msg); err != nil {
		return fmt.Errorf("mail: smtp: send to %s:%d: %w", s.cfg.Host, s.cfg.Port, err)
	}
	return nil
}

// LogSender is the development sender: it sends nothing and logs each
// message's recipient, subject and link at level Info, so that a developer
// can follow the link. Never use it in production: the log would hold
// working sign-in links.
type LogSender struct {
	log *slog.Logger
}

var _ Sender = (*LogSender)(nil)

// NewLogSender returns a LogSender writing to log.
func NewLogSender(log *slog.Logger) *LogSender {
	return &LogSender{log: log}
}

// Send logs m's recipient, subject and link.
func (l *LogSender) Send(ctx context.Context, m Message) error {
	l.log.InfoContext(ctx, "email written to the log instead of sent (development sender): open the link to continue",
		"to", m.To, "subject", m.Subject, "link", m.Link)
	return nil
}
