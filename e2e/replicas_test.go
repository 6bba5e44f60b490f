package e2e

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"github.com/brokerauth/broker/internal/providertest"
	"github.com/brokerauth/broker/storage/sqlstore"
	"github.com/brokerauth/broker/storage/storagetest"
)

// TestReplicas runs two broker processes on one PostgreSQL with the same
// secrets and public URL (as behind a load balancer): a flow started on A
// finishes on B, a session made on B validates on A, and a session revoked
// on A is refused by B.
func TestReplicas(t *testing.T) {
	t.Parallel()
	pgURL, schema := storagetest.PostgresSchema(t)
	st, err := sqlstore.Open(context.Background(), pgURL, sqlstore.WithSchema(schema))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	st.Close()
	// lib/pq passes unknown parameters to the server as run-time settings.
	dbURL := pgURL + "&search_path=" + schema
	if !strings.Contains(pgURL, "?") {
		dbURL = pgURL + "?search_path=" + schema
	}

	gh := providertest.NewGitHub(t, providertest.GitHubUser{ID: 7, Login: "octo"})
	listenA, listenB := freePort(t), freePort(t)
	public := "http://" + listenA
	cookieKey, tokenKey := secret(), secret()
	cfg := func() string {
		c := githubConfig(public, dbURL, gh, "")
		c = strings.Replace(c, "auto_migrate: true", "auto_migrate: false", 1)
		// Same secrets on both replicas.
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
	a := startBroker(t, listenA, cfg())
	b := startBroker(t, listenB, cfg())

	// Start on A: the flow cookie is set and we are sent to the provider.
	c := browser(t)
	nf := noFollow(c)
	resp, _ := get(t, nf, a.URL+"/login/github?redirect_to=/session")
	if resp.StatusCode != 302 {
		t.Fatalf("start on A = %d", resp.StatusCode)
	}
	authorize := resp.Header.Get("Location")
	resp, _ = get(t, nf, authorize)
	callback, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || !strings.HasPrefix(callback.String(), public+"/login/github/callback") {
		t.Fatalf("provider redirect = %v (%v)", callback, err)
	}
	// Finish on B (cookies ignore ports, as they do across replicas of one host).
	callback.Host = listenB
	resp, _ = get(t, nf, callback.String())
	if resp.StatusCode != 302 || resp.Header.Get("Location") != "/session" {
		t.Fatalf("callback on B = %d %v", resp.StatusCode, resp.Header)
	}
	// The session made on B validates on A and on B.
	for _, base := range []string{a.URL, b.URL} {
		if status, s := sessionOf(t, c, base); status != 200 {
			t.Fatalf("/session on %s = %d %v", base, status, s)
		}
	}
	// Replaying the same callback on A is refused: the flow was consumed.
	callback.Host = listenA
	resp, _ = get(t, nf, callback.String(), "Accept", "application/json")
	if resp.StatusCode != 400 {
		t.Fatalf("replayed callback on A = %d; want 400", resp.StatusCode)
	}
	// Revoked on A, refused by B.
	resp, _ = post(t, c, a.URL+"/logout", public)
	if resp.StatusCode != 204 {
		t.Fatalf("logout on A = %d", resp.StatusCode)
	}
	if status, _ := sessionOf(t, c, b.URL); status != 401 {
		t.Fatalf("/session on B after logout on A = %d; want 401", status)
	}
}
