package watch

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// A watcher whose consumer does not read while many revisions are
// published is not canceled: it falls behind, holds no events beyond its
// buffer, and gets every event exactly once, in order, once it reads.
func TestSlowWatcherCatchesUpFromHistory(t *testing.T) {
	h := newHarness(t, Config{BufferSize: 4}, true)
	w := h.register("/a/", true, false)
	const n = 200
	for i := uint64(1); i <= n; i++ {
		h.publish(i, put(fmt.Sprintf("/a/k%d", i%7), i))
	}
	waitFor(t, func() bool { return h.reg.Delivered() == n })
	if s := w.stream; s.pendingCount(w) > 4 {
		t.Fatalf("%d events queued for a watcher with a buffer of 4", s.pendingCount(w))
	}
	for i := uint64(1); i <= n; i++ {
		ev := recv(t, w)
		if ev.Type != Put || ev.Revision != i {
			t.Fatalf("event %d: got %v@%d (%s)", i, ev.Type, ev.Revision, ev.Reason)
		}
	}
	waitFor(t, func() bool { live, behind := h.reg.Counts(); return live == 1 && behind == 0 })
	if h.hist.readCount() == 0 {
		t.Fatal("the watcher was never fed from history")
	}
	h.publish(n+1, put("/a/x", n+1))
	if ev := recv(t, w); ev.Revision != n+1 {
		t.Fatalf("after catching up: got %v@%d", ev.Type, ev.Revision)
	}
}

// A watch may start at any retained revision and switches to live events
// with no gap and no duplicate; one below the oldest retained is refused.
func TestStartRevision(t *testing.T) {
	h := newHarness(t, Config{}, true)
	for i := uint64(1); i <= 10; i++ {
		h.publish(i, put("/k", i))
	}
	waitFor(t, func() bool { return h.reg.Delivered() == 10 })
	w := h.registerOpts("/k", Options{StartRevision: 4, PrevKV: true})
	if w.Start() != 3 {
		t.Fatalf("Start() = %d, want 3", w.Start())
	}
	h.publish(11, put("/k", 11))
	for i := uint64(4); i <= 11; i++ {
		ev := recv(t, w)
		if ev.Revision != i || !ev.HasPrev || string(ev.PrevValue) != fmt.Sprintf("v%d", i-1) {
			t.Fatalf("got %v@%d prev=%q (has %v), want PUT@%d prev v%d", ev.Type, ev.Revision, ev.PrevValue, ev.HasPrev, i, i-1)
		}
	}
	h.hist.compact(6)
	_, err := h.reg.NewStream().Register([]byte("/k"), Options{StartRevision: 5})
	var ce *CompactedError
	if !errors.As(err, &ce) || ce.Oldest != 6 || !errors.Is(err, ErrCompacted) {
		t.Fatalf("start below oldest: err = %v, want CompactedError oldest 6", err)
	}
	// A start in the future waits for it.
	f := h.registerOpts("/k", Options{StartRevision: 13})
	h.publish(12, put("/k", 12))
	h.publish(13, put("/k", 13))
	if ev := recv(t, f); ev.Revision != 13 {
		t.Fatalf("future start: got %v@%d, want 13", ev.Type, ev.Revision)
	}
}

// A catching-up watcher whose next revision is compacted away is canceled
// with CauseCompacted and the oldest retained revision.
func TestCatchingUpPastCompactionCancels(t *testing.T) {
	h := newHarness(t, Config{BufferSize: 2}, true)
	w := h.register("/a", false, false)
	for i := uint64(1); i <= 10; i++ {
		h.publish(i, put("/a", i))
	}
	waitFor(t, func() bool { return h.reg.Delivered() == 10 })
	h.hist.compact(8)
	var got []uint64
	for {
		ev := recv(t, w)
		if ev.Type == Canceled {
			if ev.Cause != CauseCompacted || ev.CompactRevision != 8 {
				t.Fatalf("CANCELED %+v, want compacted at 8", ev)
			}
			if ev.Revision != got[len(got)-1] {
				t.Fatalf("CANCELED revision %d, want the last sent %d", ev.Revision, got[len(got)-1])
			}
			break
		}
		got = append(got, ev.Revision)
	}
	if len(got) != 2 || got[0] != 1 || got[1] != 2 {
		t.Fatalf("before the cancel got %v, want [1 2]", got)
	}
}

// A snapshot install keeps watchers: they continue from history.
func TestResetKeepsWatchers(t *testing.T) {
	h := newHarness(t, Config{}, true)
	w := h.register("/a/", true, false)
	h.publish(1, put("/a/1", 1))
	// The snapshot's history has 2..5; the batches themselves never come.
	h.hist.add(put("/a/2", 2), put("/b/3", 3), put("/a/4", 4))
	h.d.Publish(Batch{Index: 5, Reset: true})
	h.publish(6, put("/a/6", 6))
	for _, want := range []uint64{1, 2, 4, 6} {
		if ev := recv(t, w); ev.Revision != want {
			t.Fatalf("got %v@%d, want %d", ev.Type, ev.Revision, want)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5 s")
		}
		time.Sleep(time.Millisecond)
	}
}

// pendingCount returns how many of w's events wait in s.
func (s *Stream) pendingCount(w *Watcher) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pendingLocked(w)
}

// countingHistory counts the events a History hands to its readers.
type countingHistory struct {
	History
	read int
}

func (c *countingHistory) ReadHistory(from, to uint64, withPrev bool, fn func(*Event) bool) error {
	return c.History.ReadHistory(from, to, withPrev, func(ev *Event) bool {
		c.read++
		return fn(ev)
	})
}

// A catch-up step reads only what the streams it feeds can take: watchers
// sharing a small stream are fed at most what one of them could take per
// step, not CatchUpEvents; and they still receive every event, in order.
func TestCatchUpStepReadsWhatStreamsTake(t *testing.T) {
	const watchers, revs = 100, 2000
	h := newHarness(t, Config{StreamBytes: 64 << 10, CatchUpEvents: 4096}, false)
	for i := uint64(1); i <= revs; i++ {
		h.deliverNow(i, false, put("/k", i))
	}
	s, _ := h.stream()
	ws := make([]*Watcher, watchers)
	for i := range ws {
		w, err := s.Register([]byte("/k"), Options{StartRevision: 1})
		if err != nil {
			t.Fatal(err)
		}
		ws[i] = w
	}
	counting := &countingHistory{History: h.hist}
	h.d.hist = counting // the dispatcher is not running

	got := map[uint64][]uint64{}
	var buf []Event
	for step := 0; ; step++ {
		if step > 10*revs {
			t.Fatal("watchers never caught up")
		}
		counting.read = 0
		h.d.catchUpStep()
		// The stream's 64 KiB hold 512 events of eventOverhead bytes: the
		// step reads at most what one watcher could take (and the rest of
		// the revision it stopped in), never CatchUpEvents. (It does not
		// divide by the watchers sharing the stream: those of distinct
		// keys share its room but not its events.)
		if counting.read > (64<<10)/eventOverhead+1 {
			t.Fatalf("step %d read %d events for streams with room for about %d", step, counting.read, (64<<10)/eventOverhead)
		}
		buf = s.Take(buf)
		for _, ev := range buf {
			got[ev.WatchID] = append(got[ev.WatchID], ev.Revision)
		}
		if _, behind := h.reg.Counts(); behind == 0 {
			break
		}
	}
	for _, w := range ws {
		revsOf := got[w.ID()]
		if len(revsOf) != revs {
			t.Fatalf("watcher %d received %d events, want %d", w.ID(), len(revsOf), revs)
		}
		for i, r := range revsOf {
			if r != uint64(i+1) {
				t.Fatalf("watcher %d: event %d has revision %d, want %d", w.ID(), i, r, i+1)
			}
		}
	}
}
