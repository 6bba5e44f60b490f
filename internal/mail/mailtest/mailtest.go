// Package mailtest runs a real SMTP server inside a test (the receiving
// side of github.com/emersion/go-smtp) on a loopback port, optionally with
// STARTTLS or implicit TLS under a throw-away certificate and with AUTH
// PLAIN, and hands the test each message it receives, parsed.
package mailtest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"io"
	"math/big"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Options configure [NewServer].
type Options struct {
	// TLS is "" or "none" (plain SMTP), "starttls" (STARTTLS offered) or
	// "tls" (implicit TLS).
	TLS string
	// Username and Password, when set, make the server require AUTH PLAIN
	// with them before MAIL FROM.
	Username, Password string
}

// Mail is one received message.
type Mail struct {
	From    string   // MAIL FROM
	To      []string // RCPT TO
	Raw     []byte   // the DATA as received
	Header  mail.Header
	Subject string // decoded
	Text    string // the text/plain body, decoded
	HTML    string // the text/html alternative, decoded ("" if none)
	TLS     bool   // whether the session was encrypted
	Authed  string // the username the client authenticated as
}

// Server is a running SMTP server.
type Server struct {
	Host  string // 127.0.0.1
	Port  int
	Addr  string         // host:port
	Roots *x509.CertPool // trusts the server's certificate (TLS modes)

	t     testing.TB
	opts  Options
	mails chan Mail

	mu    sync.Mutex
	count int
}

// NewServer starts an SMTP server on a loopback port; it stops when the
// test ends.
func NewServer(t testing.TB, o Options) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("mailtest: listen: %v", err)
	}
	addr := ln.Addr().(*net.TCPAddr)
	s := &Server{Host: "127.0.0.1", Port: addr.Port, Addr: ln.Addr().String(), t: t, opts: o, mails: make(chan Mail, 1000)}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &session{s: s, conn: c}, nil
	}))
	srv.Domain = "mailtest.localhost"
	srv.ReadTimeout = 30 * time.Second
	srv.WriteTimeout = 30 * time.Second
	srv.MaxMessageBytes = 1 << 20
	srv.MaxRecipients = 10
	switch o.TLS {
	case "", "none":
	case "starttls", "tls":
		cfg, roots := selfSigned(t)
		s.Roots = roots
		srv.TLSConfig = cfg
		if o.TLS == "tls" {
			ln = tls.NewListener(ln, cfg)
		}
	default:
		t.Fatalf("mailtest: unknown TLS mode %q", o.TLS)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return s
}

// Next waits up to timeout for the next message.
func (s *Server) Next(t testing.TB, timeout time.Duration) Mail {
	t.Helper()
	select {
	case m := <-s.mails:
		return m
	case <-time.After(timeout):
		t.Fatalf("mailtest: no message within %v", timeout)
		return Mail{}
	}
}

// NoMail checks that no message arrives within d.
func (s *Server) NoMail(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case m := <-s.mails:
		t.Errorf("mailtest: unexpected message to %v: %q", m.To, m.Subject)
	case <-time.After(d):
	}
}

// Received returns how many messages the server accepted so far.
func (s *Server) Received() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

var linkRE = regexp.MustCompile(`https?://[^\s<>"]+`)

// Link returns the first URL in the text body that starts with prefix, or
// fails the test.
func (m Mail) Link(t testing.TB, prefix string) string {
	t.Helper()
	for _, u := range linkRE.FindAllString(m.Text, -1) {
		if strings.HasPrefix(u, prefix) {
			return u
		}
	}
	t.Fatalf("mailtest: no link starting with %q in %q", prefix, m.Text)
	return ""
}

type session struct {
	s      *Server
	conn   *smtp.Conn
	authed string
	from   string
	to     []string
}

func (ss *session) AuthMechanisms() []string {
	if ss.s.opts.Username == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (ss *session) Auth(mech string) (sasl.Server, error) {
	if mech != sasl.Plain || ss.s.opts.Username == "" {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if username != ss.s.opts.Username || password != ss.s.opts.Password {
			return smtp.ErrAuthFailed
		}
		ss.authed = username
		return nil
	}), nil
}

func (ss *session) Mail(from string, _ *smtp.MailOptions) error {
	if ss.s.opts.Username != "" && ss.authed == "" {
		return smtp.ErrAuthRequired
	}
	ss.from = from
	return nil
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.to = append(ss.to, to)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	m, err := parse(raw)
	if err != nil {
		ss.s.t.Errorf("mailtest: malformed message: %v\n%s", err, raw)
		return &smtp.SMTPError{Code: 554, Message: "malformed message"}
	}
	m.From, m.To, m.Authed = ss.from, append([]string(nil), ss.to...), ss.authed
	_, m.TLS = ss.conn.TLSConnectionState()
	ss.s.mu.Lock()
	ss.s.count++
	ss.s.mu.Unlock()
	select {
	case ss.s.mails <- m:
	default:
		ss.s.t.Errorf("mailtest: too many unread messages")
	}
	return nil
}

func (ss *session) Reset()        { ss.from, ss.to = "", nil }
func (ss *session) Logout() error { return nil }

// parse reads a message with a text/plain body, optionally inside
// multipart/alternative with a text/html part.
func parse(raw []byte) (Mail, error) {
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return Mail{}, err
	}
	m := Mail{Raw: raw, Header: msg.Header}
	dec := new(mime.WordDecoder)
	if m.Subject, err = dec.DecodeHeader(msg.Header.Get("Subject")); err != nil {
		return Mail{}, err
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		return Mail{}, err
	}
	if !strings.HasPrefix(mt, "multipart/") {
		body, err := decode(msg.Body, msg.Header.Get("Content-Transfer-Encoding"))
		if err != nil {
			return Mail{}, err
		}
		return m, m.set(mt, body)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return Mail{}, err
		}
		pt, _, err := mime.ParseMediaType(p.Header.Get("Content-Type"))
		if err != nil {
			return Mail{}, err
		}
		// multipart.Reader already decodes quoted-printable parts.
		body, err := decode(p, p.Header.Get("Content-Transfer-Encoding"))
		if err != nil {
			return Mail{}, err
		}
		if err := m.set(pt, body); err != nil {
			return Mail{}, err
		}
	}
	if m.Text == "" {
		return Mail{}, errors.New("no text/plain body")
	}
	return m, nil
}

func (m *Mail) set(mediaType string, body string) error {
	switch mediaType {
	case "text/plain":
		m.Text = body
	case "text/html":
		m.HTML = body
	default:
		return errors.New("unexpected part " + mediaType)
	}
	return nil
}

func decode(r io.Reader, cte string) (string, error) {
	switch strings.ToLower(cte) {
	case "quoted-printable":
		r = quotedprintable.NewReader(r)
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, &stripNewlines{r: r})
	}
	b, err := io.ReadAll(r)
	return string(b), err
}

type stripNewlines struct{ r io.Reader }

func (s *stripNewlines) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	j := 0
	for _, c := range p[:n] {
		if c != '\r' && c != '\n' {
			p[j] = c
			j++
		}
	}
	return j, err
}

// selfSigned returns a server TLS config with a fresh certificate for
// 127.0.0.1 and localhost, and a pool that trusts it.
func selfSigned(t testing.TB) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "mailtest"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}},
		MinVersion:   tls.VersionTLS12,
	}, roots
}
