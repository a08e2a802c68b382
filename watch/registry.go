package watch

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults applied to zero or negative Config fields.
const (
	// DefaultBufferSize lets a client fall this many events behind (a burst
	// of writes under one prefix) before it is canceled as too slow.
	DefaultBufferSize = 256
	// DefaultStreamBufferSize is larger than DefaultBufferSize because a
	// stream's queue costs memory only while events actually wait: a
	// consumer may fall behind by a few seconds of a busy prefix (a
	// benchmark's 1000 watchers at ~1000 puts/s) before it is canceled.
	DefaultStreamBufferSize = 8192
	// DefaultMaxWatchers bounds the memory watchers can pin: a channel-mode
	// watcher holds a channel of BufferSize+1 events (about 32 KiB at the
	// default size); a stream-mode watcher holds only its own few hundred
	// bytes, plus up to BufferSize+1 events while they wait in its Stream.
	DefaultMaxWatchers = 100000
	// DefaultQueueSize is how many batches the FSM may run ahead of the
	// dispatcher before watchers are canceled for lag.
	DefaultQueueSize = 4096
	// DefaultProgressInterval is the heartbeat period the node configures:
	// often enough for a client to notice a dead stream within seconds.
	// A zero Config.ProgressInterval disables heartbeats.
	DefaultProgressInterval = time.Second
)

// reservedSlots is the channel room kept free for the CANCELED event, so a
// watcher whose buffer is full can still be told why it stops.
const reservedSlots = 1

// progressMinFree is the free room a PROGRESS needs: one slot for itself and
// the reserved one, so a heartbeat never turns into a cancel.
const progressMinFree = reservedSlots + 1

var (
	// ErrInvalidPrefix: a prefix must start and end with '/'.
	ErrInvalidPrefix = errors.New("invalid prefix")
	// ErrInvalidKey: an exact-key watch needs a non-empty key.
	ErrInvalidKey = errors.New("invalid key")
	// ErrLimitExceeded: the registry holds Config.MaxWatchers watchers.
	ErrLimitExceeded = errors.New("watcher limit exceeded")
	// ErrClosed: the dispatcher was stopped; no watcher can be registered.
	ErrClosed = errors.New("watch registry closed")
)

// RevisionSource is implemented by the FSM.
type RevisionSource interface {
	// Applied returns the index of the last batch committed. It is stored
	// before the batch is published.
	Applied() uint64
	// Fence waits for any batch being applied to finish, then returns
	// Applied(). Batches started after Fence returns see the new value of
	// the prev-value watcher count (WantPrev).
	Fence() uint64
}

// Config sizes the registry and the dispatcher. Zero fields take the
// defaults above, except ProgressInterval, where zero disables heartbeats.
type Config struct {
	// BufferSize is the number of events a channel-mode watcher may have
	// waiting in its channel, not counting the slot reserved for CANCELED.
	BufferSize int
	// StreamBufferSize is the same bound for a stream-mode watcher, whose
	// events wait in its Stream's queue.
	StreamBufferSize int
	// MaxWatchers is the hard cap on registered watchers.
	MaxWatchers int
	// QueueSize is the number of batches buffered between the FSM and the
	// dispatcher.
	QueueSize int
	// ProgressInterval is the heartbeat period, jittered by ±10%; missed
	// ticks are skipped. Zero disables heartbeats.
	ProgressInterval time.Duration
	// Logger receives a warning for every cancel the watcher did not ask
	// for. Nil means slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.BufferSize <= 0 {
		c.BufferSize = DefaultBufferSize
	}
	if c.StreamBufferSize <= 0 {
		c.StreamBufferSize = DefaultStreamBufferSize
	}
	if c.MaxWatchers <= 0 {
		c.MaxWatchers = DefaultMaxWatchers
	}
	if c.QueueSize <= 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.ProgressInterval < 0 {
		c.ProgressInterval = 0
	}
	return c
}

func (c Config) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.Default()
}

// Registry holds the registered watchers. It is safe for concurrent use.
// Exactly one Dispatcher delivers to a Registry.
type Registry struct {
	src              RevisionSource
	bufferSize       int
	streamBufferSize int
	max              int64

	nextID atomic.Uint64
	// reserved counts registered watchers plus registrations in progress;
	// a registration reserves its slot before checking the cap so
	// concurrent registrations never overshoot it.
	reserved atomic.Int64
	// prev counts watchers (registered or registering) that want previous
	// values; the FSM polls it through WantPrev every batch.
	prev   atomic.Int64
	closed atomic.Bool

	// mu excludes registration and removal (Lock) from delivery (RLock).
	mu     sync.RWMutex
	exact  map[string][]*Watcher // by key
	prefix map[string][]*Watcher // by prefix; every prefix starts and ends with '/'
	n      int                   // registered watchers

	// Progress requests: RequestProgress appends to reqs (at most once per
	// watcher until served) and pokes reqSignal, a one-slot channel that
	// wakes the dispatcher; several pokes coalesce, requests never do.
	reqMu     sync.Mutex
	reqs      []*Watcher
	reqSignal chan struct{}
}

// NewRegistry returns an empty registry whose watchers start at the
// revisions src reports.
func NewRegistry(cfg Config, src RevisionSource) *Registry {
	cfg = cfg.withDefaults()
	return &Registry{
		src:              src,
		bufferSize:       cfg.BufferSize,
		streamBufferSize: cfg.StreamBufferSize,
		max:              int64(cfg.MaxWatchers),
		exact:            make(map[string][]*Watcher),
		prefix:           make(map[string][]*Watcher),
		reqSignal:        make(chan struct{}, 1),
	}
}

// Watcher receives the events of one key (or of every key under a prefix):
// on its own channel when created by Registry.Register (channel mode), or
// in the queue of its Stream when created by Stream.Register (stream mode).
// Close it when done.
type Watcher struct {
	id    uint64
	key   string
	start uint64
	reg   *Registry
	// Exactly one of ch (channel mode) and stream (stream mode) is set.
	ch     chan Event
	stream *Stream

	// Stream mode: the events queued for this watcher and not yet taken
	// are the pending ones counted while takeGen == stream.gen (a Take
	// bumps gen, resetting every count at once). Guarded by stream.mu.
	pending int
	takeGen uint64
	// sidx is the watcher's index in stream.ws; guarded by reg.mu.
	sidx int

	prefix bool
	prevKV bool
	// removed is guarded by reg.mu: out of the maps, its channel closed or
	// out of its stream.
	removed bool
	// canceled is set once CANCELED is in the channel or the stream's
	// queue; only the delivering goroutine reads or writes it.
	canceled bool
	// progressPending is set while a RequestProgress waits to be served.
	progressPending atomic.Bool
}

// Register adds a channel-mode watcher for key, or, when prefix is set, for
// every key that starts with key (which must then start and end with '/').
// With prevKV every PUT and DELETE it receives carries the previous value.
//
// The watcher receives every matching event with revision > Start() on the
// channel Events returns. Errors wrap ErrInvalidKey, ErrInvalidPrefix,
// ErrLimitExceeded or ErrClosed.
func (r *Registry) Register(key []byte, prefix, prevKV bool) (*Watcher, error) {
	return r.register(key, prefix, prevKV, nil)
}

// register adds a watcher delivering to s or, when s is nil, to its own
// channel.
func (r *Registry) register(key []byte, prefix, prevKV bool, s *Stream) (*Watcher, error) {
	if prefix {
		if err := validatePrefix(key); err != nil {
			return nil, err
		}
	} else if err := validateKey(key); err != nil {
		return nil, err
	}
	if r.closed.Load() {
		return nil, errClosed()
	}
	if s != nil && s.closed.Load() {
		return nil, errStreamClosed()
	}
	if n := r.reserved.Add(1); n > r.max {
		r.reserved.Add(-1)
		return nil, fmt.Errorf("%w: this node already serves its maximum of %d watchers; close unused watchers, spread them over other nodes or raise MaxWatchers", ErrLimitExceeded, r.max)
	}
	if prevKV {
		// Raise the count first, then wait out the batch in flight: every
		// batch applied after Fence reads previous values, and the start
		// taken below covers every batch that did not.
		r.prev.Add(1)
		r.src.Fence()
	}
	w := &Watcher{
		id:     r.nextID.Add(1),
		key:    string(key),
		prefix: prefix,
		prevKV: prevKV,
		reg:    r,
		stream: s,
	}
	if s == nil {
		w.ch = make(chan Event, r.bufferSize+reservedSlots)
	}

	r.mu.Lock()
	if r.closed.Load() {
		r.mu.Unlock()
		r.release(w)
		return nil, errClosed()
	}
	if s != nil && s.closed.Load() { // Stream.Close sets it under r.mu
		r.mu.Unlock()
		r.release(w)
		return nil, errStreamClosed()
	}
	// Under the write lock no batch is being delivered, and the FSM stores
	// Applied before it publishes: batches <= start are either delivered or
	// hold only events this watcher must skip; later ones will reach it.
	w.start = r.src.Applied()
	if prefix {
		r.prefix[w.key] = append(r.prefix[w.key], w)
	} else {
		r.exact[w.key] = append(r.exact[w.key], w)
	}
	if s != nil {
		w.sidx = len(s.ws)
		s.ws = append(s.ws, w)
	}
	r.n++
	r.mu.Unlock()
	return w, nil
}

func errClosed() error {
	return fmt.Errorf("%w: the node is shutting down and accepts no new watchers", ErrClosed)
}

func errStreamClosed() error {
	return fmt.Errorf("%w: the watch stream is closed and accepts no new watchers", ErrClosed)
}

// Len returns the number of registered watchers.
func (r *Registry) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.n
}

// WantPrev reports whether any watcher wants previous values. It is one
// atomic load: the FSM calls it at the start of every batch.
func (r *Registry) WantPrev() bool { return r.prev.Load() > 0 }

// release gives back the counters a watcher holds.
func (r *Registry) release(w *Watcher) {
	r.reserved.Add(-1)
	if w.prevKV {
		r.prev.Add(-1)
	}
}

// removeLocked unregisters w and closes its channel or takes it out of its
// stream; it does nothing for a watcher already removed. r.mu must be held
// for writing.
func (r *Registry) removeLocked(w *Watcher) {
	if w.removed {
		return
	}
	r.unmapLocked(w)
	r.detachLocked(w)
}

// unmapLocked takes w out of the key or prefix map. r.mu must be held for
// writing.
func (r *Registry) unmapLocked(w *Watcher) {
	m := r.exact
	if w.prefix {
		m = r.prefix
	}
	ws := m[w.key]
	for i, x := range ws {
		if x == w {
			last := len(ws) - 1
			ws[i] = ws[last]
			ws[last] = nil
			ws = ws[:last]
			break
		}
	}
	if len(ws) == 0 {
		delete(m, w.key)
	} else {
		m[w.key] = ws
	}
}

// detachLocked marks w removed, closes its channel or takes it out of its
// stream, and gives back its counters; w must already be out of the maps
// (or the maps about to be cleared). r.mu must be held for writing.
func (r *Registry) detachLocked(w *Watcher) {
	w.removed = true
	if s := w.stream; s != nil {
		last := len(s.ws) - 1
		moved := s.ws[last]
		s.ws[w.sidx] = moved
		moved.sidx = w.sidx
		s.ws[last] = nil
		s.ws = s.ws[:last]
	} else {
		close(w.ch)
	}
	r.n--
	r.release(w)
}

// shutdown refuses further registrations, sends CANCELED with reason to
// every watcher not canceled yet, and removes them all. Streams stay open,
// so their consumers can take those CANCELED events. Only the delivering
// goroutine, or Stop once Run has returned, may call it.
func (r *Registry) shutdown(rev uint64, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed.Store(true)
	for _, m := range []map[string][]*Watcher{r.exact, r.prefix} {
		for _, ws := range m {
			for _, w := range ws {
				w.cancel(rev, reason)
				r.detachLocked(w)
			}
		}
		clear(m)
	}
}

// forEachLocked calls fn for every registered watcher; r.mu must be held.
func (r *Registry) forEachLocked(fn func(*Watcher)) {
	for _, ws := range r.exact {
		for _, w := range ws {
			fn(w)
		}
	}
	for _, ws := range r.prefix {
		for _, w := range ws {
			fn(w)
		}
	}
}

// takeRequests returns the watchers that asked for progress since the last
// call.
func (r *Registry) takeRequests(dst []*Watcher) []*Watcher {
	r.reqMu.Lock()
	dst = append(dst, r.reqs...)
	clear(r.reqs)
	r.reqs = r.reqs[:0]
	r.reqMu.Unlock()
	return dst
}

// ID returns the watcher's identifier, unique within its registry.
func (w *Watcher) ID() uint64 { return w.id }

// Start returns the revision the watcher starts after (what CREATED reports):
// it receives every matching event with a greater revision.
func (w *Watcher) Start() uint64 { return w.start }

// Events returns the watcher's channel. It is closed after a CANCELED event
// or after Close. A stream-mode watcher has no channel: Events returns nil
// and its events are taken from its Stream.
func (w *Watcher) Events() <-chan Event { return w.ch }

// RequestProgress asks the dispatcher for a PROGRESS event soon. It never
// blocks; requests made before the dispatcher serves the first coalesce.
func (w *Watcher) RequestProgress() {
	if !w.progressPending.CompareAndSwap(false, true) {
		return
	}
	r := w.reg
	r.reqMu.Lock()
	r.reqs = append(r.reqs, w)
	r.reqMu.Unlock()
	select {
	case r.reqSignal <- struct{}{}:
	default: // a wake-up is already pending; it will see this request
	}
}

// Close unregisters the watcher at once and closes its channel: no event is
// put in it after Close returns. In stream mode no event for it is queued
// after Close returns; events queued before may still be taken from the
// Stream. It is idempotent.
func (w *Watcher) Close() {
	r := w.reg
	r.mu.Lock()
	r.removeLocked(w)
	r.mu.Unlock()
}

// cancel puts CANCELED in the reserved slot (channel mode) or appends it to
// the stream's queue (stream mode), once; nothing is delivered to w after
// it. The caller is the only goroutine delivering to w and holds the
// registry lock (read or write) with w not removed.
func (w *Watcher) cancel(rev uint64, reason string) bool {
	if w.canceled {
		return false
	}
	w.canceled = true
	ev := Event{Type: Canceled, WatchID: w.id, Revision: rev, Reason: reason}
	if w.stream != nil {
		w.stream.push(w, &ev, -1)
		return true
	}
	select {
	case w.ch <- ev:
	default: // unreachable: data and progress sends always leave the reserved slot free
	}
	return true
}

// free returns the room left in w's channel. Only the sender fills it, so
// the room can only grow until the sender sends again.
func (w *Watcher) free() int { return cap(w.ch) - len(w.ch) }
