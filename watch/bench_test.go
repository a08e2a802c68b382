package watch

import (
	"fmt"
	"log/slog"
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
