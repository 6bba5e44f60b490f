package loadgen

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// Sample is one measurement of the broker.
type Sample struct {
	At         time.Duration // since the load started
	RSS        int64         // resident set size in bytes (/proc/<pid>/status VmRSS)
	Goroutines int           // go_goroutines
	OpenConns  int           // go_sql_open_connections{db_name="broker"}: the pool's connections
	InUse      int           // go_sql_in_use_connections{db_name="broker"}
	Backends   int           // PostgreSQL backends of the broker; -1 when not measured
	Requests   int64         // requests sent by the load so far
	Logins     int64         // logins completed so far
}

// Sampler measures a running broker.
type Sampler struct {
	// PID is the broker's process id.
	PID int
	// MetricsURL is the broker's /metrics (on the main listener it answers
	// loopback clients only).
	MetricsURL string
	// Backends, when set, counts the broker's PostgreSQL backends (e.g. in
	// pg_stat_activity by application_name).
	Backends func(ctx context.Context) (int, error)
	// Stats, when set, fills Requests and Logins.
	Stats *Stats
	// Start is when the load started (At is measured from it).
	Start time.Time
}

// Sample takes one measurement.
func (s *Sampler) Sample(ctx context.Context) (Sample, error) {
	out := Sample{At: time.Since(s.Start), Backends: -1}
	rss, err := rssOf(s.PID)
	if err != nil {
		return out, err
	}
	out.RSS = rss
	m, err := scrape(ctx, s.MetricsURL)
	if err != nil {
		return out, err
	}
	g, ok := m["go_goroutines"]
	if !ok {
		return out, fmt.Errorf("%s: no go_goroutines", s.MetricsURL)
	}
	open, ok := m[`go_sql_open_connections{db_name="broker"}`]
	if !ok {
		return out, fmt.Errorf("%s: no go_sql_open_connections", s.MetricsURL)
	}
	out.Goroutines, out.OpenConns = int(g), int(open)
	out.InUse = int(m[`go_sql_in_use_connections{db_name="broker"}`])
	if s.Backends != nil {
		if out.Backends, err = s.Backends(ctx); err != nil {
			return out, fmt.Errorf("count backends: %w", err)
		}
	}
	if s.Stats != nil {
		out.Requests, out.Logins = s.Stats.Requests.Load(), s.Stats.Logins.Load()
	}
	return out, nil
}

// rssOf reads VmRSS of pid, in bytes.
func rssOf(pid int) (int64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for process %d", pid)
}

// scrape reads the samples of a Prometheus text exposition, keyed by
// name{labels} as written.
func scrape(ctx context.Context, url string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("GET %s = %d: %s", url, resp.StatusCode, b)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}

// WriteHeader writes the column titles of [WriteRow].
func WriteHeader(w io.Writer) {
	fmt.Fprintf(w, "%8s %9s %8s %9s %11s %8s %10s %12s\n",
		"time", "req/s", "logins", "RSS MiB", "goroutines", "db open", "db in use", "pg backends")
}

// WriteRow writes s as a table row; prev (nil for the first) gives the
// request rate.
func WriteRow(w io.Writer, s Sample, prev *Sample) {
	rate := 0.0
	if prev != nil && s.At > prev.At {
		rate = float64(s.Requests-prev.Requests) / (s.At - prev.At).Seconds()
	} else if s.At > 0 {
		rate = float64(s.Requests) / s.At.Seconds()
	}
	backends := "-"
	if s.Backends >= 0 {
		backends = strconv.Itoa(s.Backends)
	}
	fmt.Fprintf(w, "%8s %9.1f %8d %9.1f %11d %8d %10d %12s\n",
		s.At.Round(time.Second), rate, s.Logins, float64(s.RSS)/(1<<20), s.Goroutines, s.OpenConns, s.InUse, backends)
}

// Trend compares a measure's first third with its last third.
type Trend struct {
	Name        string
	First, Last float64 // the maximum over the first and the last third
	Limit       float64 // Last above it is growth
	Growing     bool
}

func (t Trend) String() string {
	verdict := "flat"
	if t.Growing {
		verdict = "GROWING"
	}
	return fmt.Sprintf("%-12s first third max %8.1f, last third max %8.1f (limit %8.1f): %s", t.Name, t.First, t.Last, t.Limit, verdict)
}

// Verdict tells, for RSS, goroutines and connections, whether the last
// third of samples peaks higher than the first third by more than
// tolerance (a fraction) plus a small absolute slack for noise. Flat is
// the goal. It needs at least 3 samples.
func Verdict(samples []Sample, tolerance float64) []Trend {
	if len(samples) < 3 {
		return nil
	}
	third := len(samples) / 3
	first, last := samples[:third], samples[len(samples)-third:]
	measures := []struct {
		name  string
		slack float64
		get   func(Sample) float64
	}{
		{"RSS MiB", 16, func(s Sample) float64 { return float64(s.RSS) / (1 << 20) }},
		{"goroutines", 10, func(s Sample) float64 { return float64(s.Goroutines) }},
		{"db open", 2, func(s Sample) float64 { return float64(s.OpenConns) }},
		{"pg backends", 2, func(s Sample) float64 { return float64(s.Backends) }},
	}
	var out []Trend
	for _, m := range measures {
		if m.name == "pg backends" && samples[0].Backends < 0 {
			continue
		}
		t := Trend{Name: m.name, First: peak(first, m.get), Last: peak(last, m.get)}
		t.Limit = t.First*(1+tolerance) + m.slack
		t.Growing = t.Last > t.Limit
		out = append(out, t)
	}
	return out
}

func peak(ss []Sample, get func(Sample) float64) float64 {
	m := get(ss[0])
	for _, s := range ss[1:] {
		m = max(m, get(s))
	}
	return m
}

// Bounded checks the CI criterion: after warm-up, goroutines, pool
// connections and PostgreSQL backends end at most at 2× their value at the
// end of warm-up plus 20. It returns what grew.
func Bounded(samples []Sample, warmup time.Duration) []string {
	var warm *Sample
	for i := range samples {
		if samples[i].At >= warmup {
			warm = &samples[i]
			break
		}
	}
	if warm == nil || warm == &samples[len(samples)-1] {
		return []string{fmt.Sprintf("not enough samples after the %v warm-up", warmup)}
	}
	final := samples[len(samples)-1]
	var out []string
	check := func(name string, w, f int) {
		if w >= 0 && f > 2*w+20 {
			out = append(out, fmt.Sprintf("%s grew from %d after warm-up to %d", name, w, f))
		}
	}
	check("goroutines", warm.Goroutines, final.Goroutines)
	check("db open connections", warm.OpenConns, final.OpenConns)
	check("pg backends", warm.Backends, final.Backends)
	return out
}
