package watch

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestEventTypeString(t *testing.T) {
	for typ, want := range map[EventType]string{Put: "PUT", Delete: "DELETE", Progress: "PROGRESS", Canceled: "CANCELED", 0: "EventType(0)"} {
		if got := typ.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", uint8(typ), got, want)
		}
	}
}

func TestExactAndPrefixWatchersOnSameKeyBothReceive(t *testing.T) {
	h := newHarness(t, Config{}, true)
	exact := h.register("/config/db", false, false)
	prefix := h.register("/config/", true, false)
	root := h.register("/", true, false)
	h.publish(1, put("/config/db", 1))
	for _, w := range []*Watcher{exact, prefix, root} {
		ev := recvType(t, w, Put, 1)
		if string(ev.Key) != "/config/db" || string(ev.Value) != "v1" || ev.Version != 1 {
			t.Fatalf("watcher %d got %+v", w.ID(), ev)
		}
	}
}

func TestEventsAtOrBelowStartAreNotDelivered(t *testing.T) {
	h := newHarness(t, Config{}, false)
	h.publish(3, put("/k", 3))
	h.publish(5, put("/k", 4), put("/k", 5)) // a batch of two entries
	w := h.register("/k", false, false)
	if w.Start() != 5 {
		t.Fatalf("Start = %d, want 5", w.Start())
	}
	h.publish(6, put("/k", 6))
	h.run()
	recvType(t, w, Put, 6)
}

func TestEventsArriveInRevisionOrder(t *testing.T) {
	h := newHarness(t, Config{BufferSize: 1000}, true)
	w := h.register("/a/", true, false)
	for i := uint64(1); i <= 300; i += 3 {
		h.publish(i+2, put("/a/x", i), put("/b/y", i+1), Event{Type: Delete, Key: []byte("/a/z"), Revision: i + 2})
	}
	for i := uint64(1); i <= 300; i += 3 {
		recvType(t, w, Put, i)
		recvType(t, w, Delete, i+2)
	}
}

func TestPrevValueSemantics(t *testing.T) {
	cases := []struct {
		name      string
		prevKV    bool
		event     Event // as the FSM publishes it
		wantHas   bool
		wantValue []byte // compared with bytes.Equal; wantNil checks nil-ness
		wantNil   bool
	}{
		{name: "not asked: no prev even though the batch carries one", prevKV: false,
			event: Event{Type: Put, Key: []byte("/k"), Value: []byte("new"), HasPrev: true, PrevValue: []byte("old")}, wantNil: true},
		{name: "not asked: no prev when the batch has none", prevKV: false,
			event: Event{Type: Put, Key: []byte("/k"), Value: []byte("new")}, wantNil: true},
		{name: "asked and the key existed: previous value", prevKV: true,
			event: Event{Type: Put, Key: []byte("/k"), Value: []byte("new"), HasPrev: true, PrevValue: []byte("old")}, wantHas: true, wantValue: []byte("old")},
		{name: "asked and the key was absent: empty non-nil prev", prevKV: true,
			event: Event{Type: Put, Key: []byte("/k"), Value: []byte("new"), HasPrev: true}, wantHas: true, wantValue: []byte{}},
		{name: "asked, delete: previous value", prevKV: true,
			event: Event{Type: Delete, Key: []byte("/k"), HasPrev: true, PrevValue: []byte("old")}, wantHas: true, wantValue: []byte("old")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{}, true)
			w := h.register("/k", false, tc.prevKV)
			ev := tc.event
			ev.Revision = 1
			h.publish(1, ev)
			got := recvType(t, w, ev.Type, 1)
			if got.HasPrev != tc.wantHas {
				t.Fatalf("HasPrev = %v, want %v", got.HasPrev, tc.wantHas)
			}
			if tc.wantNil {
				if got.PrevValue != nil {
					t.Fatalf("PrevValue = %q, want nil", got.PrevValue)
				}
				return
			}
			if got.PrevValue == nil || !bytes.Equal(got.PrevValue, tc.wantValue) {
				t.Fatalf("PrevValue = %q (nil=%v), want %q non-nil", got.PrevValue, got.PrevValue == nil, tc.wantValue)
			}
		})
	}
}

func TestPrevKVWatcherGivenEventWithoutPrevIsCanceled(t *testing.T) {
	h := newHarness(t, Config{}, true)
	w := h.register("/k", false, true)
	h.publish(1, put("/k", 1)) // HasPrev unset: the FSM broke its contract
	recvCanceled(t, w, "revision 1", "previous value")
}

func TestOverflowCancelsOnlyTheSlowWatcher(t *testing.T) {
	const buf = 8
	h := newHarness(t, Config{BufferSize: buf}, true)
	slow := h.register("/k", false, false)
	fast := h.register("/", true, false)
	for i := uint64(1); i <= buf+5; i++ {
		h.publish(i, put("/k", i))
		recvType(t, fast, Put, i) // the fast watcher keeps up
	}
	for i := uint64(1); i <= buf; i++ {
		recvType(t, slow, Put, i) // everything that fit, in order
	}
	recvCanceled(t, slow, "watcher too slow", fmt.Sprintf("buffer of %d events full", buf))
	if h.reg.Len() != 1 {
		t.Fatalf("Len = %d after the slow watcher was canceled, want 1", h.reg.Len())
	}
}

func TestProgressRevisionIsLive(t *testing.T) {
	h := newHarness(t, Config{}, true)
	h.publish(10)
	waitFor(t, "batch 10 delivered", func() bool { return h.d.Delivered() == 10 })
	h.src.applied.Store(12) // batches 11 and 12 committed, not yet published
	w := h.register("/k", false, false)

	w.RequestProgress()
	recvType(t, w, Progress, 12) // never below its start, although Delivered() is 10

	h.publish(11)
	h.publish(12)
	h.publish(13, put("/k", 13))
	h.publish(14, put("/other", 14))
	recvType(t, w, Put, 13)
	waitFor(t, "batch 14 delivered", func() bool { return h.d.Delivered() == 14 })
	w.RequestProgress()
	recvType(t, w, Progress, 14) // advances with delivered batches, even without matching events
}

func TestProgressNeverAheadOfEvents(t *testing.T) {
	h := newHarness(t, Config{BufferSize: 4096, ProgressInterval: time.Millisecond}, true)
	w := h.register("/a/", true, false)
	const n = 2000
	go func() {
		for i := uint64(1); i <= n; i++ {
			if i%2 == 0 {
				h.publish(i, put("/a/x", i))
			} else {
				h.publish(i, put("/b/x", i))
			}
			if i%50 == 0 {
				w.RequestProgress()
			}
		}
	}()
	var lastPut, lastProgress uint64
	progresses := 0
	for lastPut < n {
		ev := recv(t, w)
		switch ev.Type {
		case Put:
			if ev.Revision != lastPut+2 {
				t.Fatalf("PUT %d after PUT %d: an event is missing", ev.Revision, lastPut)
			}
			if ev.Revision <= lastProgress {
				t.Fatalf("PUT %d arrived after PROGRESS %d", ev.Revision, lastProgress)
			}
			lastPut = ev.Revision
		case Progress:
			if ev.Revision < lastProgress {
				t.Fatalf("PROGRESS went back from %d to %d", lastProgress, ev.Revision)
			}
			lastProgress = ev.Revision
			progresses++
		default:
			t.Fatalf("unexpected %v: %s", ev.Type, ev.Reason)
		}
	}
	if progresses == 0 {
		t.Log("no PROGRESS interleaved this run")
	}
}

func TestRequestProgressOnDemand(t *testing.T) {
	h := newHarness(t, Config{}, false)
	h.publish(4)
	w := h.register("/k", false, false)
	for range 100 {
		w.RequestProgress() // duplicates coalesce into one PROGRESS
	}
	h.run()
	recvType(t, w, Progress, 4)
	h.publish(5, put("/k", 5))
	recvType(t, w, Put, 5) // no second PROGRESS before it
	w.RequestProgress()
	recvType(t, w, Progress, 5)
}

func TestRequestProgressRetriedWhenBufferFull(t *testing.T) {
	h := newHarness(t, Config{BufferSize: 2}, true)
	w := h.register("/k", false, false)
	h.publish(1, put("/k", 1))
	h.publish(2, put("/k", 2))
	waitFor(t, "batch 2 delivered", func() bool { return h.d.Delivered() == 2 })
	w.RequestProgress() // only the reserved slot is free: must wait
	recvType(t, w, Put, 1)
	recvType(t, w, Put, 2)
	h.publish(3, put("/other", 3)) // at the latest, the next batch retries the request
	if ev := recv(t, w); ev.Type != Progress || ev.Revision < 2 {
		t.Fatalf("got %v@%d, want PROGRESS >= 2", ev.Type, ev.Revision)
	}
}

func TestHeartbeatReachesEveryWatcher(t *testing.T) {
	h := newHarness(t, Config{ProgressInterval: 5 * time.Millisecond}, true)
	h.publish(3)
	exact := h.register("/k", false, false)
	prefix := h.register("/a/", true, true)
	for _, w := range []*Watcher{exact, prefix} {
		for range 3 { // repeats: the timer is re-armed
			recvType(t, w, Progress, 3)
		}
	}
}

func TestHeartbeatNeverCancels(t *testing.T) {
	h := newHarness(t, Config{BufferSize: 2, ProgressInterval: time.Millisecond}, true)
	full := h.register("/k", false, false)
	probe := h.register("/probe", false, false)
	h.publish(1, put("/k", 1))
	h.publish(2, put("/k", 2)) // full: only the reserved slot is left
	// Heartbeats reach the probe: several ran while the other was full.
	for range 3 {
		recvType(t, probe, Progress, 2)
		<-probe.Events() // make room so the probe keeps getting them
	}
	recvType(t, full, Put, 1)
	recvType(t, full, Put, 2)
	h.publish(3, put("/k", 3))
	for {
		ev := recv(t, full)
		if ev.Type == Put && ev.Revision == 3 {
			break
		}
		if ev.Type != Progress {
			t.Fatalf("got %v@%d (%s), want PROGRESS or PUT 3", ev.Type, ev.Revision, ev.Reason)
		}
	}
}

func TestDispatcherLagCancelsAffectedWatchers(t *testing.T) {
	h := newHarness(t, Config{QueueSize: 2}, false)
	exact := h.register("/k", false, false)
	prefix := h.register("/", true, false)
	h.publish(1, put("/k", 1))
	h.publish(2, put("/k", 2)) // the queue is full
	done := make(chan struct{})
	go func() {
		h.publish(3, put("/k", 3)) // dropped, and Publish must not block
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(waitTimeout):
		t.Fatal("Publish blocked on a full queue")
	}
	h.run()
	for _, w := range []*Watcher{exact, prefix} {
		recvCanceled(t, w, "dispatcher fell behind", "up to revision 3")
	}
	waitFor(t, "the lost batch counted as delivered", func() bool { return h.d.Delivered() >= 3 })
	if h.reg.Len() != 0 {
		t.Fatalf("Len = %d, want 0", h.reg.Len())
	}

	after := h.register("/k", false, false)
	if after.Start() != 3 {
		t.Fatalf("Start = %d, want 3", after.Start())
	}
	h.publish(4, put("/k", 4))
	recvType(t, after, Put, 4)
}

func TestPublishNeverBlocks(t *testing.T) {
	h := newHarness(t, Config{QueueSize: 1}, false)
	done := make(chan struct{})
	go func() {
		for i := uint64(1); i <= 10000; i++ {
			h.publish(i, put("/k", i))
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(waitTimeout):
		t.Fatal("Publish blocked without a running dispatcher")
	}
	if got := h.d.lost.Load(); got != 10000 {
		t.Fatalf("recorded loss = %d, want 10000", got)
	}
}

func TestResetCancelsWatchersBeforeSnapshot(t *testing.T) {
	h := newHarness(t, Config{}, true)
	h.publish(5)
	old := h.register("/k", false, false)
	h.src.applied.Store(10) // the snapshot is installed, then published
	fresh := h.register("/k", false, false)
	h.d.Publish(Batch{Index: 10, Reset: true})
	recvCanceled(t, old, "snapshot installed at revision 10", "re-list and watch again")
	h.publish(11, put("/k", 11))
	recvType(t, fresh, Put, 11)
}

func TestDeliveredAdvancesOnEmptyBatch(t *testing.T) {
	h := newHarness(t, Config{}, true)
	h.publish(42)
	waitFor(t, "Delivered() == 42", func() bool { return h.d.Delivered() == 42 })
}

func TestStopCancelsEveryoneWithReason(t *testing.T) {
	h := newHarness(t, Config{ProgressInterval: time.Hour}, true)
	ws := []*Watcher{h.register("/k", false, false), h.register("/a/", true, true), h.register("/", true, false)}
	h.publish(1, put("unwatched", 1))
	waitFor(t, "batch 1 delivered", func() bool { return h.d.Delivered() == 1 })
	h.d.Stop("shutdown")
	for _, w := range ws {
		ev := recvCanceled(t, w)
		if ev.Reason != "shutdown" || ev.Revision != 1 {
			t.Fatalf("CANCELED %q@%d, want %q@1", ev.Reason, ev.Revision, "shutdown")
		}
	}
	select {
	case <-h.ran:
	case <-time.After(waitTimeout):
		t.Fatal("Run did not return after Stop")
	}
	h.d.Stop("again") // idempotent
	if h.reg.Len() != 0 || h.reg.WantPrev() {
		t.Fatalf("Len=%d WantPrev=%v after Stop", h.reg.Len(), h.reg.WantPrev())
	}
	if _, err := h.reg.Register([]byte("/k"), false, false); !errors.Is(err, ErrClosed) {
		t.Fatalf("Register after Stop: %v, want ErrClosed", err)
	}
	ws[0].Close() // closing a canceled watcher is harmless
}

func TestStopWithoutRun(t *testing.T) {
	h := newHarness(t, Config{}, false)
	w := h.register("/k", false, false)
	h.d.Stop("shutdown")
	if ev := recvCanceled(t, w); ev.Reason != "shutdown" {
		t.Fatalf("reason %q, want shutdown", ev.Reason)
	}
	h.d.Run() // returns at once after Stop
}

func TestCanceledWatcherIsUnregistered(t *testing.T) {
	h := newHarness(t, Config{BufferSize: 1}, true)
	w := h.register("/k", false, true)
	ev := put("/k", 1)
	ev.HasPrev = true
	h.publish(1, ev)
	ev.Revision = 2
	h.publish(2, ev)
	waitFor(t, "batch 2 delivered", func() bool { return h.d.Delivered() == 2 })
	if h.reg.Len() != 0 || h.reg.WantPrev() || h.reg.reserved.Load() != 0 {
		t.Fatalf("Len=%d WantPrev=%v reserved=%d after the cancel, want 0, false, 0", h.reg.Len(), h.reg.WantPrev(), h.reg.reserved.Load())
	}
	recvType(t, w, Put, 1)
	recvCanceled(t, w, "too slow")
}
