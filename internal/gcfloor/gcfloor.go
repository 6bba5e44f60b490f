// Package gcfloor keeps the Go collector from running often on a small
// heap, by raising GOGC while the live heap is small.
//
// With the default GOGC of 100 the collector runs each time the heap
// doubles, so a process that keeps 4 MB live and allocates a few kilobytes
// per request (net/http alone allocates about 2 KB for a request with a
// few headers) collects dozens of times a second, each time paying the
// fixed costs of a cycle. After each collection the tuner sets GOGC so that
// the next one is due when the heap reaches the floor: a heap goal of
// max(floor, 2 × live), never a GOGC below 100. A process whose live heap is
// above half the floor runs exactly as with the default.
package gcfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// MaxPercent bounds the GOGC the tuner sets, so that a live heap that
// grows fast between two collections cannot take the heap far past the
// floor.
const MaxPercent = 1000

// Percent is the GOGC that puts the next heap goal at floor for a live heap
// of live bytes, between 100 and [MaxPercent].
func Percent(live, floor uint64) int {
	if live == 0 {
		return MaxPercent
	}
	if floor <= 2*live {
		return 100
	}
	p := (floor - live) * 100 / live
	return int(min(p, MaxPercent))
}

// Tuner follows the live heap after each collection and sets GOGC.
type Tuner struct {
	before int // the GOGC found at Start, restored by Stop
	// tuned, when not nil, is called with each GOGC set (tests).
	tuned func(percent int)

	mu      sync.Mutex
	floor   uint64
	stopped bool
	last    int
}

// Start sets GOGC from the current live heap and again after every
// collection, until Stop. Call it once per process (GOGC is process-wide),
// and not when the operator set GOGC.
func Start(floor uint64) *Tuner {
	return start(floor, nil)
}

func start(floor uint64, tuned func(int)) *Tuner {
	t := &Tuner{floor: floor, tuned: tuned, before: debug.SetGCPercent(100)}
	debug.SetGCPercent(t.before)
	t.tune()
	t.arm()
	return t
}

// Stop stops tuning and restores the GOGC found at Start.
func (t *Tuner) Stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return
	}
	t.stopped = true
	debug.SetGCPercent(t.before)
}

// sentinel is allocated for each cycle; its cleanup runs after the
// collection that finds it unreachable. It holds a pointer so that it is
// not a tiny allocation (whose cleanups may never run).
type sentinel struct{ _ *byte }

func (t *Tuner) arm() {
	runtime.AddCleanup(new(sentinel), func(t *Tuner) {
		if t.tune() {
			t.arm()
		}
	}, t)
}

// tune sets GOGC for the live heap now and reports whether the tuner is
// still running.
func (t *Tuner) tune() bool {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	var live uint64
	if s[0].Value.Kind() == metrics.KindUint64 {
		live = s[0].Value.Uint64()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return false
	}
	p := Percent(live, t.floor)
	if p != t.last {
		debug.SetGCPercent(p)
		t.last = p
	}
	if t.tuned != nil {
		t.tuned(p)
	}
	return true
}
