package watch

import (
	"errors"
	"strings"
	"testing"
)

// newStreamOf returns a new stream of c, closed when t ends.
func newStreamOf(t *testing.T, c *Client) *Stream {
	t.Helper()
	s, err := c.NewStream()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// The streams of one Client share its byte budget: once one of them holds
// ClientBytes, a watcher on another falls behind instead of queuing, and
// gets every event, in order, from history once the first is taken; a
// stream of another Client is not affected.
func TestClientBytesBoundSharedByStreams(t *testing.T) {
	one := put("/a", 1)
	h := newHarness(t, Config{ClientBytes: 2 * one.size()}, false)
	c := h.reg.NewClient()
	hog, other := newStreamOf(t, c), newStreamOf(t, c)
	hr, or := newStreamReader(t, hog), newStreamReader(t, other)
	elsewhere, er := h.stream()
	a := h.registerOn(hog, "/a", Options{})
	b := h.registerOn(other, "/b", Options{})
	e := h.registerOn(elsewhere, "/b", Options{})
	h.deliverNow(1, false, put("/a", 1))
	h.deliverNow(2, false, put("/a", 2)) // the Client's budget is spent, all by hog
	h.deliverNow(3, false, put("/a", 3))
	wantState(t, a, catchingUp) // hog holds more than its share (one of two streams)
	// other holds nothing, less than its share: a stream of the same
	// client that is read is not starved by one that is not.
	h.deliverNow(4, false, put("/b", 4))
	wantState(t, b, live)
	h.deliverNow(5, false, put("/b", 5)) // other now holds its share
	wantState(t, b, catchingUp)
	wantState(t, e, live)
	if got, limit := c.Bytes(), 2*2*one.size(); got >= limit {
		t.Fatalf("Client.Bytes = %d, want < %d (twice the budget)", got, limit)
	}
	if h.d.catchUpStep() {
		t.Fatal("a catch-up step made progress for streams holding their shares of a spent budget")
	}
	or.nextType(b, Put, 4) // other is read: b catches up
	for h.d.catchUpStep() {
	}
	wantState(t, b, live)
	wantState(t, a, catchingUp)
	hr.takeNow()
	for h.d.catchUpStep() {
	}
	wantState(t, a, live)
	hr.nextType(a, Put, 1)
	hr.nextType(a, Put, 2)
	hr.nextType(a, Put, 3)
	or.nextType(b, Put, 5)
	er.nextType(e, Put, 4)
	er.nextType(e, Put, 5)
	hr.takeNow()
	or.takeNow()
	if c.Bytes() != 0 {
		t.Fatalf("Client.Bytes = %d after its streams were taken, want 0", c.Bytes())
	}
}

// TakeBytes takes at most max bytes (one event at least), signals Ready
// while it leaves some, and what it took counts against the budgets until
// two more TakeBytes.
func TestTakeBytesCountsWhatIsBeingSent(t *testing.T) {
	ev := put("/k", 1)
	h := newHarness(t, Config{}, false)
	c := h.reg.NewClient()
	s := newStreamOf(t, c)
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
			t.Fatalf("take %d: stream holds %d bytes, client %d, want %d", i, s.Bytes(), c.Bytes(), want.bytes)
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
		t.Fatalf("after Close the Client holds %d bytes, %d watchers, want 0, 0", c.Bytes(), c.Watchers())
	}
}

// Drop discards the watcher's queued events (its CANCELED too) and gives
// their bytes back at once; the other watchers' events stay, in order.
func TestDropReleasesQueuedEvents(t *testing.T) {
	h := newHarness(t, Config{}, false)
	c := h.reg.NewClient()
	s := newStreamOf(t, c)
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
		t.Fatalf("after Drop: client holds %d bytes, stream %d (before %d), want %d", c.Bytes(), s.Bytes(), before, want)
	}
	if c.Watchers() != 1 || h.reg.Len() != 1 {
		t.Fatalf("after Drop: client has %d watchers, registry %d, want 1, 1", c.Watchers(), h.reg.Len())
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

// A Client holds at most MaxWatchersPerClient watchers over all its
// streams; past it Register fails with ErrLimitExceeded saying so, while
// another Client still registers; closing gives the slots back.
func TestWatcherQuotaPerClient(t *testing.T) {
	h := newHarness(t, Config{MaxWatchers: 10, MaxWatchersPerClient: 3}, false)
	c := h.reg.NewClient()
	s1, s2 := newStreamOf(t, c), newStreamOf(t, c)
	w := h.registerOn(s1, "/a", Options{})
	h.registerOn(s2, "/b", Options{})
	h.registerOn(s2, "/c", Options{})
	_, err := s1.Register([]byte("/d"), Options{})
	if !errors.Is(err, ErrLimitExceeded) || !strings.Contains(err.Error(), "this client holds 3 watchers, the limit is 3") {
		t.Fatalf("4th watcher of the Client: %v, want ErrLimitExceeded naming the client's count and limit", err)
	}
	other := newStreamOf(t, h.reg.NewClient())
	for i := 0; i < 3; i++ {
		h.registerOn(other, "/e", Options{})
	}
	w.Close()
	h.registerOn(s1, "/d", Options{}) // the slot is back
	s2.Close()
	if c.Watchers() != 1 || h.reg.Len() != 4 {
		t.Fatalf("Client has %d watchers, registry %d, want 1, 4", c.Watchers(), h.reg.Len())
	}
}

// A Client has at most MaxStreamsPerClient streams open; past it
// NewStream fails with ErrLimitExceeded saying so, another Client still
// opens streams, and Close (once, however often called) gives the slot
// back.
func TestStreamQuotaPerClient(t *testing.T) {
	h := newHarness(t, Config{MaxStreamsPerClient: 2}, false)
	c := h.reg.NewClient()
	first := newStreamOf(t, c)
	newStreamOf(t, c)
	_, err := c.NewStream()
	if !errors.Is(err, ErrLimitExceeded) || !strings.Contains(err.Error(), "this client has 2 watch streams open, the limit is 2") {
		t.Fatalf("3rd stream of the Client: %v, want ErrLimitExceeded naming the client's count and limit", err)
	}
	other := h.reg.NewClient()
	newStreamOf(t, other)
	newStreamOf(t, other)
	first.Close()
	first.Close() // idempotent: one slot back, not two
	newStreamOf(t, c)
	if _, err := c.NewStream(); !errors.Is(err, ErrLimitExceeded) {
		t.Fatalf("a stream past the limit after Close twice: %v, want ErrLimitExceeded", err)
	}
	if c.Streams() != 2 || other.Streams() != 2 {
		t.Fatalf("Clients have %d and %d streams open, want 2 and 2", c.Streams(), other.Streams())
	}
}

// Past the node-wide TotalBytes, the client holding the most falls behind
// (and later gets every event, in order, from history) while a client
// holding less still queues: so many clients, each within its own budget,
// cannot together hold more than twice TotalBytes.
func TestTotalBytesBoundFallsBehindTheBiggestHolder(t *testing.T) {
	ev := put("/a/k", 1)
	one := ev.size()
	h := newHarness(t, Config{TotalBytes: 4 * one}, false)
	hog := newStreamOf(t, h.reg.NewClient())
	good := newStreamOf(t, h.reg.NewClient())
	hr, gr := newStreamReader(t, hog), newStreamReader(t, good)
	a := h.registerOn(hog, "/a/", Options{Prefix: true})
	b := h.registerOn(good, "/b/", Options{Prefix: true})
	for rev := uint64(1); rev <= 4; rev++ {
		h.deliverNow(rev, false, put("/a/k", rev))
	}
	wantState(t, a, live)
	h.deliverNow(5, false, put("/a/k", 5)) // the total is spent, all by hog
	wantState(t, a, catchingUp)
	if got := h.reg.Bytes(); got != 4*one {
		t.Fatalf("registry holds %d bytes, want %d (TotalBytes)", got, 4*one)
	}
	// The good client holds nothing, less than its share: it queues.
	h.deliverNow(6, false, put("/b/k", 6), put("/a/k", 6))
	wantState(t, b, live)
	gr.nextType(b, Put, 6)
	h.deliverNow(7, false, put("/b/k", 7))
	wantState(t, b, live)
	gr.nextType(b, Put, 7)
	if h.d.catchUpStep() {
		t.Fatal("a catch-up step made progress for a client holding the whole budget")
	}
	hr.takeNow()
	for h.d.catchUpStep() {
	}
	wantState(t, a, live)
	for rev := uint64(1); rev <= 6; rev++ {
		hr.nextType(a, Put, rev)
	}
}

// Clients that never read, each far within its own budget, hold at most
// twice TotalBytes together (plus one revision each): each one stops at
// its equal share once the total is spent.
func TestTotalBytesBoundsManyClients(t *testing.T) {
	ev := put("/a/k", 1)
	one := ev.size()
	const clients = 10
	h := newHarness(t, Config{TotalBytes: 8 * one}, false)
	var ws []*Watcher
	for i := 0; i < clients; i++ {
		ws = append(ws, h.registerOn(newStreamOf(t, h.reg.NewClient()), "/a/", Options{Prefix: true}))
	}
	for rev := uint64(1); rev <= 50; rev++ {
		h.deliverNow(rev, false, put("/a/k", rev))
		if got := h.reg.Bytes(); got > 2*8*one+clients*one {
			t.Fatalf("after revision %d the registry holds %d bytes, want <= %d", rev, got, 2*8*one+clients*one)
		}
	}
	for _, w := range ws {
		wantState(t, w, catchingUp)
	}
}

// A client that reads the way the server does (TakeBytes until one comes
// back empty) still counts its last message as being sent; past the
// node-wide budget that leftover alone can reach its share. Its empty queue
// must still take the next revision: nothing else would ever release the
// leftover (a later TakeBytes needs something queued), and its watchers
// would stay behind for good.
func TestReadingClientsKeepWatchingPastTheTotalBudget(t *testing.T) {
	first := put("/a/k", 1)
	one := first.size()
	h := newHarness(t, Config{TotalBytes: 2 * one}, false)
	var streams []*Stream
	var ws []*Watcher
	for i := 0; i < 2; i++ {
		s := newStreamOf(t, h.reg.NewClient())
		streams = append(streams, s)
		ws = append(ws, h.registerOn(s, "/a/", Options{Prefix: true}))
	}
	readAll := func(rev uint64) {
		t.Helper()
		for i, s := range streams {
			got := s.TakeBytes(nil, 1<<20)
			var data []Event
			for _, ev := range got {
				if ev.Type == Put {
					data = append(data, ev)
				}
			}
			if len(data) != 1 || data[0].Revision != rev {
				t.Fatalf("stream %d took %+v, want the put at revision %d", i, got, rev)
			}
			if more := s.TakeBytes(nil, 1<<20); len(more) != 0 {
				t.Fatalf("stream %d: a second take got %d events", i, len(more))
			}
		}
	}
	for rev := uint64(1); rev <= 5; rev++ {
		h.deliverNow(rev, false, put("/a/k", rev))
		for _, w := range ws {
			wantState(t, w, live)
		}
		readAll(rev)
	}
	if got := h.reg.Bytes(); got != 2*one {
		t.Fatalf("the registry holds %d bytes, want %d: each client's last message, as being sent", got, 2*one)
	}
}
