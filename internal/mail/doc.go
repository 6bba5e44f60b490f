// Package mail sends the broker's emails: sign-in links, password-reset
// links and address confirmations (SPEC §6).
//
// A [Sender] delivers a [Message]. [NewSMTP] sends through an SMTP server
// with github.com/wneessen/go-mail (TLS "none", "starttls" or implicit
// "tls"); [NewLogSender] is the development sender: it sends nothing and
// writes the message's link to the log, because reading the link from the
// log is its whole purpose. It must not be used in production, where the
// log would then hold working sign-in links; the broker's request logs never
// contain tokens.
//
// [Templates] render a message's subject, plain-text body and HTML
// alternative from text/template and html/template files; the defaults are
// embedded ([DefaultTemplates]).
package mail
