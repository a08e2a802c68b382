package watch

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/raftwatch/raftwatch/keyspace"
)

// Defaults applied to zero or negative Config fields.
const (
	// DefaultBufferSize is how many events one watcher may have waiting in
	// its stream before it falls behind (it is then fed from history once
	// its consumer takes what is queued, never canceled for it).
	DefaultBufferSize = 8192
	// DefaultStreamBytes bounds the bytes waiting in one stream's queue,
	// whatever the number of its watchers: past it, every watcher on the
	// stream falls behind instead of queuing more.
	DefaultStreamBytes = 4 << 20
	// DefaultClientBytes bounds the bytes queued (and taken but not yet
	// sent) in all the streams of one Client together: past it, their
	// watchers fall behind instead of queuing more.
	DefaultClientBytes = 8 << 20
	// DefaultTotalBytes is the node-wide budget of the bytes all streams
	// hold together: past it, the clients holding the most fall behind
	// (see Registry.totalRoomFor), so the total stays under twice it.
	DefaultTotalBytes = 32 << 20
	// DefaultMaxWatchersPerClient bounds the watchers of one Client, so
	// one client cannot take every slot of MaxWatchers.
	DefaultMaxWatchersPerClient = 10000
	// DefaultMaxStreamsPerClient bounds the open streams of one Client.
	// Each stream whose consumer does not read holds gRPC's buffers (up to
	// its 64 KiB write quota plus a message or two, outside every byte
	// budget here), so this bounds what those cost per client: a client
	// needs one stream, which carries any number of watches.
	DefaultMaxStreamsPerClient = 256
	// DefaultMaxWatchers bounds the number of registered watchers.
	DefaultMaxWatchers = 100000
	// DefaultQueueSize is how many batches the FSM may run ahead of the
	// dispatcher; past it the dispatcher moves every live watcher to
	// catching up from history.
	DefaultQueueSize = 4096
	// DefaultCatchUpEvents is the most history events one catch-up step
	// reads, between two live batches.
	DefaultCatchUpEvents = 4096
	// DefaultProgressInterval is the heartbeat period the node configures.
	// A zero Config.ProgressInterval disables heartbeats.
	DefaultProgressInterval = time.Second
)

var (
	// ErrInvalidPrefix: a prefix must start and end with '/' (the key rule,
	// package keyspace).
	ErrInvalidPrefix = keyspace.ErrInvalidPrefix
	// ErrInvalidKey: a watched key must start with '/' (package keyspace).
	ErrInvalidKey = keyspace.ErrInvalidKey
	// ErrLimitExceeded: the registry holds Config.MaxWatchers watchers.
	ErrLimitExceeded = errors.New("watcher limit exceeded")
	// ErrClosed: the dispatcher was stopped or the stream closed.
	ErrClosed = errors.New("watch registry closed")
)

// Config sizes the registry and the dispatcher. Zero fields take the
// defaults above, except ProgressInterval, where zero disables heartbeats.
type Config struct {
	// BufferSize is the number of events one watcher may have waiting in
	// its stream's queue before it falls behind.
	BufferSize int
	// StreamBytes is the byte budget of one stream's queue.
	StreamBytes int
	// ClientBytes is the byte budget shared by the streams of one Client.
	ClientBytes int
	// TotalBytes is the node-wide byte budget of all streams together.
	TotalBytes int
	// MaxWatchers is the hard cap on registered watchers.
	MaxWatchers int
	// MaxWatchersPerClient is the cap on the watchers of one Client.
	MaxWatchersPerClient int
	// MaxStreamsPerClient is the cap on the open streams of one Client.
	MaxStreamsPerClient int
	// QueueSize is the number of batches buffered between the FSM and the
	// dispatcher.
	QueueSize int
	// CatchUpEvents is the most history events one catch-up step reads
	// (it reads fewer when the streams it feeds have room for fewer).
	CatchUpEvents int
	// ProgressInterval is the heartbeat period, jittered by ±10%; missed
	// ticks are skipped. Zero disables heartbeats.
	ProgressInterval time.Duration
	// Logger receives a line for every cancel the watcher did not ask for.
	// Nil means slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.BufferSize <= 0 {
		c.BufferSize = DefaultBufferSize
	}
	if c.StreamBytes <= 0 {
		c.StreamBytes = DefaultStreamBytes
	}
	if c.ClientBytes <= 0 {
		c.ClientBytes = DefaultClientBytes
	}
	if c.TotalBytes <= 0 {
		c.TotalBytes = DefaultTotalBytes
	}
	if c.MaxWatchers <= 0 {
		c.MaxWatchers = DefaultMaxWatchers
	}
	if c.MaxWatchersPerClient <= 0 {
		c.MaxWatchersPerClient = DefaultMaxWatchersPerClient
	}
	if c.MaxStreamsPerClient <= 0 {
		c.MaxStreamsPerClient = DefaultMaxStreamsPerClient
	}
	if c.QueueSize <= 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.CatchUpEvents <= 0 {
		c.CatchUpEvents = DefaultCatchUpEvents
	}
	if c.ProgressInterval < 0 {
		c.ProgressInterval = 0
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// state is where a watcher's events come from.
type state uint8

const (
	// live: the dispatcher hands it the events of each published batch.
	// Everything matching at or below the registry's delivered revision
	// (and below next) has been queued for it.
	live state = iota
	// catchingUp: it fell behind (full buffer, a lagging dispatcher, a
	// snapshot install, a batch without the previous values it wants) or
	// started in the past. It holds only next, the first revision it still
	// needs; the dispatcher feeds it from history until next passes the
	// delivered revision, then it is live again.
	catchingUp
	// canceled: CANCELED is queued; nothing follows it.
	canceled
)

func (s state) String() string {
	switch s {
	case live:
		return "live"
	case catchingUp:
		return "catching-up"
	default:
		return "canceled"
	}
}

// Options select what a watcher delivers.
type Options struct {
	// Prefix: key is a prefix that starts and ends with '/'.
	Prefix bool
	// PrevKV: every PUT and DELETE carries the key's previous value.
	PrevKV bool
	// RequireLeader: CancelRequireLeader cancels it (CauseNoLeader).
	RequireLeader bool
	// StartRevision: deliver every matching event with revision >= it;
	// 0 = from now (after the delivered revision). A revision below the
	// oldest one history retains is refused with a *CompactedError; one in
	// the future is waited for.
	StartRevision uint64
	// StreamProgress: the consumer takes a PROGRESS with WatchID 0 as the
	// PROGRESS of every watcher registered on the stream before it was
	// taken. A heartbeat then queues one for the whole stream when every
	// watcher of the stream asked for it and it says what theirs would
	// (progress.go); otherwise each gets its own.
	StreamProgress bool
}

// Registry holds the watchers and their states. Every watcher field that
// changes after registration (state, next, removed) is guarded by mu, as is
// the revision delivered so far; the Dispatcher is the only goroutine that
// moves watchers between states, except cancels, which any holder of mu may
// make.
type Registry struct {
	hist         History
	bufferSize   int
	streamBytes  int
	clientBytes  int64
	totalBytes   int64
	max          int64
	maxPerClient int64
	maxStreams   int64
	log          *slog.Logger

	nextID atomic.Uint64
	// reserved counts registered watchers plus registrations in progress,
	// so concurrent registrations never overshoot the cap.
	reserved atomic.Int64
	// totalHeld is what all clients hold against TotalBytes, and holding
	// how many of them hold any bytes (heldBytes keeps both).
	totalHeld, holding atomic.Int64
	// counters are the totals Stats reports (stats.go).
	counters counters
	// blocks recycles the blocks of the streams' queues.
	blocks blockPool
	// prev counts watchers that want previous values; the FSM polls it
	// (WantPrev) at the start of every batch.
	prev   atomic.Int64
	closed atomic.Bool

	mu     sync.Mutex
	exact  map[string][]*Watcher // by key
	prefix map[string][]*Watcher // by prefix; every prefix starts and ends with '/'
	n      int                   // registered watchers
	// behind holds the catching-up watchers.
	behind map[*Watcher]struct{}
	// delivered: every event at or below it was offered to every live
	// watcher (and is in history).
	delivered uint64
	// doomed holds watchers canceled while their maps were being walked;
	// reapLocked removes them.
	doomed []*Watcher
	// notes holds the cancels to log; logCancels logs them once mu is
	// released, so no log handler ever runs with mu held.
	notes []cancelNote

	// Progress requests: RequestProgress appends to reqs (at most once per
	// watcher until served) and pokes reqSignal.
	reqMu     sync.Mutex
	reqs      []*Watcher
	reqSignal chan struct{}
	// wake tells the dispatcher that catching up, or serving a progress
	// request that found no room, may succeed now: a catching-up watcher was
	// registered or a stream's queue was taken.
	wake chan struct{}

	// streams holds the streams with watchers, and heartbeats counts the
	// heartbeats; both guarded by mu (progress.go).
	streams    map[*Stream]struct{}
	heartbeats uint64
}

// NewRegistry returns an empty registry over hist, whose watchers start
// after delivered (the index the state machine has applied) until the
// dispatcher delivers more.
func NewRegistry(cfg Config, hist History, delivered uint64) *Registry {
	cfg = cfg.withDefaults()
	return &Registry{
		hist:         hist,
		bufferSize:   cfg.BufferSize,
		streamBytes:  cfg.StreamBytes,
		clientBytes:  int64(cfg.ClientBytes),
		totalBytes:   int64(cfg.TotalBytes),
		max:          int64(cfg.MaxWatchers),
		maxPerClient: int64(cfg.MaxWatchersPerClient),
		maxStreams:   int64(cfg.MaxStreamsPerClient),
		log:          cfg.Logger,
		exact:        make(map[string][]*Watcher),
		prefix:       make(map[string][]*Watcher),
		behind:       make(map[*Watcher]struct{}),
		delivered:    delivered,
		reqSignal:    make(chan struct{}, 1),
		wake:         make(chan struct{}, 1),
	}
}

// Watcher receives the events of one key (or of every key under a prefix)
// in the queue of its Stream. Close it when done.
//
// There is one per watch, so its fields are ordered to pack (96 bytes, a
// size class of its own); its registry is its stream's.
type Watcher struct {
	id     uint64
	key    string // shared with the other watchers of the same key
	start  uint64
	stream *Stream

	// Guarded by reg.mu.
	next   uint64 // first revision not yet queued (see live and catchingUp)
	curRev uint64 // revision being queued: its remaining events need no room check
	sidx   int32  // index in stream.ws
	kidx   int32  // index in its key's slice of reg.exact or reg.prefix

	// Guarded by stream.mu: events queued and not yet taken are pending
	// while takeGen == stream.gen (a Take bumps gen, resetting every count).
	pending int
	takeGen uint64

	prefix        bool
	prevKV        bool
	requireLeader bool

	streamProgress bool // Options.StreamProgress

	// Guarded by reg.mu.
	state   state
	removed bool // out of the maps and out of its stream
	// stalled is set, during one catch-up step, on a watcher whose
	// stream had no room for the next revision read (applyRead).
	stalled bool

	// progressPending is set while a RequestProgress waits to be served.
	progressPending atomic.Bool
}

// register adds a watcher delivering to s.
func (r *Registry) register(key []byte, o Options, s *Stream) (*Watcher, error) {
	if err := validate(key, o.Prefix); err != nil {
		return nil, err
	}
	if r.closed.Load() {
		return nil, errClosed()
	}
	if n, ok := s.client.reserve(); !ok {
		return nil, fmt.Errorf("%w: this client holds %d watchers, the limit is %d; close unused watchers (a client is one certificate identity, or else one IP address, however many connections it opens)", ErrLimitExceeded, n, r.maxPerClient)
	}
	if !r.reserve() {
		s.client.watchers.Add(-1)
		return nil, fmt.Errorf("%w: this node already serves its maximum of %d watchers; close unused watchers, spread them over other nodes or raise MaxWatchers", ErrLimitExceeded, r.max)
	}
	if o.PrevKV {
		r.prev.Add(1)
	}
	w := &Watcher{id: r.nextID.Add(1), stream: s, prefix: o.Prefix, prevKV: o.PrevKV, requireLeader: o.RequireLeader,
		streamProgress: o.StreamProgress}
	var oldest uint64
	if o.StartRevision > 0 {
		// Asked before taking mu: History is never called with mu held.
		// Holding it would not keep history from being compacted anyway: a
		// compaction after this check is met by the watcher's first
		// catch-up step, which cancels it with CauseCompacted.
		oldest = r.hist.OldestRevision()
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.closed.Load():
		r.release(w)
		return nil, errClosed()
	case s.closed.Load(): // Stream.Close sets it under r.mu
		r.release(w)
		return nil, errStreamClosed()
	}
	w.next = r.delivered + 1
	if o.StartRevision > 0 {
		if o.StartRevision < oldest {
			r.release(w)
			return nil, &CompactedError{Requested: o.StartRevision, Oldest: oldest}
		}
		w.next = o.StartRevision
	}
	w.start = w.next - 1
	if w.next <= r.delivered {
		// In the past: history feeds it. (A PrevKV watcher starting now is
		// live; the first batch read without previous values, if any,
		// moves it to history, which has them.)
		w.state = catchingUp
		r.behind[w] = struct{}{}
		r.poke()
	}
	m := r.exact
	if o.Prefix {
		m = r.prefix
	}
	ws := m[string(key)]
	if len(ws) > 0 {
		w.key = ws[0].key // one copy of a key however many watch it
	} else {
		w.key = string(key)
	}
	w.kidx = int32(len(ws))
	m[w.key] = append(ws, w)
	w.sidx = int32(len(s.ws))
	s.ws = append(s.ws, w)
	r.joinedLocked(w)
	r.n++
	return w, nil
}

func errClosed() error {
	return fmt.Errorf("%w: the node is shutting down and accepts no new watchers", ErrClosed)
}

func errStreamClosed() error {
	return fmt.Errorf("%w: the watch stream is closed and accepts no new watchers", ErrClosed)
}

// poke wakes the dispatcher for catching up; it never blocks.
func (r *Registry) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Len returns the number of registered watchers.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// Counts returns how many registered watchers are live and how many are
// catching up from history.
func (r *Registry) Counts() (live, catchingUp int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n - len(r.behind), len(r.behind)
}

// Delivered returns the revision up to which every event was offered to
// every live watcher.
func (r *Registry) Delivered() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.delivered
}

// WantPrev reports whether any watcher wants previous values. It is one
// atomic load: the FSM calls it at the start of every batch.
func (r *Registry) WantPrev() bool { return r.prev.Load() > 0 }

// reserve takes a watcher slot if one is free. It never raises reserved
// past the cap, even for a moment: a refused registration holds no slot, so
// it cannot make one racing with a Close be refused too.
func (r *Registry) reserve() bool {
	for {
		n := r.reserved.Load()
		if n >= r.max {
			return false
		}
		if r.reserved.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// release gives back the counters a watcher holds.
func (r *Registry) release(w *Watcher) {
	r.reserved.Add(-1)
	w.stream.client.watchers.Add(-1)
	if w.prevKV {
		r.prev.Add(-1)
	}
}

// fallBehindLocked moves a live watcher to catching up from next on.
func (r *Registry) fallBehindLocked(w *Watcher, next uint64) {
	if w.state != live {
		return
	}
	w.state = catchingUp
	w.next = max(w.next, next)
	r.behind[w] = struct{}{}
}

// cancelLocked queues CANCELED for w (once) and schedules its removal. The
// revision it carries is the one every matching event up to which was
// queued before it.
func (r *Registry) cancelLocked(w *Watcher, cause CancelCause, reason string, compact uint64) {
	if w.state == canceled || w.removed {
		return
	}
	rev := w.next - 1
	if w.state == live {
		rev = max(rev, r.delivered)
	}
	w.state = canceled
	r.counters.cancels[cause].Add(1)
	delete(r.behind, w)
	ev := Event{Type: Canceled, WatchID: w.id, Revision: rev, Cause: cause, Reason: reason, CompactRevision: compact}
	w.stream.pushForce(w, &ev)
	r.doomed = append(r.doomed, w)
	if cause != CauseShutdown {
		r.notes = append(r.notes, cancelNote{id: w.id, key: w.key, prefix: w.prefix, reason: reason})
	}
}

// cancelNote is a cancel to log.
type cancelNote struct {
	id     uint64
	key    string
	prefix bool
	reason string
}

// logCancels logs the cancels made since the last call. Call it without mu
// held after any cancelLocked: the handler may be slow or call back here.
func (r *Registry) logCancels() {
	r.mu.Lock()
	notes := r.notes
	r.notes = nil
	r.mu.Unlock()
	for _, n := range notes {
		r.log.Warn("watcher canceled", "watcher_id", n.id, "key", n.key, "prefix", n.prefix, "reason", n.reason)
	}
}

// reapLocked removes the watchers canceled since the last call.
func (r *Registry) reapLocked() {
	for _, w := range r.doomed {
		r.removeLocked(w)
	}
	clear(r.doomed)
	r.doomed = r.doomed[:0]
}

// removeLocked unregisters w and takes it out of its stream; it does
// nothing for a watcher already removed.
func (r *Registry) removeLocked(w *Watcher) {
	if w.removed {
		return
	}
	m := r.exact
	if w.prefix {
		m = r.prefix
	}
	// Swap-remove by index: a key may have a million watchers, and a
	// client that goes away removes its own one by one.
	ws := m[w.key]
	last := len(ws) - 1
	moved := ws[last]
	ws[w.kidx] = moved
	moved.kidx = w.kidx
	ws[last] = nil
	ws = ws[:last]
	if len(ws) == 0 {
		delete(m, w.key)
	} else {
		m[w.key] = ws
	}
	w.removed = true
	if w.state != canceled {
		w.state = canceled
	}
	delete(r.behind, w)
	s := w.stream
	last = len(s.ws) - 1
	moved = s.ws[last]
	s.ws[w.sidx] = moved
	moved.sidx = w.sidx
	s.ws[last] = nil
	s.ws = s.ws[:last]
	r.leftLocked(w)
	r.n--
	r.release(w)
}

// forEachLocked calls fn for every registered watcher; fn must not remove
// any (cancel, which defers removal, is fine).
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

// CancelRequireLeader cancels every watcher registered with RequireLeader
// (CauseNoLeader) and returns how many.
func (r *Registry) CancelRequireLeader(reason string) int {
	r.mu.Lock()
	n := 0
	r.forEachLocked(func(w *Watcher) {
		if w.requireLeader && w.state != canceled {
			r.cancelLocked(w, CauseNoLeader, reason, 0)
			n++
		}
	})
	r.reapLocked()
	r.mu.Unlock()
	r.logCancels()
	return n
}

// shutdown refuses further registrations, sends CANCELED with cause and
// reason to every watcher not canceled yet, and removes them all. Streams
// stay open, so their consumers can take those CANCELED events.
func (r *Registry) shutdown(cause CancelCause, reason string) {
	r.mu.Lock()
	r.closed.Store(true)
	r.forEachLocked(func(w *Watcher) { r.cancelLocked(w, cause, reason, 0) })
	r.reapLocked()
	r.mu.Unlock()
	r.logCancels()
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

// Start returns the revision the watcher starts after (what CREATED
// reports): it receives every matching event with a greater revision.
func (w *Watcher) Start() uint64 { return w.start }

// RequestProgress asks the dispatcher for a PROGRESS event soon. It never
// blocks; requests made before the dispatcher serves the first coalesce.
func (w *Watcher) RequestProgress() {
	if !w.progressPending.CompareAndSwap(false, true) {
		return
	}
	r := w.stream.reg
	r.reqMu.Lock()
	r.reqs = append(r.reqs, w)
	r.reqMu.Unlock()
	select {
	case r.reqSignal <- struct{}{}:
	default: // a wake-up is already pending; it will see this request
	}
}

// Close unregisters the watcher at once: no event for it is queued after
// Close returns (events queued before may still be taken from the Stream).
// It is idempotent.
func (w *Watcher) Close() {
	r := w.stream.reg
	r.mu.Lock()
	r.removeLocked(w)
	r.mu.Unlock()
}

// Drop is Close for a consumer that no longer wants the watcher's events:
// it also discards those still queued (its CANCELED too, if one was), so
// nothing of the watcher can be taken after Drop returns and the bytes
// they held are released at once. It is idempotent.
func (w *Watcher) Drop() {
	r := w.stream.reg
	r.mu.Lock()
	r.removeLocked(w)
	w.stream.discard(w)
	r.mu.Unlock()
}
