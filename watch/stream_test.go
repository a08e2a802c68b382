package watch

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// One stream carries several watchers' events, each tagged with its
// WatchID, in dispatch order: revisions never go back across the stream.
func TestStreamDeliversToSeveralWatchersInOrder(t *testing.T) {
	h := newHarness(t, Config{}, true)
	s, sr := h.stream()
	exact := h.registerOn(s, "/config/db", Options{})
	prefix := h.registerOn(s, "/config/", Options{Prefix: true})
	root := h.registerOn(s, "/", Options{Prefix: true})
	other := h.registerOn(s, "/other/", Options{Prefix: true})
	if s.Len() != 4 || h.reg.Len() != 4 {
		t.Fatalf("Stream.Len=%d Registry.Len=%d, want 4, 4", s.Len(), h.reg.Len())
	}
	const n = 100
	for i := uint64(1); i <= n; i += 2 {
		h.publish(i+1, put("/config/db", i), put("/other/x", i+1))
	}
	for i := uint64(1); i <= n; i += 2 {
		for _, w := range []*Watcher{exact, prefix, root} {
			ev := sr.nextType(w, Put, i)
			if ev.WatchID != w.ID() || string(ev.Key) != "/config/db" || string(ev.Value) != fmt.Sprint("v", i) {
				t.Fatalf("watcher %d got %+v", w.ID(), ev)
			}
		}
		sr.nextType(root, Put, i+1)
		sr.nextType(other, Put, i+1)
	}
	var last uint64
	for _, ev := range sr.taken {
		if ev.Revision < last {
			t.Fatalf("stream order: %d after %d", ev.Revision, last)
		}
		last = ev.Revision
	}
	if len(sr.taken) != n/2*5 {
		t.Fatalf("took %d events, want %d", len(sr.taken), n/2*5)
	}
}

// Every Take empties the queue and resets every watcher's count: a
// watcher taken from often never falls behind, whatever the total.
func TestStreamBoundIsPerTake(t *testing.T) {
	const buf = 4
	h := newHarness(t, Config{BufferSize: buf}, false)
	s, sr := h.stream()
	w := h.registerOn(s, "/k", Options{})
	v := h.registerOn(s, "/v", Options{})
	for i := uint64(1); i <= 10*buf; i++ {
		h.deliverNow(i, false, put("/k", i), put("/v", i))
		if i%buf == 0 {
			if n := sr.takeNow(); n != 2*buf {
				t.Fatalf("took %d, want %d", n, 2*buf)
			}
		}
	}
	wantState(t, w, live)
	wantState(t, v, live)
	for i := uint64(1); i <= 10*buf; i++ {
		sr.nextType(w, Put, i)
		sr.nextType(v, Put, i)
	}
	// Exactly buf waiting is allowed; one more is not.
	for i := uint64(10*buf + 1); i <= 11*buf; i++ {
		h.deliverNow(i, false, put("/k", i))
	}
	wantState(t, w, live)
	h.deliverNow(11*buf+1, false, put("/k", 11*buf+1))
	wantState(t, w, catchingUp)
	wantState(t, v, live)
	sr.takeNow()
	if s.roomFor(w) == 0 {
		t.Fatal("no room right after a Take")
	}
}

// Take appends to buf[:0]; a drained queue, after a burst or a small
// batch, holds no memory.
func TestStreamTakeAndQueueMemory(t *testing.T) {
	h := newHarness(t, Config{BufferSize: 4096}, false)
	s, _ := h.stream()
	h.registerOn(s, "/k", Options{})
	if got := s.Take(make([]Event, 3, 8)); len(got) != 0 || cap(got) != 8 {
		t.Fatalf("Take on an empty queue returned %d events, cap %d; want buf[:0]", len(got), cap(got))
	}
	burst := make([]Event, 2048)
	for i := range burst {
		burst[i] = put("/k", uint64(i+1))
	}
	h.deliverNow(uint64(len(burst)), false, burst...)
	out := s.Take(nil)
	if len(out) != len(burst) || out[len(out)-1].Revision != uint64(len(burst)) {
		t.Fatalf("took %d events, want %d", len(out), len(burst))
	}
	for i := range out {
		if out[i].Revision != uint64(i+1) {
			t.Fatalf("event %d has revision %d, want %d", i, out[i].Revision, i+1)
		}
	}
	if s.q.head != nil || s.q.tail != nil || s.bytes != 0 {
		t.Fatalf("queue kept blocks (%d bytes) after a burst was taken, want none", s.bytes)
	}
	next := uint64(len(burst) + 1)
	h.deliverNow(next+2, false, put("/k", next), put("/k", next+1), put("/k", next+2))
	reuse := out[:0]
	out = s.Take(reuse)
	if len(out) != 3 || &out[0] != &reuse[:1][0] {
		t.Fatal("Take did not append to buf[:0]")
	}
	if s.q.head != nil {
		t.Fatal("queue kept a block after a small batch was taken, want none")
	}
	if n, size := s.queueLen(); n != 0 || size != 0 {
		t.Fatalf("after Take: %d events, %d bytes queued", n, size)
	}
}

// Ready is signaled when events are appended to an empty queue; signals
// coalesce.
func TestStreamReadyCoalesces(t *testing.T) {
	h := newHarness(t, Config{}, false)
	s, _ := h.stream()
	h.registerOn(s, "/k", Options{})
	for i := uint64(1); i <= 5; i++ {
		h.deliverNow(i, false, put("/k", i))
	}
	select {
	case <-s.Ready():
	default:
		t.Fatal("no Ready signal with events waiting")
	}
	select {
	case <-s.Ready():
		t.Fatal("a second Ready signal for one wait")
	default:
	}
	if n := len(s.Take(nil)); n != 5 {
		t.Fatalf("took %d, want 5", n)
	}
	h.deliverNow(6, false, put("/k", 6))
	select {
	case <-s.Ready():
	default:
		t.Fatal("no Ready signal after the queue was emptied and refilled")
	}
}

// Next returns the events one at a time, in order, taking the queue into
// *buf only when it is empty, waits for Ready when nothing is queued, and
// returns the context's error when it ends first (also after a stale
// signal).
func TestStreamNext(t *testing.T) {
	h := newHarness(t, Config{}, true)
	s, _ := h.stream()
	w := h.registerOn(s, "/k", Options{})
	h.publish(3, put("/k", 1), put("/k", 2), put("/k", 3))
	waitFor(t, func() bool { return h.reg.Delivered() == 3 })
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	var buf []Event
	for rev := uint64(1); rev <= 3; rev++ {
		ev, err := s.Next(ctx, &buf)
		if err != nil || ev.Type != Put || ev.Revision != rev || ev.WatchID != w.ID() {
			t.Fatalf("Next: %v@%d for %d, %v; want PUT@%d for %d", ev.Type, ev.Revision, ev.WatchID, err, rev, w.ID())
		}
		if rev == 1 && len(buf) != 2 {
			t.Fatalf("after the first Next, %d events left in buf, want 2 (one Take)", len(buf))
		}
	}
	// Nothing queued: Next waits for the next event.
	got := make(chan Event, 1)
	go func() {
		ev, err := s.Next(ctx, &buf)
		if err != nil {
			t.Error(err)
		}
		got <- ev
	}()
	h.publish(4, put("/k", 4))
	select {
	case ev := <-got:
		if ev.Revision != 4 {
			t.Fatalf("waiting Next got %v@%d, want PUT@4", ev.Type, ev.Revision)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Next did not return the event published while it waited")
	}
	// A stale signal, then nothing: the context's error.
	h.publish(5, put("/k", 5))
	waitFor(t, func() bool { n, _ := s.queueLen(); return n == 1 })
	s.Take(nil) // leaves the Ready signal pending
	short, cancelShort := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancelShort()
	if ev, err := s.Next(short, &buf); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next on an empty stream: %v@%d, %v; want DeadlineExceeded", ev.Type, ev.Revision, err)
	}
	canceled, cancelNow := context.WithCancel(context.Background())
	cancelNow()
	if _, err := s.Next(canceled, &buf); !errors.Is(err, context.Canceled) {
		t.Fatalf("Next with a canceled context: %v, want Canceled", err)
	}
}
