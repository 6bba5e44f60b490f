package e2e

import (
	"context"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/brokerauth/broker/internal/providertest"
	"github.com/brokerauth/broker/storage/sqlstore"
	"github.com/brokerauth/broker/storage/storagetest"
)

// cutProxy is a TCP proxy to PostgreSQL that the test can cut (closing
// every connection and refusing new ones) and restore, to play a database
// outage without touching the shared server.
type cutProxy struct {
	target string
	ln     net.Listener
	mu     sync.Mutex
	down   bool
	conns  map[net.Conn]struct{}
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	t.Cleanup(func() { ln.Close(); p.setDown(true) })
	go p.serve()
	return p
}

func (p *cutProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		go func() { _, _ = io.Copy(up, c); up.Close(); c.Close() }()
		go func() { _, _ = io.Copy(c, up); up.Close(); c.Close() }()
	}
}

func (p *cutProxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			c.Close()
		}
		p.conns = map[net.Conn]struct{}{}
	}
}

// TestDatabaseOutageRecovery: while PostgreSQL is unreachable /readyz and
// /session answer 503 (never 500, never 200 for a session it cannot
// check); when it is back, both work again without restarting the broker.
func TestDatabaseOutageRecovery(t *testing.T) {
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
	u, err := url.Parse(pgURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newCutProxy(t, u.Host)
	u.Host = proxy.ln.Addr().String()
	q := u.Query()
	q.Set("search_path", schema)
	q.Set("connect_timeout", "2")
	u.RawQuery = q.Encode()

	gh := providertest.NewGitHub(t, providertest.GitHubUser{ID: 5})
	listen := freePort(t)
	cfg := strings.Replace(githubConfig("http://"+listen, u.String(), gh, ""), "auto_migrate: true", "auto_migrate: false", 1)
	b := startBroker(t, listen, cfg)
	c := browser(t)
	if resp, _ := get(t, c, b.URL+"/login/github?redirect_to=/session"); resp.StatusCode != 200 {
		t.Fatalf("login = %d", resp.StatusCode)
	}
	if status, _ := sessionOf(t, c, b.URL); status != 200 {
		t.Fatalf("/session = %d", status)
	}

	proxy.setDown(true)
	if resp, body := get(t, c, b.URL+"/readyz"); resp.StatusCode != 503 || !strings.Contains(body, "SERVICE_UNAVAILABLE") {
		t.Fatalf("/readyz while down = %d %s; want 503", resp.StatusCode, body)
	}
	if status, s := sessionOf(t, c, b.URL); status != 503 || s["error"] != "SERVICE_UNAVAILABLE" {
		t.Fatalf("/session while down = %d %v; want 503", status, s)
	}
	if resp, _ := get(t, c, b.URL+"/auth"); resp.StatusCode != 503 {
		t.Fatalf("/auth while down = %d; want 503", resp.StatusCode)
	}
	if resp, _ := get(t, c, b.URL+"/healthz"); resp.StatusCode != 200 {
		t.Fatalf("/healthz while the database is down = %d; want 200 (alive)", resp.StatusCode)
	}

	proxy.setDown(false)
	back := time.Now()
	deadline := back.Add(5 * time.Second)
	for {
		resp, _ := get(t, c, b.URL+"/readyz")
		if resp.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still %d 5s after the database returned", resp.StatusCode)
		}
		time.Sleep(50 * time.Millisecond) // polling the process under test
	}
	if status, s := sessionOf(t, c, b.URL); status != 200 {
		t.Fatalf("/session after recovery = %d %v", status, s)
	}
	t.Logf("recovered %v after the database returned", time.Since(back).Round(time.Millisecond))
}
