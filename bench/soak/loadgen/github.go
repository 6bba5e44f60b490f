// Package loadgen is the load and the measurements of the soak command
// (bench/soak) and of its 30-second CI version (e2e TestSoak): a stateless
// fake GitHub, a mixed load of logins, validations and logouts against a
// running broker, and a sampler of the broker's RSS, goroutines and
// database connections.
package loadgen

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
)

// GitHub is a minimal fake of GitHub's OAuth endpoints and REST API for
// load. It is stateless: codes and access tokens carry the user id, so its
// memory stays flat however long a soak runs (the fakes of
// internal/providertest record every request, which is right for tests and
// wrong for ten minutes of load). It checks nothing beyond what it needs to
// answer; the protocol is tested elsewhere. Each authorization signs in the
// next of Users accounts, round robin, so logins both create users and sign
// in existing ones.
type GitHub struct {
	URL          string
	ClientID     string
	ClientSecret string
	Users        int64

	srv  *httptest.Server
	next atomic.Int64
}

// NewGitHub starts the fake on loopback with users accounts (at least 1).
func NewGitHub(users int) *GitHub {
	g := &GitHub{ClientID: "soak-client", ClientSecret: "soak-secret", Users: max(int64(users), 1)}
	g.srv = httptest.NewServer(http.HandlerFunc(g.serve))
	g.URL = g.srv.URL
	return g
}

// Close stops the fake.
func (g *GitHub) Close() { g.srv.Close() }

func random() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (g *GitHub) serve(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/login/oauth/authorize":
		q := r.URL.Query()
		u, err := url.Parse(q.Get("redirect_uri"))
		if err != nil || q.Get("redirect_uri") == "" {
			http.Error(w, "bad redirect_uri", http.StatusBadRequest)
			return
		}
		id := g.next.Add(1)%g.Users + 1
		back := u.Query()
		back.Set("code", fmt.Sprintf("code-%d-%s", id, random()))
		back.Set("state", q.Get("state"))
		u.RawQuery = back.Encode()
		http.Redirect(w, r, u.String(), http.StatusFound)
	case "/login/oauth/access_token":
		_ = r.ParseForm()
		id, ok := userOf(r.PostForm.Get("code"), "code-")
		if !ok {
			writeJSON(w, map[string]string{"error": "bad_verification_code"})
			return
		}
		writeJSON(w, map[string]string{
			"access_token": fmt.Sprintf("gho-%d-%s", id, random()),
			"token_type":   "bearer",
			"scope":        "read:user,user:email",
		})
	case "/user", "/user/emails":
		id, ok := userOf(strings.TrimPrefix(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "), "token "), "gho-")
		if !ok {
			w.WriteHeader(http.StatusUnauthorized)
			writeJSON(w, map[string]string{"message": "Bad credentials"})
			return
		}
		login := fmt.Sprintf("soak%d", id)
		if r.URL.Path == "/user" {
			writeJSON(w, map[string]any{"id": id, "login": login, "name": "Soak " + strconv.FormatInt(id, 10), "email": nil, "type": "User"})
			return
		}
		writeJSON(w, []map[string]any{{"email": login + "@example.com", "primary": true, "verified": true, "visibility": "private"}})
	default:
		http.NotFound(w, r)
	}
}

// userOf reads the user id of "<prefix><id>-<random>".
func userOf(s, prefix string) (int64, bool) {
	rest, ok := strings.CutPrefix(s, prefix)
	if !ok {
		return 0, false
	}
	n, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	id, err := strconv.ParseInt(n, 10, 64)
	return id, err == nil && id > 0
}

func writeJSON(w http.ResponseWriter, v any) {
	if w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "application/json")
	}
	_ = json.NewEncoder(w).Encode(v)
}

// Config returns a broker configuration (YAML) listening on listen
// (host:port, also the public URL) with database dbURL and g as GitHub.
// /metrics is served on the main listener to loopback clients.
func Config(listen, dbURL string, g *GitHub, cookieKey, tokenKey string) string {
	return fmt.Sprintf(`
server:
  listen: %s
  public_url: http://%s
  shutdown_grace: 5s
database:
  url: %q
  auto_migrate: false
secrets:
  cookie_key: %q
  token_key: %q
providers:
  github:
    client_id: %s
    client_secret: %s
    auth_url: %s/login/oauth/authorize
    token_url: %s/login/oauth/access_token
    api_url: %s
log:
  format: json
  level: warn
`, listen, listen, dbURL, cookieKey, tokenKey, g.ClientID, g.ClientSecret, g.URL, g.URL, g.URL)
}

// NewKey returns a random 32-byte key, base64-encoded, for Config.
func NewKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}
