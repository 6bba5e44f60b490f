package e2e

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDevelopmentMode runs `broker serve` with no configuration at all in
// an empty directory: it starts on SQLite with generated secrets, warns,
// says where to go, and answers /healthz, /readyz, /login and /session.
// `broker migrate` works there too.
func TestDevelopmentMode(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	listen := freePort(t)
	_, port, _ := net.SplitHostPort(listen)
	b := &broker{URL: "http://" + listen, logs: &lockedBuffer{}, done: make(chan struct{})}
	b.cmd = exec.Command(brokerBin, "serve")
	b.cmd.Dir = dir
	// Only the port moves (the machine may be running something on 8080);
	// everything else is the development default.
	b.cmd.Env = append(os.Environ(), "BROKER_SERVER_LISTEN="+listen, "BROKER_SERVER_PUBLIC_URL=http://localhost:"+port)
	b.cmd.Stdout, b.cmd.Stderr = b.logs, b.logs
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = b.cmd.Wait(); close(b.done) }()
	t.Cleanup(func() {
		b.stop(t)
		if t.Failed() {
			t.Logf("log:\n%s", b.logs.String())
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := browser(t)
	for {
		if resp, err := c.Get(b.URL + "/healthz"); err == nil {
			resp.Body.Close()
			break
		}
		select {
		case <-b.done:
			t.Fatalf("broker exited: %s", b.logs.String())
		case <-ctx.Done():
			t.Fatal("broker did not start")
		case <-time.After(50 * time.Millisecond): // polling a process we do not control
		}
	}
	if resp, _ := get(t, c, b.URL+"/readyz"); resp.StatusCode != 200 {
		t.Fatalf("/readyz = %d", resp.StatusCode)
	}
	if status, s := sessionOf(t, c, b.URL); status != 401 || s["error"] != "AUTH_INVALID_SESSION_ID" {
		t.Fatalf("/session = %d %v", status, s)
	}
	if resp, _ := get(t, c, b.URL+"/login", "Accept", "text/html"); resp.StatusCode != 200 {
		t.Fatalf("/login = %d", resp.StatusCode)
	}
	for _, f := range []string{"broker.db", "broker-secrets.json"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatalf("development mode did not create %s: %v", f, err)
		}
		if f == "broker-secrets.json" && fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s mode = %v; want 0600", f, fi.Mode().Perm())
		}
	}
	logs := b.logs.String()
	if !strings.Contains(logs, "development mode") || !strings.Contains(logs, "/login") {
		t.Fatalf("log does not warn about development mode or say where to go:\n%s", logs)
	}
	if first := strings.SplitN(logs, "\n", 2)[0]; !strings.Contains(first, "development mode") {
		t.Fatalf("first log line %q is not the development-mode warning", first)
	}

	cmd := exec.Command(brokerBin, "migrate")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "migrations applied") {
		t.Fatalf("broker migrate: %v: %s", err, out)
	}
}
