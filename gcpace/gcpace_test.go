package gcpace

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"
)

func TestPercentFollowsTheAllocationRateWithinBounds(t *testing.T) {
	p := New()
	const mb = 1 << 20
	for _, c := range []struct {
		name string
		live uint64
		rate float64
		want int
	}{
		{"at rest a big heap keeps the minimum headroom", 300 * mb, 0, DefaultMinPercent},
		{"a slow trickle still gets the minimum", 10 * mb, 1 * mb, DefaultMinPercent},
		// 80 MB/s x 250 ms = 20 MB of headroom over 10 MB live: 200%.
		{"a write load gets a collection per interval", 10 * mb, 80 * mb, 200},
		{"a fast load is capped", 10 * mb, 1000 * mb, DefaultMaxPercent},
		// 300 MB live, 200 MB/s: 50 MB wanted, less than the minimum 150 MB.
		{"a big heap under load keeps the minimum ratio", 300 * mb, 200 * mb, DefaultMinPercent},
		{"nothing collected yet", 0, 0, DefaultMaxPercent},
	} {
		if got := p.Percent(c.live, c.rate); got != c.want {
			t.Errorf("%s: Percent(%d MB, %.0f MB/s) = %d, want %d", c.name, c.live/mb, c.rate/mb, got, c.want)
		}
	}
}

// fakeRuntime is a heap whose allocation the test drives.
type fakeRuntime struct {
	mu       sync.Mutex
	s        Sample
	sets     []int
	releases int
}

func (f *fakeRuntime) release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.releases++
}

func (f *fakeRuntime) released() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.releases
}

func (f *fakeRuntime) read() Sample {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.s
}

func (f *fakeRuntime) set(pct int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sets = append(f.sets, pct)
	return 0
}

func (f *fakeRuntime) alloc(n uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.s.Allocated += n
}

func (f *fakeRuntime) last() (int, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.sets) == 0 {
		return 0, 0
	}
	return f.sets[len(f.sets)-1], len(f.sets)
}

// TestRunRaisesUnderLoadAndFallsAtRest drives a fake heap: GOGC starts at
// the minimum, rises while allocation is fast, and returns to the minimum
// once it stops; the garbage is released once after the start and once
// after the burst, not on every quiet tick.
func TestRunRaisesUnderLoadAndFallsAtRest(t *testing.T) {
	// It holds far more than the goal at rest, so each release is due.
	f := &fakeRuntime{s: Sample{Live: 10 << 20, Held: 100 << 20}}
	p := New()
	p.Tick = 5 * time.Millisecond
	p.Settle = 50 * time.Millisecond
	p.ReleaseGap = 0
	p.read, p.set, p.release = f.read, f.set, f.release
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	defer func() { cancel(); <-done }()

	waitFor := func(what string, ok func(pct int) bool, during func()) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			if during != nil {
				during()
			}
			if pct, _ := f.last(); ok(pct) {
				return
			}
			if time.Now().After(deadline) {
				pct, n := f.last()
				t.Fatalf("%s: GOGC is %d after %d sets", what, pct, n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitFor("start", func(pct int) bool { return pct == DefaultMinPercent && f.released() == 1 }, nil)
	// 1 MB per 1 ms is far above what 400% of 10 MB covers.
	waitFor("under load", func(pct int) bool { return pct == DefaultMaxPercent }, func() { f.alloc(1 << 20) })
	if n := f.released(); n != 1 {
		t.Fatalf("released %d times before the burst ended, want 1 (after the start)", n)
	}
	waitFor("at rest", func(pct int) bool { return pct == DefaultMinPercent && f.released() == 2 }, nil)
	// Staying at rest releases nothing more.
	_, sets := f.last()
	for deadline := time.Now().Add(20 * p.Settle); time.Now().Before(deadline); {
		time.Sleep(p.Tick)
	}
	if n := f.released(); n != 2 {
		t.Fatalf("released %d times after resting for 20 settle periods, want 2", n)
	}
	if _, n := f.last(); n != sets {
		t.Fatalf("GOGC set %d more times at rest", n-sets)
	}
}

// TestRuntimeReaderReadsTheHeap reads the real runtime: allocation grows
// the total, and the live heap is known once a collection ran.
func TestRuntimeReaderReadsTheHeap(t *testing.T) {
	read := runtimeReader()
	runtime.GC() // the live heap is known from the first collection on
	a := read()
	sink = make([]byte, 1<<20)
	b := read()
	if b.Allocated < a.Allocated+1<<20 {
		t.Fatalf("allocated %d then %d after a 1 MiB allocation", a.Allocated, b.Allocated)
	}
	if b.Live == 0 {
		t.Fatal("live heap reads 0 after a collection")
	}
}

var sink []byte

// TestNoReleaseWhenTheHeapHoldsLittleMore: a release is a full collection,
// worth it only when the heap holds much more than the goal at rest; and
// releases are spaced by ReleaseGap.
func TestNoReleaseWhenTheHeapHoldsLittleMore(t *testing.T) {
	for _, c := range []struct {
		name     string
		held     uint64
		gap      time.Duration
		min, max int // the start may count as a burst of its own
	}{
		{"little more than the goal", 19 << 20, 0, 0, 0}, // goal at rest 15 MiB
		{"much more, after each burst", 100 << 20, 0, 2, 3},
		{"much more, within the gap", 100 << 20, time.Hour, 1, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := &fakeRuntime{s: Sample{Live: 10 << 20, Held: c.held}}
			p := New()
			p.Tick, p.Settle, p.ReleaseGap = 5*time.Millisecond, 20*time.Millisecond, c.gap
			p.read, p.set, p.release = f.read, f.set, f.release
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); p.Run(ctx) }()
			// Two bursts, each followed by a rest longer than Settle.
			for b := 0; b < 2; b++ {
				for deadline := time.Now().Add(50 * time.Millisecond); time.Now().Before(deadline); {
					f.alloc(1 << 20)
					time.Sleep(time.Millisecond)
				}
				waitRest := time.Now().Add(5 * time.Second)
				for {
					if pct, _ := f.last(); pct == DefaultMinPercent {
						break
					}
					if time.Now().After(waitRest) {
						t.Fatal("GOGC never came back to the minimum")
					}
					time.Sleep(time.Millisecond)
				}
				time.Sleep(10 * p.Settle)
			}
			cancel()
			<-done
			if got := f.released(); got < c.min || got > c.max {
				t.Fatalf("released %d times, want %d to %d", got, c.min, c.max)
			}
		})
	}
}
