package e2e

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/brokerauth/broker/internal/providertest"
	"github.com/brokerauth/broker/storage/sqlstore"
	"github.com/brokerauth/broker/storage/storagetest"
)

// cacheReplicas starts two brokers with the same secrets on one
// PostgreSQL schema: A connects directly, B through a cuttable proxy.
type cacheReplicas struct {
	a, b   *broker
	public string // A's URL, the public URL of both
	proxy  *cutProxy
	admin  *sqlstore.Store // direct connection to the schema
	schema string
	gh     *providertest.GitHub
}

func startCacheReplicas(t *testing.T) *cacheReplicas {
	t.Helper()
	pgURL, schema := storagetest.PostgresSchema(t)
	admin, err := sqlstore.Open(context.Background(), pgURL, sqlstore.WithSchema(schema), sqlstore.WithMaxOpenConns(2))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	if err := admin.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	direct, err := url.Parse(pgURL)
	if err != nil {
		t.Fatal(err)
	}
	q := direct.Query()
	q.Set("search_path", schema)
	q.Set("connect_timeout", "2")
	direct.RawQuery = q.Encode()
	proxy := newCutProxy(t, direct.Host)
	viaProxy := *direct
	viaProxy.Host = proxy.ln.Addr().String()

	gh := providertest.NewGitHub(t, providertest.GitHubUser{ID: 77, Login: "cache"})
	listenA, listenB := freePort(t), freePort(t)
	public := "http://" + listenA
	cookieKey, tokenKey := secret(), secret()
	cfg := func(dbURL string) string {
		c := strings.Replace(githubConfig(public, dbURL, gh, ""), "auto_migrate: true", "auto_migrate: false", 1)
		lines := strings.Split(c, "\n")
		for i, l := range lines {
			switch {
			case strings.HasPrefix(l, "  cookie_key:"):
				lines[i] = "  cookie_key: " + `"` + cookieKey + `"`
			case strings.HasPrefix(l, "  token_key:"):
				lines[i] = "  token_key: " + `"` + tokenKey + `"`
			}
		}
		return strings.Join(lines, "\n")
	}
	r := &cacheReplicas{public: public, proxy: proxy, admin: admin, schema: schema, gh: gh}
	r.a = startBroker(t, listenA, cfg(direct.String()))
	r.b = startBroker(t, listenB, cfg(viaProxy.String()))
	// Each replica's cache comes on once its listener is up.
	for _, br := range []*broker{r.a, r.b} {
		waitLog(t, br, cacheOn, 0)
	}
	return r
}

// waitLog waits until the broker has logged msg more than after times.
func waitLog(t *testing.T, b *broker, msg string, after int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for strings.Count(b.logs.String(), msg) <= after {
		if time.Now().After(deadline) {
			t.Fatalf("broker did not log %q (again):\n%s", msg, b.logs.String())
		}
		time.Sleep(10 * time.Millisecond) // polling a process we do not control
	}
}

const (
	cacheOn  = "session cache on"
	cacheOff = "session cache off until the invalidation feed is back"
)

// login signs in on A and returns the session token.
func (r *cacheReplicas) login(t *testing.T) string {
	t.Helper()
	c := browser(t)
	resp, body := get(t, c, r.a.URL+"/login/github?redirect_to=/session", "Accept", "application/json")
	if resp.StatusCode != 200 {
		t.Fatalf("login on A: %d %s", resp.StatusCode, body)
	}
	u, _ := url.Parse(r.a.URL)
	for _, ck := range c.Jar.Cookies(u) {
		if ck.Name == "auth_session" {
			return ck.Value
		}
	}
	t.Fatal("no session cookie after login")
	return ""
}

// forwardAuth calls GET /auth with the session cookie and no jar.
func forwardAuth(t *testing.T, base, token string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/auth", nil)
	req.Header.Set("Cookie", "auth_session="+token)
	req.Header.Set("X-Forwarded-Host", "app.example.com")
	req.Header.Set("X-Forwarded-Uri", "/")
	resp, _ := do(t, http.DefaultClient, req)
	return resp.StatusCode
}

// logout posts /logout with the session cookie from the broker's origin.
func logout(t *testing.T, base, origin, token string) {
	t.Helper()
	req, _ := http.NewRequest("POST", base+"/logout", nil)
	req.Header.Set("Cookie", "auth_session="+token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Origin", origin)
	if resp, _ := do(t, http.DefaultClient, req); resp.StatusCode != 204 {
		t.Fatalf("logout: %d; want 204", resp.StatusCode)
	}
}

// untilStatus polls GET /auth until it answers want and returns how long
// that took, or fails after limit.
func untilStatus(t *testing.T, base, token string, want int, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		got := forwardAuth(t, base, token)
		if got == want {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("/auth on %s still %d after %v; want %d", base, got, limit, want)
		}
	}
}

// TestReplicaCacheRevocation: B caches a session (its database is not
// asked again within the cache TTL, which the first part shows by deleting
// the row behind the brokers' backs); a logout on A reaches B's cache
// through PostgreSQL NOTIFY and B refuses the session within 1 s.
func TestReplicaCacheRevocation(t *testing.T) {
	t.Parallel()
	r := startCacheReplicas(t)

	// The cache is in play: a row deleted by hand (no notification) is
	// still accepted by a replica that cached it, until the cache TTL.
	tok := r.login(t)
	if got := forwardAuth(t, r.b.URL, tok); got != 200 {
		t.Fatalf("/auth on B = %d; want 200", got)
	}
	if _, err := r.admin.DB().ExecContext(t.Context(), `DELETE FROM sessions`); err != nil {
		t.Fatal(err)
	}
	if got := forwardAuth(t, r.b.URL, tok); got != 200 {
		t.Fatalf("/auth on B right after deleting the row by hand = %d; want 200 from its cache", got)
	}

	// Revocation through A, seen by B: measured over several sessions,
	// from the logout's answer on A to B's first 401 (B is polled without
	// pause), and counting the 200s B gave after A had answered.
	var delays []time.Duration
	late := 0
	for range 20 {
		tok := r.login(t)
		for range 3 {
			if got := forwardAuth(t, r.b.URL, tok); got != 200 {
				t.Fatalf("/auth on B = %d; want 200", got)
			}
		}
		logout(t, r.a.URL, r.public, tok)
		done := time.Now()
		for {
			got := forwardAuth(t, r.b.URL, tok)
			if got == 401 {
				break
			}
			if got != 200 || time.Since(done) > time.Second {
				t.Fatalf("/auth on B %v after the logout on A = %d; want 401 within 1s", time.Since(done), got)
			}
			late++
		}
		delays = append(delays, time.Since(done))
	}
	slices.Sort(delays)
	t.Logf("revocation on A refused by B (logout answered on A → first 401 on B): min %v, median %v, max %v over %d sessions; %d requests accepted by B meanwhile",
		delays[0].Round(time.Microsecond), delays[len(delays)/2].Round(time.Microsecond), delays[len(delays)-1].Round(time.Microsecond), len(delays), late)
	if delays[len(delays)-1] >= time.Second {
		t.Fatalf("slowest revocation took %v; want < 1s", delays[len(delays)-1])
	}
}

// TestReplicaCacheListenerDropped: when B's listening connection is
// killed, B stops using its cache and empties it when it reconnects, so a
// revocation whose notification it missed is still refused.
func TestReplicaCacheListenerDropped(t *testing.T) {
	t.Parallel()
	r := startCacheReplicas(t)
	ch := "broker_invalidate." + r.schema

	t.Run("listener killed", func(t *testing.T) {
		tok := r.login(t)
		if got := forwardAuth(t, r.b.URL, tok); got != 200 { // cached on B
			t.Fatalf("/auth on B = %d; want 200", got)
		}
		ons := strings.Count(r.b.logs.String(), cacheOn)
		var killed int
		if err := r.admin.DB().GetContext(t.Context(), &killed,
			`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`, ch); err != nil || killed != 2 {
			t.Fatalf("killed %d listeners (%v); want 2 (A's and B's)", killed, err)
		}
		// Revoke at once, while B's listener is (most likely) reconnecting.
		start := time.Now()
		logout(t, r.a.URL, r.public, tok)
		untilStatus(t, r.b.URL, tok, 401, time.Second)
		t.Logf("revoked while B's listener was killed: refused by B after %v", time.Since(start).Round(time.Microsecond))
		waitLog(t, r.b, cacheOff, 0)
		waitLog(t, r.b, cacheOn, ons-1)
		if got := forwardAuth(t, r.b.URL, tok); got != 401 {
			t.Fatalf("/auth on B once its listener is back = %d; want 401", got)
		}
	})

	t.Run("database cut from B", func(t *testing.T) {
		tok, other := r.login(t), r.login(t)
		for _, x := range []string{tok, other} {
			if got := forwardAuth(t, r.b.URL, x); got != 200 {
				t.Fatalf("/auth on B = %d; want 200", got)
			}
		}
		ons := strings.Count(r.b.logs.String(), cacheOn)
		r.proxy.setDown(true)
		// The revocation's notification cannot reach B.
		logout(t, r.a.URL, r.public, tok)
		// B no longer hears invalidations, so it stops using its cache:
		// neither session is served from it, and without the database
		// that is 503 for both (README "Performance": outages).
		for _, x := range []string{tok, other} {
			if got := forwardAuth(t, r.b.URL, x); got != 503 {
				t.Fatalf("/auth on B during its outage = %d; want 503", got)
			}
		}
		r.proxy.setDown(false)
		back := time.Now()
		untilStatus(t, r.b.URL, other, 200, 10*time.Second)
		if got := forwardAuth(t, r.b.URL, tok); got != 401 {
			t.Fatalf("/auth on B for the session revoked during its outage = %d; want 401", got)
		}
		waitLog(t, r.b, cacheOn, ons)
		t.Logf("B's cache back %v after the database returned", time.Since(back).Round(time.Millisecond))
		if got := forwardAuth(t, r.b.URL, tok); got != 401 {
			t.Fatalf("/auth on B after its listener is back = %d; want 401", got)
		}
		if got := forwardAuth(t, r.b.URL, other); got != 200 {
			t.Fatalf("/auth on B for the live session after recovery = %d; want 200", got)
		}
	})
}
