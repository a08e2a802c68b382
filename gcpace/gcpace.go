// Package gcpace sets the garbage collector's target (GOGC) from the live
// heap and the allocation rate, so that a node holds garbage headroom only
// while that headroom saves CPU.
//
// # Invariant
//
// After each adjustment the heap goal is live + headroom, where
//
//	headroom = max(MinPercent% of live, allocation rate × Interval),
//	           at most MaxPercent% of live
//
// (Go's own minimum heap goal of 4 MB × GOGC/100 still applies below). So a
// node under a write load collects at most about once per Interval, as a
// fixed high GOGC would let it, while a node at rest, however many watchers
// it holds, keeps at most MinPercent% of its live heap as garbage, as a low
// GOGC would. A fixed GOGC has to pick one of the two: GOGC 400 spent up to
// 4 bytes of garbage per live byte held by watchers, GOGC 50 spent a third
// more CPU per write in the collector.
package gcpace

import (
	"context"
	"math"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Defaults of Pacer.
const (
	// DefaultMinPercent is the GOGC at rest: the heap may exceed the live
	// heap by half before a collection.
	DefaultMinPercent = 50
	// DefaultMaxPercent caps GOGC under load: the heap never exceeds five
	// times the live heap.
	DefaultMaxPercent = 400
	// DefaultInterval is the least time between collections that the
	// headroom is sized for under load.
	DefaultInterval = 250 * time.Millisecond
	// DefaultTick is how often the live heap and allocation rate are read.
	DefaultTick = 100 * time.Millisecond
	// DefaultSettle is how long allocation must stay slow after a burst
	// before the burst's garbage is collected and its pages returned.
	DefaultSettle = time.Second
	// ReleaseSlack is how much more heap than the goal at rest a node may
	// hold, beyond a quarter of that goal, before a release is worth a full
	// collection.
	ReleaseSlack = 1 << 20
	// DefaultReleaseGap is the least time between two releases, so bursty
	// load on a large heap does not pay a full collection per burst.
	DefaultReleaseGap = 10 * time.Second
)

// Sample is one reading of the runtime's heap.
type Sample struct {
	// Live is the heap that survived the last collection, in bytes.
	Live uint64
	// Allocated is the total bytes ever allocated on the heap.
	Allocated uint64
	// Held is the heap memory not returned to the operating system:
	// objects (live or garbage) and free or unused heap space.
	Held uint64
}

// Pacer adjusts GOGC every Tick. Create one with New and run it with Run.
type Pacer struct {
	MinPercent, MaxPercent             int
	Interval, Tick, Settle, ReleaseGap time.Duration

	// read, set and release are the runtime by default; tests replace
	// them.
	read    func() Sample
	set     func(percent int) int
	release func()
}

// New returns a Pacer with the defaults, reading and setting the runtime's
// own figures.
func New() *Pacer {
	return &Pacer{
		MinPercent: DefaultMinPercent,
		MaxPercent: DefaultMaxPercent,
		Interval:   DefaultInterval,
		Tick:       DefaultTick,
		Settle:     DefaultSettle,
		ReleaseGap: DefaultReleaseGap,
		read:       runtimeReader(),
		set:        debug.SetGCPercent,
		release:    debug.FreeOSMemory,
	}
}

// Percent returns the GOGC that gives a heap of live bytes, allocated at
// rate bytes per second, the headroom of the package invariant.
func (p *Pacer) Percent(live uint64, rate float64) int {
	if live == 0 {
		return p.MaxPercent
	}
	want := rate * p.Interval.Seconds() / float64(live) * 100
	pct := int(math.Ceil(want))
	return min(max(pct, p.MinPercent), p.MaxPercent)
}

// Run adjusts GOGC until ctx ends, and leaves it where it last set it. It
// sets GOGC once at the start (to MinPercent: nothing is known of the rate
// yet) and afterwards only when the wanted value moved by more than a
// tenth or reached a bound, so a steady load does not call into the
// runtime every Tick.
//
// Lowering GOGC lowers the heap goal, but the garbage already allocated
// stays until the next collection, which a node at rest may not reach for
// minutes. So once the allocation rate has wanted no more than MinPercent
// for Settle after a burst (and once after the start, which is one), Run
// collects and returns the free pages to the operating system, if the
// heap it holds exceeds the goal at rest by a quarter plus ReleaseSlack
// (on a large heap the collection is costly, the gain small): one collection
// per burst, at most one per ReleaseGap, at a time when nothing else needs
// the CPU.
func (p *Pacer) Run(ctx context.Context) {
	p.withDefaults()
	t := time.NewTicker(p.Tick)
	defer t.Stop()
	last := p.read()
	lastAt := time.Now()
	cur := p.MinPercent
	p.set(cur)
	// rate is smoothed over about a second, but follows a rise at once: a
	// burst of allocation should not wait a second for its headroom.
	var rate float64
	settleTicks := int(p.Settle / p.Tick)
	burst, quiet := true, 0
	var released time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s := p.read()
			dt := now.Sub(lastAt).Seconds()
			if dt <= 0 || s.Allocated < last.Allocated {
				last, lastAt = s, now
				continue
			}
			r := float64(s.Allocated-last.Allocated) / dt
			last, lastAt = s, now
			const decay = 0.9 // per tick: ~1 s time constant at 100 ms
			rate = max(r, rate*decay+r*(1-decay))
			want := p.Percent(s.Live, rate)
			if want > p.MinPercent {
				burst, quiet = true, 0
			} else if burst {
				if quiet++; quiet >= settleTicks {
					burst, quiet = false, 0
					atRest := s.Live + s.Live*uint64(p.MinPercent)/100
					if s.Held > atRest+atRest/4+ReleaseSlack && now.Sub(released) >= p.ReleaseGap {
						released = now
						p.release()
					}
				}
			}
			if want != cur && (want == p.MinPercent || want == p.MaxPercent || changedEnough(cur, want)) {
				cur = want
				p.set(cur)
			}
		}
	}
}

// withDefaults gives every field left at zero (or below) its default.
func (p *Pacer) withDefaults() {
	d := New()
	if p.MinPercent <= 0 {
		p.MinPercent = d.MinPercent
	}
	if p.MaxPercent < p.MinPercent {
		p.MaxPercent = max(d.MaxPercent, p.MinPercent)
	}
	if p.Interval <= 0 {
		p.Interval = d.Interval
	}
	if p.Tick <= 0 {
		p.Tick = d.Tick
	}
	if p.Settle <= 0 {
		p.Settle = d.Settle
	}
	if p.ReleaseGap < 0 {
		p.ReleaseGap = 0
	}
	if p.read == nil {
		p.read, p.set, p.release = d.read, d.set, d.release
	}
}

// changedEnough reports whether want differs from cur by more than a
// tenth of cur.
func changedEnough(cur, want int) bool {
	d := want - cur
	if d < 0 {
		d = -d
	}
	return d*10 > cur
}

// runtimeReader returns a reader of the runtime's figures; it reuses its
// samples, so it is for one goroutine.
func runtimeReader() func() Sample {
	s := []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/gc/heap/allocs:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
	}
	return func() Sample {
		metrics.Read(s)
		return toSample(s)
	}
}

func toSample(s []metrics.Sample) Sample {
	v := func(i int) uint64 {
		if s[i].Value.Kind() == metrics.KindUint64 {
			return s[i].Value.Uint64()
		}
		return 0
	}
	return Sample{Live: v(0), Allocated: v(1), Held: v(2) + v(3) + v(4)}
}
