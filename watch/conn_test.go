package watch

import (
	"errors"
	"strings"
	"testing"
)

// The streams of one Conn share its byte budget: once one of them holds
// ConnBytes, a watcher on another falls behind instead of queuing, and
// gets every event, in order, from history once the first is taken; a
// stream of another Conn is not affected.
func TestConnBytesBoundSharedByStreams(t *testing.T) {
	one := put("/a", 1)
	h := newHarness(t, Config{ConnBytes: 2 * one.size()}, false)
	c := h.reg.NewConn()
	hog, other := c.NewStream(), c.NewStream()
	t.Cleanup(hog.Close)
	t.Cleanup(other.Close)
	hr, or := newStreamReader(t, hog), newStreamReader(t, other)
	elsewhere, er := h.stream()
	a := h.registerOn(hog, "/a", Options{})
	b := h.registerOn(other, "/b", Options{})
	e := h.registerOn(elsewhere, "/b", Options{})
	h.deliverNow(1, false, put("/a", 1))
	h.deliverNow(2, false, put("/a", 2)) // the Conn's budget is spent
	h.deliverNow(3, false, put("/b", 3))
	wantState(t, b, catchingUp)
	wantState(t, e, live)
	if got, want := c.Bytes(), 2*one.size(); got != want {
		t.Fatalf("Conn.Bytes = %d, want %d", got, want)
	}
	h.deliverNow(4, false, put("/b", 4))
	if h.d.catchUpStep() {
		t.Fatal("a catch-up step made progress with the Conn's budget spent")
	}
	hr.takeNow()
	if c.Bytes() != 0 {
		t.Fatalf("Conn.Bytes = %d after its streams were taken, want 0", c.Bytes())
	}
	h.d.catchUpStep()
	wantState(t, b, live)
	hr.nextType(a, Put, 1)
	hr.nextType(a, Put, 2)
	or.nextType(b, Put, 3)
	or.nextType(b, Put, 4)
	er.nextType(e, Put, 3)
	er.nextType(e, Put, 4)
}

// TakeBytes takes at most max bytes (one event at least), signals Ready
// while it leaves some, and what it took counts against the budgets until
// two more TakeBytes.
func TestTakeBytesCountsWhatIsBeingSent(t *testing.T) {
	ev := put("/k", 1)
	h := newHarness(t, Config{}, false)
	c := h.reg.NewConn()
	s := c.NewStream()
	t.Cleanup(s.Close)
	w := h.registerOn(s, "/k", Options{})
	for rev := uint64(1); rev <= 5; rev++ {
		h.deliverNow(rev, false, put("/k", rev))
	}
	<-s.Ready()
	size := ev.size()
	var buf []Event
	for i, want := range []struct {
		revs  []uint64
		bytes int // what s and c hold after the take
	}{
		{[]uint64{1, 2}, 5 * size},
		{[]uint64{3, 4}, 5 * size},
		{[]uint64{5}, 3 * size}, // 1 and 2 are no longer counted
		{nil, size},
		{nil, 0},
	} {
		buf = s.TakeBytes(buf, 2*size+size/2)
		var revs []uint64
		for _, e := range buf {
			if e.WatchID != w.ID() {
				t.Fatalf("take %d: event for watcher %d", i, e.WatchID)
			}
			revs = append(revs, e.Revision)
		}
		if len(revs) != len(want.revs) || (len(revs) > 0 && (revs[0] != want.revs[0] || revs[len(revs)-1] != want.revs[len(want.revs)-1])) {
			t.Fatalf("take %d: revisions %v, want %v", i, revs, want.revs)
		}
		if s.Bytes() != want.bytes || c.Bytes() != want.bytes {
			t.Fatalf("take %d: stream holds %d bytes, conn %d, want %d", i, s.Bytes(), c.Bytes(), want.bytes)
		}
		left := i < 2
		select {
		case <-s.Ready():
			if !left {
				t.Fatalf("take %d: Ready signaled with the queue empty", i)
			}
		default:
			if left {
				t.Fatalf("take %d: no Ready signal with events left", i)
			}
		}
	}
	// One large event goes alone, whatever max.
	h.deliverNow(6, false, put("/k", 6))
	if got := s.TakeBytes(buf, 1); len(got) != 1 || got[0].Revision != 6 {
		t.Fatalf("TakeBytes(1) = %v, want the event at 6", got)
	}
	s.Close()
	if c.Bytes() != 0 || c.Watchers() != 0 {
		t.Fatalf("after Close the Conn holds %d bytes, %d watchers, want 0, 0", c.Bytes(), c.Watchers())
	}
}

// Drop discards the watcher's queued events (its CANCELED too) and gives
// their bytes back at once; the other watchers' events stay, in order.
func TestDropReleasesQueuedEvents(t *testing.T) {
	h := newHarness(t, Config{}, false)
	c := h.reg.NewConn()
	s := c.NewStream()
	t.Cleanup(s.Close)
	sr := newStreamReader(t, s)
	gone := h.registerOn(s, "/", Options{Prefix: true})
	kept := h.registerOn(s, "/k", Options{})
	canceled := h.registerOn(s, "/k", Options{RequireLeader: true})
	for rev := uint64(1); rev <= 3; rev++ {
		h.deliverNow(rev, false, put("/k", rev))
	}
	h.reg.CancelRequireLeader("no leader")
	before := c.Bytes()
	gone.Drop()
	canceled.Drop()
	gone.Drop() // idempotent
	ev := put("/k", 1)
	if want := 3 * ev.size(); c.Bytes() != want || s.Bytes() != want {
		t.Fatalf("after Drop: conn holds %d bytes, stream %d (before %d), want %d", c.Bytes(), s.Bytes(), before, want)
	}
	if c.Watchers() != 1 || h.reg.Len() != 1 {
		t.Fatalf("after Drop: conn has %d watchers, registry %d, want 1, 1", c.Watchers(), h.reg.Len())
	}
	for rev := uint64(1); rev <= 3; rev++ {
		sr.nextType(kept, Put, rev)
	}
	sr.expectNone(gone)
	sr.expectNone(canceled)
	kept.Drop()
	if n, _ := s.queueLen(); n != 0 || s.q.head != nil {
		t.Fatalf("queue holds %d events (head block %p) after every watcher dropped", n, s.q.head)
	}
}

// A Conn holds at most MaxWatchersPerConn watchers over all its streams;
// past it Register fails with ErrLimitExceeded saying so, while another
// Conn still registers; closing gives the slots back.
func TestWatcherQuotaPerConn(t *testing.T) {
	h := newHarness(t, Config{MaxWatchers: 10, MaxWatchersPerConn: 3}, false)
	c := h.reg.NewConn()
	s1, s2 := c.NewStream(), c.NewStream()
	t.Cleanup(s1.Close)
	t.Cleanup(s2.Close)
	w := h.registerOn(s1, "/a", Options{})
	h.registerOn(s2, "/b", Options{})
	h.registerOn(s2, "/c", Options{})
	_, err := s1.Register([]byte("/d"), Options{})
	if !errors.Is(err, ErrLimitExceeded) || !strings.Contains(err.Error(), "this connection holds 3 watchers, the limit is 3") {
		t.Fatalf("4th watcher of the Conn: %v, want ErrLimitExceeded naming the connection's count and limit", err)
	}
	other := h.reg.NewConn().NewStream()
	t.Cleanup(other.Close)
	for i := 0; i < 3; i++ {
		h.registerOn(other, "/e", Options{})
	}
	w.Close()
	h.registerOn(s1, "/d", Options{}) // the slot is back
	s2.Close()
	if c.Watchers() != 1 || h.reg.Len() != 4 {
		t.Fatalf("Conn has %d watchers, registry %d, want 1, 4", c.Watchers(), h.reg.Len())
	}
}
