package watch

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"testing"
)

// benchBufferSize: the measured watchers are taken from after every batch;
// the bound does not enter the measured path.
const benchBufferSize = 64

// benchSetup returns a registry and dispatcher over an empty history; the
// benchmarks call deliver directly to measure the delivery path, not the
// goroutine hand-off of Publish (BenchmarkPublishToWatcher measures that).
func benchSetup(b *testing.B, cfg Config) (*Registry, *Dispatcher, *memHistory) {
	b.Helper()
	if cfg.BufferSize == 0 {
		cfg.BufferSize = benchBufferSize
	}
	cfg.MaxWatchers = 1 << 20
	cfg.MaxWatchersPerClient = 1 << 20 // every benchmark stream is one Client
	cfg.Logger = slog.New(slog.DiscardHandler)
	hist := newMemHistory()
	r := NewRegistry(cfg, hist, 0)
	return r, NewDispatcher(r, hist, cfg), hist
}

func benchRegister(b *testing.B, s *Stream, key string, o Options) *Watcher {
	w, err := s.Register([]byte(key), o)
	if err != nil {
		b.Fatal(err)
	}
	return w
}

// BenchmarkDispatchPrefix delivers one event per op to the one matching
// prefix watcher while n watchers are registered on other prefixes: the cost
// per event must not grow with n (it is O(depth of the key) map lookups).
func BenchmarkDispatchPrefix(b *testing.B) {
	for _, n := range []int{1, 1000, 100000} {
		b.Run(fmt.Sprintf("watchers=%d", n), func(b *testing.B) {
			r, d, _ := benchSetup(b, Config{})
			others := r.NewStream()
			for i := range n {
				benchRegister(b, others, fmt.Sprintf("/other/%d/", i), Options{Prefix: true})
			}
			s := r.NewStream()
			benchRegister(b, s, "/bench/", Options{Prefix: true})
			batch := Batch{Events: []Event{{Type: Put, Key: []byte("/bench/app/db/host"), Value: []byte("value")}}}
			var buf []Event
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				rev := uint64(i + 1)
				batch.Index, batch.Events[0].Revision = rev, rev
				d.deliver(&batch)
				buf = s.Take(buf)
				if len(buf) != 1 || buf[0].Revision != rev {
					b.Fatalf("took %d events, want PUT@%d", len(buf), rev)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/event")
		})
	}
}

// BenchmarkDispatchStreamFanout delivers one event per op to 1000 watchers
// of its prefix sharing one Stream; ns/event is per event queued for a
// watcher, the consumer's Take included.
func BenchmarkDispatchStreamFanout(b *testing.B) {
	const fanout = 1000
	r, d, _ := benchSetup(b, Config{})
	s := r.NewStream()
	for range fanout {
		benchRegister(b, s, "/bench/", Options{Prefix: true})
	}
	batch := Batch{Events: []Event{{Type: Put, Key: []byte("/bench/key"), Value: []byte("value")}}}
	var buf []Event
	delivered := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		rev := uint64(i + 1)
		batch.Index, batch.Events[0].Revision = rev, rev
		d.deliver(&batch)
		buf = s.Take(buf)
		if len(buf) != fanout || buf[fanout-1].Revision != rev {
			b.Fatalf("took %d events; want %d PUT@%d", len(buf), fanout, rev)
		}
		delivered += len(buf)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(delivered), "ns/event")
}

// BenchmarkPublishToWatcher measures the whole path: Publish, the Run
// goroutine, the stream, Next; one event per batch.
func BenchmarkPublishToWatcher(b *testing.B) {
	r, d, _ := benchSetup(b, Config{})
	s := r.NewStream()
	benchRegister(b, s, "/bench/", Options{Prefix: true})
	go d.Run()
	defer d.Stop("benchmark over")
	key, value := []byte("/bench/key"), []byte("value")
	ctx := context.Background()
	var buf []Event
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		rev := uint64(i + 1)
		d.Publish(Batch{Index: rev, Events: []Event{{Type: Put, Key: key, Value: value, Revision: rev}}})
		if ev, err := s.Next(ctx, &buf); err != nil || ev.Revision != rev {
			b.Fatalf("got %v@%d (%v), want PUT@%d", ev.Type, ev.Revision, err, rev)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/event")
}

// BenchmarkCatchUp measures feeding a watcher from history (catch-up steps
// of CatchUpEvents events, each taken at once): ns/event is per event read
// from the in-memory test history and queued.
func BenchmarkCatchUp(b *testing.B) {
	const events = 10000
	r, d, hist := benchSetup(b, Config{BufferSize: 1 << 20})
	for rev := uint64(1); rev <= events; rev++ {
		k := "/bench/a"
		if rev%2 == 0 {
			k = "/other/b"
		}
		hist.add(Event{Type: Put, Key: []byte(k), Value: []byte("value"), Revision: rev})
	}
	d.deliver(&Batch{Index: events})
	s := r.NewStream()
	var buf []Event
	taken := 0
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		w := benchRegister(b, s, "/bench/", Options{Prefix: true, StartRevision: 1})
		for {
			more := d.catchUpStep()
			buf = s.Take(buf)
			taken += len(buf)
			if !more {
				break
			}
		}
		if st, _ := stateOf(w); st != live {
			b.Fatalf("watcher %v after catching up", st)
		}
		w.Close()
	}
	if taken != b.N*events/2 {
		b.Fatalf("took %d events, want %d", taken, b.N*events/2)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*events), "ns/event-read")
}

// BenchmarkCatchUpOneKeyFanout measures catch-up when many watchers of one
// key fall behind together (the bench's watch-throughput load: 1,000
// watchers of one key), with a node's default budgets, so that a step reads
// more than the streams can take: ns/delivery is per event queued to one
// watcher. Finding an event's watchers must not cost a comparison per
// watcher, nor must the events a full stream cannot take.
func BenchmarkCatchUpOneKeyFanout(b *testing.B) {
	const events, watchers, streams = 5000, 1000, 10
	r, d, hist := benchSetup(b, Config{
		BufferSize: DefaultBufferSize, StreamBytes: DefaultStreamBytes,
		ClientBytes: DefaultClientBytes, TotalBytes: DefaultTotalBytes,
	})
	for rev := uint64(1); rev <= events; rev++ {
		hist.add(Event{Type: Put, Key: []byte("/bench/key"), Value: []byte("value"), Revision: rev})
	}
	d.deliver(&Batch{Index: events})
	ss := make([]*Stream, streams)
	for i := range ss {
		ss[i] = r.NewStream()
	}
	var buf []Event
	taken := 0
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		ws := make([]*Watcher, watchers)
		for i := range ws {
			ws[i] = benchRegister(b, ss[i%streams], "/bench/key", Options{StartRevision: 1})
		}
		// A step stops short when a stream's queue is full; taking it is
		// what wakes the dispatcher again in a node, so step until every
		// watcher is live.
		for steps := 0; !allLive(ws); steps++ {
			if steps > 100*events {
				b.Fatalf("watchers not live after %d catch-up steps", steps)
			}
			d.catchUpStep()
			for _, s := range ss {
				buf = s.Take(buf)
				taken += len(buf)
			}
		}
		for _, w := range ws {
			w.Close()
		}
	}
	if taken != b.N*events*watchers {
		b.Fatalf("took %d events, want %d", taken, b.N*events*watchers)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*events*watchers), "ns/delivery")
}

func allLive(ws []*Watcher) bool {
	for _, w := range ws {
		if st, _ := stateOf(w); st != live {
			return false
		}
	}
	return true
}

// watcherHeap registers n watchers on one stream and returns the live heap
// they added, per watcher, after GC. Keys are built beforehand and not
// counted; the watcher's own copy of its key is. With distinct, every
// watcher has its own key (half exact, half prefix): the registry maps get
// an entry per watcher; otherwise all share one prefix.
func watcherHeap(tb testing.TB, n int, distinct bool) float64 {
	tb.Helper()
	r := NewRegistry(Config{MaxWatchers: n, Logger: slog.New(slog.DiscardHandler)}, newMemHistory(), 0)
	s := r.NewStream()
	keys := make([][]byte, n)
	for i := range keys {
		switch {
		case !distinct:
			keys[i] = []byte("/shared/")
		case i%2 == 0:
			keys[i] = fmt.Appendf(nil, "/app/config/%08d", i)
		default:
			keys[i] = fmt.Appendf(nil, "/app/config/%08d/", i)
		}
	}
	ws := make([]*Watcher, n)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range ws {
		w, err := s.Register(keys[i], Options{Prefix: keys[i][len(keys[i])-1] == '/'})
		if err != nil {
			tb.Fatal(err)
		}
		ws[i] = w
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(keys)
	runtime.KeepAlive(ws)
	runtime.KeepAlive(s)
	return float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(n)
}

// A registered watcher that has nothing queued costs well under 1 KiB:
// nothing is allocated per watcher for its buffer.
func TestWatcherMemoryBelow1KiB(t *testing.T) {
	if testing.Short() {
		t.Skip("measures the heap")
	}
	const n = 10000
	for _, distinct := range []bool{true, false} {
		per := watcherHeap(t, n, distinct)
		t.Logf("distinct keys=%v: %.0f bytes per watcher", distinct, per)
		if per >= 1024 {
			t.Errorf("distinct keys=%v: %.0f bytes per watcher, want < 1024", distinct, per)
		}
	}
}

// BenchmarkWatcherMemory reports the live heap per registered watcher,
// 10000 of them on one stream, each on its own key or all on one prefix.
func BenchmarkWatcherMemory(b *testing.B) {
	for _, distinct := range []bool{true, false} {
		b.Run(fmt.Sprintf("distinct_keys=%v", distinct), func(b *testing.B) {
			var per float64
			for b.Loop() {
				per = watcherHeap(b, 10000, distinct)
			}
			b.ReportMetric(per, "B/watcher")
		})
	}
}
