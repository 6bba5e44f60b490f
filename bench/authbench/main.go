// Command authbench measures the broker's forward-auth endpoint (GET /auth)
// on PostgreSQL against two floors measured in the same run: a bare
// net/http handler that answers 200 (the HTTP floor) and a bare handler
// that does one primary-key SELECT on the sessions table (the database
// floor). It drives every target with wrk (Debian's package) and a Lua
// script that sends a random session cookie per request.
//
//	go run ./bench/authbench                                 # N = 1,000, 100,000, 1,000,000
//	go run ./bench/authbench -sessions 1000 -duration 5s     # a quick look
//
// For each N it seeds a fresh schema with N sessions (COPY; tokens kept in a
// file for wrk), starts the broker binary on that schema, and runs:
//
//	bare          the HTTP floor (sessions from the working set)
//	hot           /auth, sessions from a working set of the first 10,000
//	bare-headers  the HTTP floor setting the headers /auth answers hot
//	              with: a reference for what the headers cost, not a target
//	db-floor      the database floor (sessions uniform over all N)
//	uniform       /auth, sessions uniform over all N
//	cold          /auth, every request a session the broker has not seen
//	              (each wrk thread walks its own slice of the tokens once)
//
// in that order in every round, so that each floor runs next to the
// targets compared with it; each after a warm-up that walks that target's
// sessions in order (so that every hot session has been seen). It reads the
// broker's peak RSS (VmHWM), prints a table with the ratios the README's
// targets use, and writes it, with the commit, date and machine, to
// bench/results/<date>-<commit>.md (<date>-<commit>-2.md and so on when
// that commit has been run before that day: a run never overwrites another).
//
// PostgreSQL is BROKER_TEST_DATABASE_URL (default
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/brokerauth/broker/storage/sqlstore"
)

type options struct {
	sessions        []int
	duration        time.Duration
	warmup          time.Duration
	rounds          int
	connections     int
	threads         int
	workingSet      int
	sessionsPerUser int
	claims          bool
	staleLastSeen   bool
	dbURL           string
	brokerBin       string
	brokerGiven     bool
	compareBin      string
	resultsDir      string
	note            string
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "authbench:", err)
		os.Exit(1)
	}
}

func run() error {
	var o options
	var sessions string
	flag.StringVar(&sessions, "sessions", "1000,100000,1000000", "comma-separated session counts N")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "measured wrk run per target and round")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "wrk warm-up run before each measured run (not counted)")
	flag.IntVar(&o.rounds, "rounds", 3, "interleaved rounds of all targets per N (figures are medians)")
	flag.IntVar(&o.connections, "connections", 32, "wrk connections")
	flag.IntVar(&o.threads, "threads", 0, "wrk threads (default: number of CPUs)")
	flag.IntVar(&o.workingSet, "working-set", 10000, "sessions in the hot working set")
	flag.IntVar(&o.sessionsPerUser, "sessions-per-user", 4, "sessions per seeded user")
	flag.BoolVar(&o.claims, "claims", true, "configure one claim (role: user.attributes.role), sent as a header by /auth")
	flag.BoolVar(&o.staleLastSeen, "stale-last-seen", false, "seed sessions last seen an hour ago, so the first validation of each also writes its last-seen time")
	flag.StringVar(&o.brokerBin, "broker", "", "broker binary to measure (default: go build ./cmd/broker)")
	flag.StringVar(&o.compareBin, "compare", "", "another broker binary: each round also measures hot /auth on it (target hot-compare) next to hot, alternating which goes first (an A/B of two builds)")
	flag.StringVar(&o.resultsDir, "results", "bench/results", "directory for the results file (empty: do not write one)")
	flag.StringVar(&o.note, "note", "", "a note for the results file")
	flag.Parse()
	for _, f := range strings.Split(sessions, ",") {
		n, err := strconv.Atoi(strings.ReplaceAll(strings.TrimSpace(f), "_", ""))
		if err != nil || n <= 0 {
			return fmt.Errorf("-sessions: %q is not a positive number", f)
		}
		o.sessions = append(o.sessions, n)
	}
	if o.threads <= 0 {
		o.threads = numCPU()
	}
	o.dbURL = os.Getenv("BROKER_TEST_DATABASE_URL")
	if o.dbURL == "" {
		o.dbURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	if _, err := exec.LookPath("wrk"); err != nil {
		return fmt.Errorf("wrk is not installed (Debian/Ubuntu: apt-get install -y wrk): %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	tmp, err := os.MkdirTemp("", "authbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	o.brokerGiven = o.brokerBin != ""
	if o.brokerBin == "" {
		o.brokerBin = filepath.Join(tmp, "broker")
		fmt.Fprintln(os.Stderr, "building the broker…")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", o.brokerBin, "./cmd/broker")
		cmd.Dir = moduleRoot()
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("build broker: %w", err)
		}
	}
	script := filepath.Join(tmp, "auth.lua")
	if err := os.WriteFile(script, []byte(luaScript), 0o644); err != nil {
		return err
	}
	m := machineInfo()
	m.Postgres = postgresVersion(ctx, o.dbURL)
	fmt.Fprintf(os.Stderr, "machine: %s\n", m)
	loadStart := loadAvg()

	var results []runResult
	for _, n := range o.sessions {
		r, err := benchN(ctx, o, n, tmp, script)
		if err != nil {
			return fmt.Errorf("sessions %d: %w", n, err)
		}
		results = append(results, r)
		fmt.Println(formatRun(r))
	}
	report := formatReport(o, m, results, loadStart, loadAvg())
	fmt.Println(report)
	if o.resultsDir != "" {
		dir := o.resultsDir
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(moduleRoot(), dir)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		path, err := writeResults(dir, time.Now().UTC().Format("2006-01-02")+"-"+m.Commit, report)
		if err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "wrote", path)
	}
	return nil
}

// writeResults writes report to dir/<name>.md, or to dir/<name>-2.md,
// -3.md and so on if that file exists, and returns the path written.
func writeResults(dir, name, report string) (string, error) {
	for i := 1; ; i++ {
		path := filepath.Join(dir, name+".md")
		if i > 1 {
			path = filepath.Join(dir, fmt.Sprintf("%s-%d.md", name, i))
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return "", err
		}
		if _, err := f.WriteString(report); err != nil {
			f.Close()
			return "", err
		}
		return path, f.Close()
	}
}

// postgresVersion is the server's version string, shortened.
func postgresVersion(ctx context.Context, dsn string) string {
	st, err := sqlstore.Open(ctx, dsn, sqlstore.WithMaxOpenConns(1))
	if err != nil {
		return "PostgreSQL (unknown version)"
	}
	defer st.Close()
	var v string
	if err := st.DB().GetContext(ctx, &v, "SELECT version()"); err != nil {
		return "PostgreSQL (unknown version)"
	}
	if i := strings.Index(v, " on "); i > 0 {
		v = v[:i]
	}
	return v
}

// moduleRoot is the directory of go.mod (the harness runs from anywhere
// inside the module).
func moduleRoot() string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" || strings.TrimSpace(string(out)) == os.DevNull {
		wd, _ := os.Getwd()
		return wd
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}
