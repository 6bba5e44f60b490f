package gcfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
)

func TestPercent(t *testing.T) {
	const mb = 1 << 20
	for _, c := range []struct {
		live, floor uint64
		want        int
	}{
		{0, 64 * mb, MaxPercent}, // before the first collection
		{4 * mb, 64 * mb, 1000},  // 1500 would reach the floor: bounded
		{8 * mb, 64 * mb, 700},   // next goal 8 × 8 = 64
		{6 * mb, 64 * mb, 966},   // rounded down: the goal stays under the floor
		{30 * mb, 64 * mb, 113},  // 30 × 2.13 ≈ 64
		{32 * mb, 64 * mb, 100},  // the default from half the floor up
		{100 * mb, 64 * mb, 100}, // never below the default
		{mb, 0, 100},             // no floor
		{20 * mb, 100 * mb, 400},
	} {
		if got := Percent(c.live, c.floor); got != c.want {
			t.Errorf("Percent(%d, %d) = %d, want %d", c.live, c.floor, got, c.want)
		}
	}
}

func gogc() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}

func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// After every collection the tuner sets GOGC from the live heap; Stop puts
// back what it found.
func TestTunerFollowsCollections(t *testing.T) {
	before := debug.SetGCPercent(100)
	defer debug.SetGCPercent(before)

	tuned := make(chan int, 16)
	// A floor far above this test's heap: GOGC goes to the bound.
	tn := start(1<<40, func(p int) {
		select {
		case tuned <- p:
		default:
		}
	})
	if p := <-tuned; p != MaxPercent || gogc() != MaxPercent {
		t.Fatalf("at start: tuned %d, GOGC %d; want %d", p, gogc(), MaxPercent)
	}
	runtime.GC()
	if p := <-tuned; p != MaxPercent {
		t.Fatalf("after a collection: tuned %d, want %d", p, MaxPercent)
	}

	// A floor under the live heap: the default. The tuner reads the floor
	// on each collection, so change it under its lock.
	tn.mu.Lock()
	tn.floor = 1
	tn.mu.Unlock()
	runtime.GC()
	for p := range tuned {
		if p == 100 {
			break
		}
	}
	if g := gogc(); g != 100 {
		t.Fatalf("floor below the live heap (%d bytes): GOGC %d, want 100", liveHeap(), g)
	}

	tn.mu.Lock()
	tn.floor = 1 << 40
	tn.mu.Unlock()
	runtime.GC()
	for p := range tuned {
		if p == MaxPercent {
			break
		}
	}
	tn.Stop()
	if g := gogc(); g != 100 {
		t.Fatalf("after Stop: GOGC %d, want the 100 found at Start", g)
	}
	// Stopped: collections no longer tune.
	for len(tuned) > 0 {
		<-tuned
	}
	runtime.GC()
	runtime.GC()
	if g := gogc(); g != 100 {
		t.Fatalf("a collection after Stop: GOGC %d, want 100", g)
	}
}
