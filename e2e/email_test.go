package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/brokerauth/broker/internal/mail/mailtest"
)

func postBody(t *testing.T, c *http.Client, target string, body any) (*http.Response, string) {
	t.Helper()
	data, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest("POST", target, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	return do(t, c, req)
}

// TestEmailAndPassword runs the real binary with email links sent over SMTP
// to a server inside the test: ask for a link, receive it, sign in with
// it; then a password sign-up, login and the failure limit.
func TestEmailAndPassword(t *testing.T) {
	t.Parallel()
	smtp := mailtest.NewServer(t, mailtest.Options{})
	listen := freePort(t)
	cfg := fmt.Sprintf(`
server:
  public_url: http://%s
  shutdown_grace: 5s
database:
  url: sqlite://%s/broker.db
  auto_migrate: true
secrets:
  cookie_key: %q
  token_key: %q
email:
  sender: smtp
  from: "Broker <login@example.com>"
  link_ttl: 5m
  smtp: {host: %s, port: %d, tls: none}
password:
  enabled: true
limits:
  login_failures: {max: 3, window: 10m}
log:
  format: json
  level: debug
`, listen, t.TempDir(), secret(), secret(), smtp.Host, smtp.Port)
	b := startBroker(t, listen, cfg)

	// The email link.
	c := browser(t)
	resp, body := postBody(t, c, b.URL+"/login/email", map[string]string{"email": "Ann@Example.com", "redirect_to": "/session"})
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /login/email = %d %s", resp.StatusCode, body)
	}
	m := smtp.Next(t, 30*time.Second)
	if m.To[0] != "ann@example.com" || !strings.Contains(m.Text, "5 minutes") {
		t.Fatalf("mail to %v: %q", m.To, m.Text)
	}
	link := m.Link(t, b.URL+"/login/email/callback?")
	resp, body = get(t, noFollow(c), link)
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/session" {
		t.Fatalf("GET link = %d → %q: %s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	status, s := sessionOf(t, c, b.URL)
	if status != 200 {
		t.Fatalf("/session = %d", status)
	}
	if u := s["user"].(map[string]any); u["email"] != "ann@example.com" || u["email_verified"] != true {
		t.Fatalf("user = %v", u)
	}
	if resp, _ := get(t, noFollow(browser(t)), link); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("replayed link = %d; want 400", resp.StatusCode)
	}

	// A password sign-up and login.
	pc := browser(t)
	resp, body = postBody(t, pc, b.URL+"/signup/password", map[string]string{"email": "bob@example.com", "password": "a long enough passphrase"})
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("sign-up = %d %s", resp.StatusCode, body)
	}
	confirm := smtp.Next(t, 30*time.Second).Link(t, b.URL+"/signup/password/verify?")
	resp, body = postBody(t, browser(t), b.URL+"/login/password", map[string]string{"email": "bob@example.com", "password": "a long enough passphrase"})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login = %d %s", resp.StatusCode, body)
	}
	for range 3 {
		postBody(t, browser(t), b.URL+"/login/password", map[string]string{"email": "bob@example.com", "password": "wrong"})
	}
	resp, _ = postBody(t, browser(t), b.URL+"/login/password", map[string]string{"email": "bob@example.com", "password": "a long enough passphrase"})
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("after 3 failures = %d (Retry-After %q); want 429", resp.StatusCode, resp.Header.Get("Retry-After"))
	}

	// No log line holds a link's token.
	for _, l := range []string{link, confirm} {
		u, _ := url.Parse(l)
		tok := u.Query().Get("token")
		if strings.Contains(b.logs.String(), tok) {
			t.Errorf("the log holds a link token")
		}
	}
	sent := 0
	for _, l := range logLines(b) {
		if l["msg"] == "email sent" {
			sent++
		}
	}
	if sent != 2 {
		t.Errorf("%d \"email sent\" log records; want 2", sent)
	}
}
