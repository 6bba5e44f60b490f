package e2e

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/brokerauth/broker/bench/soak/loadgen"
	"github.com/brokerauth/broker/storage/sqlstore"
	"github.com/brokerauth/broker/storage/storagetest"
)

// TestSoak is the 30-second CI version of `go run ./bench/soak`: the same
// mixed load of logins, validations and logouts against the real binary on
// PostgreSQL, sampled every second. It fails on any unexpected answer, and
// when goroutines, pool connections or PostgreSQL backends end above twice
// their value after a 5 s warm-up plus 20 (growth without bound); the
// flatness verdict of the long soak is logged.
func TestSoak(t *testing.T) {
	t.Parallel()
	const (
		duration = 30 * time.Second
		warmup   = 5 * time.Second
	)
	pgURL, schema := storagetest.PostgresSchema(t)
	admin, err := sqlstore.Open(t.Context(), pgURL, sqlstore.WithSchema(schema), sqlstore.WithMaxOpenConns(1))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if err := admin.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	appName := "broker-" + strings.ReplaceAll(schema, "_", "-")
	u, err := url.Parse(pgURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	q.Set("application_name", appName)
	u.RawQuery = q.Encode()

	gh := loadgen.NewGitHub(200)
	t.Cleanup(gh.Close)
	listen := freePort(t)
	b := startBroker(t, listen, loadgen.Config(listen, u.String(), gh, secret(), secret()))

	stats := &loadgen.Stats{}
	sampler := &loadgen.Sampler{
		PID: b.cmd.Process.Pid, MetricsURL: b.URL + "/metrics", Stats: stats,
		Backends: func(ctx context.Context) (n int, err error) {
			err = admin.DB().GetContext(ctx, &n, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", appName)
			return n, err
		},
	}
	ctx, cancel := context.WithTimeout(t.Context(), duration)
	defer cancel()
	done := make(chan struct{})
	sampler.Start = time.Now()
	go func() {
		defer close(done)
		// Few workers: the suite's other tests run beside it.
		loadgen.Run(ctx, loadgen.Options{BaseURL: b.URL, Workers: 4}, stats)
	}()

	var table strings.Builder
	loadgen.WriteHeader(&table)
	var samples []loadgen.Sample
	tick := time.NewTicker(time.Second) // the sampling period, not a synchronisation
	defer tick.Stop()
sampling:
	for {
		select {
		case <-done:
			break sampling
		case <-b.done:
			t.Fatalf("the broker exited during the soak")
		case <-tick.C:
			sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
			s, err := sampler.Sample(sctx)
			scancel()
			if err != nil {
				cancel()
				<-done
				t.Fatalf("sample: %v", err)
			}
			var prev *loadgen.Sample
			if len(samples) > 0 {
				prev = &samples[len(samples)-1]
			}
			loadgen.WriteRow(&table, s, prev)
			samples = append(samples, s)
		}
	}
	t.Logf("soak for %v: requests %d, logins %d, validations %d, logouts %d\n%s",
		duration, stats.Requests.Load(), stats.Logins.Load(), stats.Validations.Load(), stats.Logouts.Load(), table.String())
	for _, tr := range loadgen.Verdict(samples, 0.2) {
		t.Log(tr)
	}
	if n := stats.Unexpected.Load(); n > 0 {
		t.Errorf("%d unexpected answers; first ones:\n%s", n, strings.Join(stats.Problems(), "\n"))
	}
	if stats.Logins.Load() == 0 || stats.Validations.Load() == 0 {
		t.Errorf("the load did nothing")
	}
	for _, g := range loadgen.Bounded(samples, warmup) {
		t.Errorf("growth without bound: %s", g)
	}
	for _, bad := range []string{"DATA RACE", "panic:", `"msg":"panic"`} {
		if strings.Contains(b.logs.String(), bad) {
			t.Errorf("broker log contains %q", bad)
		}
	}
}
