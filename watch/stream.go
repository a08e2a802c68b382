package watch

import (
	"context"
	"sync"
	"sync/atomic"
)

// Stream delivers the events of many watchers to one consumer, in the order
// the dispatcher queued them, which is revision order for each watcher;
// Event.WatchID says which watcher an event is for.
//
// Its queue grows only while events are waiting and is emptied by every
// Take. It is bounded four times: a watcher may have at most
// Config.BufferSize events waiting, the queue at most Config.StreamBytes
// bytes, all the streams of its Client together at most
// Config.ClientBytes, and all streams of the registry together at most
// Config.TotalBytes, past which the clients holding the most fall behind
// (what a consumer took with TakeBytes and may still be sending counts
// too). An event that would start a revision past any
// bound is not queued: its watcher falls behind and is fed from history
// once the consumer has taken the queue. (The rest of a revision whose
// first event was queued for a watcher is always queued with it, so a
// revision is never split by a bound; CANCELED and PROGRESS need no room
// of their own beyond that.)
//
// A Stream is safe for concurrent use; Take is meant to be called by one
// consumer goroutine. Create one with Registry.NewStream or
// Client.NewStream and Close it when done.
type Stream struct {
	reg *Registry
	// client is the Client whose budgets s shares.
	client *Client
	ready  chan struct{}
	// closed is set by Close, under reg.mu.
	closed atomic.Bool
	// ws holds the stream's registered watchers; guarded by reg.mu.
	ws []*Watcher

	mu sync.Mutex
	q  eventQueue
	// bytes is what q counts for against Config.StreamBytes and the
	// Client's budget.
	bytes int
	// sent and sending are what the last two TakeBytes took: the consumer
	// may still hold them (or gRPC, in its send buffer), so they count
	// against both budgets until the next two TakeBytes or Take.
	sent, sending int
	// gen counts the Takes that emptied a non-empty queue; a watcher's
	// pending count is valid only while its takeGen equals gen.
	gen uint64

	// progress decides whether a heartbeat may queue one PROGRESS for
	// every watcher of the stream (progress.go).
	progress streamProgress
}

// NewStream returns an empty stream delivering events of watchers of r,
// on a Client of its own.
func (r *Registry) NewStream() *Stream {
	s, _ := r.NewClient().NewStream() // the first stream of a Client is always allowed
	return s
}

// Register adds a watcher for key (or, with o.Prefix, for every key under
// the prefix key, which must start and end with '/'), whose events are
// queued in s. Errors wrap ErrInvalidKey, ErrInvalidPrefix,
// ErrLimitExceeded or ErrClosed, or are a *CompactedError.
func (s *Stream) Register(key []byte, o Options) (*Watcher, error) {
	return s.reg.register(key, o, s)
}

// Ready returns a channel with room for one signal, sent when events are
// appended to an empty queue; signals coalesce. The consumer waits on it,
// then calls Take. A signal may be stale (Take then returns no events), but
// while events are waiting a signal is pending or the consumer has received
// one it has not yet answered with Take.
func (s *Stream) Ready() <-chan struct{} { return s.ready }

// Take never waits for events. It appends every event queued in s, in
// order, to buf[:0] and returns the result (buf[:0] when none is waiting);
// the queue is then empty and every watcher of s has zero events pending.
// The returned slice belongs to the caller: pass it back on the next call
// to avoid allocating. The events' byte slices are shared and read-only.
func (s *Stream) Take(buf []Event) []Event {
	buf = buf[:0]
	s.mu.Lock()
	freed := s.sent + s.sending
	s.sent, s.sending = 0, 0
	n := s.q.len()
	if n == 0 {
		s.releaseLocked(freed)
		s.mu.Unlock()
		return buf
	}
	for s.q.len() > 0 {
		ev, _ := s.q.front()
		buf = append(buf, *ev)
		s.q.pop()
	}
	s.releaseLocked(freed + s.bytes)
	s.bytes = 0
	s.gen++
	s.mu.Unlock()
	s.reg.counters.taken.Add(uint64(n))
	s.reg.poke() // watchers of s that fell behind have room again
	return buf
}

// TakeBytes is Take for a consumer that sends what it takes on: it takes
// the events at the head of the queue, at most max bytes of them (but at
// least one), and signals Ready again when it leaves some. What it takes
// still counts against the stream's and the Client's budgets until two more
// TakeBytes (or a Take) — while the consumer, or gRPC's send buffer behind
// it, may still hold those events — so a consumer that cannot send holds
// a bounded number of bytes however long it is stuck.
func (s *Stream) TakeBytes(buf []Event, max int) []Event {
	buf = buf[:0]
	s.mu.Lock()
	freed := s.sent
	s.sent, s.sending = s.sending, 0
	n, size := 0, 0
	for s.q.len() > 0 {
		ev, w := s.q.front()
		if n > 0 && size+ev.size() > max {
			break
		}
		size += ev.size()
		n++
		buf = append(buf, *ev)
		if w != nil { // nil: a stream PROGRESS
			w.pending-- // every queued event's watcher has takeGen == gen
		}
		s.q.pop()
	}
	if n == 0 {
		s.releaseLocked(freed)
		s.mu.Unlock()
		return buf
	}
	s.sending = size
	s.bytes -= size
	s.releaseLocked(freed)
	if s.q.len() == 0 {
		s.gen++
	} else {
		s.signalLocked() // the consumer comes back for the rest
	}
	s.mu.Unlock()
	s.reg.counters.taken.Add(uint64(n))
	s.reg.poke() // watchers of s that fell behind may have room again
	return buf
}

// releaseLocked gives n bytes back to the Client's (and the node-wide)
// budget and wakes the dispatcher: watchers of other streams of the Client,
// or of other clients, that fell behind may have room again. s.mu is held.
func (s *Stream) releaseLocked(n int) {
	if n != 0 {
		s.client.bytes.Add(int64(-n))
		s.reg.poke()
	}
}

// discard drops the events queued for w (for nil: the stream PROGRESS
// events) and releases their bytes; the caller holds reg.mu (Watcher.Close).
func (s *Stream) discard(w *Watcher) {
	s.mu.Lock()
	defer s.mu.Unlock()
	freed := s.q.removeWatcher(w)
	s.bytes -= freed
	s.releaseLocked(freed)
	if w != nil {
		w.pending = 0
	}
}

// Bytes returns the bytes s holds against its budgets: its queue and what
// the last two TakeBytes took.
func (s *Stream) Bytes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes + s.sent + s.sending
}

// Next returns the next event queued in s, taking the queue into *buf when
// it is empty and waiting (for Ready) while nothing is queued, until ctx
// ends. It is the simple way to consume a stream one event at a time;
// *buf carries the taken events between calls.
func (s *Stream) Next(ctx context.Context, buf *[]Event) (Event, error) {
	for len(*buf) == 0 {
		if *buf = s.Take((*buf)[:0]); len(*buf) > 0 {
			break
		}
		select {
		case <-s.ready:
		case <-ctx.Done():
			return Event{}, ctx.Err()
		}
	}
	ev := (*buf)[0]
	(*buf)[0] = Event{}
	*buf = (*buf)[1:]
	return ev, nil
}

// Close unregisters every watcher of s at once, without sending them
// CANCELED, and discards the events waiting in s, giving their bytes back
// to the Client's budget and its stream slot back to the Client; nothing
// is queued in s afterwards and Register fails with ErrClosed. It is
// idempotent.
func (s *Stream) Close() {
	r := s.reg
	r.mu.Lock()
	defer r.mu.Unlock()
	if s.closed.Load() {
		return
	}
	s.closed.Store(true)
	s.client.streams.Add(-1)
	for i := len(s.ws) - 1; i >= 0; i-- { // from the end: no element moves
		r.removeLocked(s.ws[i])
	}
	s.ws = nil
	s.mu.Lock()
	s.releaseLocked(s.bytes + s.sent + s.sending)
	s.q.reset()
	s.bytes, s.sent, s.sending = 0, 0, 0
	s.mu.Unlock()
}

// Len returns the number of watchers registered on s.
func (s *Stream) Len() int {
	s.reg.mu.Lock()
	defer s.reg.mu.Unlock()
	return len(s.ws)
}

// pendingLocked returns how many events of w are waiting; s.mu is held.
func (s *Stream) pendingLocked(w *Watcher) int {
	if w.takeGen != s.gen {
		w.takeGen, w.pending = s.gen, 0 // a Take emptied the queue since
	}
	return w.pending
}

// roomFor returns how many more events w could take, at most: 0 when it
// may not start queuing another revision (BufferSize of its events wait,
// or the stream, its Client or the registry is past its byte budget),
// else the fewer of the events its buffer and the bytes left in the
// budgets of s and its Client hold (events of the smallest size; at least
// one: a stream may pass the shared budgets by a revision, see roomLocked).
func (s *Stream) roomFor(w *Watcher) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.roomLocked(w, 0) {
		return 0
	}
	free := min(int64(s.reg.streamBytes-(s.bytes+s.sent+s.sending)), s.reg.clientBytes-s.client.bytes.Load())
	return max(1, min(s.reg.bufferSize-s.pendingLocked(w), int(free/eventOverhead)))
}

// roomLocked reports whether w may start queuing another revision, with
// s.mu held, keeping spare events free; for a nil w (a stream PROGRESS),
// only the byte budgets count.
func (s *Stream) roomLocked(w *Watcher, spare int) bool {
	if w != nil && s.pendingLocked(w)+spare >= s.reg.bufferSize {
		return false
	}
	// An empty queue always takes a revision, whatever the byte budgets
	// say: what it holds is what it sent last, which only a later take
	// releases, and a take needs something queued. So a stream that reads
	// never stalls behind the budgets (not even its own, after an event as
	// large as it), and one that does not holds at most one revision more
	// than they allow.
	if s.bytes == 0 {
		return true
	}
	held := s.bytes + s.sent + s.sending
	return held < s.reg.streamBytes && s.client.roomFor(held) && s.reg.totalRoomFor(s.client.bytes.Load())
}

// push queues ev for w if w has room (or always, with force) and reports
// whether it did. A closed stream drops ev and reports true. The caller
// holds reg.mu.
func (s *Stream) push(w *Watcher, ev *Event, force bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return true
	}
	if !force && !s.roomLocked(w, 0) {
		return false
	}
	s.appendLocked(w, ev)
	return true
}

// pushProgress queues a PROGRESS for w if that leaves room for a data
// event after it, so a heartbeat never makes a watcher fall behind.
func (s *Stream) pushProgress(w *Watcher, ev *Event) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return true
	}
	if !s.roomLocked(w, 1) {
		return false
	}
	s.appendLocked(w, ev)
	return true
}

// pushForce queues ev for w whatever the bounds (CANCELED).
func (s *Stream) pushForce(w *Watcher, ev *Event) { s.push(w, ev, true) }

func (s *Stream) appendLocked(w *Watcher, ev *Event) {
	if w != nil { // nil: a stream PROGRESS, for no one watcher
		s.pendingLocked(w)
		w.pending++
	}
	s.q.push(ev, w)
	n := ev.size()
	s.bytes += n
	s.client.bytes.Add(int64(n))
	if s.q.len() == 1 {
		s.signalLocked()
	}
}

// signalLocked sends the Ready signal unless one is pending.
func (s *Stream) signalLocked() {
	select {
	case s.ready <- struct{}{}:
	default: // a signal is already pending
	}
}
