package watch

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

// waitTimeout bounds every wait in these tests; nothing should take close.
const waitTimeout = 5 * time.Second

// streamReader is a test consumer of a Stream shared by several watchers:
// it takes events when Ready fires and files them by WatchID. It fails the
// test on an event without a WatchID and on any event for a watcher after
// its CANCELED.
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

// stream returns a new stream of h's registry, closed at cleanup, and a
// reader for it.
func (h *harness) stream() (*Stream, *streamReader) {
	s := h.reg.NewStream()
	h.t.Cleanup(s.Close)
	return s, newStreamReader(h.t, s)
}

// registerOn adds a watcher on s.
func (h *harness) registerOn(s *Stream, key string, o Options) *Watcher {
	h.t.Helper()
	w, err := s.Register([]byte(key), o)
	if err != nil {
		h.t.Fatalf("Register(%q, %+v): %v", key, o, err)
	}
	return w
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

// takeNow takes and files whatever is queued, without waiting, and returns
// how many events it took.
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

// next returns the next event for w, PROGRESS included, waiting for it.
func (sr *streamReader) next(w *Watcher) Event {
	sr.t.Helper()
	for len(sr.queued[w.ID()]) == 0 {
		sr.wait()
	}
	ev := sr.queued[w.ID()][0]
	sr.queued[w.ID()] = sr.queued[w.ID()][1:]
	return ev
}

// nextData returns the next PUT, DELETE or CANCELED for w, skipping PROGRESS.
func (sr *streamReader) nextData(w *Watcher) Event {
	sr.t.Helper()
	for {
		if ev := sr.next(w); ev.Type != Progress {
			return ev
		}
	}
}

// nextType checks the type and revision of w's next event (PROGRESS
// included).
func (sr *streamReader) nextType(w *Watcher, typ EventType, rev uint64) Event {
	sr.t.Helper()
	ev := sr.next(w)
	if ev.Type != typ || ev.Revision != rev {
		sr.t.Fatalf("watcher %d: got %v@%d (key %q, reason %q), want %v@%d", w.ID(), ev.Type, ev.Revision, ev.Key, ev.Reason, typ, rev)
	}
	return ev
}

// nextCanceled checks that w's next event other than PROGRESS is CANCELED
// with the cause and a reason containing every fragment, and that nothing
// for w was taken after it.
func (sr *streamReader) nextCanceled(w *Watcher, cause CancelCause, fragments ...string) Event {
	sr.t.Helper()
	ev := sr.nextData(w)
	if ev.Type != Canceled || ev.Cause != cause {
		sr.t.Fatalf("watcher %d: got %v@%d cause %d (%q), want CANCELED cause %d", w.ID(), ev.Type, ev.Revision, ev.Cause, ev.Reason, cause)
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

// expectNone checks that no event for w was taken and not yet consumed.
func (sr *streamReader) expectNone(w *Watcher) {
	sr.t.Helper()
	if evs := sr.queued[w.ID()]; len(evs) != 0 {
		sr.t.Fatalf("watcher %d: unexpected %v@%d", w.ID(), evs[0].Type, evs[0].Revision)
	}
}

// matches reports whether a watcher of wkey (a prefix if prefix) matches key.
func matches(wkey string, prefix bool, key []byte) bool {
	if prefix {
		return strings.HasPrefix(string(key), wkey)
	}
	return string(key) == wkey
}

// expectedFor returns the events of all (with previous values, as history
// holds them) that a watcher of key with these options, starting after
// start, must receive.
func expectedFor(all []Event, key string, prefix bool, start uint64) []Event {
	var out []Event
	for _, ev := range all {
		if ev.Revision > start && matches(key, prefix, ev.Key) {
			out = append(out, ev)
		}
	}
	return out
}

// watchCheck checks, event by event, what one watcher receives against the
// events it must receive: exactly those, in order, each once, with previous
// values as asked; a PROGRESS never below an earlier PROGRESS or event of
// the watcher, never at or above a wanted event not yet received, and never
// above both the watcher's start and the delivered revision; after
// CANCELED, nothing.
type watchCheck struct {
	w         *Watcher
	want      []Event
	delivered func() uint64 // the registry's delivered revision, or nil

	i        int    // index in want of the next event
	lastRev  uint64 // revision of the last PUT or DELETE
	lastProg uint64
	progs    int
	canceled *Event
}

func newWatchCheck(w *Watcher, all []Event) *watchCheck {
	return &watchCheck{w: w, want: expectedFor(all, w.key, w.prefix, w.Start()), delivered: w.stream.reg.Delivered}
}

func (c *watchCheck) done() bool { return c.i == len(c.want) }

func (c *watchCheck) see(ev Event) error {
	id := c.w.ID()
	if ev.WatchID != id {
		return fmt.Errorf("watcher %d: event %v@%d carries WatchID %d", id, ev.Type, ev.Revision, ev.WatchID)
	}
	if c.canceled != nil {
		return fmt.Errorf("watcher %d: %v@%d after CANCELED@%d", id, ev.Type, ev.Revision, c.canceled.Revision)
	}
	switch ev.Type {
	case Put, Delete:
		if c.i >= len(c.want) {
			return fmt.Errorf("watcher %d: unexpected %v %q@%d after all %d wanted events", id, ev.Type, ev.Key, ev.Revision, len(c.want))
		}
		want := c.want[c.i]
		if ev.Type != want.Type || ev.Revision != want.Revision || !bytes.Equal(ev.Key, want.Key) ||
			!bytes.Equal(ev.Value, want.Value) || ev.Version != want.Version {
			return fmt.Errorf("watcher %d: event %d is %v %q=%q@%d, want %v %q=%q@%d (a gap, a duplicate or a reordering)",
				id, c.i, ev.Type, ev.Key, ev.Value, ev.Revision, want.Type, want.Key, want.Value, want.Revision)
		}
		if ev.HasPrev != c.w.prevKV {
			return fmt.Errorf("watcher %d (prevKV=%v): %v@%d has HasPrev=%v", id, c.w.prevKV, ev.Type, ev.Revision, ev.HasPrev)
		}
		if c.w.prevKV && !bytes.Equal(ev.PrevValue, want.PrevValue) {
			return fmt.Errorf("watcher %d: %v %q@%d prev %q, want %q", id, ev.Type, ev.Key, ev.Revision, ev.PrevValue, want.PrevValue)
		}
		if !c.w.prevKV && ev.PrevValue != nil {
			return fmt.Errorf("watcher %d did not ask for previous values but got %q@%d", id, ev.PrevValue, ev.Revision)
		}
		if ev.Revision <= c.lastProg {
			return fmt.Errorf("watcher %d: %v@%d after PROGRESS %d", id, ev.Type, ev.Revision, c.lastProg)
		}
		c.i++
		c.lastRev = ev.Revision
	case Progress:
		if err := c.checkMark(ev, "PROGRESS"); err != nil {
			return err
		}
		c.lastProg = ev.Revision
		c.progs++
	case Canceled:
		if err := c.checkMark(ev, "CANCELED"); err != nil {
			return err
		}
		c.canceled = &ev
	default:
		return fmt.Errorf("watcher %d: unexpected %v", id, ev.Type)
	}
	return nil
}

// checkMark checks the revision of a PROGRESS or CANCELED: every event at
// or below it was received, it is not below what came before, and not
// beyond what the watcher was offered.
func (c *watchCheck) checkMark(ev Event, what string) error {
	id := c.w.ID()
	switch {
	case ev.Revision < c.lastProg:
		return fmt.Errorf("watcher %d: %s went back from PROGRESS %d to %d", id, what, c.lastProg, ev.Revision)
	case ev.Revision < c.lastRev:
		return fmt.Errorf("watcher %d: %s %d below its last event %d", id, what, ev.Revision, c.lastRev)
	case ev.Revision < c.w.Start():
		return fmt.Errorf("watcher %d: %s %d below its start %d", id, what, ev.Revision, c.w.Start())
	case c.i < len(c.want) && c.want[c.i].Revision <= ev.Revision:
		return fmt.Errorf("watcher %d: %s %d before its event at %d was queued", id, what, ev.Revision, c.want[c.i].Revision)
	}
	if c.delivered != nil {
		if d := c.delivered(); ev.Revision > max(d, c.w.Start()) {
			return fmt.Errorf("watcher %d: %s %d above both the delivered revision %d and its start %d", id, what, ev.Revision, d, c.w.Start())
		}
	}
	return nil
}

// stateOf returns w's state and next revision.
func stateOf(w *Watcher) (state, uint64) {
	w.stream.reg.mu.Lock()
	defer w.stream.reg.mu.Unlock()
	return w.state, w.next
}

// wantState fails unless w is in st.
func wantState(t *testing.T, w *Watcher, st state) {
	t.Helper()
	if got, next := stateOf(w); got != st {
		t.Fatalf("watcher %d (%q) is %v (next %d), want %v", w.ID(), w.key, got, next, st)
	}
}

// queueLen returns the number of events waiting in s and their size.
func (s *Stream) queueLen() (n, size int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.q.len(), s.bytes
}

// sizeOf returns what evs count for against a stream's byte budget.
func sizeOf(evs []Event) int {
	n := 0
	for i := range evs {
		n += evs[i].size()
	}
	return n
}
