// Command soak runs the broker under a mixed load of GitHub logins (through
// a fake GitHub), session validations (/auth, /session, unknown and missing
// cookies) and logouts for a while, and reports over time the broker's
// resident memory, goroutines, open database connections (its pool, from
// /metrics) and PostgreSQL backends (pg_stat_activity), then a verdict:
// flat, or growing. It is not run in CI (e2e TestSoak is its 30-second
// version there).
//
//	go run ./bench/soak -duration 10m
//
// It builds the broker (or uses -broker), runs it on a fresh schema of the
// PostgreSQL database BROKER_TEST_DATABASE_URL (default
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable), which it drops
// at the end, and exits 1 when a measure grew or the broker gave an
// unexpected answer. Ctrl-C ends the load early and still reports.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/lib/pq"

	"github.com/brokerauth/broker/bench/soak/loadgen"
	"github.com/brokerauth/broker/storage/sqlstore"
	"github.com/brokerauth/broker/storage/storagetest"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

func run() error {
	duration := flag.Duration("duration", 10*time.Minute, "how long to run the load")
	interval := flag.Duration("interval", 10*time.Second, "time between two samples")
	workers := flag.Int("workers", 8, "concurrent clients")
	loginEvery := flag.Int("login-every", 5, "one iteration in N is a login, the others validations")
	users := flag.Int("users", 1000, "distinct GitHub accounts the logins rotate over")
	tolerance := flag.Float64("tolerance", 0.2, "growth of a measure's peak from the first to the last third that still counts as flat (plus a small absolute slack)")
	dbURL := flag.String("database", envOr("BROKER_TEST_DATABASE_URL", storagetest.DefaultPostgresURL), "PostgreSQL URL; a fresh schema is created in it")
	brokerBin := flag.String("broker", "", "broker binary to run (default: build ./cmd/broker)")
	race := flag.Bool("race", false, "build the broker with -race")
	keep := flag.Bool("keep", false, "keep the schema and the working directory")
	flag.Parse()
	if *interval <= 0 || *duration <= 0 {
		return errors.New("-duration and -interval must be positive")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	dir, err := os.MkdirTemp("", "broker-soak-")
	if err != nil {
		return err
	}
	if !*keep {
		defer os.RemoveAll(dir)
	}
	if *brokerBin == "" {
		if *brokerBin, err = build(dir, *race); err != nil {
			return err
		}
	}

	// A fresh schema, and a connection of our own to count backends.
	suffix := randomHex(6)
	schema, appName := "soak_"+suffix, "broker-soak-"+suffix
	admin, err := sqlstore.Open(ctx, *dbURL, sqlstore.WithSchema(schema), sqlstore.WithMaxOpenConns(2))
	if err != nil {
		return fmt.Errorf("database: %w", err)
	}
	defer admin.Close()
	if err := admin.Migrate(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if !*keep {
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := admin.DB().ExecContext(ctx, "DROP SCHEMA "+pq.QuoteIdentifier(schema)+" CASCADE"); err != nil {
				fmt.Fprintln(os.Stderr, "soak: drop schema:", err)
			}
		}()
	}
	u, err := url.Parse(*dbURL)
	if err != nil {
		return err
	}
	q := u.Query()
	q.Set("search_path", schema)
	q.Set("application_name", appName)
	u.RawQuery = q.Encode()

	gh := loadgen.NewGitHub(*users)
	defer gh.Close()
	listen, err := freePort()
	if err != nil {
		return err
	}
	cfg := filepath.Join(dir, "broker.yaml")
	if err := os.WriteFile(cfg, []byte(loadgen.Config(listen, u.String(), gh, loadgen.NewKey(), loadgen.NewKey())), 0o600); err != nil {
		return err
	}
	logPath := filepath.Join(dir, "broker.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(*brokerBin, "serve", "--config", cfg)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	base := "http://" + listen
	if err := waitHealthy(ctx, base, exited); err != nil {
		return fmt.Errorf("%w (log: %s)", err, logPath)
	}

	stats := &loadgen.Stats{}
	sampler := &loadgen.Sampler{
		PID: cmd.Process.Pid, MetricsURL: base + "/metrics", Stats: stats,
		Backends: func(ctx context.Context) (n int, err error) {
			err = admin.DB().GetContext(ctx, &n, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", appName)
			return n, err
		},
	}
	fmt.Printf("soak: broker pid %d on %s, schema %s (application_name %s), %d workers for %v, a sample every %v\n\n",
		cmd.Process.Pid, base, schema, appName, *workers, *duration, *interval)
	loadCtx, stopLoad := context.WithTimeout(ctx, *duration)
	defer stopLoad()
	sampler.Start = time.Now()
	done := make(chan struct{})
	go func() {
		loadgen.Run(loadCtx, loadgen.Options{BaseURL: base, Workers: *workers, LoginEvery: *loginEvery}, stats)
		close(done)
	}()

	loadgen.WriteHeader(os.Stdout)
	var samples []loadgen.Sample
	tick := time.NewTicker(*interval)
	defer tick.Stop()
	var sampleErr error
	take := func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := sampler.Sample(sctx)
		if err != nil {
			sampleErr = err
			return
		}
		var prev *loadgen.Sample
		if len(samples) > 0 {
			prev = &samples[len(samples)-1]
		}
		loadgen.WriteRow(os.Stdout, s, prev)
		samples = append(samples, s)
	}
loop:
	for sampleErr == nil {
		select {
		case <-tick.C:
			take()
		case <-done:
			break loop
		case err := <-exited:
			return fmt.Errorf("the broker exited during the soak: %v (log: %s)", err, logPath)
		}
	}
	stopLoad()
	<-done
	if sampleErr != nil {
		return fmt.Errorf("sample: %w", sampleErr)
	}

	fmt.Printf("\nrequests %d, logins %d, validations %d, logouts %d, unexpected answers %d\n",
		stats.Requests.Load(), stats.Logins.Load(), stats.Validations.Load(), stats.Logouts.Load(), stats.Unexpected.Load())
	for _, p := range stats.Problems() {
		fmt.Println("  unexpected:", p)
	}
	trends := loadgen.Verdict(samples, *tolerance)
	growing := false
	for _, t := range trends {
		growing = growing || t.Growing
	}
	switch {
	case trends == nil:
		fmt.Println("verdict: not enough samples (run longer or sample more often)")
	case growing:
		fmt.Println("verdict: GROWING")
	default:
		fmt.Println("verdict: flat")
	}
	for _, t := range trends {
		fmt.Println("  " + t.String())
	}
	if growing || stats.Unexpected.Load() > 0 || trends == nil {
		return fmt.Errorf("the soak failed (broker log: %s)", logPath)
	}
	return nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// build compiles ./cmd/broker of this module into dir.
func build(dir string, race bool) (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	bin := filepath.Join(dir, "broker")
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "./cmd/broker")...)
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build the broker: %w", err)
	}
	return bin, nil
}

// waitHealthy polls /healthz until the broker answers.
func waitHealthy(ctx context.Context, base string, exited <-chan error) error {
	deadline := time.After(60 * time.Second)
	for {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-exited:
			return fmt.Errorf("the broker exited at start: %v", err)
		case <-deadline:
			return errors.New("the broker did not start within 60s")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond): // polling a process we started
		}
	}
}
