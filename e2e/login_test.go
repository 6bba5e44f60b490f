package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/brokerauth/broker/internal/providertest"
)

func githubConfig(publicURL, dbURL string, gh *providertest.GitHub, extra string) string {
	return fmt.Sprintf(`
server:
  public_url: %s
  shutdown_grace: 5s
database:
  url: %s
  auto_migrate: true
secrets:
  cookie_key: %q
  token_key: %q
redirect:
  allowed_origins: [http://127.0.0.1:1]
providers:
  github:
    client_id: %s
    client_secret: %s
    auth_url: %s
    token_url: %s
    api_url: %s
    attributes:
      team: identity.claims.login
claims:
  team: user.attributes.team
  role: '"editor"'
log:
  format: json
  level: debug
%s`, publicURL, dbURL, secret(), secret(), gh.ClientID, gh.ClientSecret, gh.AuthURL(), gh.TokenURL(), gh.APIURL(), extra)
}

// TestLoginLogout signs in through a fake GitHub with the real binary:
// login page, provider redirect, callback, session cookie, /session,
// /auth, logout.
func TestLoginLogout(t *testing.T) {
	t.Parallel()
	gh := providertest.NewGitHub(t, providertest.GitHubUser{ID: 4242, Login: "mona", Name: "Mona",
		Emails: []providertest.GitHubEmail{{Email: "Mona@Example.com", Primary: true, Verified: true}}})
	listen := freePort(t)
	db := "sqlite://" + t.TempDir() + "/broker.db"
	b := startBroker(t, listen, githubConfig("http://"+listen, db, gh, ""))
	c := browser(t)

	resp, body := get(t, c, b.URL+"/login?redirect_to=/session", "Accept", "text/html")
	if resp.StatusCode != 200 || !strings.Contains(body, `href="/login/github?redirect_to=%2Fsession"`) {
		t.Fatalf("login page: %d %s", resp.StatusCode, body)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Fatalf("login page CSP = %q", csp)
	}
	// Follow the whole dance: broker → fake GitHub → callback → /session.
	resp, body = get(t, c, b.URL+"/login/github?redirect_to=/session", "Accept", "application/json")
	if resp.StatusCode != 200 || resp.Request.URL.Path != "/session" {
		t.Fatalf("after login: %d at %s: %s", resp.StatusCode, resp.Request.URL, body)
	}
	status, s := sessionOf(t, c, b.URL)
	if status != 200 {
		t.Fatalf("/session = %d %v", status, s)
	}
	user := s["user"].(map[string]any)
	if user["email"] != "mona@example.com" || user["email_verified"] != true || user["name"] != "Mona" {
		t.Fatalf("user = %v", user)
	}
	claims := s["claims"].(map[string]any)
	if claims["team"] != "mona" || claims["role"] != "editor" {
		t.Fatalf("claims = %v", claims)
	}
	// The session id is the SHA-256 of the cookie; the cookie is HttpOnly.
	u, _ := url.Parse(b.URL)
	var token string
	for _, ck := range c.Jar.Cookies(u) {
		if ck.Name == "auth_session" {
			token = ck.Value
		}
	}
	sum := sha256.Sum256([]byte(token))
	if s["session"].(map[string]any)["id"] != hex.EncodeToString(sum[:]) {
		t.Fatalf("session id %v is not sha256 of the cookie", s["session"])
	}
	// Forward-auth.
	resp, _ = get(t, c, b.URL+"/auth")
	if resp.StatusCode != 200 || resp.Header.Get("X-Auth-User-Id") != user["id"] ||
		resp.Header.Get("X-Auth-Email") != "mona@example.com" || resp.Header.Get("X-Auth-Claim-Team") != "mona" {
		t.Fatalf("/auth = %d %v", resp.StatusCode, resp.Header)
	}
	// Logout from another site is refused; from the broker's origin it works.
	resp, _ = post(t, c, b.URL+"/logout", "https://evil.example")
	if resp.StatusCode != 403 {
		t.Fatalf("cross-site logout = %d; want 403", resp.StatusCode)
	}
	resp, _ = post(t, c, b.URL+"/logout", "http://"+listen)
	if resp.StatusCode != 204 {
		t.Fatalf("logout = %d; want 204", resp.StatusCode)
	}
	if status, _ := sessionOf(t, c, b.URL); status != 401 {
		t.Fatalf("/session after logout = %d; want 401", status)
	}
	// The logs never carry the session token or the provider's secrets.
	logs := b.logs.String()
	for _, secret := range []string{token, gh.ClientSecret} {
		if strings.Contains(logs, secret) {
			t.Fatalf("log contains a secret %q", secret)
		}
	}
	if len(logLines(b)) == 0 {
		t.Fatal("no JSON log lines")
	}
}

// TestKeysInRules: in the real binary, a claim over the user's keys lists
// them and access rules over keys decide, from a cached session too.
func TestKeysInRules(t *testing.T) {
	t.Parallel()
	gh := providertest.NewGitHub(t, providertest.GitHubUser{ID: 4343, Login: "kit"})
	listen := freePort(t)
	db := "sqlite://" + t.TempDir() + "/broker.db"
	cfg := githubConfig("http://"+listen, db, gh, `
access:
  - path_prefix: /ci
    allow: 'keys.exists(k, k.provider_id == "github")'
  - path_prefix: /deploy
    allow: 'keys.exists(k, k.provider_id == "gitlab")'
`)
	cfg = strings.Replace(cfg, "\nclaims:\n", "\nclaims:\n  providers: keys.map(k, k.provider_id)\n", 1)
	b := startBroker(t, listen, cfg)
	c := browser(t)
	if resp, body := get(t, c, b.URL+"/login/github?redirect_to=/session", "Accept", "application/json"); resp.StatusCode != 200 {
		t.Fatalf("login: %d %s", resp.StatusCode, body)
	}
	// Each path twice: the first answer may come from the database, the
	// next ones from the session cache.
	for _, step := range []struct {
		uri  string
		want int
	}{{"/ci", 200}, {"/deploy", 403}, {"/ci", 200}, {"/deploy", 403}, {"/ci", 200}} {
		resp, body := get(t, c, b.URL+"/auth", "X-Forwarded-Host", "app.example.com", "X-Forwarded-Uri", step.uri)
		if resp.StatusCode != step.want {
			t.Fatalf("/auth for %s: %d %s; want %d", step.uri, resp.StatusCode, body, step.want)
		}
		if step.want == 200 && resp.Header.Get("X-Auth-Claim-Providers") != "github" {
			t.Fatalf("/auth for %s: providers claim %q; want github", step.uri, resp.Header.Get("X-Auth-Claim-Providers"))
		}
	}
}
