package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"testing"
	"time"

	"github.com/brokerauth/broker/internal/coarsedeadline"
	"github.com/brokerauth/broker/internal/config"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startServe runs serve on the CLI fixture's configuration with server
// settings added (YAML lines under server:), and returns the main
// listener's address and a function that stops serve and returns its
// error.
func startServe(t *testing.T, serverYAML string) (addr string, stop func() error) {
	t.Helper()
	f := newCLIFixture(t, cliConfig{skipSeeding: true})
	yaml, err := os.ReadFile(f.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	yaml = []byte(strings.Replace(string(yaml), "server:\n", "server:\n  listen: 127.0.0.1:0\n  shutdown_grace: 5s\n"+serverYAML, 1))
	if err := os.WriteFile(f.cfgPath, yaml, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(f.cfgPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	c := &cli{getenv: func(string) string { return "" }, stdout: io.Discard, stderr: io.Discard}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- c.serve(ctx, cfg, ready) }()
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("serve: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not start")
	}
	stopped := false
	stop = func() error {
		t.Helper()
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			t.Fatal("serve did not stop")
			return nil
		}
	}
	t.Cleanup(func() { stop() })
	return addr, stop
}

func httpGet(t *testing.T, client *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestServeMetricsListen: with server.metrics_listen set, /metrics is
// served there (with the pool gauges) and not on the main listener, even
// to a loopback peer; serve returns nil once its context ends.
func TestServeMetricsListen(t *testing.T) {
	metricsAddr := freeAddr(t)
	main, stop := startServe(t, "  metrics_listen: "+metricsAddr+"\n")
	get := func(url string) (int, string) { return httpGet(t, http.DefaultClient, url) }
	if code, body := get("http://" + metricsAddr + "/metrics"); code != 200 ||
		!strings.Contains(body, "go_goroutines") || !strings.Contains(body, `go_sql_open_connections{db_name="broker"}`) {
		t.Fatalf("metrics listener: %d %.200s", code, body)
	}
	if code, _ := get("http://" + main + "/metrics"); code != 404 {
		t.Fatalf("/metrics on the main listener with metrics_listen set = %d; want 404", code)
	}
	if code, _ := get("http://" + main + "/healthz"); code != 200 {
		t.Fatalf("/healthz = %d", code)
	}
	if err := stop(); err != nil {
		t.Fatalf("serve after cancel: %v", err)
	}
}

// TestServeFastAuth: with server.fast_auth (the default) the fast lane
// answers keep-alive GET /auth, and a connection that asks for anything
// else is served by net/http; with it off, net/http serves everything. The
// answers are the same either way.
func TestServeFastAuth(t *testing.T) {
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("fast_auth=%v", on), func(t *testing.T) {
			metricsAddr := freeAddr(t)
			main, stop := startServe(t, fmt.Sprintf("  metrics_listen: %s\n  fast_auth: %v\n", metricsAddr, on))
			// One keep-alive connection: /auth twice, then /healthz
			// (handed off), then /auth again (now net/http's).
			client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
			defer client.CloseIdleConnections()
			for _, path := range []string{"/auth", "/auth", "/healthz", "/auth"} {
				code, body := httpGet(t, client, "http://"+main+path)
				want := http.StatusUnauthorized
				if path == "/healthz" {
					want = http.StatusOK
				}
				if code != want || (path == "/auth" && !strings.Contains(body, "AUTH_INVALID_SESSION_ID")) {
					t.Fatalf("GET %s = %d %q; want %d", path, code, body, want)
				}
			}
			_, metrics := httpGet(t, http.DefaultClient, "http://"+metricsAddr+"/metrics")
			if !on {
				if strings.Contains(metrics, "broker_fastlane") {
					t.Errorf("fast_auth off, but the lane's metrics are there")
				}
			} else if !strings.Contains(metrics, "broker_fastlane_requests_total 2\n") ||
				!strings.Contains(metrics, "broker_fastlane_handoffs_total 1\n") {
				t.Errorf("want 2 lane answers and 1 handoff; metrics:\n%s", grepLines(metrics, "broker_fastlane"))
			}
			if err := stop(); err != nil {
				t.Fatalf("serve after cancel: %v", err)
			}
		})
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestHTTPServerTimeouts: every phase of a connection is bounded (slow
// clients cannot hold connections), and the whole request shares the
// header deadline, so that net/http sets one read deadline per request.
func TestHTTPServerTimeouts(t *testing.T) {
	hs := newHTTPServer(http.NotFoundHandler(), slog.New(slog.DiscardHandler))
	if hs.ReadHeaderTimeout <= 0 || hs.WriteTimeout <= 0 || hs.IdleTimeout <= 0 || hs.MaxHeaderBytes <= 0 {
		t.Fatalf("unbounded: %+v", hs)
	}
	if hs.ReadTimeout != hs.ReadHeaderTimeout {
		t.Errorf("ReadTimeout %v, ReadHeaderTimeout %v: want them equal (one read deadline per request)", hs.ReadTimeout, hs.ReadHeaderTimeout)
	}
}

// The broker serves on listeners with coarse deadlines, so that the
// deadlines net/http sets on every request cost no timers.
func TestListenCoarseDeadlines(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := listen(ln)
	defer l.Close()
	if _, ok := l.(*coarsedeadline.Listener); !ok {
		t.Fatalf("listen returned %T, want a *coarsedeadline.Listener", l)
	}
}

// tuneGC raises GOGC on a small heap unless the operator set GOGC, and its
// stop function puts GOGC back.
func TestTuneGC(t *testing.T) {
	gogc := func() uint64 {
		s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	before := debug.SetGCPercent(100)
	defer debug.SetGCPercent(before)

	set := &cli{getenv: func(k string) string {
		if k == "GOGC" {
			return "100"
		}
		return ""
	}}
	stop := set.tuneGC()
	if g := gogc(); g != 100 {
		t.Errorf("GOGC set by the operator: GOGC %d, want it left at 100", g)
	}
	stop()

	unset := &cli{getenv: func(string) string { return "" }}
	stop = unset.tuneGC()
	// This test's live heap is far under the floor.
	if g := gogc(); g <= 100 {
		t.Errorf("GOGC not set: GOGC %d, want it raised", g)
	}
	stop()
	if g := gogc(); g != 100 {
		t.Errorf("after stop: GOGC %d, want 100", g)
	}
}
