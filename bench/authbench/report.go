package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
)

// luaScript is the wrk script: a session cookie per request, drawn at
// random from a token file, or in "seq" mode walked so that no session is
// used twice (each thread takes every threads-th token from offset).
// Arguments after "--": token file, mode, threads, offset. done() prints
// the figures as one JSON line.
const luaScript = `
local data, n
local mode = "random"
local nthreads = 1
local offset = 0
local counter = 0
local thread_count = 0

function setup(thread)
  thread:set("tid", thread_count)
  thread_count = thread_count + 1
end

-- The token file holds fixed-width records (40 characters and a newline):
-- read in one go, token i is a substring, so a million load in no time.
function init(args)
  local f = assert(io.open(args[1], "rb"))
  data = f:read("*a")
  f:close()
  n = math.floor(#data / 41)
  mode = args[2] or "random"
  nthreads = tonumber(args[3] or "1")
  offset = tonumber(args[4] or "0")
  math.randomseed(os.time() + (tid or 0) * 7919)
  wrk.headers["X-Forwarded-Host"] = "app.example.com"
  wrk.headers["X-Forwarded-Uri"] = "/dashboard"
  wrk.headers["X-Forwarded-Proto"] = "https"
end

function request()
  local i
  if mode == "seq" then
    i = (offset + counter * nthreads + tid) % n
    counter = counter + 1
  else
    i = math.random(0, n - 1)
  end
  wrk.headers["Cookie"] = "auth_session=" .. data:sub(i * 41 + 1, i * 41 + 40)
  return wrk.format()
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests":%d,"duration_us":%d,"errors_status":%d,"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
`

type machine struct {
	Commit, Date, CPU, Kernel, GoVersion, Postgres, Wrk string
	CPUs                                                int
	MemMB                                               int64
}

func (m machine) String() string {
	return fmt.Sprintf("%d × %s, %d MB RAM, %s, %s, wrk %s, commit %s", m.CPUs, m.CPU, m.MemMB, m.Kernel, m.GoVersion, m.Wrk, m.Commit)
}

func numCPU() int { return runtime.NumCPU() }

func machineInfo() machine {
	m := machine{Date: time.Now().UTC().Format(time.RFC3339), CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), CPU: "unknown"}
	if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(out))
		if out, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(out))) > 0 {
			m.Commit += "-dirty"
		}
	} else {
		m.Commit = "unknown"
	}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		for _, line := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(line, "MemTotal:") {
				fmt.Sscanf(strings.TrimPrefix(line, "MemTotal:"), "%d", &kb)
			}
		}
		m.MemMB = kb / 1024
	}
	if out, err := exec.Command("uname", "-sr").Output(); err == nil {
		m.Kernel = strings.TrimSpace(string(out))
	}
	// wrk --version exits with status 1 after printing its version.
	out, _ := exec.Command("wrk", "--version").CombinedOutput()
	if f := strings.Fields(string(out)); len(f) > 1 {
		m.Wrk = f[1]
	}
	return m
}

func ms(us float64) string { return fmt.Sprintf("%.2f ms", us/1000) }

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// med is the median over the rounds of f of target t.
func (r runResult) med(t string, f func(wrkResult) float64) float64 {
	var xs []float64
	for _, round := range r.Rounds {
		xs = append(xs, f(round[t]))
	}
	return median(xs)
}

// medRatio is the median over the rounds of f(a)/f(b), each ratio taken
// within one round.
func (r runResult) medRatio(a, b string, f func(wrkResult) float64) float64 {
	var xs []float64
	for _, round := range r.Rounds {
		xs = append(xs, ratio(f(round[a]), f(round[b])))
	}
	return median(xs)
}

func (r runResult) wrapped(t string) bool {
	for _, round := range r.Rounds {
		if round[t].Wrapped {
			return true
		}
	}
	return false
}

func rps(w wrkResult) float64 { return w.RPS() }
func p50(w wrkResult) float64 { return w.P50US }
func p99(w wrkResult) float64 { return w.P99US }
func cpu(w wrkResult) float64 { return w.CPUPerRequest() }

func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func formatRun(r runResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nN = %d sessions (%d users; seeded in %v); broker peak RSS %.1f MB; medians of %d rounds\n",
		r.N, r.Users, r.SeedTime.Round(time.Millisecond), float64(r.PeakRSSKB)/1024, len(r.Rounds))
	fmt.Fprintf(&b, "%-12s %10s %10s %10s %12s\n", "target", "req/s", "p50", "p99", "CPU µs/req")
	for _, t := range r.targets() {
		note := ""
		if r.wrapped(t) {
			note = "  (fewer sessions than requests: reused)"
		}
		fmt.Fprintf(&b, "%-12s %10.0f %10s %10s %12.1f%s\n", t, r.med(t, rps), ms(r.med(t, p50)), ms(r.med(t, p99)), r.med(t, cpu), note)
	}
	fmt.Fprintf(&b, "hot/bare %.2f  uniform/db-floor %.2f  cold/db-floor %.2f  hot p99/bare p99 %.2f  (hot/bare-headers %.2f, bare-headers/bare %.2f, hot/bare-lane %.2f)\n",
		r.medRatio(tHot, tBare, rps), r.medRatio(tUniform, tDBFloor, rps), r.medRatio(tCold, tDBFloor, rps), r.medRatio(tHot, tBare, p99),
		r.medRatio(tHot, tBareHdr, rps), r.medRatio(tBareHdr, tBare, rps), r.medRatio(tHot, tBareLn, rps))
	if len(r.targets()) > len(targets) {
		fmt.Fprintf(&b, "hot-compare/hot %.2f (CPU µs/req %.1f against %.1f)\n", r.medRatio(tHotCmp, tHot, rps), r.med(tHotCmp, cpu), r.med(tHot, cpu))
	}
	return b.String()
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

// formatReport is the results file: machine, settings, medians per N,
// the ratios against the targets, and every round's raw figures.
func formatReport(o options, m machine, rs []runResult, loadStart, loadEnd string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# /auth benchmark, %s\n\n", m.Date[:10])
	fmt.Fprintf(&b, "- Commit: `%s`, run %s (`go run ./bench/authbench %s`)\n", m.Commit, m.Date, strings.Join(os.Args[1:], " "))
	fmt.Fprintf(&b, "- Machine: %d × %s, %d MB RAM, %s; wrk, PostgreSQL, the broker and the reference servers share it. Load average at start %s, at end %s\n",
		m.CPUs, m.CPU, m.MemMB, m.Kernel, loadStart, loadEnd)
	fmt.Fprintf(&b, "- Go %s, wrk %s, %s\n", m.GoVersion, m.Wrk, m.Postgres)
	fmt.Fprintf(&b, "- wrk: %d connections, %d threads, a random session cookie per request; per N, %d interleaved rounds of every target (in the order bare, hot, bare-headers, bare-lane, db-floor, uniform, cold: each floor next to what is compared with it), each a %v warm-up and a %v measured run. Figures are medians over the rounds; ratios are taken within each round, then the median\n",
		o.connections, o.threads, o.rounds, o.warmup, o.duration)
	claims := "one claim (`role: user.attributes.role`, sent as `X-Auth-Claim-Role`)"
	if !o.claims {
		claims = "no claims"
	}
	seen := "with last_seen_at an hour after seeding, so that no last-seen write falls due during the run (the broker writes it at most every 5 minutes per session)"
	if o.staleLastSeen {
		seen = "last seen an hour before seeding: the first validation of each also writes its last-seen time (one UPDATE)"
	}
	broker := "built from this commit with default settings (session cache of 32,768 sessions, TTL 10 s)"
	if o.brokerGiven {
		broker = "the binary given with -broker (`" + o.brokerBin + "`)"
	}
	fmt.Fprintf(&b, "- Broker: %s, password sign-in on, %s; sessions seeded %s, %d per user\n", broker, claims, seen, o.sessionsPerUser)
	if o.compareBin != "" {
		fmt.Fprintf(&b, "- Compared with: the broker binary `%s`, measured as `hot-compare` on the same sessions right before or after `hot` (each goes first in every other round)\n", o.compareBin)
	}
	if o.note != "" {
		fmt.Fprintf(&b, "- Note: %s\n", o.note)
	}
	b.WriteString("\nTargets: `bare` = net/http handler answering 200 (HTTP floor); `bare-headers` = the same setting the headers /auth answers a hot session with (user id, email, one claim, Cache-Control) (a reference, not a target: what the headers cost net/http and wrk); `bare-lane` = the same handler on the broker's fast lane (internal/fastlane), which answers keep-alive GET /auth in the broker (a reference: the floor of the broker's own HTTP loop, so hot / bare-lane is what the broker's work costs on it); `db-floor` = handler doing one primary-key SELECT on sessions, sessions uniform over N (database floor); `hot` = /auth over a working set of the first 10,000 sessions; `uniform` = /auth, sessions uniform over all N; `cold` = /auth where every request carries a session the broker has not seen (a fresh broker each round). CPU µs/req is the server process's CPU time per request (the reference servers run in the harness process).\n\n")
	b.WriteString("| N | target | req/s | p50 | p99 | CPU µs/req |\n|---:|---|---:|---:|---:|---:|\n")
	for _, r := range rs {
		for _, t := range r.targets() {
			name := t
			if r.wrapped(t) {
				name += " (reused: N < requests)"
			}
			fmt.Fprintf(&b, "| %d | %s | %.0f | %s | %s | %.1f |\n", r.N, name, r.med(t, rps), ms(r.med(t, p50)), ms(r.med(t, p99)), r.med(t, cpu))
		}
	}
	b.WriteString("\n| N | hot / bare req/s (≥ 0.8) | uniform / db-floor req/s (≥ 0.8) | cold / db-floor req/s (≥ 0.8) | hot p99 / bare p99 (≤ 1.5) | cold p99 / db-floor p99 | CPU/req hot − bare | broker peak RSS (< 150 MB at 1M) | bare-headers / bare req/s | hot / bare-headers req/s | hot / bare-lane req/s |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rs {
		hb := r.medRatio(tHot, tBare, rps)
		ud := r.medRatio(tUniform, tDBFloor, rps)
		cd := r.medRatio(tCold, tDBFloor, rps)
		pp := r.medRatio(tHot, tBare, p99)
		cp := r.medRatio(tCold, tDBFloor, p99)
		extra := r.med(tHot, cpu) - r.med(tBare, cpu)
		rss := float64(r.PeakRSSKB) / 1024
		coldV := verdict(cd >= 0.8)
		if r.wrapped(tCold) {
			coldV = "n/a: N < requests"
		}
		fmt.Fprintf(&b, "| %d | %.2f (%s) | %.2f (%s) | %.2f (%s) | %.2f (%s) | %.2f | %+.1f µs | %.1f MB (%s) | %.2f | %.2f | %.2f |\n", r.N,
			hb, verdict(hb >= 0.8), ud, verdict(ud >= 0.8), cd, coldV, pp, verdict(pp <= 1.5), cp, extra,
			rss, verdict(rss < 150), r.medRatio(tBareHdr, tBare, rps), r.medRatio(tHot, tBareHdr, rps), r.medRatio(tHot, tBareLn, rps))
	}
	if o.compareBin != "" {
		b.WriteString("\n| N | hot-compare / hot req/s | hot-compare / bare req/s | CPU µs/req hot | CPU µs/req hot-compare | hot-compare / hot per round |\n|---:|---:|---:|---:|---:|---|\n")
		for _, r := range rs {
			var per []string
			for _, round := range r.Rounds {
				per = append(per, fmt.Sprintf("%.2f", ratio(round[tHotCmp].RPS(), round[tHot].RPS())))
			}
			fmt.Fprintf(&b, "| %d | %.2f | %.2f | %.1f | %.1f | %s |\n", r.N, r.medRatio(tHotCmp, tHot, rps), r.medRatio(tHotCmp, tBare, rps),
				r.med(tHot, cpu), r.med(tHotCmp, cpu), strings.Join(per, " "))
		}
	}
	if len(rs) > 1 {
		first, last := rs[0], rs[len(rs)-1]
		b.WriteString("\nFlatness (req/s at the largest N over the smallest): ")
		fmt.Fprintf(&b, "hot %d→%d: %.2f; ", first.N, last.N, ratio(last.med(tHot, rps), first.med(tHot, rps)))
		// Cold is only cold where N holds every request of the run.
		for i := range rs {
			if !rs[i].wrapped(tCold) && rs[i].N != last.N {
				fmt.Fprintf(&b, "cold %d→%d: %.2f; ", rs[i].N, last.N, ratio(last.med(tCold, rps), rs[i].med(tCold, rps)))
				break
			}
		}
		fmt.Fprintf(&b, "db-floor %d→%d: %.2f.\n", first.N, last.N, ratio(last.med(tDBFloor, rps), first.med(tDBFloor, rps)))
	}
	b.WriteString("\n<details><summary>Every round</summary>\n\n| N | round | target | req/s | p50 | p99 | max | CPU µs/req |\n|---:|---:|---|---:|---:|---:|---:|---:|\n")
	for _, r := range rs {
		for i, round := range r.Rounds {
			for _, t := range r.targets() {
				w := round[t]
				fmt.Fprintf(&b, "| %d | %d | %s | %.0f | %s | %s | %s | %.1f |\n", r.N, i+1, t, w.RPS(), ms(w.P50US), ms(w.P99US), ms(w.MaxUS), w.CPUPerRequest())
			}
		}
	}
	b.WriteString("\n</details>\n")
	return b.String()
}
