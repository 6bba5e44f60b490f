package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A second run of the same commit on the same day gets its own file; the
// first run's figures stay.
func TestWriteResultsNeverOverwrites(t *testing.T) {
	dir := t.TempDir()
	for i, want := range []string{"d-c.md", "d-c-2.md", "d-c-3.md"} {
		report := "run " + want
		path, err := writeResults(dir, "d-c", report)
		if err != nil {
			t.Fatalf("run %d: %v", i+1, err)
		}
		if path != filepath.Join(dir, want) {
			t.Fatalf("run %d wrote %s, want %s", i+1, path, want)
		}
	}
	for _, name := range []string{"d-c.md", "d-c-2.md", "d-c-3.md"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != "run "+name {
			t.Errorf("%s holds %q", name, b)
		}
	}
}

// With -compare, the report has hot-compare in every table and its ratio
// to hot, per round and as a median; without, none of it.
func TestReportCompare(t *testing.T) {
	round := func(hot, cmp int64) map[string]wrkResult {
		m := map[string]wrkResult{}
		for _, tg := range targets {
			m[tg] = wrkResult{Requests: 1000, DurationUS: 1e6, CPUUS: 10000}
		}
		m[tHot] = wrkResult{Requests: hot, DurationUS: 1e6, CPUUS: float64(hot * 15)}
		m[tHotCmp] = wrkResult{Requests: cmp, DurationUS: 1e6, CPUUS: float64(cmp * 12)}
		return m
	}
	r := runResult{N: 1000, Users: 250, Rounds: []map[string]wrkResult{round(800, 880), round(800, 840), round(800, 960)}}
	m := machine{Date: "2026-12-07T00:00:00Z", Commit: "c"}
	report := formatReport(options{compareBin: "/tmp/other", rounds: 3}, m, []runResult{r}, "", "")
	for _, want := range []string{
		"- Compared with: the broker binary `/tmp/other`",
		"| 1000 | hot-compare | 880 |",
		"| 1000 | 1.10 | 0.88 | 15.0 | 12.0 | 1.10 1.05 1.20 |",
		"| 1000 | 3 | hot-compare | 960 |",
		"| bare-headers / bare req/s | hot / bare-headers req/s | hot / bare-lane req/s |",
		"| 1000 | bare-lane | 1000 |",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	if run := formatRun(r); !strings.Contains(run, "hot-compare/hot 1.10 (CPU µs/req 12.0 against 15.0)") {
		t.Errorf("run summary lacks the comparison:\n%s", run)
	}

	for _, round := range r.Rounds {
		delete(round, tHotCmp)
	}
	report = formatReport(options{rounds: 3}, m, []runResult{r}, "", "")
	if strings.Contains(report, "hot-compare") {
		t.Errorf("report without -compare mentions hot-compare:\n%s", report)
	}
}
