package watch

import (
	"sync"
	"sync/atomic"
)

// The queue array of a Stream grows by doubling from streamMinCap events
// (120 bytes each), so its capacity is always a power of two; once drained,
// an array of at most streamRetainCap events (120 KiB) is kept for reuse, a
// larger one, left by a burst, is released.
const (
	streamMinCap    = 16
	streamRetainCap = 1024
)

// Stream delivers the events of many watchers to one consumer, in dispatch
// order: the order the dispatcher delivered them, which is revision order
// for each watcher. Event.WatchID says which watcher an event is for.
//
// Its queue grows only while events are waiting, with no room set aside per
// watcher, and is emptied by every Take. Each watcher still has the bound
// of channel mode: it may have at most Config.StreamBufferSize events queued and
// not yet taken; the event that would exceed that is replaced by CANCELED
// (the watcher is removed, the others on the stream are not affected).
//
// A Stream is safe for concurrent use; Take is meant to be called by one
// consumer goroutine. Create one with Registry.NewStream and Close it when
// done.
type Stream struct {
	reg   *Registry
	ready chan struct{}
	// closed is set by Close, under reg.mu.
	closed atomic.Bool
	// ws holds the stream's registered watchers; guarded by reg.mu.
	ws []*Watcher

	mu sync.Mutex
	q  []Event
	// gen counts the Takes that emptied a non-empty queue; a watcher's
	// pending count is valid only while its takeGen equals gen.
	gen uint64
}

// NewStream returns an empty stream delivering events of watchers of r.
func (r *Registry) NewStream() *Stream {
	return &Stream{reg: r, ready: make(chan struct{}, 1)}
}

// Register adds a stream-mode watcher: it behaves as one added by
// Registry.Register (same validation, cap shared with channel-mode watchers,
// start revision and errors), except that its events are queued in s, not
// sent on a channel of its own (its Events method returns nil). It fails
// with ErrClosed also once s is closed.
func (s *Stream) Register(key []byte, prefix, prevKV bool) (*Watcher, error) {
	return s.reg.register(key, prefix, prevKV, s)
}

// Ready returns a channel with room for one signal, sent when events are
// appended to an empty queue; signals coalesce. The consumer waits on it,
// then calls Take. A signal may be stale (Take then returns no events), but
// while events are waiting a signal is pending or the consumer has received
// one it has not yet answered with Take.
func (s *Stream) Ready() <-chan struct{} { return s.ready }

// Take never waits for events (it may wait for the dispatcher to finish
// queuing one event for the watchers of s). It appends every event queued
// in s, in dispatch order, to buf[:0] and returns the result (buf[:0],
// possibly nil, when none is waiting); the queue is then empty and every
// watcher of s has zero events pending. The returned slice (and buf's array, if it was reused) belongs to
// the caller: pass it back on the next call to avoid allocating. The events'
// byte slices are shared and read-only, as in channel mode.
func (s *Stream) Take(buf []Event) []Event {
	buf = buf[:0]
	s.mu.Lock()
	if len(s.q) == 0 {
		s.mu.Unlock()
		return buf
	}
	buf = append(buf, s.q...)
	if cap(s.q) > streamRetainCap {
		s.q = nil // a burst: give the memory back
	} else {
		clear(s.q) // drop the references to keys and values
		s.q = s.q[:0]
	}
	s.gen++
	s.mu.Unlock()
	return buf
}

// Close unregisters every watcher of s at once, without sending them
// CANCELED, and discards the events waiting in s; nothing is queued in s
// afterwards and Register fails with ErrClosed. It is idempotent.
func (s *Stream) Close() {
	r := s.reg
	r.mu.Lock()
	if !s.closed.Load() {
		s.closed.Store(true)
		for i := len(s.ws) - 1; i >= 0; i-- { // from the end: no element moves
			r.removeLocked(s.ws[i])
		}
		s.ws = nil
		s.mu.Lock()
		s.q = nil
		s.mu.Unlock()
	}
	r.mu.Unlock()
}

// Len returns the number of watchers registered on s.
func (s *Stream) Len() int {
	s.reg.mu.RLock()
	defer s.reg.mu.RUnlock()
	return len(s.ws)
}

// push appends ev, an event for w, unless w already has limit events
// pending (limit < 0: no limit). It reports whether it appended (or dropped
// ev because s is closed) and how many events w had pending. Only the
// delivering goroutine calls it, holding reg.mu (read or write), which
// excludes Close.
func (s *Stream) push(w *Watcher, ev *Event, limit int) (ok bool, pending int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pushLocked(w, ev, limit)
}

// pushLocked is push with s.mu held.
func (s *Stream) pushLocked(w *Watcher, ev *Event, limit int) (ok bool, pending int) {
	if s.closed.Load() {
		return true, 0
	}
	if w.takeGen != s.gen {
		w.takeGen, w.pending = s.gen, 0 // a Take emptied the queue since
	}
	if limit >= 0 && w.pending >= limit {
		return false, w.pending
	}
	if len(s.q) == cap(s.q) {
		// Exact powers of two (append would round up to a size class and
		// overshoot streamRetainCap at 1024 events).
		q := make([]Event, len(s.q), max(2*cap(s.q), streamMinCap))
		copy(q, s.q)
		s.q = q
	}
	s.q = append(s.q, *ev)
	w.pending++
	if len(s.q) == 1 {
		select {
		case s.ready <- struct{}{}:
		default: // a signal is already pending
		}
	}
	return true, w.pending - 1
}
