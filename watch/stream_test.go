package watch

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// streamReader is a test consumer of a Stream: it takes events when Ready
// fires and files them by WatchID. It fails the test on an event without a
// WatchID or on any event for a watcher after its CANCELED.
type streamReader struct {
	t        *testing.T
	s        *Stream
	buf      []Event
	taken    []Event            // every event taken, in order
	queued   map[uint64][]Event // taken and not yet consumed by next
	canceled map[uint64]bool    // watchers whose CANCELED was taken
}

func newStreamReader(t *testing.T, s *Stream) *streamReader {
	return &streamReader{t: t, s: s, queued: map[uint64][]Event{}, canceled: map[uint64]bool{}}
}

// wait waits for the Ready signal, then takes and files the queue.
func (sr *streamReader) wait() {
	sr.t.Helper()
	select {
	case <-sr.s.Ready():
	case <-time.After(waitTimeout):
		sr.t.Fatalf("stream: no Ready signal within %v", waitTimeout)
	}
	sr.takeNow()
}

// takeNow takes and files whatever is queued, without waiting.
func (sr *streamReader) takeNow() int {
	sr.t.Helper()
	sr.buf = sr.s.Take(sr.buf)
	for _, ev := range sr.buf {
		if ev.WatchID == 0 {
			sr.t.Fatalf("stream: %v@%d without a WatchID", ev.Type, ev.Revision)
		}
		if sr.canceled[ev.WatchID] {
			sr.t.Fatalf("stream: watcher %d got %v@%d after its CANCELED", ev.WatchID, ev.Type, ev.Revision)
		}
		if ev.Type == Canceled {
			sr.canceled[ev.WatchID] = true
		}
		sr.taken = append(sr.taken, ev)
		sr.queued[ev.WatchID] = append(sr.queued[ev.WatchID], ev)
	}
	return len(sr.buf)
}

// next returns the next event for w, waiting for it if needed.
func (sr *streamReader) next(w *Watcher) Event {
	sr.t.Helper()
	for len(sr.queued[w.ID()]) == 0 {
		sr.wait()
	}
	ev := sr.queued[w.ID()][0]
	sr.queued[w.ID()] = sr.queued[w.ID()][1:]
	return ev
}

func (sr *streamReader) nextType(w *Watcher, typ EventType, rev uint64) Event {
	sr.t.Helper()
	ev := sr.next(w)
	if ev.Type != typ || ev.Revision != rev {
		sr.t.Fatalf("watcher %d: got %v@%d (key %q, reason %q), want %v@%d", w.ID(), ev.Type, ev.Revision, ev.Key, ev.Reason, typ, rev)
	}
	return ev
}

// nextCanceled checks that the next event for w is CANCELED with a reason
// containing every fragment. (takeNow fails on anything for w after it.)
func (sr *streamReader) nextCanceled(w *Watcher, fragments ...string) Event {
	sr.t.Helper()
	ev := sr.next(w)
	if ev.Type != Canceled {
		sr.t.Fatalf("watcher %d: got %v@%d, want CANCELED", w.ID(), ev.Type, ev.Revision)
	}
	for _, f := range fragments {
		if !strings.Contains(ev.Reason, f) {
			sr.t.Fatalf("watcher %d: cancel reason %q does not mention %q", w.ID(), ev.Reason, f)
		}
	}
	if rest := sr.queued[w.ID()]; len(rest) != 0 {
		sr.t.Fatalf("watcher %d: %d events after CANCELED", w.ID(), len(rest))
	}
	return ev
}

// expectNone checks that no event for w was taken and not consumed.
func (sr *streamReader) expectNone(w *Watcher) {
	sr.t.Helper()
	if evs := sr.queued[w.ID()]; len(evs) != 0 {
		sr.t.Fatalf("watcher %d: unexpected %v@%d", w.ID(), evs[0].Type, evs[0].Revision)
	}
}

func (h *harness) stream() (*Stream, *streamReader) {
	s := h.reg.NewStream()
	return s, newStreamReader(h.t, s)
}

func (h *harness) registerOn(s *Stream, key string, prefix, prevKV bool) *Watcher {
	h.t.Helper()
	w, err := s.Register([]byte(key), prefix, prevKV)
	if err != nil {
		h.t.Fatalf("Stream.Register(%q, prefix=%v, prevKV=%v): %v", key, prefix, prevKV, err)
	}
	if w.Events() != nil {
		h.t.Fatal("a stream-mode watcher has a channel")
	}
	return w
}

func TestChannelModeEventsCarryWatchID(t *testing.T) {
	h := newHarness(t, Config{}, true)
	w := h.register("/k", false, false)
	h.publish(1, put("/k", 1))
	if ev := recvType(t, w, Put, 1); ev.WatchID != w.ID() {
		t.Fatalf("WatchID = %d, want %d", ev.WatchID, w.ID())
	}
	w.RequestProgress()
	if ev := recvType(t, w, Progress, 1); ev.WatchID != w.ID() {
		t.Fatalf("PROGRESS WatchID = %d, want %d", ev.WatchID, w.ID())
	}
	h.d.Stop("bye")
	if ev := recvCanceled(t, w, "bye"); ev.WatchID != w.ID() {
		t.Fatalf("CANCELED WatchID = %d, want %d", ev.WatchID, w.ID())
	}
}

func TestStreamDeliversToSeveralWatchersInOrder(t *testing.T) {
	h := newHarness(t, Config{StreamBufferSize: 1000}, true)
	s, sr := h.stream()
	exact := h.registerOn(s, "/config/db", false, false)
	prefix := h.registerOn(s, "/config/", true, false)
	root := h.registerOn(s, "/", true, false)
	other := h.registerOn(s, "/other/", true, false)
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
	// Dispatch order across the stream: revisions never go back.
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

func TestStreamEventsAtOrBelowStartAreNotDelivered(t *testing.T) {
	h := newHarness(t, Config{}, false)
	s, sr := h.stream()
	h.publish(3, put("/k", 3))
	h.publish(5, put("/k", 4), put("/k", 5))
	w := h.registerOn(s, "/k", false, false)
	if w.Start() != 5 {
		t.Fatalf("Start = %d, want 5", w.Start())
	}
	h.publish(6, put("/k", 6))
	h.run()
	sr.nextType(w, Put, 6)
	sr.expectNone(w)
}

func TestStreamPrevValueSemantics(t *testing.T) {
	h := newHarness(t, Config{}, true)
	s, sr := h.stream()
	with := h.registerOn(s, "/k", false, true)
	without := h.registerOn(s, "/k", false, false)
	h.publish(1, Event{Type: Put, Key: []byte("/k"), Value: []byte("new"), Revision: 1, HasPrev: true, PrevValue: []byte("old")})
	h.publish(2, Event{Type: Put, Key: []byte("/k"), Value: []byte("new"), Revision: 2, HasPrev: true}) // the key was absent
	h.publish(3, Event{Type: Delete, Key: []byte("/k"), Revision: 3, HasPrev: true, PrevValue: []byte("old")})
	wants := [][]byte{[]byte("old"), {}, []byte("old")}
	types := []EventType{Put, Put, Delete}
	for i, want := range wants {
		rev := uint64(i + 1)
		got := sr.nextType(with, types[i], rev)
		if !got.HasPrev || got.PrevValue == nil || !bytes.Equal(got.PrevValue, want) {
			t.Fatalf("rev %d, prevKV watcher: HasPrev=%v PrevValue=%q (nil=%v), want %q non-nil", rev, got.HasPrev, got.PrevValue, got.PrevValue == nil, want)
		}
		got = sr.nextType(without, types[i], rev)
		if got.HasPrev || got.PrevValue != nil {
			t.Fatalf("rev %d, plain watcher: HasPrev=%v PrevValue=%q, want none", rev, got.HasPrev, got.PrevValue)
		}
	}
	// The FSM broke its contract: no previous value for a prevKV watcher.
	h.publish(4, put("/k", 4))
	sr.nextCanceled(with, "revision 4", "previous value")
	sr.nextType(without, Put, 4)
}

func TestStreamOverflowCancelsOnlyTheSlowWatcher(t *testing.T) {
	const buf = 8
	h := newHarness(t, Config{StreamBufferSize: buf}, true)
	a, ra := h.stream()
	b, rb := h.stream()
	slow := h.registerOn(a, "/k", false, false)
	fast := h.registerOn(a, "/f/", true, false)
	other := h.registerOn(b, "/k", false, false)
	chanW := h.register("/k", false, false)

	// Stream a is not taken from: slow gets buf+3 events, fast only one.
	for i := uint64(1); i <= buf+3; i++ {
		h.publish(i, put("/k", i))
		rb.nextType(other, Put, i) // stream b keeps up
		recvType(t, chanW, Put, i)
	}
	h.publish(buf+4, put("/f/x", buf+4), put("/k", buf+4))
	rb.nextType(other, Put, buf+4) // barrier: everything before is queued in a

	for i := uint64(1); i <= buf; i++ {
		ra.nextType(slow, Put, i) // everything that fit, in order
	}
	ra.nextCanceled(slow, "watcher too slow", fmt.Sprintf("%d events waiting", buf))
	ra.nextType(fast, Put, buf+4)
	if h.reg.Len() != 3 || a.Len() != 1 || b.Len() != 1 {
		t.Fatalf("Registry.Len=%d a.Len=%d b.Len=%d after the cancel, want 3, 1, 1", h.reg.Len(), a.Len(), b.Len())
	}

	// The others keep going; nothing more is queued for slow (the reader
	// fails on any event for it after its CANCELED).
	for i := uint64(buf + 5); i <= buf+3*buf; i++ {
		h.publish(i, put("/f/x", i), put("/k", i))
		ra.nextType(fast, Put, i)
		rb.nextType(other, Put, i)
	}
	recvType(t, chanW, Put, buf+4)
}

func TestStreamBoundIsPerTake(t *testing.T) {
	// Taking resets the count: a watcher taken from often is never canceled,
	// whatever the total number of events.
	const buf = 4
	h := newHarness(t, Config{StreamBufferSize: buf}, false)
	s, sr := h.stream()
	w := h.registerOn(s, "/k", false, false)
	for i := uint64(1); i <= 10*buf; i++ {
		h.d.deliver(&Batch{Index: i, Events: []Event{put("/k", i)}})
		if i%buf == 0 {
			if n := sr.takeNow(); n != buf {
				t.Fatalf("took %d, want %d", n, buf)
			}
		}
	}
	for i := uint64(1); i <= 10*buf; i++ {
		sr.nextType(w, Put, i)
	}
	// Exactly buf waiting is allowed; one more is not.
	for i := uint64(10*buf + 1); i <= 11*buf+1; i++ {
		h.d.deliver(&Batch{Index: i, Events: []Event{put("/k", i)}})
	}
	sr.takeNow()
	for i := uint64(10*buf + 1); i <= 11*buf; i++ {
		sr.nextType(w, Put, i)
	}
	sr.nextCanceled(w, fmt.Sprintf("%d events waiting", buf))
}

func TestStreamProgressRevisionIsLive(t *testing.T) {
	h := newHarness(t, Config{}, true)
	s, sr := h.stream()
	h.publish(10)
	waitFor(t, "batch 10 delivered", func() bool { return h.d.Delivered() == 10 })
	h.src.applied.Store(12) // batches 11 and 12 committed, not yet published
	w := h.registerOn(s, "/k", false, false)

	w.RequestProgress()
	sr.nextType(w, Progress, 12) // never below its start

	h.publish(11)
	h.publish(12)
	h.publish(13, put("/k", 13))
	h.publish(14, put("/other", 14))
	sr.nextType(w, Put, 13)
	waitFor(t, "batch 14 delivered", func() bool { return h.d.Delivered() == 14 })
	w.RequestProgress()
	sr.nextType(w, Progress, 14)
}

func TestStreamProgressNeverAheadOfEvents(t *testing.T) {
	h := newHarness(t, Config{StreamBufferSize: 4096, ProgressInterval: time.Millisecond}, true)
	s, sr := h.stream()
	ws := []*Watcher{h.registerOn(s, "/a/", true, false), h.registerOn(s, "/a/x", false, false)}
	const n = 2000
	go func() {
		for i := uint64(1); i <= n; i++ {
			if i%2 == 0 {
				h.publish(i, put("/a/x", i))
			} else {
				h.publish(i, put("/b/x", i))
			}
			if i%50 == 0 {
				ws[i/50%2].RequestProgress()
			}
		}
	}()
	for _, w := range ws {
		var lastPut, lastProgress uint64
		for lastPut < n {
			ev := sr.next(w)
			switch ev.Type {
			case Put:
				if ev.Revision != lastPut+2 {
					t.Fatalf("watcher %d: PUT %d after PUT %d: an event is missing", w.ID(), ev.Revision, lastPut)
				}
				if ev.Revision <= lastProgress {
					t.Fatalf("watcher %d: PUT %d arrived after PROGRESS %d", w.ID(), ev.Revision, lastProgress)
				}
				lastPut = ev.Revision
			case Progress:
				if ev.Revision < lastProgress {
					t.Fatalf("watcher %d: PROGRESS went back from %d to %d", w.ID(), lastProgress, ev.Revision)
				}
				lastProgress = ev.Revision
			default:
				t.Fatalf("watcher %d: unexpected %v: %s", w.ID(), ev.Type, ev.Reason)
			}
		}
	}
}

func TestStreamRequestProgress(t *testing.T) {
	t.Run("on demand, coalesced", func(t *testing.T) {
		h := newHarness(t, Config{}, false)
		s, sr := h.stream()
		h.publish(4)
		w := h.registerOn(s, "/k", false, false)
		idle := h.registerOn(s, "/k", false, false)
		for range 100 {
			w.RequestProgress()
		}
		h.run()
		sr.nextType(w, Progress, 4)
		h.publish(5, put("/k", 5))
		sr.nextType(w, Put, 5) // no second PROGRESS before it
		w.RequestProgress()
		sr.nextType(w, Progress, 5)
		sr.nextType(idle, Put, 5)
		sr.expectNone(idle) // only w asked
	})
	t.Run("retried when too many events wait", func(t *testing.T) {
		const buf = 3
		h := newHarness(t, Config{StreamBufferSize: buf}, false)
		s, sr := h.stream()
		w := h.registerOn(s, "/k", false, false)
		h.d.deliver(&Batch{Index: 1, Events: []Event{put("/k", 1)}})
		h.d.deliver(&Batch{Index: 2, Events: []Event{put("/k", 2)}})
		w.RequestProgress()
		h.d.pending = h.reg.takeRequests(h.d.pending)
		h.d.serveProgress() // 2 = StreamBufferSize-1 waiting: must wait
		sr.takeNow()
		sr.nextType(w, Put, 1)
		sr.nextType(w, Put, 2)
		sr.expectNone(w)
		h.d.deliver(&Batch{Index: 3})
		h.d.serveProgress() // as Run does after every batch
		sr.takeNow()
		sr.nextType(w, Progress, 3)
		// One waiting (<= StreamBufferSize-2): served at once.
		h.d.deliver(&Batch{Index: 4, Events: []Event{put("/k", 4)}})
		w.RequestProgress()
		h.d.pending = h.reg.takeRequests(h.d.pending)
		h.d.serveProgress()
		sr.takeNow()
		sr.nextType(w, Put, 4)
		sr.nextType(w, Progress, 4)
	})
}

func TestStreamHeartbeatReachesEveryWatcher(t *testing.T) {
	h := newHarness(t, Config{ProgressInterval: 5 * time.Millisecond}, true)
	s, sr := h.stream()
	h.publish(3)
	ws := []*Watcher{h.registerOn(s, "/k", false, false), h.registerOn(s, "/a/", true, true)}
	for _, w := range ws {
		for range 3 { // repeats: the timer is re-armed
			sr.nextType(w, Progress, 3)
		}
	}
}

func TestStreamHeartbeatNeverCancels(t *testing.T) {
	// Driven by hand (no Run) so the heartbeats fall exactly where wanted.
	const buf = 4
	h := newHarness(t, Config{StreamBufferSize: buf}, false)
	a, ra := h.stream()
	b, rb := h.stream()
	full := h.registerOn(a, "/k", false, false)
	probe := h.registerOn(b, "/probe", false, false)
	h.d.deliver(&Batch{Index: 3, Events: []Event{put("/k", 1), put("/k", 2), put("/k", 3)}})
	for range 3 {
		h.d.heartbeat() // 3 > StreamBufferSize-2 waiting: no PROGRESS for full
		rb.takeNow()
		rb.nextType(probe, Progress, 3)
	}
	h.d.deliver(&Batch{Index: 4, Events: []Event{put("/k", 4)}}) // StreamBufferSize waiting: still fits
	h.d.heartbeat()
	ra.takeNow()
	for i := uint64(1); i <= 4; i++ {
		ra.nextType(full, Put, i)
	}
	ra.expectNone(full)
	if a.Len() != 1 {
		t.Fatal("a heartbeat canceled the full watcher")
	}
	h.d.heartbeat()
	ra.takeNow()
	ra.nextType(full, Progress, 4)
}

func TestStreamDispatcherLagCancels(t *testing.T) {
	h := newHarness(t, Config{QueueSize: 2}, false)
	s, sr := h.stream()
	exact := h.registerOn(s, "/k", false, false)
	prefix := h.registerOn(s, "/", true, false)
	h.publish(1, put("/k", 1))
	h.publish(2, put("/k", 2))
	h.publish(3, put("/k", 3)) // dropped: the queue is full
	h.run()
	for _, w := range []*Watcher{exact, prefix} {
		sr.nextCanceled(w, "dispatcher fell behind", "up to revision 3")
	}
	waitFor(t, "the lost batch counted as delivered", func() bool { return h.d.Delivered() >= 3 })
	if h.reg.Len() != 0 || s.Len() != 0 {
		t.Fatalf("Registry.Len=%d Stream.Len=%d, want 0, 0", h.reg.Len(), s.Len())
	}
	after := h.registerOn(s, "/k", false, false)
	if after.Start() != 3 {
		t.Fatalf("Start = %d, want 3", after.Start())
	}
	h.publish(4, put("/k", 4))
	sr.nextType(after, Put, 4)
}

func TestStreamResetCancelsWatchersBeforeSnapshot(t *testing.T) {
	h := newHarness(t, Config{}, true)
	s, sr := h.stream()
	h.publish(5)
	old := h.registerOn(s, "/k", false, false)
	h.src.applied.Store(10)
	fresh := h.registerOn(s, "/k", false, false)
	h.d.Publish(Batch{Index: 10, Reset: true})
	sr.nextCanceled(old, "snapshot installed at revision 10", "re-list and watch again")
	h.publish(11, put("/k", 11))
	sr.nextType(fresh, Put, 11)
}

func TestStreamStopCancelsEveryoneWithReason(t *testing.T) {
	h := newHarness(t, Config{ProgressInterval: time.Hour}, true)
	a, ra := h.stream()
	b, rb := h.stream()
	type sw struct {
		r *streamReader
		w *Watcher
	}
	ws := []sw{
		{ra, h.registerOn(a, "/k", false, false)},
		{ra, h.registerOn(a, "/a/", true, true)},
		{rb, h.registerOn(b, "/", true, false)},
	}
	chanW := h.register("/k", false, false)
	h.publish(1, put("unwatched", 1))
	waitFor(t, "batch 1 delivered", func() bool { return h.d.Delivered() == 1 })
	h.d.Stop("shutdown")
	for _, x := range ws {
		ev := x.r.nextCanceled(x.w)
		if ev.Reason != "shutdown" || ev.Revision != 1 || ev.WatchID != x.w.ID() {
			t.Fatalf("CANCELED %q@%d for %d, want %q@1 for %d", ev.Reason, ev.Revision, ev.WatchID, "shutdown", x.w.ID())
		}
	}
	recvCanceled(t, chanW, "shutdown")
	if h.reg.Len() != 0 || h.reg.WantPrev() || a.Len() != 0 || b.Len() != 0 || h.reg.reserved.Load() != 0 {
		t.Fatalf("after Stop: Registry.Len=%d WantPrev=%v a.Len=%d b.Len=%d reserved=%d", h.reg.Len(), h.reg.WantPrev(), a.Len(), b.Len(), h.reg.reserved.Load())
	}
	if _, err := a.Register([]byte("/k"), false, false); !errors.Is(err, ErrClosed) {
		t.Fatalf("Stream.Register after Stop: %v, want ErrClosed", err)
	}
	if _, err := h.reg.NewStream().Register([]byte("/k"), false, false); !errors.Is(err, ErrClosed) {
		t.Fatalf("Register on a new stream after Stop: %v, want ErrClosed", err)
	}
	ws[0].w.Close() // harmless
	a.Close()
	a.Close()
}

func TestStreamCloseUnregistersAll(t *testing.T) {
	h := newHarness(t, Config{}, true)
	s, sr := h.stream()
	o, or := h.stream()
	mine := []*Watcher{h.registerOn(s, "/k", false, true), h.registerOn(s, "/a/", true, false), h.registerOn(s, "/", true, false)}
	kept := h.registerOn(o, "/k", false, false)
	chanW := h.register("/k", false, false)
	ev := put("/k", 1)
	ev.HasPrev = true
	h.publish(1, ev)
	or.nextType(kept, Put, 1) // barrier: events for s are queued, not taken
	recvType(t, chanW, Put, 1)

	s.Close()
	if h.reg.Len() != 2 || s.Len() != 0 || h.reg.WantPrev() || h.reg.reserved.Load() != 2 {
		t.Fatalf("right after Stream.Close: Registry.Len=%d Stream.Len=%d WantPrev=%v reserved=%d, want 2, 0, false, 2",
			h.reg.Len(), s.Len(), h.reg.WantPrev(), h.reg.reserved.Load())
	}
	if n := sr.takeNow(); n != 0 {
		t.Fatalf("took %d events from a closed stream", n)
	}
	s.Close() // idempotent
	for _, w := range mine {
		w.Close() // harmless
		w.RequestProgress()
	}
	if _, err := s.Register([]byte("/k"), false, false); !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "stream is closed") {
		t.Fatalf("Register on a closed stream: %v, want ErrClosed", err)
	}
	if h.reg.Len() != 2 || h.reg.reserved.Load() != 2 {
		t.Fatalf("a refused registration left Len=%d reserved=%d", h.reg.Len(), h.reg.reserved.Load())
	}
	h.publish(2, put("/k", 2))
	or.nextType(kept, Put, 2)
	recvType(t, chanW, Put, 2)
	if n := sr.takeNow(); n != 0 {
		t.Fatalf("took %d events from a closed stream", n)
	}
}

func TestStreamWatcherClose(t *testing.T) {
	h := newHarness(t, Config{}, true)
	s, sr := h.stream()
	closed := h.registerOn(s, "/k", false, true)
	other := h.registerOn(s, "/k", false, false)
	last := h.registerOn(s, "/", true, false)
	closed.Close()
	if h.reg.Len() != 2 || s.Len() != 2 || h.reg.WantPrev() {
		t.Fatalf("right after Close: Registry.Len=%d Stream.Len=%d WantPrev=%v", h.reg.Len(), s.Len(), h.reg.WantPrev())
	}
	closed.Close() // idempotent
	closed.RequestProgress()
	h.publish(1, put("/k", 1))
	sr.nextType(other, Put, 1)
	sr.nextType(last, Put, 1)
	sr.expectNone(closed)
	last.Close() // removes the stream's watcher moved into the freed index
	other.Close()
	if s.Len() != 0 || h.reg.Len() != 0 {
		t.Fatalf("Stream.Len=%d Registry.Len=%d, want 0, 0", s.Len(), h.reg.Len())
	}
}

func TestStreamRegisterValidationAndCap(t *testing.T) {
	r := NewRegistry(Config{MaxWatchers: 3}, &fakeSource{})
	s := r.NewStream()
	for _, tc := range []struct {
		key    string
		prefix bool
	}{{"", false}, {"config", true}, {"/config", true}, {"", true}} {
		_, want := r.Register([]byte(tc.key), tc.prefix, false)
		w, got := s.Register([]byte(tc.key), tc.prefix, false)
		if want == nil || got == nil || got.Error() != want.Error() || w != nil {
			t.Fatalf("Register(%q, %v): stream error %v, registry error %v", tc.key, tc.prefix, got, want)
		}
	}
	// The cap is shared between the modes.
	w1, err := s.Register([]byte("/a"), false, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Register([]byte("/b"), false, false); err != nil {
		t.Fatal(err)
	}
	if _, err := r.NewStream().Register([]byte("/c/"), true, true); err != nil {
		t.Fatal(err)
	}
	_, errS := s.Register([]byte("/d"), false, true)
	_, errR := r.Register([]byte("/d"), false, false)
	for _, err := range []error{errS, errR} {
		if !errors.Is(err, ErrLimitExceeded) || !strings.Contains(err.Error(), "maximum of 3 watchers") {
			t.Fatalf("4th Register: %v, want ErrLimitExceeded", err)
		}
	}
	if errS.Error() != errR.Error() {
		t.Fatalf("stream error %q differs from registry error %q", errS, errR)
	}
	w1.Close()
	if _, err := r.Register([]byte("/d"), false, false); err != nil {
		t.Fatalf("channel Register after a stream watcher freed a slot: %v", err)
	}
	if r.Len() != 3 || s.Len() != 0 {
		t.Fatalf("Registry.Len=%d Stream.Len=%d, want 3, 0", r.Len(), s.Len())
	}
}

func TestStreamTakeConcurrentWithCancels(t *testing.T) {
	// The publisher sends bursts of random length, each to the watchers of
	// one random group, while the consumer takes concurrently: a burst
	// near or over the bound cancels its group or not, depending on the
	// race.
	// A barrier event after each burst paces the publisher. Checked for
	// every watcher: it gets exactly the PUTs published for its group after
	// its start, in order, until one CANCELED, then nothing; a PROGRESS R
	// comes after every PUT <= R.
	const (
		buf      = 16
		groups   = 10
		perGroup = 5
		bursts   = 300
	)
	h := newHarness(t, Config{StreamBufferSize: buf, ProgressInterval: time.Millisecond}, true)
	s, _ := h.stream()
	barrier := h.registerOn(s, "/barrier", false, false)
	group := map[uint64]int{}     // watcher ID -> group
	byID := map[uint64]*Watcher{} // the group watchers
	for g := range groups {
		for i := range perGroup {
			w := h.registerOn(s, fmt.Sprintf("/g/%d/", g), true, i%2 == 0)
			group[w.ID()], byID[w.ID()] = g, w
		}
	}
	// The plan: revisions per group, decided up front.
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	type burst struct {
		g     int
		first uint64
		n     int
	}
	plan := make([]burst, bursts)
	want := make([][]uint64, groups)
	rev := uint64(0)
	for i := range plan {
		b := burst{g: rng.IntN(groups), first: rev + 1, n: 1 + rng.IntN(buf)}
		if rng.IntN(40) == 0 {
			b.n = 2 * buf // most likely cancels the group, or not
		}
		for range b.n {
			rev++
			want[b.g] = append(want[b.g], rev)
		}
		rev++ // the barrier
		plan[i] = b
	}

	ack := make(chan uint64, 1)
	quit := make(chan struct{})
	defer close(quit) // on failure, the publisher gives up quietly
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i, b := range plan {
			r := b.first
			for range b.n {
				ev := put(fmt.Sprintf("/g/%d/x", b.g), r)
				ev.HasPrev = true
				h.publish(r, ev)
				r++
			}
			h.publish(r, put("/barrier", r))
			if i%7 == 0 {
				for _, w := range byID {
					w.RequestProgress()
					break
				}
			}
			select {
			case got := <-ack:
				if got != r {
					t.Errorf("barrier ack %d, want %d", got, r)
					return
				}
			case <-quit:
				return
			}
		}
		h.d.Stop("test done")
	}()

	next := map[uint64]int{} // watcher ID -> index in want of its next PUT
	canceled := map[uint64]bool{}
	slow, stop := 0, 0
	var evs []Event
	for takes := 0; len(canceled) < len(byID)+1; takes++ {
		if takes%3 == 0 {
			runtime.Gosched() // fall behind now and then
		}
		select {
		case <-s.Ready():
		case <-time.After(waitTimeout):
			t.Fatalf("no Ready signal; %d of %d watchers canceled", len(canceled), len(byID)+1)
		}
		evs = s.Take(evs)
		for _, ev := range evs {
			id := ev.WatchID
			if canceled[id] {
				t.Fatalf("watcher %d: %v@%d after CANCELED", id, ev.Type, ev.Revision)
			}
			if id == barrier.ID() {
				switch ev.Type {
				case Put:
					ack <- ev.Revision
				case Canceled:
					canceled[id] = true
					if ev.Reason != "test done" {
						t.Fatalf("barrier watcher canceled: %s", ev.Reason)
					}
				}
				continue
			}
			w := byID[id]
			if w == nil {
				t.Fatalf("event for unknown watcher %d", id)
			}
			revs := want[group[id]]
			for next[id] < len(revs) && revs[next[id]] <= w.Start() {
				next[id]++
			}
			switch ev.Type {
			case Put:
				if next[id] >= len(revs) || ev.Revision != revs[next[id]] {
					t.Fatalf("watcher %d: unexpected PUT %d (next expected index %d of %d)", id, ev.Revision, next[id], len(revs))
				}
				if ev.HasPrev != w.prevKV || (ev.PrevValue != nil) != w.prevKV {
					t.Fatalf("watcher %d (prevKV=%v): HasPrev=%v PrevValue nil=%v", id, w.prevKV, ev.HasPrev, ev.PrevValue == nil)
				}
				next[id]++
			case Progress:
				if next[id] < len(revs) && revs[next[id]] <= ev.Revision {
					t.Fatalf("watcher %d: PROGRESS %d before PUT %d", id, ev.Revision, revs[next[id]])
				}
			case Canceled:
				canceled[id] = true
				switch {
				case strings.Contains(ev.Reason, "too slow"):
					slow++
				case ev.Reason == "test done":
					stop++
				default:
					t.Fatalf("watcher %d: unexpected reason %q", id, ev.Reason)
				}
			default:
				t.Fatalf("unexpected %v", ev.Type)
			}
		}
	}
	wg.Wait()
	t.Logf("%d watchers canceled as too slow, %d by Stop", slow, stop)
	for id, w := range byID {
		if !canceled[id] {
			t.Fatalf("watcher %d not canceled", w.ID())
		}
	}
	if h.reg.Len() != 0 || s.Len() != 0 {
		t.Fatalf("Registry.Len=%d Stream.Len=%d after Stop", h.reg.Len(), s.Len())
	}
}

func TestStreamQueueShrinksAfterBurst(t *testing.T) {
	h := newHarness(t, Config{StreamBufferSize: 4 * streamRetainCap}, false)
	s, _ := h.stream()
	h.registerOn(s, "/k", false, false)
	burst := make([]Event, 2*streamRetainCap)
	for i := range burst {
		burst[i] = put("/k", uint64(i+1))
	}
	h.d.deliver(&Batch{Index: uint64(len(burst)), Events: burst})
	out := s.Take(nil)
	if len(out) != len(burst) || out[len(out)-1].Revision != uint64(len(burst)) {
		t.Fatalf("took %d events, want %d", len(out), len(burst))
	}
	if s.q != nil {
		t.Fatalf("queue of cap %d kept after a burst, want it released", cap(s.q))
	}
	// A small batch: its array is kept, emptied of references.
	h.d.deliver(&Batch{Index: uint64(len(burst) + 1), Events: []Event{put("/k", uint64(len(burst)+1))}})
	reuse := out[:0]
	out = s.Take(reuse)
	if len(out) != 1 || &out[0] != &reuse[:1][0] {
		t.Fatal("Take did not append to buf[:0]")
	}
	if cap(s.q) == 0 || s.q[:1][0].Key != nil {
		t.Fatalf("small queue: cap %d, first slot %+v; want kept and cleared", cap(s.q), s.q[:1][0])
	}
	if got := s.Take(out); len(got) != 0 || cap(got) != cap(out) {
		t.Fatalf("Take on an empty queue returned %d events (cap %d)", len(got), cap(got))
	}
}

func TestStreamReadyCoalesces(t *testing.T) {
	h := newHarness(t, Config{}, false)
	s, _ := h.stream()
	h.registerOn(s, "/k", false, false)
	for i := uint64(1); i <= 5; i++ {
		h.d.deliver(&Batch{Index: i, Events: []Event{put("/k", i)}})
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
	h.d.deliver(&Batch{Index: 6, Events: []Event{put("/k", 6)}})
	select {
	case <-s.Ready():
	default:
		t.Fatal("no Ready signal after the queue was emptied and refilled")
	}
}

// streamWatcherHeap registers n stream-mode watchers on one stream and
// returns the live heap they added, per watcher, after GC. Keys are built
// beforehand and not counted; the watcher's own copy of its key is. With
// distinct, every watcher has its own key (half exact, half prefix): the
// registry maps get an entry per watcher; otherwise all share one prefix.
func streamWatcherHeap(tb testing.TB, n int, distinct bool) float64 {
	tb.Helper()
	r := NewRegistry(Config{MaxWatchers: n, Logger: slog.New(slog.DiscardHandler)}, &fakeSource{})
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
		w, err := s.Register(keys[i], keys[i][len(keys[i])-1] == '/', false)
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

func TestStreamWatcherMemoryBelow1KiB(t *testing.T) {
	if testing.Short() {
		t.Skip("measures the heap")
	}
	const n = 10000
	for _, distinct := range []bool{true, false} {
		per := streamWatcherHeap(t, n, distinct)
		t.Logf("distinct keys=%v: %.0f bytes per stream-mode watcher", distinct, per)
		if per >= 1024 {
			t.Errorf("distinct keys=%v: %.0f bytes per stream-mode watcher, want < 1024", distinct, per)
		}
	}
}
