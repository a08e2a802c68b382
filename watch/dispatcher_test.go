package watch

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// live -> catchingUp when a revision's first event finds the watcher's
// buffer full; no history read while it has no room; -> live once its
// consumer takes the queue, with no gap and no duplicate.
func TestFallBehindOnFullBuffer(t *testing.T) {
	h := newHarness(t, Config{BufferSize: 2}, false)
	s, sr := h.stream()
	w := h.registerOn(s, "/k", Options{})
	h.deliverNow(1, false, put("/k", 1))
	h.deliverNow(2, false, put("/k", 2))
	wantState(t, w, live)
	h.deliverNow(3, false, put("/k", 3))
	wantState(t, w, catchingUp)
	if live, behind := h.reg.Counts(); live != 0 || behind != 1 {
		t.Fatalf("Counts = %d, %d, want 0, 1", live, behind)
	}
	h.deliverNow(4, false, put("/k", 4))
	if n := s.pendingCount(w); n != 2 {
		t.Fatalf("%d events queued, want the 2 of the buffer", n)
	}
	if h.d.catchUpStep() || h.hist.readCount() != 0 {
		t.Fatalf("a catch-up step without room read history (%d reads)", h.hist.readCount())
	}
	sr.takeNow()
	sr.nextType(w, Put, 1)
	sr.nextType(w, Put, 2)
	h.d.catchUpStep()
	wantState(t, w, live)
	if h.hist.readCount() != 1 {
		t.Fatalf("%d history reads, want 1", h.hist.readCount())
	}
	sr.takeNow()
	sr.nextType(w, Put, 3)
	sr.nextType(w, Put, 4)
	h.deliverNow(5, false, put("/k", 5))
	wantState(t, w, live)
	sr.takeNow()
	sr.nextType(w, Put, 5)
	sr.expectNone(w)
}

// live -> catchingUp when the stream's byte budget is spent, even by
// another watcher of the stream; -> live once the queue is taken.
func TestFallBehindOnStreamBytes(t *testing.T) {
	one := put("/a", 1)
	h := newHarness(t, Config{StreamBytes: one.size() + one.size()/2}, false)
	s, sr := h.stream()
	a := h.registerOn(s, "/a", Options{})
	b := h.registerOn(s, "/b", Options{})
	h.deliverNow(1, false, put("/a", 1))
	h.deliverNow(2, false, put("/a", 2)) // starts below the budget, ends above it
	wantState(t, a, live)
	h.deliverNow(3, false, put("/b", 3)) // b has nothing queued, the stream is full
	wantState(t, b, catchingUp)
	h.deliverNow(4, false, put("/a", 4))
	wantState(t, a, catchingUp)
	if n, size := s.queueLen(); n != 2 || size != 2*one.size() {
		t.Fatalf("queue holds %d events (%d bytes), want 2 (%d bytes)", n, size, 2*one.size())
	}
	sr.takeNow()
	if h.d.catchUpStep() {
		t.Fatal("catch-up step reports more to do")
	}
	for _, w := range []*Watcher{a, b} {
		wantState(t, w, live)
	}
	sr.takeNow()
	sr.nextType(a, Put, 1)
	sr.nextType(a, Put, 2)
	sr.nextType(b, Put, 3)
	sr.nextType(a, Put, 4)
}

// When Publish finds the queue full it records the loss and never blocks;
// the dispatcher then moves every live watcher to catching up (those with
// a future start too, keeping it), and each receives every event from
// history.
func TestPublishOverflowCatchesUpFromHistory(t *testing.T) {
	h := newHarness(t, Config{QueueSize: 1}, false)
	s, sr := h.stream()
	exact := h.registerOn(s, "/k", Options{})
	prefix := h.registerOn(s, "/", Options{Prefix: true})
	prev := h.registerOn(s, "/k", Options{PrevKV: true})
	future := h.registerOn(s, "/k", Options{StartRevision: 40})
	none := h.registerOn(s, "/none", Options{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := uint64(1); i <= 50; i++ {
			h.publish(i, put("/k", i))
		}
	}()
	select {
	case <-done:
	case <-time.After(waitTimeout):
		t.Fatal("Publish blocked on a full queue")
	}
	if got := h.d.lost.Load(); got != 50 || len(h.d.queue) != 1 {
		t.Fatalf("lost = %d, queued = %d, want 50, 1", got, len(h.d.queue))
	}
	h.d.checkLost() // what Run does first
	if h.reg.Delivered() != 50 {
		t.Fatalf("Delivered = %d after the loss, want 50", h.reg.Delivered())
	}
	for _, w := range []*Watcher{exact, prefix, prev, none, future} {
		wantState(t, w, catchingUp)
	}
	if _, next := stateOf(future); next != 40 {
		t.Fatalf("future watcher resumes at %d, want 40", next)
	}
	h.run()
	for _, w := range []*Watcher{exact, prefix, prev} {
		for i := uint64(1); i <= 50; i++ {
			ev := sr.nextType(w, Put, i)
			if w == prev && (!ev.HasPrev || (i > 1 && string(ev.PrevValue) != fmt.Sprintf("v%d", i-1))) {
				t.Fatalf("prev-value watcher at %d: prev %q (HasPrev %v)", i, ev.PrevValue, ev.HasPrev)
			}
		}
	}
	for i := uint64(40); i <= 50; i++ {
		sr.nextType(future, Put, i)
	}
	waitFor(t, func() bool { live, behind := h.reg.Counts(); return live == 5 && behind == 0 })
	h.publish(51, put("/k", 51))
	sr.nextType(exact, Put, 51)
	sr.expectNone(none)
}

// Publish never blocks, however far the dispatcher is behind, and records
// the highest index it could not queue.
func TestPublishNeverBlocks(t *testing.T) {
	h := newHarness(t, Config{QueueSize: 1}, false)
	done := make(chan struct{})
	go func() {
		for i := uint64(1); i <= 10000; i++ {
			h.d.Publish(Batch{Index: i})
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

// A snapshot install (Reset) moves every live watcher to catching up from
// the snapshot's history; none is canceled.
func TestResetCatchesUpFromHistory(t *testing.T) {
	h := newHarness(t, Config{}, false)
	s, sr := h.stream()
	pfx := h.registerOn(s, "/a/", Options{Prefix: true})
	k := h.registerOn(s, "/k", Options{PrevKV: true})
	future := h.registerOn(s, "/a/", Options{Prefix: true, StartRevision: 20})
	h.deliverNow(1, true, put("/a/1", 1))
	// The snapshot's history has 2..4; the batches themselves never come.
	h.hist.add(put("/a/2", 2), put("/b/3", 3), put("/k", 4))
	h.d.deliver(&Batch{Index: 5, Reset: true})
	for _, w := range []*Watcher{pfx, k, future} {
		wantState(t, w, catchingUp)
	}
	if h.reg.Delivered() != 5 {
		t.Fatalf("Delivered = %d after Reset, want 5", h.reg.Delivered())
	}
	h.d.deliver(&Batch{Index: 3, Reset: true}) // older than delivered: ignored
	h.run()
	h.publish(6, put("/a/6", 6), put("/k", 6))
	for _, rev := range []uint64{1, 2, 6} {
		sr.nextType(pfx, Put, rev)
	}
	if ev := sr.nextType(k, Put, 4); !ev.HasPrev || len(ev.PrevValue) != 0 {
		t.Fatalf("/k@4: prev %q (HasPrev %v), want empty", ev.PrevValue, ev.HasPrev)
	}
	if ev := sr.nextType(k, Put, 6); string(ev.PrevValue) != "v4" {
		t.Fatalf("/k@6: prev %q, want v4", ev.PrevValue)
	}
	h.publish(20, put("/a/20", 20))
	sr.nextType(future, Put, 20)
	if h.reg.Len() != 3 {
		t.Fatalf("Len = %d, want 3: a Reset cancels nobody", h.reg.Len())
	}
}

// A prev-value watcher offered a batch read without previous values falls
// behind and gets them from history; a plain watcher of the same key stays
// live; a batch it does not match leaves it live.
func TestFallBehindOnBatchWithoutPrev(t *testing.T) {
	h := newHarness(t, Config{}, false)
	s, sr := h.stream()
	p := h.registerOn(s, "/k", Options{PrevKV: true})
	q := h.registerOn(s, "/k", Options{})
	first := put("/k", 1)
	first.Value = []byte("one")
	h.hist.add(first)                                      // 1 is before the watchers
	h.deliverNow(2, false, put("/k", 2), put("/other", 2)) // read without previous values
	wantState(t, p, catchingUp)
	wantState(t, q, live)
	h.d.catchUpStep()
	wantState(t, p, live)
	h.deliverNow(3, true, put("/k", 3))
	h.deliverNow(4, false, put("/other", 4)) // not p's key: p stays live
	wantState(t, p, live)
	sr.takeNow()
	if ev := sr.nextType(q, Put, 2); ev.HasPrev || ev.PrevValue != nil {
		t.Fatalf("plain watcher got a previous value %q", ev.PrevValue)
	}
	if ev := sr.nextType(p, Put, 2); !ev.HasPrev || string(ev.PrevValue) != "one" {
		t.Fatalf("prev-value watcher @2: prev %q (HasPrev %v), want one", ev.PrevValue, ev.HasPrev)
	}
	if ev := sr.nextType(p, Put, 3); string(ev.PrevValue) != "v2" {
		t.Fatalf("prev-value watcher @3: prev %q, want v2", ev.PrevValue)
	}
	sr.nextType(q, Put, 3)
	sr.expectNone(p)
}

// A catching-up watcher whose next revision was compacted away is canceled
// with CauseCompacted, the oldest retained revision, and the revision it
// was sent up to; a catching-up watcher still within history and a live
// watcher are not.
func TestCompactionCancelsOnlyWhatItMust(t *testing.T) {
	h := newHarness(t, Config{BufferSize: 2}, false)
	s, sr := h.stream()
	w := h.registerOn(s, "/a", Options{})
	for i := uint64(1); i <= 10; i++ {
		h.deliverNow(i, false, put("/a", i))
	}
	o, or := h.stream()
	within := h.registerOn(o, "/a", Options{StartRevision: 9})
	l, lr := h.stream()
	liveW := h.registerOn(l, "/a", Options{})
	wantState(t, w, catchingUp)
	wantState(t, within, catchingUp)
	h.hist.compact(8)
	sr.takeNow()
	if !h.d.catchUpStep() {
		t.Fatal("the step that canceled reports nothing more to do while a watcher still catches up")
	}
	sr.nextType(w, Put, 1)
	sr.nextType(w, Put, 2)
	ev := sr.nextCanceled(w, CauseCompacted, "it needs revision 3, the oldest retained is 8", "re-list")
	if ev.Revision != 2 || ev.CompactRevision != 8 {
		t.Fatalf("CANCELED@%d compact %d, want @2 compact 8", ev.Revision, ev.CompactRevision)
	}
	if h.reg.Len() != 2 || s.Len() != 0 || h.reg.reserved.Load() != 2 {
		t.Fatalf("Len=%d s.Len=%d reserved=%d after the cancel, want 2, 0, 2", h.reg.Len(), s.Len(), h.reg.reserved.Load())
	}
	h.d.catchUpStep()
	wantState(t, within, live)
	or.takeNow()
	or.nextType(within, Put, 9)
	or.nextType(within, Put, 10)
	h.deliverNow(11, false, put("/a", 11))
	lr.takeNow()
	lr.nextType(liveW, Put, 11)
	sr.takeNow()
	sr.expectNone(w)
}

// A compaction that a step meets when the watcher that needed the
// compacted revision has just gone (closed during the read) must not
// strand the other catching-up watchers of that step.
func TestCompactionDuringReadDoesNotStrandOthers(t *testing.T) {
	h := newHarness(t, Config{}, false)
	for i := uint64(1); i <= 10; i++ {
		h.deliverNow(i, false, put("/a", i))
	}
	gone := h.registerOpts("/a", Options{StartRevision: 1})
	s, sr := h.stream()
	w := h.registerOn(s, "/a", Options{StartRevision: 5})
	var once sync.Once
	h.hist.setOnRead(func(from, to uint64) {
		once.Do(func() {
			gone.Close()
			h.hist.compact(3)
		})
	})
	h.run()
	for rev := uint64(5); rev <= 10; rev++ {
		sr.nextType(w, Put, rev)
	}
}

// A failing history read cancels the watchers that needed it with
// CauseInternal; live watchers go on.
func TestHistoryErrorCancelsWithCauseInternal(t *testing.T) {
	h := newHarness(t, Config{BufferSize: 1}, true)
	s, sr := h.stream()
	w := h.registerOn(s, "/k", Options{})
	l, lr := h.stream()
	other := h.registerOn(l, "/other", Options{})
	h.publish(1, put("/k", 1))
	h.publish(2, put("/k", 2))
	waitFor(t, func() bool { _, behind := h.reg.Counts(); return behind == 1 })
	h.hist.setFail(errors.New("disk on fire"))
	sr.nextType(w, Put, 1) // takes the queue: the step reads, and fails
	if ev := sr.nextCanceled(w, CauseInternal, "disk on fire"); ev.Revision != 1 {
		t.Fatalf("CANCELED@%d, want 1", ev.Revision)
	}
	past := h.registerOpts("/k", Options{StartRevision: 1})
	if ev := recv(t, past); ev.Type != Canceled || ev.Cause != CauseInternal || ev.Revision != 0 {
		t.Fatalf("past start with a failing history: got %v@%d cause %d, want CANCELED@0 internal", ev.Type, ev.Revision, ev.Cause)
	}
	h.publish(3, put("/other", 3))
	lr.nextType(other, Put, 3)
	waitFor(t, func() bool { return h.reg.Len() == 1 })
	h.hist.setFail(nil)
	again := h.registerOpts("/k", Options{StartRevision: 2})
	if ev := recv(t, again); ev.Type != Put || ev.Revision != 2 {
		t.Fatalf("after the disk recovered: got %v@%d, want PUT@2", ev.Type, ev.Revision)
	}
}

// PROGRESS on request: the delivered revision for a live watcher (even
// with no matching event), next-1 for a catching-up one, requests coalesce,
// and only the watcher that asked gets one.
func TestRequestProgress(t *testing.T) {
	h := newHarness(t, Config{}, false)
	s, sr := h.stream()
	h.deliverNow(4, false)
	w := h.registerOn(s, "/k", Options{})
	idle := h.registerOn(s, "/k", Options{})
	for range 100 {
		w.RequestProgress() // coalesce into one PROGRESS
	}
	h.run()
	sr.nextType(w, Progress, 4)
	h.publish(5, put("/k", 5))
	sr.nextType(w, Put, 5) // no second PROGRESS before it
	h.publish(6, put("/other", 6))
	waitFor(t, func() bool { return h.reg.Delivered() == 6 })
	w.RequestProgress()
	sr.nextType(w, Progress, 6)
	sr.nextType(idle, Put, 5)
	sr.takeNow()
	sr.expectNone(idle) // only w asked
	sr.expectNone(w)
}

// A PROGRESS request on a watcher without room is served once its consumer
// takes the queue, without waiting for another batch or a heartbeat.
func TestRequestProgressServedAfterTake(t *testing.T) {
	h := newHarness(t, Config{BufferSize: 2}, true)
	s, sr := h.stream()
	w := h.registerOn(s, "/k", Options{})
	b, br := h.stream()
	probe := h.registerOn(b, "/probe", Options{})
	h.publish(1, put("/k", 1))
	h.publish(2, put("/k", 2))
	waitFor(t, func() bool { return h.reg.Delivered() == 2 })
	w.RequestProgress() // no room: 2 events wait, a PROGRESS needs 2 free
	probe.RequestProgress()
	br.nextType(probe, Progress, 2) // w's request was tried too, and kept
	sr.takeNow()
	sr.nextType(w, Put, 1)
	sr.nextType(w, Put, 2)
	sr.nextType(w, Progress, 2) // no batch, no heartbeat: the Take must do
}

// PROGRESS never goes down and never claims what was not queued, across
// falling behind and catching up.
func TestProgressMonotonicAcrossCatchUp(t *testing.T) {
	h := newHarness(t, Config{BufferSize: 3}, false)
	s, _ := h.stream()
	w := h.registerOn(s, "/k", Options{})
	c := &watchCheck{w: w, delivered: h.reg.Delivered}
	var buf []Event
	take := func() {
		t.Helper()
		buf = s.Take(buf)
		for _, ev := range buf {
			if err := c.see(ev); err != nil {
				t.Fatal(err)
			}
		}
	}
	request := func() {
		w.RequestProgress()
		h.d.pending = h.reg.takeRequests(h.d.pending)
		h.d.serveProgress()
	}
	deliver := func(rev uint64, key string) {
		h.deliverNow(rev, false, put(key, rev))
		c.want = expectedFor(h.hist.allEvents(), "/k", false, 0)
	}
	for rev := uint64(1); rev <= 5; rev++ {
		deliver(rev, "/other")
	}
	request() // live: PROGRESS 5
	deliver(6, "/k")
	deliver(7, "/k")
	deliver(8, "/k") // PROGRESS, 6, 7 fill the buffer: behind at 8
	wantState(t, w, catchingUp)
	request() // no room: kept
	take()
	h.d.serveProgress() // catching up: PROGRESS 7
	deliver(9, "/other")
	h.d.heartbeat() // PROGRESS 7 again
	h.d.catchUpStep()
	wantState(t, w, live)
	take()
	request() // live again: PROGRESS 9
	deliver(10, "/k")
	h.d.lost.Store(12) // batches 11 and 12 could not be queued
	h.hist.add(put("/k", 11))
	c.want = expectedFor(h.hist.allEvents(), "/k", false, 0)
	h.d.checkLost()
	wantState(t, w, catchingUp)
	take()
	request() // PROGRESS 10: behind from 11
	h.d.catchUpStep()
	wantState(t, w, live)
	take()
	request() // PROGRESS 12
	take()
	if c.i != len(c.want) || c.lastProg != 12 || c.progs != 6 {
		t.Fatalf("saw %d of %d events, last PROGRESS %d, %d PROGRESS; want all, 12, 6", c.i, len(c.want), c.lastProg, c.progs)
	}
}

// Heartbeats reach every watcher, again and again, at the revision each
// was sent up to.
func TestHeartbeatReachesEveryWatcher(t *testing.T) {
	h := newHarness(t, Config{ProgressInterval: 5 * time.Millisecond}, true)
	s, sr := h.stream()
	h.publish(3)
	waitFor(t, func() bool { return h.reg.Delivered() == 3 })
	ws := []*Watcher{
		h.registerOn(s, "/k", Options{}),
		h.registerOn(s, "/a/", Options{Prefix: true, PrevKV: true}),
	}
	future := h.registerOn(s, "/f", Options{StartRevision: 10})
	for _, w := range ws {
		for range 3 { // repeats: the timer is re-armed
			sr.nextType(w, Progress, 3)
		}
	}
	sr.nextType(future, Progress, 9)
}

// The heartbeat interval is jittered by ±10%.
func TestHeartbeatJitter(t *testing.T) {
	d := NewDispatcher(quietRegistry(Config{}), newMemHistory(), Config{ProgressInterval: 100 * time.Millisecond})
	lo, hi := time.Hour, time.Duration(0)
	for range 1000 {
		j := d.jittered()
		if j < 90*time.Millisecond || j > 110*time.Millisecond {
			t.Fatalf("jittered interval %v outside 100ms ±10%%", j)
		}
		lo, hi = min(lo, j), max(hi, j)
	}
	if lo > 95*time.Millisecond || hi < 105*time.Millisecond {
		t.Fatalf("1000 intervals span only %v..%v: no jitter", lo, hi)
	}
}

// A heartbeat never makes a watcher fall behind: it is queued only when a
// data event still fits after it.
func TestHeartbeatNeverMakesAWatcherFallBehind(t *testing.T) {
	h := newHarness(t, Config{BufferSize: 2}, false)
	s, sr := h.stream()
	w := h.registerOn(s, "/k", Options{})
	h.d.heartbeat() // 0 waiting: queued
	h.d.heartbeat() // 1 waiting: not queued
	h.deliverNow(1, false, put("/k", 1))
	wantState(t, w, live)
	h.d.heartbeat()
	sr.takeNow()
	sr.nextType(w, Progress, 0)
	sr.nextType(w, Put, 1)
	sr.expectNone(w)
}

// A dispatcher whose catching-up watchers have no room does not spin: it
// reads no history and burns no CPU while idle, heartbeats or not; and it
// resumes at once when the queue is taken.
func TestNoSpinWhileCatchingUpWithoutRoom(t *testing.T) {
	big := put("/big", 3)
	big.Value = make([]byte, 512)
	h := newHarness(t, Config{BufferSize: 2, StreamBytes: 400, ProgressInterval: 2 * time.Millisecond}, true)
	s, sr := h.stream()
	w := h.registerOn(s, "/k", Options{}) // behind on its own buffer
	o, or := h.stream()
	hog := h.registerOn(o, "/big", Options{})
	c := h.registerOn(o, "/c", Options{}) // behind on the stream's bytes
	h.publish(1, put("/k", 1))
	h.publish(2, put("/k", 2))
	h.publish(3, put("/k", 3), big)
	h.publish(4, put("/c", 4))
	waitFor(t, func() bool { _, behind := h.reg.Counts(); return behind == 2 })
	wantState(t, w, catchingUp)
	wantState(t, c, catchingUp)

	const window = 200 * time.Millisecond
	reads0, cpu0 := h.hist.readCount(), cpuTime(t)
	deadline := time.Now().Add(window)
	for time.Now().Before(deadline) {
		if n := h.hist.readCount() - reads0; n > 2 {
			t.Fatalf("%d history reads while idle: the dispatcher spins", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	reads, cpu := h.hist.readCount()-reads0, cpuTime(t)-cpu0
	t.Logf("over %v idle: %d history reads, %v CPU", window, reads, cpu)
	if cpu > window/2 {
		t.Fatalf("%v of CPU over %v idle: the dispatcher spins", cpu, window)
	}
	for rev := uint64(1); rev <= 3; rev++ { // 3 fed from history once taken
		if ev := sr.nextData(w); ev.Type != Put || ev.Revision != rev {
			t.Fatalf("got %v@%d, want PUT@%d", ev.Type, ev.Revision, rev)
		}
	}
	if ev := or.nextData(hog); ev.Revision != 3 {
		t.Fatalf("hog got %v@%d, want PUT@3", ev.Type, ev.Revision)
	}
	if ev := or.nextData(c); ev.Revision != 4 {
		t.Fatalf("got %v@%d, want PUT@4", ev.Type, ev.Revision)
	}
}

// cpuTime returns the user and system CPU time of this process.
func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// The bounds never split a revision: the first event of a revision needs
// room, the rest of it is queued with it, live or from history.
func TestRevisionNeverSplitByBound(t *testing.T) {
	three := func(rev uint64) []Event { return []Event{put("/r/a", rev), put("/r/b", rev), put("/r/c", rev)} }
	checkWhole := func(t *testing.T, evs []Event, revs ...uint64) {
		t.Helper()
		var got []uint64
		count := map[uint64]int{}
		for _, ev := range evs {
			if ev.Type == Put {
				if count[ev.Revision] == 0 {
					got = append(got, ev.Revision)
				}
				count[ev.Revision]++
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(revs) {
			t.Fatalf("queued revisions %v, want %v", got, revs)
		}
		for rev, n := range count {
			if n != 3 {
				t.Fatalf("revision %d: %d of its 3 events queued", rev, n)
			}
		}
	}
	t.Run("buffer", func(t *testing.T) {
		h := newHarness(t, Config{BufferSize: 4}, false)
		s, _ := h.stream()
		w := h.registerOn(s, "/r/", Options{Prefix: true})
		for rev := uint64(1); rev <= 5; rev++ {
			h.deliverNow(rev, false, three(rev)...)
		}
		wantState(t, w, catchingUp)
		checkWhole(t, s.Take(nil), 1, 2) // 2 started with 3 of 4 queued
		h.d.catchUpStep()
		checkWhole(t, s.Take(nil), 3, 4) // from history, the same way
		h.d.catchUpStep()
		checkWhole(t, s.Take(nil), 5)
		wantState(t, w, live)
	})
	t.Run("stream bytes", func(t *testing.T) {
		ev := put("/r/a", 1)
		h := newHarness(t, Config{StreamBytes: 2 * ev.size()}, false)
		s, _ := h.stream()
		a := h.registerOn(s, "/r/", Options{Prefix: true})
		b := h.registerOn(s, "/r/", Options{Prefix: true})
		h.deliverNow(1, false, three(1)...)
		h.deliverNow(2, false, three(2)...)
		evs := s.Take(nil)
		if len(evs) != 6 {
			t.Fatalf("queued %d events, want revision 1 whole for both watchers", len(evs))
		}
		for _, w := range []*Watcher{a, b} {
			wantState(t, w, catchingUp)
			var mine []Event
			for _, ev := range evs {
				if ev.WatchID == w.ID() {
					mine = append(mine, ev)
				}
			}
			checkWhole(t, mine, 1)
		}
	})
}

// A never-reading watcher holds at most BufferSize events while 10,000
// revisions flow (BufferSize-1 plus one revision's events when revisions
// have several of its events), and a stream never holds more than
// StreamBytes plus one revision's events; meanwhile a slow consumer on a small budget gets
// everything, and the never-reading watcher gets everything once it reads.
func TestMemoryBoundWhileRevisionsFlow(t *testing.T) {
	const (
		n      = 10000
		buf    = 8
		budget = 2048
	)
	h := newHarness(t, Config{BufferSize: buf, StreamBytes: budget, CatchUpEvents: 256, ProgressInterval: time.Millisecond}, true)
	// The plan: /k at every revision, /p/x at every third.
	var plan [][]Event
	for rev := uint64(1); rev <= n; rev++ {
		evs := []Event{put("/k", rev)}
		if rev%3 == 0 {
			evs = append(evs, put(fmt.Sprintf("/p/x%d", rev%5), rev))
		}
		plan = append(plan, evs)
	}
	all := planHistory(plan)

	// Never read while the revisions flow: one watcher alone on a stream
	// (its buffer binds), two on another (the stream's bytes bind).
	never1 := h.reg.NewStream()
	never2 := h.reg.NewStream()
	t.Cleanup(never1.Close)
	t.Cleanup(never2.Close)
	nk := h.registerOn(never1, "/k", Options{})
	n2 := []*Watcher{
		h.registerOn(never2, "/", Options{Prefix: true}),
		h.registerOn(never2, "/p/", Options{Prefix: true, PrevKV: true}),
	}
	never2Bound := budget + maxRevisionBytes(all, n2...)

	// Read slowly while they flow.
	slow := h.reg.NewStream()
	t.Cleanup(slow.Close)
	slowWs := []*Watcher{
		h.registerOn(slow, "/", Options{Prefix: true}),
		h.registerOn(slow, "/k", Options{PrevKV: true}),
		h.registerOn(slow, "/p/", Options{Prefix: true}),
	}
	slowBound := budget + maxRevisionBytes(all, slowWs...)

	var wg sync.WaitGroup
	errc := make(chan error, 4)
	stop := make(chan struct{})
	wg.Add(2)
	go func() { // the publisher
		defer wg.Done()
		rng := rand.New(rand.NewPCG(1, 2))
		for rev := 0; rev < n; {
			k := min(1+rng.IntN(4), n-rev)
			var evs []Event
			for _, e := range plan[rev : rev+k] {
				evs = append(evs, e...)
			}
			rev += k
			h.publish(uint64(rev), evs...)
		}
	}()
	var maxPending, maxBytes atomic.Int64
	check := func() error {
		// /k and /p/ have one event per revision: at most BufferSize
		// queued. / has two in every third: a revision started with
		// BufferSize-1 queued goes in whole, one more.
		p := max(never1.pendingCount(nk), never2.pendingCount(n2[1]))
		all := never2.pendingCount(n2[0])
		_, size := never2.queueLen()
		maxPending.Store(max(maxPending.Load(), int64(p)))
		maxBytes.Store(max(maxBytes.Load(), int64(size)))
		if p > buf || all > buf+1 || size >= never2Bound {
			return fmt.Errorf("never-read streams: %d events of a one-event-per-revision watcher (bound %d), %d of the / watcher (bound %d), %d bytes in one stream (bound %d)",
				p, buf, all, buf+1, size, never2Bound)
		}
		return nil
	}
	go func() { // the monitor: queues never taken only grow, so polling sees their peak
		defer wg.Done()
		for {
			if err := check(); err != nil {
				errc <- err
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	err := consume(slow, slowWs, all, consumeOpts{slow: true, seed: 3, bound: slowBound})
	close(stop)
	wg.Wait()
	close(errc)
	if err != nil {
		t.Fatal(err)
	}
	for err := range errc {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return h.reg.Delivered() == n })
	if err := check(); err != nil {
		t.Fatal(err)
	}
	t.Logf("never-read streams: at most %d events of a one-event-per-revision watcher (buffer %d), %d bytes in one stream (bound %d); %d history reads",
		maxPending.Load(), buf, maxBytes.Load(), never2Bound, h.hist.readCount())
	if p := never1.pendingCount(nk); p != buf {
		t.Fatalf("never-read /k watcher: %d events queued, want its buffer, %d", p, buf)
	}
	if _, size := never2.queueLen(); size < budget {
		t.Fatalf("never-read stream of two: %d bytes queued, want its budget, %d, reached", size, budget)
	}
	// Once they read, they get everything.
	if err := consume(never1, []*Watcher{nk}, all, consumeOpts{bound: budget + maxRevisionBytes(all, nk)}); err != nil {
		t.Fatal(err)
	}
	if err := consume(never2, n2, all, consumeOpts{bound: never2Bound}); err != nil {
		t.Fatal(err)
	}
}

// planHistory returns the events of plan (one slice per revision, from 1)
// with previous values, as history would hold them.
func planHistory(plan [][]Event) []Event {
	var evs []Event
	for _, p := range plan {
		evs = append(evs, p...)
	}
	return newMemHistory().add(evs...)
}

// maxRevisionBytes returns the most bytes one revision of all queues for
// the watchers ws (of one stream), and at least a PROGRESS.
func maxRevisionBytes(all []Event, ws ...*Watcher) int {
	per := map[uint64]int{}
	for _, ev := range all {
		for _, w := range ws {
			if matches(w.key, w.prefix, ev.Key) {
				e := ev
				if !w.prevKV {
					e.PrevValue = nil
				}
				per[ev.Revision] += e.size()
			}
		}
	}
	m := eventOverhead
	for _, n := range per {
		m = max(m, n)
	}
	return m
}

type consumeOpts struct {
	slow  bool   // pause at random between takes
	seed  uint64 // for the pauses
	bound int    // no take may reach this many bytes; 0: unchecked
	// late delivers watchers registered on the stream after the start
	// (with the count of them to wait for).
	late  <-chan *Watcher
	nLate int
	// seen, if set, is raised to the highest revision taken and signaled.
	seen   *atomic.Uint64
	signal chan struct{}
	// compacted: a watcher may end with a CANCELED for compaction (which
	// must name an oldest revision above the one it still needed); any
	// other CANCELED is a failure.
	compacted bool
	// ended, if set, receives each watcher's check once it is done.
	ended func(*watchCheck)
}

// consume takes s until every watcher of ws (and o.nLate later ones) has
// received all it must of all, checking each event, and then checks that
// nothing but PROGRESS follows. It returns the first violation.
func consume(s *Stream, ws []*Watcher, all []Event, o consumeOpts) error {
	checks := map[uint64]*watchCheck{}
	for _, w := range ws {
		checks[w.ID()] = newWatchCheck(w, all)
	}
	rng := rand.New(rand.NewPCG(o.seed, 7))
	pending := len(ws) + o.nLate
	doneCount := func() int {
		n := 0
		for _, c := range checks {
			if c.done() || c.canceled != nil {
				n++
			}
		}
		return n
	}
	var buf []Event
	for doneCount() < pending {
		select {
		case <-s.Ready():
		case w := <-o.late:
			checks[w.ID()] = newWatchCheck(w, all)
			continue
		case <-time.After(2 * waitTimeout):
			var st []string
			for _, c := range checks {
				s, next := stateOf(c.w)
				st = append(st, fmt.Sprintf("%d %q: %d/%d (last %d) %v next %d", c.w.ID(), c.w.key, c.i, len(c.want), c.lastRev, s, next))
			}
			return fmt.Errorf("no Ready within %v: %s", 2*waitTimeout, strings.Join(st, "; "))
		}
		buf = s.Take(buf)
		if o.bound > 0 {
			if n := sizeOf(buf); n >= o.bound {
				return fmt.Errorf("took %d bytes at once, bound %d", n, o.bound)
			}
		}
		for _, ev := range buf {
			c := checks[ev.WatchID]
			for c == nil {
				select {
				case w := <-o.late:
					checks[w.ID()] = newWatchCheck(w, all)
					c = checks[ev.WatchID]
				case <-time.After(waitTimeout):
					return fmt.Errorf("event %v@%d for unknown watcher %d", ev.Type, ev.Revision, ev.WatchID)
				}
			}
			if err := c.see(ev); err != nil {
				return err
			}
			if ev.Type == Canceled {
				switch {
				case !o.compacted || ev.Cause != CauseCompacted:
					return fmt.Errorf("watcher %d: unexpected CANCELED@%d cause %d: %s", ev.WatchID, ev.Revision, ev.Cause, ev.Reason)
				case c.done() || ev.CompactRevision <= c.want[c.i].Revision:
					return fmt.Errorf("watcher %d: CANCELED compacted at %d, but the revision it needed, %v, is retained", ev.WatchID, ev.CompactRevision, c.want[min(c.i, len(c.want)-1)].Revision)
				}
			}
			if o.seen != nil && ev.Revision > o.seen.Load() && ev.Type != Progress {
				o.seen.Store(ev.Revision)
			}
		}
		if o.signal != nil {
			select {
			case o.signal <- struct{}{}:
			default:
			}
		}
		if o.slow && rng.IntN(3) == 0 {
			time.Sleep(time.Duration(rng.IntN(400)) * time.Microsecond) // the deliberately slow consumer
		}
	}
	for _, ev := range s.Take(buf) {
		if ev.Type != Progress {
			return fmt.Errorf("watcher %d: %v@%d after all it must receive", ev.WatchID, ev.Type, ev.Revision)
		}
	}
	if o.ended != nil {
		for _, c := range checks {
			o.ended(c)
		}
	}
	return nil
}

// genPlan returns n revisions of 1 to 3 events each (distinct keys within
// a revision), a sixth of them deletes.
func genPlan(rng *rand.Rand, n int) [][]Event {
	keys := []string{"/a/x", "/a/y", "/a/z/w", "/b/x", "/c"}
	plan := make([][]Event, n)
	for i := range plan {
		rev := uint64(i + 1)
		for _, j := range rng.Perm(len(keys))[:1+rng.IntN(3)] {
			if rng.IntN(6) == 0 {
				plan[i] = append(plan[i], del(keys[j], rev))
				continue
			}
			ev := put(keys[j], rev)
			ev.Value = fmt.Appendf(nil, "%s@%d", keys[j], rev)
			plan[i] = append(plan[i], ev)
		}
	}
	return plan
}

// While a goroutine publishes 2000 revisions (batches of 1 to 3, some read
// without previous values, progress requested now and then), slow
// consumers with random pauses fall behind and catch up again and again;
// every watcher must get exactly its events, in order, each once, with its
// previous values, and PROGRESS that never goes back or ahead — including
// watchers registered midway in the past, now and in the future.
func TestCatchUpWhilePublishing(t *testing.T) {
	const n = 2000
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	h := newHarness(t, Config{BufferSize: 8, StreamBytes: 3000, CatchUpEvents: 16, ProgressInterval: time.Millisecond}, true)
	plan := genPlan(rand.New(rand.NewPCG(seed, 1)), n)
	all := planHistory(plan)

	multi := h.reg.NewStream()
	single := h.reg.NewStream()
	fast := h.reg.NewStream()
	lateS := h.reg.NewStream()
	for _, s := range []*Stream{multi, single, fast, lateS} {
		t.Cleanup(s.Close)
	}
	multiWs := []*Watcher{
		h.registerOn(multi, "/a/", Options{Prefix: true, PrevKV: true}),
		h.registerOn(multi, "/a/x", Options{}),
		h.registerOn(multi, "/", Options{Prefix: true}),
		h.registerOn(multi, "/c", Options{PrevKV: true}),
	}
	singleWs := []*Watcher{h.registerOn(single, "/b/", Options{Prefix: true, PrevKV: true})}
	fastW := h.registerOn(fast, "/", Options{Prefix: true})
	var fastSeen atomic.Uint64
	fastSignal := make(chan struct{}, 1)
	late := make(chan *Watcher, 3)

	var wg sync.WaitGroup
	errc := make(chan error, 8)
	quit := make(chan struct{})
	defer close(quit)
	run := func(s *Stream, ws []*Watcher, o consumeOpts) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := consume(s, ws, all, o); err != nil {
				errc <- err
			}
		}()
	}
	run(multi, multiWs, consumeOpts{slow: true, seed: seed + 1, bound: 3000 + maxRevisionBytes(all, multiWs...)})
	run(single, singleWs, consumeOpts{slow: true, seed: seed + 2, bound: 3000 + maxRevisionBytes(all, singleWs...)})
	run(fast, []*Watcher{fastW}, consumeOpts{seen: &fastSeen, signal: fastSignal})
	run(lateS, nil, consumeOpts{slow: true, seed: seed + 3, late: late, nLate: 3})

	var maxBehind atomic.Int64
	wg.Add(1)
	go func() { // the publisher
		defer wg.Done()
		rng := rand.New(rand.NewPCG(seed, 2))
		ws := append(append([]*Watcher{fastW}, multiWs...), singleWs...)
		lateDone := false
		for rev := 0; rev < n; {
			k := min(1+rng.IntN(3), n-rev)
			var evs []Event
			for _, e := range plan[rev : rev+k] {
				evs = append(evs, e...)
			}
			rev += k
			prevRead := h.reg.WantPrev() && rng.IntN(8) != 0
			h.publishPrev(uint64(rev), prevRead, evs...)
			if rng.IntN(10) == 0 {
				ws[rng.IntN(len(ws))].RequestProgress()
			}
			if _, behind := h.reg.Counts(); int64(behind) > maxBehind.Load() {
				maxBehind.Store(int64(behind))
			}
			if rev >= 700 && !lateDone {
				lateDone = true
				for _, o := range []struct {
					key string
					o   Options
				}{
					{"/a/", Options{Prefix: true, PrevKV: true, StartRevision: 300}},
					{"/a/x", Options{}},
					{"/", Options{Prefix: true, StartRevision: 1500}},
				} {
					w, err := lateS.Register([]byte(o.key), o.o)
					if err != nil {
						errc <- err
						return
					}
					late <- w
				}
			}
			// Pace on the fast watcher every 25 revisions, so publishing
			// spans the slow consumers' catching up.
			if rev%25 < k {
				if err := awaitSeen(&fastSeen, fastSignal, quit, uint64(rev)); err != nil {
					if err != errQuit {
						errc <- err
					}
					return
				}
			}
		}
	}()
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	t.Logf("up to %d watchers catching up at once; %d history reads", maxBehind.Load(), h.hist.readCount())
	if maxBehind.Load() == 0 || h.hist.readCount() == 0 {
		t.Fatal("no watcher ever fell behind: the test did not test catching up")
	}
	// Everything was received; with room again, all are live, and nothing
	// but PROGRESS follows.
	waitFor(t, func() bool {
		for _, s := range []*Stream{multi, single, fast, lateS} {
			for _, ev := range s.Take(nil) {
				if ev.Type != Progress {
					t.Fatalf("watcher %d: %v@%d after all it must receive", ev.WatchID, ev.Type, ev.Revision)
				}
			}
		}
		live, behind := h.reg.Counts()
		return behind == 0 && live == 9
	})
}

// While 2000 revisions are published and history is compacted to the last
// 300, watchers that fall too far behind are canceled with CauseCompacted
// (naming an oldest revision above the one they needed, after exactly
// their events before it, in order), and the others get everything; a
// watcher never read until the end is surely canceled.
func TestCompactionWhilePublishing(t *testing.T) {
	const (
		n      = 2000
		window = 300
	)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	h := newHarness(t, Config{BufferSize: 8, StreamBytes: 3000, CatchUpEvents: 16, ProgressInterval: time.Millisecond}, true)
	plan := genPlan(rand.New(rand.NewPCG(seed, 1)), n)
	all := planHistory(plan)
	slow, slower, fast, never := h.reg.NewStream(), h.reg.NewStream(), h.reg.NewStream(), h.reg.NewStream()
	for _, s := range []*Stream{slow, slower, fast, never} {
		t.Cleanup(s.Close)
	}
	slowWs := []*Watcher{
		h.registerOn(slow, "/a/", Options{Prefix: true, PrevKV: true}),
		h.registerOn(slow, "/", Options{Prefix: true}),
	}
	slowerWs := []*Watcher{h.registerOn(slower, "/b/", Options{Prefix: true})}
	fastW := h.registerOn(fast, "/", Options{Prefix: true})
	neverW := h.registerOn(never, "/a/x", Options{})
	var fastSeen atomic.Uint64
	fastSignal := make(chan struct{}, 1)

	var mu sync.Mutex
	var canceled, completed int
	ended := func(c *watchCheck) {
		mu.Lock()
		defer mu.Unlock()
		if c.canceled != nil {
			canceled++
		} else {
			completed++
		}
	}
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	quit := make(chan struct{})
	defer close(quit)
	run := func(s *Stream, ws []*Watcher, o consumeOpts) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := consume(s, ws, all, o); err != nil {
				errc <- err
			}
		}()
	}
	run(slow, slowWs, consumeOpts{slow: true, seed: seed + 1, compacted: true, ended: ended})
	run(slower, slowerWs, consumeOpts{slow: true, seed: seed + 2, compacted: true, ended: ended})
	run(fast, []*Watcher{fastW}, consumeOpts{seen: &fastSeen, signal: fastSignal})
	wg.Add(1)
	go func() { // the publisher
		defer wg.Done()
		rng := rand.New(rand.NewPCG(seed, 2))
		for rev := 0; rev < n; {
			k := min(1+rng.IntN(3), n-rev)
			var evs []Event
			for _, e := range plan[rev : rev+k] {
				evs = append(evs, e...)
			}
			rev += k
			h.publishPrev(uint64(rev), h.reg.WantPrev(), evs...)
			if rev > window {
				h.hist.compact(uint64(rev - window))
			}
			if rev%25 < k { // pace on the fast watcher, which stays well within the window
				if err := awaitSeen(&fastSeen, fastSignal, quit, uint64(rev)); err != nil {
					if err != errQuit {
						errc <- err
					}
					return
				}
			}
		}
	}()
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if err := consume(never, []*Watcher{neverW}, all, consumeOpts{compacted: true, ended: ended}); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d watchers canceled for compaction, %d got everything", canceled, completed)
	if canceled == 0 {
		t.Fatal("the never-read watcher was not canceled")
	}
}

// errQuit: awaitSeen stopped because the test is ending.
var errQuit = errors.New("quit")

// awaitSeen waits, woken by signal, until a consumer has seen revision rev,
// for at most waitTimeout; it returns errQuit if quit closes first.
func awaitSeen(seen *atomic.Uint64, signal, quit <-chan struct{}, rev uint64) error {
	deadline := time.After(waitTimeout)
	for seen.Load() < rev {
		select {
		case <-signal:
		case <-deadline:
			return fmt.Errorf("the fast watcher did not reach %d", rev)
		case <-quit:
			return errQuit
		}
	}
	return nil
}
