package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/internal/pgtest"
	"github.com/brokerauth/broker/internal/providertest"
	"github.com/brokerauth/broker/storage/sqlstore"
	"github.com/brokerauth/broker/storage/storagetest"
)

// --- load: logins and validations that record every answer ---

// Kinds of requests the fault load sends.
const (
	opLoginStart = "login-start" // GET /login/github: needs no database
	opCallback   = "callback"    // GET /login/github/callback: creates user, key, session
	opAuthKnown  = "auth-known"  // /auth with a session that was created
	opAuthUnkn   = "auth-unknown"
	opAuthNone   = "auth-none"      // /auth without a cookie
	opAuthBad    = "auth-malformed" // /auth with a token that cannot be one
	opReadyz     = "readyz"
)

// op is one answered (or failed) request.
type op struct {
	kind       string
	start, end time.Time
	status     int // 0 when the request failed
	err        error
	token      string // a callback's new session token; the token validated
	user       string // X-Auth-User-Id of a 200 from /auth
	body       string
}

func (o op) String() string {
	s := fmt.Sprintf("%s %d", o.kind, o.status)
	if o.err != nil {
		s += " err=" + o.err.Error()
	}
	if o.body != "" {
		s += " body=" + o.body
	}
	return s
}

// faultLoad drives a broker from many goroutines without failing the test
// from them: every answer is recorded and judged afterwards.
type faultLoad struct {
	base string
	gh   *providertest.GitHub
	tr   *http.Transport

	authorizeMu sync.Mutex // SetUser + authorize, so that each grant has its own user
	nextUser    atomic.Int64

	mu      sync.Mutex
	ops     []op
	known   []string          // session tokens of successful logins
	users   map[string]string // token → user id first seen
	changed chan struct{}     // closed and replaced at each record
}

func newFaultLoad(t *testing.T, base string, gh *providertest.GitHub) *faultLoad {
	l := &faultLoad{base: base, gh: gh, users: map[string]string{}, changed: make(chan struct{}),
		tr: &http.Transport{MaxIdleConnsPerHost: 32}}
	t.Cleanup(l.tr.CloseIdleConnections)
	return l
}

func (l *faultLoad) record(o op) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ops = append(l.ops, o)
	if o.kind == opCallback && o.token != "" {
		l.known = append(l.known, o.token)
	}
	if o.kind == opAuthKnown && o.status == http.StatusOK {
		if _, ok := l.users[o.token]; !ok {
			l.users[o.token] = o.user
		}
	}
	close(l.changed)
	l.changed = make(chan struct{})
}

// waitFor waits until cond holds over the recorded ops, or fails the test
// after timeout.
func (l *faultLoad) waitFor(t *testing.T, what string, timeout time.Duration, cond func(ops []op) bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		ok, ch := cond(l.ops), l.changed
		l.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("waited %v for %s", timeout, what)
		}
	}
}

func (l *faultLoad) snapshot() (ops []op, known []string, users map[string]string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	users = map[string]string{}
	for k, v := range l.users {
		users[k] = v
	}
	return append([]op(nil), l.ops...), append([]string(nil), l.known...), users
}

func (l *faultLoad) pickKnown() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.known) == 0 {
		return ""
	}
	return l.known[rand.IntN(len(l.known))]
}

func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// send does one request and records nothing.
func (l *faultLoad) send(c *http.Client, method, u string, hdr ...string) op {
	o := op{start: time.Now()}
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		o.err = err
		return o
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		o.end, o.err = time.Now(), err
		return o
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	o.end, o.status = time.Now(), resp.StatusCode
	if resp.StatusCode >= 300 && resp.StatusCode != http.StatusFound {
		o.body = strings.TrimSpace(string(b))
		if len(o.body) > 200 {
			o.body = o.body[:200]
		}
	}
	o.user = resp.Header.Get("X-Auth-User-Id")
	if loc := resp.Header.Get("Location"); loc != "" {
		o.body = loc
	}
	for _, ck := range resp.Cookies() {
		if ck.Name == "auth_session" && ck.Value != "" && ck.MaxAge >= 0 {
			o.token = ck.Value
		}
	}
	return o
}

// login signs in step by step as a browser would (login start, the fake's
// authorize, the callback) with a cookie jar of its own, recording the
// start and the callback. It returns the callback's op (the login-start op
// when that failed).
func (l *faultLoad) login() op {
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Transport: l.tr, Jar: jar, Timeout: 20 * time.Second, CheckRedirect: noRedirect}
	start := l.send(c, "GET", l.base+"/login/github?redirect_to=/session")
	start.kind = opLoginStart
	l.record(start)
	if start.status != http.StatusFound {
		return start
	}
	l.authorizeMu.Lock()
	n := l.nextUser.Add(1)
	l.gh.SetUser(providertest.GitHubUser{ID: 1000 + n, Login: fmt.Sprintf("user%d", n)})
	authz := l.send(c, "GET", start.body)
	l.authorizeMu.Unlock()
	if authz.status != http.StatusFound {
		authz.kind = "authorize"
		l.record(authz)
		return authz
	}
	cb := l.send(c, "GET", authz.body)
	cb.kind = opCallback
	l.record(cb)
	return cb
}

// validate asks /auth about token ("" sends no cookie).
func (l *faultLoad) validate(kind, token string) op {
	c := &http.Client{Transport: l.tr, Timeout: 20 * time.Second, CheckRedirect: noRedirect}
	var o op
	if token == "" {
		o = l.send(c, "GET", l.base+"/auth")
	} else {
		o = l.send(c, "GET", l.base+"/auth", "Cookie", "auth_session="+token)
	}
	o.kind, o.token = kind, token
	l.record(o)
	return o
}

func (l *faultLoad) readyz() op {
	c := &http.Client{Transport: l.tr, Timeout: 20 * time.Second}
	o := l.send(c, "GET", l.base+"/readyz")
	o.kind = opReadyz
	l.record(o)
	return o
}

// run starts logins workers doing logins and validators workers doing a
// mix of validations and /readyz, until stop is closed.
func (l *faultLoad) run(wg *sync.WaitGroup, stop <-chan struct{}, logins, validators int) {
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	for range logins {
		wg.Go(func() {
			for !stopped() {
				l.login()
			}
		})
	}
	for range validators {
		wg.Go(func() {
			for !stopped() {
				switch r := rand.IntN(20); {
				case r < 9:
					if tok := l.pickKnown(); tok != "" {
						l.validate(opAuthKnown, tok)
					}
				case r < 14:
					l.validate(opAuthUnkn, auth.GenerateSessionToken())
				case r < 16:
					l.validate(opAuthNone, "")
				case r < 17:
					l.validate(opAuthBad, "not-a-token")
				default:
					l.readyz()
				}
			}
		})
	}
}

// checkAlways checks what holds at any time, database up or down: no 500
// (no 5xx but 503), no transport error, an unknown token never passes, a
// request without a valid-looking token never needs the database, the
// login start needs no database, and a live session is never told it is
// invalid (which would clear its cookie).
func checkAlways(o op) string {
	switch {
	case o.err != nil:
		return "transport error"
	case o.status >= 500 && o.status != http.StatusServiceUnavailable:
		return "a 5xx other than 503"
	case o.kind == opAuthUnkn && o.status == http.StatusOK:
		return "an unknown session passed"
	case (o.kind == opAuthNone || o.kind == opAuthBad) && o.status != http.StatusUnauthorized:
		return "want 401 (no database needed)"
	case o.kind == opLoginStart && o.status != http.StatusFound:
		return "want 302 (no database needed)"
	case o.kind == opAuthKnown && o.status == http.StatusUnauthorized:
		return "a live session was refused"
	case o.kind == opCallback && !(o.status == http.StatusFound && o.token != "" || o.status == http.StatusServiceUnavailable):
		return "a callback answers a session (302 with cookie) or 503"
	case o.kind == opReadyz && o.status != http.StatusOK && o.status != http.StatusServiceUnavailable:
		return "readyz answers 200 or 503"
	}
	return ""
}

// checkUp checks an answer given while the database was up throughout.
func checkUp(o op) string {
	switch o.kind {
	case opAuthKnown, opReadyz:
		if o.status != http.StatusOK {
			return "want 200"
		}
	case opAuthUnkn:
		if o.status != http.StatusUnauthorized {
			return "want 401"
		}
	case opCallback:
		if o.status != http.StatusFound || o.token == "" {
			return "want a session"
		}
	}
	return ""
}

// checkDown checks an answer given while the database was down
// throughout: whatever needs the database is 503. A live session may still
// pass (200) while the broker's session cache is trusted, never with
// another user.
func checkDown(o op, users map[string]string) string {
	switch o.kind {
	case opAuthKnown:
		if o.status == http.StatusOK && users[o.token] != "" && o.user == users[o.token] {
			return ""
		}
		if o.status != http.StatusServiceUnavailable {
			return "want 503 (or 200 from the session cache)"
		}
	case opAuthUnkn, opCallback, opReadyz:
		if o.status != http.StatusServiceUnavailable {
			return "want 503"
		}
	}
	return ""
}

type violations struct {
	n     int
	lines []string
}

func (v *violations) add(phase string, o op, why string) {
	v.n++
	if len(v.lines) < 25 {
		v.lines = append(v.lines, fmt.Sprintf("%s: %s: %s", phase, why, o))
	}
}

func (v *violations) report(t *testing.T) {
	t.Helper()
	if v.n > 0 {
		t.Errorf("%d bad answers; first ones:\n%s", v.n, strings.Join(v.lines, "\n"))
	}
}

// checkConsistent checks the database: every user has a key (passkey-only
// users have a webauthn key, so this holds for all users), and no key or
// session belongs to a missing user.
func checkConsistent(t *testing.T, db *sqlx.DB) {
	t.Helper()
	for _, c := range []struct{ what, query string }{
		{"users without a key", `SELECT count(*) FROM users u WHERE NOT EXISTS (SELECT 1 FROM keys k WHERE k.user_id = u.id)`},
		{"keys without a user", `SELECT count(*) FROM keys k WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = k.user_id)`},
		{"sessions without a user", `SELECT count(*) FROM sessions s WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = s.user_id)`},
	} {
		var n int
		if err := db.GetContext(t.Context(), &n, c.query); err != nil {
			t.Fatalf("%s: %v", c.what, err)
		}
		if n != 0 {
			t.Errorf("%d %s", n, c.what)
		}
	}
}

// checkLogClean fails on a panic or a data race in the broker's log.
func checkLogClean(t *testing.T, b *broker) {
	t.Helper()
	logs := b.logs.String()
	for _, bad := range []string{"DATA RACE", "panic:", `"msg":"panic"`, "fatal error:"} {
		if strings.Contains(logs, bad) {
			t.Errorf("broker log contains %q", bad)
		}
	}
}

// checkStillValid checks that every session a login answered validates,
// as the same user as before.
func checkStillValid(t *testing.T, l *faultLoad, known []string, users map[string]string) {
	t.Helper()
	bad := 0
	for _, tok := range known {
		o := l.validate(opAuthKnown, tok)
		if o.status != http.StatusOK || (users[tok] != "" && o.user != users[tok]) {
			bad++
			if bad <= 5 {
				t.Errorf("a login answered with success does not validate: %s (user %q, was %q)", o, o.user, users[tok])
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d sessions lost", bad, len(known))
	}
}

// --- (a) PostgreSQL stopped under load ---

// TestFaultPostgresStoppedUnderLoad stops the broker's PostgreSQL (a
// private cluster) in the middle of a mixed load of logins and /auth
// validations with live, unknown, missing and malformed tokens, then
// starts it again: "stop" is a fast shutdown (sessions terminated), "crash"
// SIGKILLs every PostgreSQL process (connections reset, crash recovery at
// the restart).
//
// Valid answers: at any time, never a 5xx other than 503, never a 200 for
// an unknown token, never a 401 for a live session, always 401 without a
// valid-looking token and 302 for the login start (neither needs the
// database). While the database is down (requests that began after the
// stop completed and ended before the restart began): 503 for /readyz,
// the callback and unknown tokens; 503 for live sessions too, or 200 with
// their own user while the session cache may still serve them. Requests
// that straddle the stop or the restart may get either answer. Within 5 s
// of the restart /readyz, a new login and the live sessions work, after
// which every answer is as before the outage; every login answered with a
// session still validates; no user lacks its key.
func TestFaultPostgresStoppedUnderLoad(t *testing.T) {
	t.Parallel()
	t.Run("stop", func(t *testing.T) { t.Parallel(); testPostgresOutage(t, false) })
	t.Run("crash", func(t *testing.T) { t.Parallel(); testPostgresOutage(t, true) })
}

func testPostgresOutage(t *testing.T, crash bool) {
	pg := pgtest.Start(t)
	gh := providertest.NewGitHub(t, providertest.GitHubUser{ID: 1})
	listen := freePort(t)
	b := startBroker(t, listen, githubConfig("http://"+listen, pg.URL()+"&connect_timeout=2", gh, ""))
	l := newFaultLoad(t, b.URL, gh)
	if o := l.login(); o.token == "" {
		t.Fatalf("first login: %s", o)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	l.run(&wg, stop, 3, 5)
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	// count holds once 5 requests of kind begun after after got status.
	count := func(after time.Time, kind string, status int) func([]op) bool {
		return func(ops []op) bool {
			n := 0
			for _, o := range ops {
				if o.kind == kind && o.status == status && !o.start.Before(after) {
					n++
				}
			}
			return n >= 5
		}
	}
	l.waitFor(t, "logins before the outage", 20*time.Second, count(time.Time{}, opCallback, http.StatusFound))

	stopBegin := time.Now()
	halt := pg.Stop
	if crash {
		halt = pg.Kill
	}
	if err := halt(); err != nil {
		t.Fatal(err)
	}
	stopEnd := time.Now()
	// Let the load run into the outage until it has seen it everywhere.
	for _, k := range []string{opCallback, opAuthKnown, opAuthUnkn, opReadyz} {
		l.waitFor(t, k+" answers during the outage", 20*time.Second, count(stopEnd, k, http.StatusServiceUnavailable))
	}
	startBegin := time.Now()
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()

	// Recovery: /readyz, a new login and the live sessions work again.
	probe := func() string {
		if o := l.readyz(); o.status != http.StatusOK {
			return o.String()
		}
		if o := l.login(); o.token == "" {
			return o.String()
		}
		_, known, _ := l.snapshot()
		for _, tok := range known {
			if o := l.validate(opAuthKnown, tok); o.status != http.StatusOK {
				return o.String()
			}
		}
		return ""
	}
	var last string
	for {
		if last = probe(); last == "" {
			break
		}
		if time.Since(back) > 5*time.Second {
			t.Fatalf("not recovered 5s after PostgreSQL returned: %s", last)
		}
		// Polling the broker under test; each probe makes requests anyway.
		time.Sleep(25 * time.Millisecond)
	}
	recovered := time.Now()
	t.Logf("stop took %v, restart %v; recovered %v after PostgreSQL returned",
		stopEnd.Sub(stopBegin).Round(time.Millisecond), back.Sub(startBegin).Round(time.Millisecond), recovered.Sub(back).Round(time.Millisecond))
	// And the load carries on as before the outage.
	for _, k := range []string{opCallback, opAuthUnkn, opReadyz} {
		want := http.StatusOK
		switch k {
		case opCallback:
			want = http.StatusFound
		case opAuthUnkn:
			want = http.StatusUnauthorized
		}
		l.waitFor(t, k+" answers after recovery", 20*time.Second, count(recovered, k, want))
	}
	close(stop)
	wg.Wait()

	ops, known, users := l.snapshot()
	var v violations
	perPhase := map[string]map[string]int{}
	for _, o := range ops {
		if why := checkAlways(o); why != "" {
			v.add("any time", o, why)
			continue
		}
		phase := "transition"
		switch {
		case o.end.Before(stopBegin):
			phase = "up"
			if why := checkUp(o); why != "" {
				v.add(phase, o, why)
			}
		case !o.start.Before(stopEnd) && o.end.Before(startBegin):
			phase = "down"
			if why := checkDown(o, users); why != "" {
				v.add(phase, o, why)
			}
		case !o.start.Before(recovered):
			phase = "recovered"
			if why := checkUp(o); why != "" {
				v.add(phase, o, why)
			}
		}
		if perPhase[phase] == nil {
			perPhase[phase] = map[string]int{}
		}
		perPhase[phase][fmt.Sprintf("%s %d", o.kind, o.status)]++
	}
	for _, p := range []string{"up", "transition", "down", "recovered"} {
		t.Logf("%s: %v", p, perPhase[p])
	}
	v.report(t)
	checkStillValid(t, l, known, users)
	checkLogClean(t, b)

	db, err := sqlstore.Open(t.Context(), pg.URL(), sqlstore.WithMaxOpenConns(1))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	checkConsistent(t, db.DB())
	var sessions int
	if err := db.DB().GetContext(t.Context(), &sessions, "SELECT count(*) FROM sessions"); err != nil {
		t.Fatal(err)
	}
	if sessions < len(known) {
		t.Errorf("%d sessions stored for %d successful logins", sessions, len(known))
	}
}

// --- (b) the broker killed with SIGKILL during logins ---

// TestFaultBrokerKilledDuringLogins kills the broker with SIGKILL while
// logins are in flight, restarts it on the same database and listen
// address: users who were cut off retry and succeed, a login whose
// provider round trip was under way when the broker died finishes on the
// new process, every session answered before the kill still validates, and
// no user lacks its key.
func TestFaultBrokerKilledDuringLogins(t *testing.T) {
	t.Parallel()
	for _, backend := range []string{"postgres", "sqlite"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			var dbURL string
			var db *sqlstore.Store
			var err error
			autoMigrate := "true"
			if backend == "postgres" {
				pgURL, schema := storagetest.PostgresSchema(t)
				if db, err = sqlstore.Open(t.Context(), pgURL, sqlstore.WithSchema(schema), sqlstore.WithMaxOpenConns(1)); err != nil {
					t.Fatal(err)
				}
				if err := db.Migrate(t.Context()); err != nil {
					t.Fatal(err)
				}
				u, _ := url.Parse(pgURL)
				q := u.Query()
				q.Set("search_path", schema)
				u.RawQuery = q.Encode()
				dbURL, autoMigrate = u.String(), "false"
			} else {
				dbURL = storagetest.SQLiteURL(t)
			}
			gh := providertest.NewGitHub(t, providertest.GitHubUser{ID: 1})
			listen := freePort(t)
			cfg := strings.Replace(githubConfig("http://"+listen, dbURL, gh, ""), "auto_migrate: true", "auto_migrate: "+autoMigrate, 1)
			b1 := startBroker(t, listen, cfg)
			if backend == "sqlite" {
				if db, err = sqlstore.Open(t.Context(), dbURL, sqlstore.WithMaxOpenConns(1)); err != nil {
					t.Fatal(err)
				}
			}
			defer db.Close()
			l := newFaultLoad(t, b1.URL, gh)

			// A login that has been to the provider and not yet back.
			jar, _ := cookiejar.New(nil)
			pending := &http.Client{Jar: jar, Timeout: 20 * time.Second, CheckRedirect: noRedirect}
			resp, _ := get(t, pending, b1.URL+"/login/github?redirect_to=/session")
			resp, _ = get(t, pending, resp.Header.Get("Location"))
			callback := resp.Header.Get("Location")
			if !strings.Contains(callback, "/login/github/callback") {
				t.Fatalf("authorize answered %d %s", resp.StatusCode, callback)
			}

			stop := make(chan struct{})
			var wg sync.WaitGroup
			l.run(&wg, stop, 4, 2)
			l.waitFor(t, "logins before the kill", 20*time.Second, func(ops []op) bool {
				n := 0
				for _, o := range ops {
					if o.kind == opCallback && o.token != "" {
						n++
					}
				}
				return n >= 8
			})
			kill := time.Now()
			if err := b1.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			<-b1.done
			close(stop)
			wg.Wait()
			checkLogClean(t, b1)

			ops, known, _ := l.snapshot()
			var v violations
			cut := 0
			for _, o := range ops {
				if o.end.Before(kill) {
					if why := checkAlways(o); why != "" {
						v.add("before the kill", o, why)
					} else if why := checkUp(o); why != "" {
						v.add("before the kill", o, why)
					}
					continue
				}
				// Cut off by the kill: a transport error, or an answer
				// that made it out.
				if o.err != nil {
					cut++
				} else if o.status >= 500 {
					v.add("at the kill", o, "a 5xx")
				}
			}
			v.report(t)
			t.Logf("%d logins answered before the kill, %d requests cut off", len(known), cut)

			b2 := startBroker(t, listen, cfg)
			// The pending login finishes on the new process: the flow
			// cookie is sealed with the same key, its state unused.
			resp, body := get(t, pending, callback)
			if resp.StatusCode != http.StatusFound {
				t.Errorf("pending login after restart = %d %s", resp.StatusCode, body)
			}
			// Every user cut off retries once and succeeds.
			var retries sync.WaitGroup
			for range 8 {
				retries.Go(func() {
					if o := l.login(); o.token == "" {
						t.Errorf("retried login: %s", o)
					}
				})
			}
			retries.Wait()
			_, known, users := l.snapshot()
			checkStillValid(t, l, known, users)
			checkLogClean(t, b2)
			checkConsistent(t, db.DB())
		})
	}
}

// --- (c) a provider that hangs ---

// TestFaultProviderHangs: with server.provider_timeout 500ms, a callback
// whose provider never answers (the token endpoint, or the API after the
// token) gives up after the timeout with a clear error page (502
// PROVIDER_ERROR, "try again"), JSON for JSON clients; no session is
// made, and the next attempt succeeds once the provider is back.
func TestFaultProviderHangs(t *testing.T) {
	t.Parallel()
	const timeout = 500 * time.Millisecond
	for _, e := range []providertest.Endpoint{providertest.Token, providertest.API} {
		t.Run(string(e), func(t *testing.T) {
			t.Parallel()
			gh := providertest.NewGitHub(t, providertest.GitHubUser{ID: 7})
			listen := freePort(t)
			cfg := strings.Replace(githubConfig("http://"+listen, storagetest.SQLiteURL(t), gh, ""),
				"shutdown_grace: 5s", "shutdown_grace: 5s\n  provider_timeout: "+timeout.String(), 1)
			b := startBroker(t, listen, cfg)
			gh.SetFault(e, providertest.Fault{Hang: true})

			// callback runs a login up to the callback and times it.
			callback := func(accept string) (*http.Response, string, time.Duration) {
				jar, _ := cookiejar.New(nil)
				c := &http.Client{Jar: jar, Timeout: 20 * time.Second, CheckRedirect: noRedirect}
				resp, _ := get(t, c, b.URL+"/login/github?redirect_to=/session")
				resp, _ = get(t, c, resp.Header.Get("Location"))
				start := time.Now()
				resp, body := get(t, c, resp.Header.Get("Location"), "Accept", accept)
				return resp, body, time.Since(start)
			}
			var wg sync.WaitGroup
			var htmlResp, jsonResp *http.Response
			var htmlBody, jsonBody string
			var htmlTook, jsonTook time.Duration
			wg.Go(func() {
				htmlResp, htmlBody, htmlTook = callback("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
			})
			wg.Go(func() { jsonResp, jsonBody, jsonTook = callback("application/json") })
			wg.Wait()
			if t.Failed() {
				return
			}
			// The broker's HTTP client would give up only 5 s after the
			// timeout; the answer must come from the timeout itself.
			const slack = 2500 * time.Millisecond
			for _, took := range []time.Duration{htmlTook, jsonTook} {
				if took < timeout-50*time.Millisecond || took > timeout+slack {
					t.Errorf("callback took %v; want about %v", took, timeout)
				}
			}
			if htmlResp.StatusCode != http.StatusBadGateway || !strings.HasPrefix(htmlResp.Header.Get("Content-Type"), "text/html") ||
				!strings.Contains(htmlBody, "PROVIDER_ERROR") || !strings.Contains(htmlBody, "try again") ||
				!strings.Contains(htmlBody, "did not answer in time") {
				t.Errorf("HTML callback = %d %s: %s", htmlResp.StatusCode, htmlResp.Header.Get("Content-Type"), htmlBody)
			}
			var j map[string]string
			if err := json.Unmarshal([]byte(jsonBody), &j); err != nil || jsonResp.StatusCode != http.StatusBadGateway ||
				j["error"] != "PROVIDER_ERROR" || !strings.Contains(j["message"], "try again") {
				t.Errorf("JSON callback = %d %s (%v)", jsonResp.StatusCode, jsonBody, err)
			}
			for _, r := range []*http.Response{htmlResp, jsonResp} {
				for _, ck := range r.Cookies() {
					if ck.Name == "auth_session" && ck.Value != "" {
						t.Errorf("a session cookie after a provider timeout")
					}
				}
			}
			t.Logf("gave up after %v (HTML) and %v (JSON)", htmlTook.Round(time.Millisecond), jsonTook.Round(time.Millisecond))

			gh.SetFault(e, providertest.Fault{})
			c := browser(t)
			if resp, body := get(t, c, b.URL+"/login/github?redirect_to=/session", "Accept", "application/json"); resp.StatusCode != 200 || resp.Request.URL.Path != "/session" {
				t.Errorf("login once the provider is back: %d at %s: %s", resp.StatusCode, resp.Request.URL, body)
			}
			checkLogClean(t, b)
		})
	}
}

// --- (d) SIGTERM under load ---

// tokenGate sits in front of a fake's token endpoint: while armed, a token
// request waits until released (or cancelled) before it is passed on.
type tokenGate struct {
	armed   atomic.Bool
	once    sync.Once
	arrived chan struct{}
	release chan struct{}
	srv     *httptest.Server
}

func newTokenGate(t *testing.T, gh *providertest.GitHub) *tokenGate {
	g := &tokenGate{arrived: make(chan struct{}, 16), release: make(chan struct{})}
	target, _ := url.Parse(gh.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ErrorLog = log.New(io.Discard, "", 0) // a request cut by the broker's exit is expected
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.armed.Load() {
			// Read the body first: only then does the server watch the
			// connection and cancel r's context when the broker hangs up.
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			g.arrived <- struct{}{}
			select {
			case <-g.release:
			case <-r.Context().Done():
				return
			}
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(g.srv.Close)
	t.Cleanup(g.open) // before Close, which waits for the handlers
	return g
}

// open lets held and later requests through.
func (g *tokenGate) open() { g.once.Do(func() { close(g.release) }) }

// TestFaultSIGTERMUnderLoad sends SIGTERM while validations run and a
// login is in flight at the provider: new connections are refused from
// then on, the in-flight login completes with a session, and the broker
// exits once it is done, within server.shutdown_grace. When the in-flight
// request outlasts the grace period, the broker exits at its end anyway.
func TestFaultSIGTERMUnderLoad(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		grace   time.Duration
		release bool // the in-flight request finishes within the grace period
	}{
		{"drains", 3 * time.Second, true},
		{"grace expires", time.Second, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			gh := providertest.NewGitHub(t, providertest.GitHubUser{ID: 9})
			gate := newTokenGate(t, gh)
			listen := freePort(t)
			dbURL := storagetest.SQLiteURL(t)
			cfg := githubConfig("http://"+listen, dbURL, gh, "")
			cfg = strings.Replace(cfg, "token_url: "+gh.TokenURL(), "token_url: "+gate.srv.URL+"/login/oauth/access_token", 1)
			cfg = strings.Replace(cfg, "shutdown_grace: 5s", "shutdown_grace: "+tc.grace.String(), 1)
			b := startBroker(t, listen, cfg)
			l := newFaultLoad(t, b.URL, gh)
			if o := l.login(); o.token == "" {
				t.Fatalf("first login: %s", o)
			}

			// Load: validations of a live session until the broker is gone.
			stop := make(chan struct{})
			var wg sync.WaitGroup
			defer func() { close(stop); wg.Wait() }()
			l.run(&wg, stop, 0, 3)
			l.waitFor(t, "validations", 20*time.Second, func(ops []op) bool { return len(ops) >= 20 })

			// A login held at the provider's token endpoint.
			gate.armed.Store(true)
			inflight := make(chan op, 1)
			go func() { inflight <- l.login() }()
			select {
			case <-gate.arrived:
			case <-time.After(20 * time.Second):
				t.Fatal("the login did not reach the token endpoint")
			}

			term := time.Now()
			if err := b.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			// New connections are refused while the login is still in flight.
			deadline := time.Now().Add(5 * time.Second)
			for {
				conn, err := net.DialTimeout("tcp", listen, time.Second)
				if errors.Is(err, syscall.ECONNREFUSED) {
					break
				}
				// A reset is a connection caught in the accept queue as
				// the listener closed: not served, but look again.
				if err != nil && !errors.Is(err, syscall.ECONNRESET) {
					t.Fatalf("dial after SIGTERM: %v; want connection refused", err)
				}
				if conn != nil {
					conn.Close()
				}
				if time.Now().After(deadline) {
					t.Fatal("new connections still accepted 5s after SIGTERM")
				}
				time.Sleep(10 * time.Millisecond) // polling the process under test
			}
			refused := time.Since(term)
			if _, err := http.Get(b.URL + "/healthz"); err == nil || !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("a new request after shutdown began: %v; want connection refused", err)
			}
			select {
			case <-b.done:
				if tc.release {
					t.Fatal("the broker exited with a request in flight")
				}
			default:
			}

			if tc.release {
				gate.open()
				o := <-inflight
				if o.kind != opCallback || o.status != http.StatusFound || o.token == "" {
					t.Fatalf("in-flight login: %s; want a session", o)
				}
				select {
				case <-b.done:
				case <-time.After(tc.grace + 2*time.Second):
					t.Fatalf("the broker did not exit within the grace period (%v)", tc.grace)
				}
				exit := time.Since(term)
				if code := b.cmd.ProcessState.ExitCode(); code != 0 {
					t.Errorf("exit code %d after a clean drain", code)
				}
				// The session is stored: the login really completed.
				st, err := sqlstore.Open(t.Context(), dbURL, sqlstore.WithMaxOpenConns(1))
				if err != nil {
					t.Fatal(err)
				}
				defer st.Close()
				sum := sha256.Sum256([]byte(o.token))
				var n int
				if err := st.DB().GetContext(t.Context(), &n, st.DB().Rebind("SELECT count(*) FROM sessions WHERE id = ?"), hex.EncodeToString(sum[:])); err != nil || n != 1 {
					t.Errorf("session of the drained login: %d rows, %v", n, err)
				}
				t.Logf("refused new connections %v after SIGTERM, exited %v after", refused.Round(time.Millisecond), exit.Round(time.Millisecond))
			} else {
				select {
				case <-b.done:
				case <-time.After(tc.grace + 2*time.Second):
					t.Fatalf("the broker did not exit within the grace period (%v) + 2s", tc.grace)
				}
				exit := time.Since(term)
				if exit < tc.grace-100*time.Millisecond {
					t.Errorf("exited %v after SIGTERM, before the grace period (%v) with a request in flight", exit, tc.grace)
				}
				if o := <-inflight; o.err == nil {
					t.Errorf("in-flight login past the grace period answered %s", o)
				}
				gate.open()
				t.Logf("refused new connections %v after SIGTERM, exited %v after (grace %v), code %d",
					refused.Round(time.Millisecond), exit.Round(time.Millisecond), tc.grace, b.cmd.ProcessState.ExitCode())
			}

			// Validations before SIGTERM passed; after it, each either
			// completed (200) or found the door closed; never a 5xx.
			ops, _, _ := l.snapshot()
			var v violations
			for _, o := range ops {
				if o.kind != opAuthKnown && o.kind != opReadyz && o.kind != opAuthUnkn && o.kind != opAuthNone && o.kind != opAuthBad {
					continue
				}
				if o.end.Before(term) {
					if why := checkAlways(o); why != "" {
						v.add("before SIGTERM", o, why)
					} else if why := checkUp(o); why != "" {
						v.add("before SIGTERM", o, why)
					}
				} else if o.err == nil && o.status >= 500 {
					v.add("after SIGTERM", o, "a 5xx")
				}
			}
			v.report(t)
			checkLogClean(t, b)
		})
	}
}
