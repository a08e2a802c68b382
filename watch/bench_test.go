package watch

import (
	"fmt"
	"log/slog"
	"runtime"
	"testing"
)

// benchBufferSize keeps the channels of 100000 idle watchers small (each
// holds (benchBufferSize+1) Events of 120 bytes); the measured path does not
// depend on it.
const benchBufferSize = 64

// benchSetup registers the watchers and returns a dispatcher whose deliver
// the benchmark calls directly: it measures the delivery path, not the
// goroutine hand-off of Publish.
func benchSetup(b *testing.B) (*Registry, *Dispatcher) {
	b.Helper()
	cfg := Config{BufferSize: benchBufferSize, MaxWatchers: 1 << 20, Logger: slog.New(slog.DiscardHandler)}
	r := NewRegistry(cfg, &fakeSource{})
	return r, NewDispatcher(r, cfg)
}

func benchRegister(b *testing.B, r *Registry, key string, prefix bool) *Watcher {
	w, err := r.Register([]byte(key), prefix, false)
	if err != nil {
		b.Fatal(err)
	}
	return w
}

// BenchmarkDispatchPrefix delivers one event per op to the one matching
// prefix watcher while n watchers are registered on other prefixes: the cost
// must not grow with n.
func BenchmarkDispatchPrefix(b *testing.B) {
	for _, n := range []int{1, 1000, 100000} {
		b.Run(fmt.Sprintf("watchers=%d", n), func(b *testing.B) {
			r, d := benchSetup(b)
			for i := range n {
				benchRegister(b, r, fmt.Sprintf("/other/%d/", i), true)
			}
			w := benchRegister(b, r, "/bench/", true)
			batch := Batch{Events: []Event{{Type: Put, Key: []byte("/bench/app/db/host"), Value: []byte("value")}}}
			delivered := 0
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				rev := uint64(i + 1)
				batch.Index, batch.Events[0].Revision = rev, rev
				d.deliver(&batch)
				ev := <-w.Events()
				if ev.Revision != rev {
					b.Fatalf("got %v@%d, want PUT@%d", ev.Type, ev.Revision, rev)
				}
				delivered++
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(delivered), "ns/event")
		})
	}
}

// BenchmarkDispatchFanout delivers one event per op to 1000 watchers of the
// event's own prefix; ns/event is per event put in a watcher's channel
// (draining included, as a consumer would).
func BenchmarkDispatchFanout(b *testing.B) {
	const fanout = 1000
	r, d := benchSetup(b)
	ws := make([]*Watcher, fanout)
	for i := range ws {
		ws[i] = benchRegister(b, r, "/bench/", true)
	}
	batch := Batch{Events: []Event{{Type: Put, Key: []byte("/bench/key"), Value: []byte("value")}}}
	delivered := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		rev := uint64(i + 1)
		batch.Index, batch.Events[0].Revision = rev, rev
		d.deliver(&batch)
		for _, w := range ws {
			if ev := <-w.Events(); ev.Revision != rev {
				b.Fatalf("got %v@%d, want PUT@%d", ev.Type, ev.Revision, rev)
			}
			delivered++
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(delivered), "ns/event")
}

// BenchmarkPublishToWatcher measures the whole path through the queue and
// the Run goroutine, one event per batch.
func BenchmarkPublishToWatcher(b *testing.B) {
	r, d := benchSetup(b)
	w := benchRegister(b, r, "/bench/", true)
	go d.Run()
	defer d.Stop("benchmark over")
	batch := Batch{Events: []Event{{Type: Put, Key: []byte("/bench/key"), Value: []byte("value")}}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		rev := uint64(i + 1)
		batch.Index = rev
		batch.Events = []Event{{Type: Put, Key: batch.Events[0].Key, Value: batch.Events[0].Value, Revision: rev}}
		d.Publish(batch)
		if ev := <-w.Events(); ev.Revision != rev {
			b.Fatalf("got %v@%d (%s), want PUT@%d", ev.Type, ev.Revision, ev.Reason, rev)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/event")
}

// BenchmarkDispatchStreamFanout is BenchmarkDispatchFanout in stream mode:
// 1000 watchers of the event's prefix share one Stream; ns/event is per
// event queued for a watcher, the consumer's Take included.
func BenchmarkDispatchStreamFanout(b *testing.B) {
	const fanout = 1000
	r, d := benchSetup(b)
	s := r.NewStream()
	for range fanout {
		if _, err := s.Register([]byte("/bench/"), true, false); err != nil {
			b.Fatal(err)
		}
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
			b.Fatalf("took %d events, last %v@%d; want %d PUT@%d", len(buf), buf[len(buf)-1].Type, buf[len(buf)-1].Revision, fanout, rev)
		}
		delivered += len(buf)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(delivered), "ns/event")
}

// BenchmarkStreamWatcherMemory reports the live heap per registered
// watcher: 10000 stream-mode watchers (each on its own key, or all on one
// prefix), and, for comparison, 1000 channel-mode watchers at the default
// BufferSize.
func BenchmarkStreamWatcherMemory(b *testing.B) {
	for _, distinct := range []bool{true, false} {
		b.Run(fmt.Sprintf("mode=stream/distinct_keys=%v", distinct), func(b *testing.B) {
			var per float64
			for b.Loop() {
				per = streamWatcherHeap(b, 10000, distinct)
			}
			b.ReportMetric(per, "B/watcher")
		})
	}
	b.Run("mode=channel/distinct_keys=true", func(b *testing.B) {
		var per float64
		for b.Loop() {
			per = channelWatcherHeap(b, 1000)
		}
		b.ReportMetric(per, "B/watcher")
	})
}

// channelWatcherHeap is streamWatcherHeap for channel-mode watchers on
// distinct keys, at the default BufferSize.
func channelWatcherHeap(b *testing.B, n int) float64 {
	r := NewRegistry(Config{MaxWatchers: n, Logger: slog.New(slog.DiscardHandler)}, &fakeSource{})
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "/app/config/%08d", i)
	}
	ws := make([]*Watcher, n)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range ws {
		ws[i] = benchRegister(b, r, string(keys[i]), false)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(keys)
	runtime.KeepAlive(ws)
	return float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(n)
}
