package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lib/pq"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/internal/fastlane"
	"github.com/brokerauth/broker/internal/server"
	"github.com/brokerauth/broker/storage/sqlstore"
)

// Targets, in the order the report lists them.
const (
	tBare    = "bare"
	tBareHdr = "bare-headers"
	tBareLn  = "bare-lane"
	tDBFloor = "db-floor"
	tHot     = "hot"
	tUniform = "uniform"
	tCold    = "cold"
	tHotCmp  = "hot-compare"
)

var targets = []string{tBare, tBareHdr, tBareLn, tDBFloor, tHot, tUniform, tCold}

// targets is the targets measured in r: hot-compare too with -compare.
func (r runResult) targets() []string {
	if len(r.Rounds) > 0 {
		if _, ok := r.Rounds[0][tHotCmp]; ok {
			return append(slices.Clone(targets), tHotCmp)
		}
	}
	return targets
}

// wrkResult is what the Lua script's done() prints, plus the server's CPU
// time over the run.
type wrkResult struct {
	Requests      int64   `json:"requests"`
	DurationUS    int64   `json:"duration_us"`
	ErrorsStatus  int64   `json:"errors_status"`
	ErrorsConnect int64   `json:"errors_connect"`
	ErrorsRead    int64   `json:"errors_read"`
	ErrorsWrite   int64   `json:"errors_write"`
	ErrorsTimeout int64   `json:"errors_timeout"`
	P50US         float64 `json:"p50_us"`
	P90US         float64 `json:"p90_us"`
	P99US         float64 `json:"p99_us"`
	MaxUS         float64 `json:"max_us"`
	// CPUUS is the CPU time (user + system) the server under test used
	// during the measured run, in microseconds.
	CPUUS float64 `json:"-"`
	// Wrapped is set for "cold" when the run needed more sessions than N
	// (it then reused sessions: not cold any more).
	Wrapped bool `json:"-"`
}

func (w wrkResult) RPS() float64 {
	if w.DurationUS == 0 {
		return 0
	}
	return float64(w.Requests) / (float64(w.DurationUS) / 1e6)
}

// CPUPerRequest is the server's CPU time per request in microseconds:
// unlike req/s, it hardly depends on what else the machine is doing.
func (w wrkResult) CPUPerRequest() float64 {
	if w.Requests == 0 {
		return 0
	}
	return w.CPUUS / float64(w.Requests)
}

func (w wrkResult) errors() int64 {
	return w.ErrorsStatus + w.ErrorsConnect + w.ErrorsRead + w.ErrorsWrite + w.ErrorsTimeout
}

type runResult struct {
	N        int
	Users    int
	SeedTime time.Duration
	// Rounds[i][target] is round i's measurement of target.
	Rounds     []map[string]wrkResult
	PeakRSSKB  int64 // the largest VmHWM of the brokers of this N
	WorkingSet int
}

// benchN seeds N sessions in a fresh schema and measures every target in
// o.rounds interleaved rounds, so that every ratio compares runs made a
// few seconds apart.
func benchN(ctx context.Context, o options, n int, tmp, script string) (runResult, error) {
	r := runResult{N: n, WorkingSet: min(o.workingSet, n)}
	var rb [6]byte
	rand.Read(rb[:])
	schema := "authbench_" + hex.EncodeToString(rb[:])
	st, err := sqlstore.Open(ctx, o.dbURL, sqlstore.WithSchema(schema), sqlstore.WithMaxOpenConns(2))
	if err != nil {
		return r, err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if _, err := st.DB().ExecContext(cctx, "DROP SCHEMA IF EXISTS "+pq.QuoteIdentifier(schema)+" CASCADE"); err != nil {
			fmt.Fprintln(os.Stderr, "drop schema:", err)
		}
		st.Close()
	}()
	if err := st.Migrate(ctx); err != nil {
		return r, err
	}
	all := filepath.Join(tmp, fmt.Sprintf("tokens-%d.txt", n))
	hot := filepath.Join(tmp, fmt.Sprintf("hot-%d.txt", n))
	fmt.Fprintf(os.Stderr, "N=%d: seeding…\n", n)
	start := time.Now()
	users, err := seed(ctx, st.DB().DB, n, o, all, hot)
	if err != nil {
		return r, fmt.Errorf("seed: %w", err)
	}
	r.SeedTime, r.Users = time.Since(start), users
	fmt.Fprintf(os.Stderr, "N=%d: seeded %d sessions of %d users in %v\n", n, n, users, r.SeedTime.Round(time.Millisecond))
	if _, err := st.DB().ExecContext(ctx, "ANALYZE users; ANALYZE sessions"); err != nil {
		return r, err
	}
	dsn, err := withSearchPath(o.dbURL, schema)
	if err != nil {
		return r, err
	}

	// References, in this process.
	bare, err := serveHTTP(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) }))
	if err != nil {
		return r, err
	}
	defer bare.Close()
	bareHdr, err := serveHTTP(http.HandlerFunc(bareHeaders))
	if err != nil {
		return r, err
	}
	defer bareHdr.Close()
	bareLane, err := serveLane(http.HandlerFunc(bareHeaders))
	if err != nil {
		return r, err
	}
	defer bareLane.Close()
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		return r, err
	}
	defer db.Close()
	db.SetMaxOpenConns(20) // the broker's default pool
	db.SetMaxIdleConns(20)
	floorHandler, err := dbFloor(ctx, db)
	if err != nil {
		return r, err
	}
	floor, err := serveHTTP(floorHandler)
	if err != nil {
		return r, err
	}
	defer floor.Close()

	// The broker for hot and uniform runs for the whole of this N (its
	// cache fills up to its bound); cold gets a fresh one each round.
	b, err := startBroker(ctx, o, tmp, dsn)
	if err != nil {
		return r, err
	}
	defer b.stop()
	authURL := "http://" + b.addr + "/auth"
	// -compare: a second broker on the same sessions, for hot-compare.
	var cmp *brokerProc
	if o.compareBin != "" {
		oc := o
		oc.brokerBin = o.compareBin
		if cmp, err = startBroker(ctx, oc, tmp, dsn); err != nil {
			return r, err
		}
		defer cmp.stop()
	}
	for round := range o.rounds {
		fmt.Fprintf(os.Stderr, "N=%d: round %d/%d\n", n, round+1, o.rounds)
		res := map[string]wrkResult{}
		// Each floor runs just before the target compared with it, so that
		// a ratio compares runs seconds apart.
		if res[tBare], err = measure(ctx, o, script, "http://"+bare.Addr+"/", hot, "random", selfCPU); err != nil {
			return r, err
		}
		hotRun := func() error {
			w, err := measure(ctx, o, script, authURL, hot, "random", b.cpu)
			if err != nil {
				return b.withLog(err)
			}
			res[tHot] = w
			return nil
		}
		cmpRun := func() error {
			if cmp == nil {
				return nil
			}
			w, err := measure(ctx, o, script, "http://"+cmp.addr+"/auth", hot, "random", cmp.cpu)
			if err != nil {
				return cmp.withLog(err)
			}
			res[tHotCmp] = w
			return nil
		}
		// The two brokers take turns at going first.
		first, second := hotRun, cmpRun
		if round%2 == 1 {
			first, second = cmpRun, hotRun
		}
		if err := first(); err != nil {
			return r, err
		}
		if err := second(); err != nil {
			return r, err
		}
		if res[tBareHdr], err = measure(ctx, o, script, "http://"+bareHdr.Addr+"/", hot, "random", selfCPU); err != nil {
			return r, err
		}
		if res[tBareLn], err = measure(ctx, o, script, "http://"+bareLane.Addr+"/auth", hot, "random", selfCPU); err != nil {
			return r, err
		}
		if res[tDBFloor], err = measure(ctx, o, script, "http://"+floor.Addr+"/", all, "random", selfCPU); err != nil {
			return r, err
		}
		if res[tUniform], err = measure(ctx, o, script, authURL, all, "random", b.cpu); err != nil {
			return r, b.withLog(err)
		}
		cold, err := startBroker(ctx, o, tmp, dsn)
		if err != nil {
			return r, err
		}
		res[tCold], err = measure(ctx, o, script, "http://"+cold.addr+"/auth", all, "seq", cold.cpu)
		peak, _ := cold.rss()
		cold.stop()
		if err != nil {
			return r, cold.withLog(err)
		}
		r.PeakRSSKB = max(r.PeakRSSKB, peak)
		r.Rounds = append(r.Rounds, res)
	}
	peak, _ := b.rss()
	r.PeakRSSKB = max(r.PeakRSSKB, peak)
	return r, nil
}

// bareHeaders is the bare handler setting the headers that /auth answers
// a hot session with here (values of the same lengths): what net/http and
// wrk spend on an answer that carries identity headers, with none of the
// broker's work. It is a reference beside the targets, not one of them.
func bareHeaders(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h["X-Auth-User-Id"] = userIDValue
	h["X-Auth-Email"] = emailValue
	h["X-Auth-Claim-Role"] = roleValue
	h["Cache-Control"] = noStoreValue
	w.WriteHeader(http.StatusOK)
}

var (
	userIDValue  = []string{userID(1234)}
	emailValue   = []string{"user1234@bench.example"}
	roleValue    = []string{"member"}
	noStoreValue = []string{"no-store"}
)

// selfCPU is this process's CPU time in microseconds (the reference
// servers run here; the harness itself idles while wrk runs).
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e3
}

// measure runs wrk against url twice: a warm-up (discarded) and the
// measured run, reading cpu (microseconds of the server's CPU time) around
// the latter. In "seq" mode the measured run starts past the sessions the
// warm-up used.
func measure(ctx context.Context, o options, script, url, tokens, mode string, cpu func() float64) (wrkResult, error) {
	// The warm-up walks the tokens in order whatever the measured mode, so
	// that every session of a small working set (hot: 10,000) has been seen
	// before the measured run: between rounds its cache entries outlive the
	// cache TTL, and a random warm-up would leave a fifth of them to miss
	// during the measurement.
	w, err := runWrk(ctx, o, script, url, tokens, "seq", 0, o.warmup)
	if err != nil {
		return w, fmt.Errorf("warm-up %s: %w", url, err)
	}
	// wrk threads walk interleaved slices at their own pace: leave room.
	next := w.Requests*11/10 + int64(o.connections*o.threads)
	c0 := cpu()
	res, err := runWrk(ctx, o, script, url, tokens, mode, next, o.duration)
	res.CPUUS = cpu() - c0
	if err != nil {
		return res, fmt.Errorf("%s: %w", url, err)
	}
	if mode == "seq" {
		lines, err := countLines(tokens)
		if err != nil {
			return res, err
		}
		res.Wrapped = next+res.Requests > int64(lines)
	}
	if res.errors() > 0 {
		return res, fmt.Errorf("%s: %d errors (%d non-2xx statuses)", url, res.errors(), res.ErrorsStatus)
	}
	return res, nil
}

func runWrk(ctx context.Context, o options, script, url, tokens, mode string, offset int64, d time.Duration) (wrkResult, error) {
	secs := max(int(d.Round(time.Second)/time.Second), 1)
	cmd := exec.CommandContext(ctx, "wrk", "-t", strconv.Itoa(o.threads), "-c", strconv.Itoa(o.connections),
		"-d", strconv.Itoa(secs)+"s", "--timeout", "5s", "-s", script, url,
		"--", tokens, mode, strconv.Itoa(o.threads), strconv.FormatInt(offset, 10))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk: %w: %s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "{") {
			var w wrkResult
			if err := json.Unmarshal([]byte(line), &w); err != nil {
				return w, fmt.Errorf("wrk output %q: %w", line, err)
			}
			return w, nil
		}
	}
	return wrkResult{}, fmt.Errorf("no result in wrk output: %s", out)
}

func countLines(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n++
	}
	return n, sc.Err()
}

// seed creates ceil(n/perUser) users and n sessions with COPY, writes
// every token to all (one per line, in random order: tokens are random)
// and the first min(workingSet, n) to hot.
func seed(ctx context.Context, db *sql.DB, n int, o options, all, hot string) (int, error) {
	users := (n + o.sessionsPerUser - 1) / o.sessionsPerUser
	now := time.Now().UTC().Truncate(time.Microsecond)
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, `COPY users (id, email, email_verified_at, name, attributes, created_at, updated_at) FROM STDIN`)
	if err != nil {
		return 0, err
	}
	for i := range users {
		role := "member"
		if i%10 == 0 {
			role = "admin"
		}
		if _, err := stmt.ExecContext(ctx, userID(i), fmt.Sprintf("user%d@bench.example", i), now,
			fmt.Sprintf("Bench User %d", i), `{"role":"`+role+`"}`, now, now); err != nil {
			return 0, err
		}
	}
	if _, err := stmt.ExecContext(ctx); err != nil {
		return 0, err
	}
	if err := stmt.Close(); err != nil {
		return 0, err
	}
	fa, err := os.Create(all)
	if err != nil {
		return 0, err
	}
	defer fa.Close()
	fh, err := os.Create(hot)
	if err != nil {
		return 0, err
	}
	defer fh.Close()
	wa, wh := bufio.NewWriter(fa), bufio.NewWriter(fh)
	stmt, err = tx.PrepareContext(ctx, `COPY sessions (id, user_id, active_expires, idle_expires, created_at, authenticated_at, last_seen_at, user_agent, ip, attributes) FROM STDIN`)
	if err != nil {
		return 0, err
	}
	// The broker writes last_seen_at when it is more than 5 minutes old;
	// a run takes longer than that, so seeding it "now" would turn the
	// later rounds into write benchmarks. -stale-last-seen measures that.
	lastSeen := now.Add(time.Hour)
	if o.staleLastSeen {
		lastSeen = now.Add(-time.Hour)
	}
	active, idle := now.Add(auth.DefaultActivePeriod), now.Add(auth.DefaultActivePeriod+auth.DefaultIdlePeriod)
	for i := range n {
		tok := auth.GenerateSessionToken()
		if _, err := stmt.ExecContext(ctx, auth.SessionIDFromToken(tok), userID(i%users), active, idle, now, now, lastSeen,
			"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0", fmt.Sprintf("192.0.2.%d", i%250+1), `{}`); err != nil {
			return 0, err
		}
		wa.WriteString(tok + "\n")
		if i < o.workingSet {
			wh.WriteString(tok + "\n")
		}
	}
	if _, err := stmt.ExecContext(ctx); err != nil {
		return 0, err
	}
	if err := stmt.Close(); err != nil {
		return 0, err
	}
	if err := errors.Join(wa.Flush(), wh.Flush()); err != nil {
		return 0, err
	}
	return users, tx.Commit()
}

func userID(i int) string { return fmt.Sprintf("u%014d", i) }

// withSearchPath adds search_path to a lib/pq URL (sent to the server as a
// run-time parameter of every connection).
func withSearchPath(dsn, schema string) (string, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return "", err
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

type httpServer struct {
	Addr string
	srv  interface{ Shutdown(context.Context) error }
}

func (s *httpServer) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.srv.Shutdown(ctx)
}

// serveLane serves h on the broker's fast lane (internal/fastlane), as the
// broker serves GET /auth: the floor of the broker's own HTTP loop.
func serveLane(h http.Handler) (*httpServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	lane := &fastlane.Server{Handler: h, Match: server.IsForwardAuth, Fallback: hs, ReadHeaderTimeout: hs.ReadHeaderTimeout}
	go lane.Serve(ln)
	return &httpServer{Addr: ln.Addr().String(), srv: lane}, nil
}

func serveHTTP(h http.Handler) (*httpServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return &httpServer{Addr: ln.Addr().String(), srv: srv}, nil
}

// dbFloor is the database floor: read the session cookie, hash it, and
// fetch the session's row by primary key with one prepared statement.
func dbFloor(ctx context.Context, db *sql.DB) (http.Handler, error) {
	stmt, err := db.PrepareContext(ctx, `SELECT id, user_id, active_expires, idle_expires, created_at,
		authenticated_at, last_seen_at, user_agent, ip, attributes FROM sessions WHERE id = $1`)
	if err != nil {
		return nil, err
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie(auth.DefaultCookieName)
		if err != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		sum := sha256.Sum256([]byte(c.Value))
		var (
			id, userID, ua, ip                             string
			active, idle, created, authenticated, lastSeen time.Time
			attrs                                          []byte
		)
		err = stmt.QueryRowContext(r.Context(), hex.EncodeToString(sum[:])).Scan(&id, &userID, &active, &idle,
			&created, &authenticated, &lastSeen, &ua, &ip, &attrs)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			w.WriteHeader(http.StatusUnauthorized)
		case err != nil:
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			w.WriteHeader(http.StatusOK)
		}
	}), nil
}

// brokerProc is a running broker.
type brokerProc struct {
	cmd     *exec.Cmd
	addr    string
	logPath string
	done    chan struct{}
}

func startBroker(ctx context.Context, o options, tmp, dsn string) (*brokerProc, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	key := func() string {
		b := make([]byte, 32)
		rand.Read(b)
		return base64.StdEncoding.EncodeToString(b)
	}
	claims := ""
	if o.claims {
		claims = "claims:\n  role: user.attributes.role\n"
	}
	cfg := fmt.Sprintf(`server:
  listen: %s
  public_url: http://%s
  shutdown_grace: 5s
database:
  url: %q
  auto_migrate: false
secrets:
  cookie_key: %q
  token_key: %q
password:
  enabled: true
%slog:
  format: json
  level: info
`, addr, addr, dsn, key(), key(), claims)
	dir, err := os.MkdirTemp(tmp, "broker-")
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "broker.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "broker.log"))
	if err != nil {
		return nil, err
	}
	b := &brokerProc{addr: addr, logPath: logf.Name(), done: make(chan struct{})}
	b.cmd = exec.Command(o.brokerBin, "serve", "--config", path)
	b.cmd.Dir = dir
	b.cmd.Stdout, b.cmd.Stderr = logf, logf
	if err := b.cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	go func() { _ = b.cmd.Wait(); logf.Close(); close(b.done) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ok := false
		if resp, err := http.Get("http://" + addr + "/readyz"); err == nil {
			resp.Body.Close()
			ok = resp.StatusCode == http.StatusOK
		}
		// With PostgreSQL the session cache comes on once the broker
		// listens for invalidations.
		if ok {
			logs, _ := os.ReadFile(b.logPath)
			if strings.Contains(string(logs), "session cache on") || !strings.Contains(string(logs), "session cache") {
				break
			}
		}
		select {
		case <-b.done:
			return nil, b.withLog(errors.New("broker exited"))
		case <-ctx.Done():
			b.stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.stop()
			return nil, b.withLog(errors.New("broker did not become ready"))
		}
	}
	return b, nil
}

func (b *brokerProc) withLog(err error) error {
	logs, _ := os.ReadFile(b.logPath)
	if len(logs) > 4000 {
		logs = logs[len(logs)-4000:]
	}
	return fmt.Errorf("%w; broker log:\n%s", err, logs)
}

// cpu returns the broker's CPU time (user + system) in microseconds.
func (b *brokerProc) cpu() float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", b.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which is in parentheses): utime is
	// the 12th, stime the 13th, in clock ticks (100 per second on Linux).
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) * 1e4
}

// rss returns the broker's peak (VmHWM) and current (VmRSS) resident set
// in KiB.
func (b *brokerProc) rss() (peak, cur int64) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", b.cmd.Process.Pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmHWM:":
			peak = v
		case "VmRSS:":
			cur = v
		}
	}
	return peak, cur
}

func (b *brokerProc) stop() {
	select {
	case <-b.done:
		return
	default:
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(15 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.done
	}
}
