package e2e

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/brokerauth/broker/internal/providertest"
)

// nginxPath finds Debian's nginx, skipping locally and failing under CI
// when it is missing.
func nginxPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"nginx", "/usr/sbin/nginx"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	msg := "nginx is not installed (apt-get install nginx-light); .ci/run installs it"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// TestNginxAuthRequest runs examples/nginx/nginx.conf with Debian's nginx
// on loopback in front of an app: an anonymous request is sent to the
// login page; after a login through a fake provider the app receives the
// identity and claim headers (and not the ones the client forged); after
// logout it is anonymous again.
func TestNginxAuthRequest(t *testing.T) {
	t.Parallel()
	bin := nginxPath(t)

	// The app echoes what it was told about the user.
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{
			"user":  r.Header.Get("X-Auth-User-Id"),
			"email": r.Header.Get("X-Auth-Email"),
			"role":  r.Header.Get("X-Auth-Claim-Role"),
			"team":  r.Header.Get("X-Auth-Claim-Team"),
			"path":  r.URL.RequestURI(),
		})
	}))
	t.Cleanup(app.Close)

	gh := providertest.NewGitHub(t, providertest.GitHubUser{ID: 99, Login: "nginx-user",
		Emails: []providertest.GitHubEmail{{Email: "ngx@example.com", Primary: true, Verified: true}}})
	listen := freePort(t)
	front := freePort(t)
	db := "sqlite://" + t.TempDir() + "/broker.db"
	cfg := githubConfig("http://"+listen, db, gh, "")
	cfg = strings.Replace(cfg, "allowed_origins: [http://127.0.0.1:1]", "allowed_origins: [http://"+front+"]", 1)
	b := startBroker(t, listen, cfg)

	// nginx with the example's configuration, placeholders filled in.
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	conf, err := os.ReadFile("../examples/nginx/nginx.conf")
	if err != nil {
		t.Fatal(err)
	}
	appHost := strings.TrimPrefix(app.URL, "http://")
	s := strings.NewReplacer("{{PID}}", filepath.Join(dir, "nginx.pid"), "{{DIR}}", dir,
		"{{BROKER}}", listen, "{{APP}}", appHost, "{{LISTEN}}", front).Replace(string(conf))
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	ngx := exec.Command(bin, "-c", confPath, "-p", dir, "-e", filepath.Join(dir, "error.log"))
	out := &lockedBuffer{}
	ngx.Stdout, ngx.Stderr = out, out
	if err := ngx.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = ngx.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = ngx.Process.Signal(syscall.SIGQUIT)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = ngx.Process.Kill()
		}
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("nginx output: %s\nerror.log: %s", out.String(), log)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		conn, err := net.Dial("tcp", front)
		if err == nil {
			conn.Close()
			break
		}
		select {
		case <-done:
			t.Fatalf("nginx exited: %s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("nginx did not start")
		}
		time.Sleep(20 * time.Millisecond) // polling a process we do not control
	}
	base := "http://" + front

	// Anonymous: sent to the broker's login page with redirect_to.
	c := browser(t)
	nf := noFollow(c)
	resp, _ := get(t, nf, base+"/dashboard?tab=1&x=2")
	loc := resp.Header.Get("Location")
	want := "http://" + listen + "/login?redirect_to=" + url.QueryEscape(base+"/dashboard?tab=1&x=2")
	if resp.StatusCode != 302 || loc != want {
		t.Fatalf("anonymous: %d Location %q; want 302 %q", resp.StatusCode, loc, want)
	}

	// Log in (following the login page's GitHub link) and land back on the app.
	u, _ := url.Parse(loc)
	resp, body := get(t, c, b.URL+"/login/github?redirect_to="+url.QueryEscape(u.Query().Get("redirect_to")))
	if resp.StatusCode != 200 || resp.Request.URL.Host != front {
		t.Fatalf("after login: %d at %s: %s", resp.StatusCode, resp.Request.URL, body)
	}
	var seen map[string]string
	if err := json.Unmarshal([]byte(body), &seen); err != nil {
		t.Fatalf("app answer %q: %v", body, err)
	}
	if seen["user"] == "" || seen["email"] != "ngx@example.com" || seen["role"] != "editor" || seen["team"] != "nginx-user" ||
		seen["path"] != "/dashboard?tab=1&x=2" {
		t.Fatalf("app saw %v", seen)
	}
	userID := seen["user"]

	// Forged identity headers are replaced by nginx.
	_, body = get(t, c, base+"/", "X-Auth-User-Id", "admin", "X-Auth-Claim-Role", "admin")
	_ = json.Unmarshal([]byte(body), &seen)
	if seen["user"] != userID || seen["role"] != "editor" {
		t.Fatalf("forged headers reached the app: %v", seen)
	}

	// Logout: anonymous again.
	resp, _ = post(t, c, b.URL+"/logout", b.URL)
	if resp.StatusCode != 204 {
		t.Fatalf("logout = %d", resp.StatusCode)
	}
	resp, _ = get(t, nf, base+"/dashboard")
	if resp.StatusCode != 302 || !strings.HasPrefix(resp.Header.Get("Location"), "http://"+listen+"/login") {
		t.Fatalf("after logout: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	// Forged headers without a session do not get through either.
	resp, _ = get(t, nf, base+"/", "X-Auth-User-Id", userID)
	if resp.StatusCode != 302 {
		t.Fatalf("forged anonymous request = %d; want 302", resp.StatusCode)
	}

	// nginx keeps its connections to the broker alive (the example's
	// upstream keepalive): the broker's fast lane answered the
	// subrequests (see internal/fastlane).
	_, metrics := get(t, c, b.URL+"/metrics")
	m := regexp.MustCompile(`(?m)^broker_fastlane_requests_total (\d+)$`).FindStringSubmatch(metrics)
	if m == nil || m[1] == "0" {
		t.Errorf("broker_fastlane_requests_total: %v; want the lane to have answered nginx's subrequests", m)
	}
}
