package mail_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"log/slog"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/brokerauth/broker/internal/mail"
	"github.com/brokerauth/broker/internal/mail/mailtest"
)

const link = "http://localhost:8080/login/email/callback?token=abc_DEF-123&email=ann%40example.com"

func render(t *testing.T, k mail.Kind) mail.Message {
	t.Helper()
	m, err := mail.DefaultTemplates().Render(k, mail.Data{
		Email: "ann@example.com", Link: link, Site: "localhost", Expires: 10 * time.Minute,
	})
	if err != nil {
		t.Fatalf("Render(%s) = %v", k, err)
	}
	return m
}

func TestDefaultTemplates(t *testing.T) {
	for _, k := range mail.Kinds {
		t.Run(string(k), func(t *testing.T) {
			m := render(t, k)
			if m.To != "ann@example.com" || m.Link != link {
				t.Errorf("To, Link = %q, %q", m.To, m.Link)
			}
			if m.Subject == "" || strings.ContainsAny(m.Subject, "\r\n") {
				t.Errorf("Subject = %q; want one non-empty line", m.Subject)
			}
			if !strings.Contains(m.Text, link) || !strings.Contains(m.Text, "10 minutes") {
				t.Errorf("Text lacks the link or its lifetime: %q", m.Text)
			}
			// html/template escapes & in the href, as HTML requires.
			if !strings.Contains(m.HTML, strings.ReplaceAll(link, "&", "&amp;")) {
				t.Errorf("HTML lacks the link: %q", m.HTML)
			}
		})
	}
}

func TestExpiresIn(t *testing.T) {
	for d, want := range map[time.Duration]string{
		10 * time.Minute: "10 minutes", time.Minute: "1 minute", time.Hour: "1 hour",
		2 * time.Hour: "2 hours", 90 * time.Minute: "90 minutes", 20 * time.Second: "less than a minute",
	} {
		if got := (mail.Data{Expires: d}).ExpiresIn(); got != want {
			t.Errorf("ExpiresIn(%v) = %q; want %q", d, got, want)
		}
	}
}

func TestParseTemplates(t *testing.T) {
	fsys := fstest.MapFS{}
	for _, k := range mail.Kinds {
		fsys["t/"+string(k)+".txt"] = &fstest.MapFile{Data: []byte(`{{define "subject"}}S {{.Site}}
{{end}}{{define "text"}}T {{.Link}}{{end}}`)}
	}
	tm, err := mail.ParseTemplates(fsys, "t")
	if err != nil {
		t.Fatal(err)
	}
	m, err := tm.Render(mail.KindReset, mail.Data{Email: "a@b.c", Link: "http://x/y", Site: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "S x" || m.Text != "T http://x/y\n" || m.HTML != "" {
		t.Errorf("got %+v", m)
	}
	delete(fsys, "t/verify.txt")
	if _, err := mail.ParseTemplates(fsys, "t"); err == nil {
		t.Errorf("ParseTemplates without verify.txt = nil error")
	}
	fsys["t/verify.txt"] = &fstest.MapFile{Data: []byte(`{{define "subject"}}S{{end}}`)}
	if _, err := mail.ParseTemplates(fsys, "t"); err == nil {
		t.Errorf("ParseTemplates without a text template = nil error")
	}
}

func TestLogSender(t *testing.T) {
	var buf bytes.Buffer
	s := mail.NewLogSender(slog.New(slog.NewTextHandler(&buf, nil)))
	if err := s.Send(t.Context(), render(t, mail.KindLogin)); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"to=ann@example.com", "development sender", "token=abc_DEF-123"} {
		if !strings.Contains(out, want) {
			t.Errorf("log %q lacks %q", out, want)
		}
	}
}

func TestNewSMTPRefusals(t *testing.T) {
	for name, cfg := range map[string]mail.SMTPConfig{
		"no host":  {From: "a@example.com"},
		"bad port": {Host: "h", Port: 70000, From: "a@example.com"},
		"bad tls":  {Host: "h", TLS: "ssl", From: "a@example.com"},
		"bad from": {Host: "h", From: "not an address"},
	} {
		if _, err := mail.NewSMTP(cfg); err == nil {
			t.Errorf("NewSMTP(%s) = nil error", name)
		}
	}
}

// TestSMTP sends through a real SMTP server in each TLS mode, with and
// without authentication, and reads the message back.
func TestSMTP(t *testing.T) {
	for _, tc := range []struct {
		name, tls string
		auth      bool
	}{
		{"none", mail.TLSNone, false},
		{"starttls", mail.TLSStartTLS, false},
		{"starttls auth", mail.TLSStartTLS, true},
		{"tls auth", mail.TLSImplicit, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o := mailtest.Options{TLS: tc.tls}
			if tc.auth {
				o.Username, o.Password = "broker", "s3cret"
			}
			srv := mailtest.NewServer(t, o)
			cfg := mail.SMTPConfig{Host: srv.Host, Port: srv.Port, TLS: tc.tls, From: "Broker <login@example.com>", HELO: "broker.test"}
			if srv.Roots != nil {
				cfg.TLSConfig = &tls.Config{RootCAs: srv.Roots, ServerName: srv.Host, MinVersion: tls.VersionTLS12}
			}
			if tc.auth {
				cfg.Username, cfg.Password = "broker", "s3cret"
			}
			s, err := mail.NewSMTP(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Send(t.Context(), render(t, mail.KindLogin)); err != nil {
				t.Fatalf("Send = %v", err)
			}
			m := srv.Next(t, 10*time.Second)
			if got := m.Link(t, "http://localhost:8080/"); got != link {
				t.Errorf("link in mail = %q; want %q", got, link)
			}
			if m.From != "login@example.com" || len(m.To) != 1 || m.To[0] != "ann@example.com" {
				t.Errorf("envelope %q → %v", m.From, m.To)
			}
			if m.Subject != "Your sign-in link for localhost" {
				t.Errorf("Subject = %q", m.Subject)
			}
			if !strings.Contains(m.HTML, "Sign in to localhost") {
				t.Errorf("HTML alternative = %q", m.HTML)
			}
			if m.TLS != (tc.tls != mail.TLSNone) {
				t.Errorf("TLS = %v for mode %s", m.TLS, tc.tls)
			}
			if tc.auth && m.Authed != "broker" {
				t.Errorf("authenticated as %q; want broker", m.Authed)
			}
		})
	}
}

func TestSMTPFailures(t *testing.T) {
	t.Parallel()
	from := "login@example.com"
	t.Run("starttls required but not offered", func(t *testing.T) {
		srv := mailtest.NewServer(t, mailtest.Options{})
		s, _ := mail.NewSMTP(mail.SMTPConfig{Host: srv.Host, Port: srv.Port, TLS: mail.TLSStartTLS, From: from})
		if err := s.Send(t.Context(), render(t, mail.KindLogin)); err == nil {
			t.Errorf("Send = nil error; want a STARTTLS failure")
		}
	})
	t.Run("untrusted certificate", func(t *testing.T) {
		srv := mailtest.NewServer(t, mailtest.Options{TLS: "starttls"})
		s, _ := mail.NewSMTP(mail.SMTPConfig{Host: srv.Host, Port: srv.Port, TLS: mail.TLSStartTLS, From: from})
		if err := s.Send(t.Context(), render(t, mail.KindLogin)); err == nil {
			t.Errorf("Send = nil error; want a certificate error")
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		srv := mailtest.NewServer(t, mailtest.Options{TLS: "tls", Username: "broker", Password: "right"})
		s, _ := mail.NewSMTP(mail.SMTPConfig{Host: srv.Host, Port: srv.Port, TLS: mail.TLSImplicit, From: from,
			Username: "broker", Password: "wrong", TLSConfig: &tls.Config{RootCAs: srv.Roots, ServerName: srv.Host}})
		err := s.Send(t.Context(), render(t, mail.KindLogin))
		if err == nil {
			t.Fatalf("Send = nil error; want an authentication failure")
		}
		if strings.Contains(err.Error(), "token=") {
			t.Errorf("error %q contains the link", err)
		}
	})
	t.Run("password never sent in clear", func(t *testing.T) {
		// Without TLS only challenge-response mechanisms may be used; the
		// server offers PLAIN only, so the client must refuse.
		srv := mailtest.NewServer(t, mailtest.Options{Username: "broker", Password: "right"})
		s, _ := mail.NewSMTP(mail.SMTPConfig{Host: srv.Host, Port: srv.Port, TLS: mail.TLSNone, From: from, Username: "broker", Password: "right"})
		if err := s.Send(t.Context(), render(t, mail.KindLogin)); err == nil {
			t.Errorf("Send = nil error; want a refusal to authenticate in clear")
		}
		if n := srv.Received(); n != 0 {
			t.Errorf("server received %d messages", n)
		}
	})
	t.Run("canceled context", func(t *testing.T) {
		srv := mailtest.NewServer(t, mailtest.Options{})
		s, _ := mail.NewSMTP(mail.SMTPConfig{Host: srv.Host, Port: srv.Port, TLS: mail.TLSNone, From: from})
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := s.Send(ctx, render(t, mail.KindLogin)); err == nil {
			t.Errorf("Send(canceled) = nil error")
		}
	})
}
