package watch

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// minStepEvents is the fewest events a catch-up step reads (when Config's
// CatchUpEvents is not lower): a step reads no more than the ready
// watchers' streams can take, but at least this many, so that a stream
// with little room is not fed by many tiny reads.
const minStepEvents = 64

// stepEvery is how many batches (or other wake-ups) the dispatcher handles
// at most between two catch-up steps while watchers are catching up.
const stepEvery = 8

// heartbeatJitter spreads heartbeats by ±10% of the interval, so nodes (and
// their clients) started together do not all wake on the same tick.
const heartbeatJitter = 0.10

// Dispatcher carries batches from the FSM to the watchers of a Registry and
// feeds watchers that are catching up from history. Publish is called by
// the FSM; Run is the one goroutine that delivers.
type Dispatcher struct {
	reg      *Registry
	hist     History
	log      *slog.Logger
	interval time.Duration
	step     int
	queue    chan Batch

	halted atomic.Bool   // Stop was called: Publish drops everything
	lost   atomic.Uint64 // highest index Publish had to drop; 0 = none

	mu       sync.Mutex // guards started and stopped
	started  bool
	stopped  bool
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once

	// Owned by the delivering goroutine.
	pending []*Watcher // progress requests not yet served
	scratch []Event    // events read from history by one catch-up step
	groups  []keyGroup // the ready watchers of one catch-up step, by key
	feeding []*Watcher // the catching-up watchers one step feeds
	room    []int      // room[i]: events feeding[i]'s stream has room for
	// catchUp is set while catching-up watchers may be able to make
	// progress; cleared when a step finds none that can.
	catchUp bool
}

// NewDispatcher returns a dispatcher delivering to the watchers of r,
// reading history from hist. Only the QueueSize, CatchUpEvents,
// ProgressInterval and Logger fields of cfg are used here.
func NewDispatcher(r *Registry, hist History, cfg Config) *Dispatcher {
	cfg = cfg.withDefaults()
	return &Dispatcher{
		reg:      r,
		hist:     hist,
		log:      cfg.Logger,
		interval: cfg.ProgressInterval,
		step:     cfg.CatchUpEvents,
		queue:    make(chan Batch, cfg.QueueSize),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		catchUp:  true,
	}
}

// Publish hands a committed batch to the dispatcher. It never blocks: when
// the queue is full the batch is not queued and, before delivering anything
// published later, the dispatcher moves every live watcher to catching up
// from history, which holds the batch.
func (d *Dispatcher) Publish(b Batch) {
	if d.halted.Load() {
		return // every watcher is canceled or about to be
	}
	select {
	case d.queue <- b:
		return
	default:
	}
	for {
		old := d.lost.Load()
		if old >= b.Index || d.lost.CompareAndSwap(old, b.Index) {
			return
		}
	}
}

// WantPrev reports whether any watcher wants previous values.
func (d *Dispatcher) WantPrev() bool { return d.reg.WantPrev() }

// Run delivers batches, catches up watchers from history, and serves
// progress requests and heartbeats until Stop. It is the only goroutine
// that queues data events; start it once with go d.Run().
func (d *Dispatcher) Run() {
	d.mu.Lock()
	if d.started || d.stopped {
		d.mu.Unlock()
		return
	}
	d.started = true
	d.mu.Unlock()
	defer close(d.done)

	var tick <-chan time.Time
	var timer *time.Timer
	if d.interval > 0 {
		// A timer re-armed after each heartbeat, not a ticker: ticks missed
		// while delivering are skipped, not bunched up.
		timer = time.NewTimer(d.jittered())
		defer timer.Stop()
		tick = timer.C
	}
	rearm := func() {}
	if timer != nil {
		rearm = func() { timer.Reset(d.jittered()) }
	}
	handledSinceStep := 0
	for {
		d.checkLost()
		// Live batches, requests and heartbeats first; a catch-up step runs
		// when none is waiting, so a backlog delays live watchers by at
		// most one step, and at least every stepEvery of them, so a
		// steady stream of batches cannot starve catching-up watchers.
		if d.catchUp {
			if handledSinceStep >= stepEvery {
				handledSinceStep = 0
				d.catchUp = d.catchUpStep()
				continue
			}
			if quit, handled := d.handleNext(false, tick, rearm); quit {
				return
			} else if handled {
				handledSinceStep++
			} else {
				handledSinceStep = 0
				d.catchUp = d.catchUpStep()
			}
			continue
		}
		if quit, _ := d.handleNext(true, tick, rearm); quit {
			return
		}
	}
}

// handleNext handles one batch, progress request, heartbeat or wake-up:
// the first ready one or, with block, the first to come. It reports
// whether Stop was called and whether it handled anything.
func (d *Dispatcher) handleNext(block bool, tick <-chan time.Time, rearm func()) (quit, handled bool) {
	var b Batch
	got := d.ready(tick, &b)
	if got == gotNothing && block {
		got = d.wait(tick, &b)
	}
	switch got {
	case gotNothing:
		return false, false
	case gotStop:
		return true, false
	case gotBatch:
		d.checkLost() // a batch published after a loss: handle the loss first
		d.deliver(&b)
		if len(d.pending) > 0 {
			d.serveProgress()
		}
	case gotRequest:
		d.pending = d.reg.takeRequests(d.pending)
		d.serveProgress()
	case gotTick:
		d.heartbeat()
		rearm()
	case gotWake:
		d.woken()
	}
	return false, true
}

// What ready and wait found.
const (
	gotNothing = iota
	gotStop
	gotBatch
	gotRequest
	gotTick
	gotWake
)

// ready returns what is ready now, without waiting (gotNothing if none).
func (d *Dispatcher) ready(tick <-chan time.Time, b *Batch) int {
	select {
	case <-d.stop:
		return gotStop
	case *b = <-d.queue:
		return gotBatch
	case <-d.reg.reqSignal:
		return gotRequest
	case <-tick:
		return gotTick
	case <-d.reg.wake:
		return gotWake
	default:
		return gotNothing
	}
}

// wait returns the first of the same to come.
func (d *Dispatcher) wait(tick <-chan time.Time, b *Batch) int {
	select {
	case <-d.stop:
		return gotStop
	case *b = <-d.queue:
		return gotBatch
	case <-d.reg.reqSignal:
		return gotRequest
	case <-tick:
		return gotTick
	case <-d.reg.wake:
		return gotWake
	}
}

// woken handles a wake-up: a catching-up watcher was registered or a
// stream's queue was taken, so catching up, and the progress requests
// that found no room, may succeed now.
func (d *Dispatcher) woken() {
	d.catchUp = true
	if len(d.pending) > 0 {
		d.serveProgress()
	}
}

// Stop ends Run, then sends CANCELED with reason (CauseShutdown) to every
// watcher; later registrations fail with ErrClosed. It is idempotent and
// also works when Run was never started.
func (d *Dispatcher) Stop(reason string) { d.StopFor(CauseShutdown, reason) }

// StopFor is Stop with the cause the CANCELED events carry (CauseShutdown
// or CauseRemoved). Only the first call of Stop or StopFor has an effect.
func (d *Dispatcher) StopFor(cause CancelCause, reason string) {
	d.stopOnce.Do(func() {
		d.halted.Store(true)
		d.mu.Lock()
		d.stopped = true
		started := d.started
		d.mu.Unlock()
		close(d.stop)
		if started {
			<-d.done
		}
		d.reg.shutdown(cause, reason)
	})
}

// deliver queues every event of b for the live watchers it matches, then
// marks b delivered.
func (d *Dispatcher) deliver(b *Batch) {
	r := d.reg
	r.mu.Lock()
	if b.Index <= r.delivered {
		r.mu.Unlock()
		return // covered by a loss or a snapshot handled before: history has it
	}
	if b.Reset {
		// The state was replaced; the snapshot's history holds what
		// happened in between. Every watcher continues from there.
		d.allBehindLocked(b.Index)
		behind := len(r.behind)
		r.mu.Unlock()
		d.log.Info("snapshot installed: watchers continue from history", "revision", b.Index, "catching_up", behind)
		return
	}
	for i := range b.Events {
		ev := &b.Events[i]
		for _, w := range r.exact[string(ev.Key)] {
			d.send(w, ev, b.PrevRead)
		}
		for p := range prefixSegments(ev.Key) {
			for _, w := range r.prefix[string(p)] {
				d.send(w, ev, b.PrevRead)
			}
		}
	}
	r.delivered = b.Index
	r.reapLocked()
	r.mu.Unlock()
}

// send queues ev for the live watcher w, or moves w to catching up when it
// has no room or needs a previous value the batch lacks. r.mu is held.
func (d *Dispatcher) send(w *Watcher, ev *Event, prevRead bool) {
	if w.state != live || ev.Revision < w.next {
		return
	}
	if w.prevKV && !prevRead {
		d.fallBehind(w, ev.Revision) // history has the previous value
		return
	}
	out := *ev
	out.WatchID = w.id
	if w.prevKV {
		out.HasPrev = true
		if out.PrevValue == nil {
			out.PrevValue = []byte{} // the key did not exist
		}
	} else {
		out.HasPrev, out.PrevValue = false, nil
	}
	// The first event of a revision needs room; the rest of it follows.
	if !w.stream.push(w, &out, ev.Revision == w.curRev) {
		d.fallBehind(w, ev.Revision)
		return
	}
	w.curRev = ev.Revision
}

func (d *Dispatcher) fallBehind(w *Watcher, next uint64) {
	d.reg.fallBehindLocked(w, next)
	d.catchUp = true
}

// allBehindLocked moves every live watcher to catching up after index, the
// new delivered revision. r.mu is held.
func (d *Dispatcher) allBehindLocked(index uint64) {
	r := d.reg
	next := r.delivered + 1
	r.forEachLocked(func(w *Watcher) { r.fallBehindLocked(w, next) })
	r.delivered = index
	d.catchUp = true
}

// checkLost handles batches Publish could not queue: history holds them,
// so every live watcher catches up from there.
func (d *Dispatcher) checkLost() {
	lost := d.lost.Swap(0)
	if lost == 0 {
		return
	}
	r := d.reg
	r.mu.Lock()
	if lost <= r.delivered {
		r.mu.Unlock()
		return
	}
	d.allBehindLocked(lost)
	behind := len(r.behind)
	r.mu.Unlock()
	d.log.Warn("watch dispatcher fell behind the state machine; watchers continue from history",
		"revision", lost, "catching_up", behind)
}

// catchUpStep feeds the catching-up watchers that have room from one read
// of history (at most Config.CatchUpEvents events, whole revisions), makes
// the ones that reach the delivered revision live, and reports whether
// another step could make progress now.
func (d *Dispatcher) catchUpStep() bool {
	r := d.reg
	r.mu.Lock()
	to := r.delivered
	from := uint64(math.MaxUint64)
	withPrev := false
	ready, room := d.feeding[:0], d.room[:0]
	defer func() { clear(ready); d.feeding, d.room = ready[:0], room[:0] }()
	for w := range r.behind {
		if w.next > to {
			w.state = live // nothing left to read: live from here
			delete(r.behind, w)
			continue
		}
		n := w.stream.roomFor(w)
		if n == 0 {
			continue // its consumer has not taken its queue; Take wakes us
		}
		ready = append(ready, w)
		room = append(room, n)
		from = min(from, w.next)
		withPrev = withPrev || w.prevKV
	}
	// Read what the streams can take: the most any one ready watcher can
	// take. Dividing by the watchers sharing a stream (right when they all
	// watch one key) starves watchers of distinct keys, which share the
	// stream's room but not its events: 10,000 of them on a stream would
	// read the minimum step and never catch up under load.
	limit := 0
	for i := range ready {
		limit = max(limit, room[i])
	}
	limit = min(max(limit, minStepEvents), d.step)
	r.mu.Unlock()
	if len(ready) == 0 {
		return false
	}

	// Read without holding r.mu: registrations and live delivery are not
	// held up by the disk. Only this goroutine moves delivered or next.
	evs := d.scratch[:0]
	readTo, last := to, uint64(0)
	err := d.hist.ReadHistory(from, to, withPrev, func(ev *Event) bool {
		if len(evs) >= limit && ev.Revision != last {
			readTo = last // stop on a revision boundary
			return false
		}
		evs = append(evs, *ev)
		last = ev.Revision
		return true
	})
	defer func() { clear(evs); d.scratch = evs[:0] }()

	more := d.applyRead(ready, evs, readTo, err)
	var ce *CompactedError
	if err != nil && !errors.As(err, &ce) {
		d.log.Error("reading watch history failed; canceling the watchers that needed it", "from", from, "to", to, "err", err)
	}
	r.logCancels()
	return more
}

// applyRead feeds the ready watchers the events read from history up to
// readTo, or cancels those the read failed for, and reports whether another
// catch-up step could make progress now.
func (d *Dispatcher) applyRead(ready []*Watcher, evs []Event, readTo uint64, err error) bool {
	r := d.reg
	r.mu.Lock()
	defer r.mu.Unlock()
	defer r.reapLocked()
	if err != nil {
		var ce *CompactedError
		if errors.As(err, &ce) {
			for _, w := range ready {
				if w.state == catchingUp && w.next < ce.Oldest {
					r.cancelLocked(w, CauseCompacted, fmt.Sprintf("watcher fell behind past the retained history: it needs revision %d, the oldest retained is %d; re-list and watch again", w.next, ce.Oldest), ce.Oldest)
				}
			}
			// The others retry from their later revisions. (Even when none
			// was canceled here: the one that needed the compacted revision
			// may have been closed during the read, and nothing else would
			// wake the dispatcher for them.)
			return len(r.behind) > 0
		}
		for _, w := range ready {
			if w.state == catchingUp {
				r.cancelLocked(w, CauseInternal, "reading the event history failed on this node: "+err.Error(), 0)
			}
		}
		return false
	}

	// Index the ready watchers like the registry does, for this step: sort
	// them and group them by key, so that finding an event's watchers is one
	// binary search over the distinct keys (no map to build for every step,
	// and no comparing each of 1,000 watchers of one key with every event).
	// A watcher whose stream is full leaves its group for the rest of the
	// step, and the step stops reading once no group has a watcher left.
	slices.SortFunc(ready, compareWatchers)
	groups := groupByKey(d.groups[:0], ready)
	defer func() {
		clear(groups)
		d.groups = groups[:0]
		for _, w := range ready {
			w.stalled = false
		}
	}()
	active := len(ready)
	feed := func(w *Watcher, ev *Event) (keep bool) {
		if w.state != catchingUp {
			return false
		}
		if ev.Revision < w.next {
			return true
		}
		out := *ev
		out.WatchID = w.id
		if !w.prevKV {
			out.HasPrev, out.PrevValue = false, nil
		}
		if !w.stream.push(w, &out, ev.Revision == w.curRev) {
			w.next = ev.Revision // resume here once its queue is taken
			w.stalled = true
			return false
		}
		w.curRev = ev.Revision
		return true
	}
	for i := 0; i < len(evs) && active > 0; i++ {
		ev := &evs[i]
		if g := groupOf(groups, false, ev.Key); g != nil {
			active -= g.feed(ev, feed)
		}
		for p := range prefixSegments(ev.Key) {
			if g := groupOf(groups, true, p); g != nil {
				active -= g.feed(ev, feed)
			}
		}
	}
	progress := false
	for _, w := range ready {
		if w.state != catchingUp || w.stalled {
			continue
		}
		progress = true
		w.next = max(w.next, readTo+1)
		if w.next > r.delivered { // delivered == to: only this goroutine moves it
			w.state = live
			delete(r.behind, w)
		}
	}
	return progress && len(r.behind) > 0
}

// compareWatchers orders watchers by kind (exact keys first) and key.
func compareWatchers(a, b *Watcher) int {
	if a.prefix != b.prefix {
		if a.prefix {
			return 1
		}
		return -1
	}
	return strings.Compare(a.key, b.key)
}

// keyGroup is the watchers of one key (prefix ones, with prefix) among the
// ready watchers of a catch-up step that can still take events in it.
type keyGroup struct {
	prefix bool
	key    string
	ws     []*Watcher
}

// groupByKey appends to groups one keyGroup per run of equal (prefix, key)
// in ws, which is sorted by compareWatchers, and returns it. The groups'
// watchers are subslices of ws.
func groupByKey(groups []keyGroup, ws []*Watcher) []keyGroup {
	for i := 0; i < len(ws); {
		j := i + 1
		for j < len(ws) && ws[j].prefix == ws[i].prefix && ws[j].key == ws[i].key {
			j++
		}
		groups = append(groups, keyGroup{prefix: ws[i].prefix, key: ws[i].key, ws: ws[i:j:j]})
		i = j
	}
	return groups
}

// groupOf returns the group of key (prefix watchers, with prefix) in
// groups, or nil.
func groupOf(groups []keyGroup, prefix bool, key []byte) *keyGroup {
	i, found := slices.BinarySearchFunc(groups, 0, func(g keyGroup, _ int) int {
		if g.prefix != prefix {
			if g.prefix {
				return 1
			}
			return -1
		}
		return compareKey(g.key, key)
	})
	if !found {
		return nil
	}
	return &groups[i]
}

// feed hands ev to each of g's watchers; those for which f reports false
// leave g (swapped past its end: the set of watchers in the step's slice
// is unchanged, only their order). It returns how many left.
func (g *keyGroup) feed(ev *Event, f func(*Watcher, *Event) bool) (left int) {
	for i := 0; i < len(g.ws); {
		if f(g.ws[i], ev) {
			i++
			continue
		}
		last := len(g.ws) - 1
		g.ws[i], g.ws[last] = g.ws[last], g.ws[i]
		g.ws = g.ws[:last]
		left++
	}
	return left
}

// compareKey is strings.Compare(a, string(b)) without converting b.
func compareKey(a string, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			if a[i] < b[i] {
				return -1
			}
			return 1
		}
	}
	return len(a) - len(b)
}

// progress queues a PROGRESS for w if it has room. It reports whether w
// needs no retry (sent, canceled or removed). r.mu is held.
func (d *Dispatcher) progress(w *Watcher) bool {
	r := d.reg
	if w.removed || w.state == canceled {
		return true
	}
	// Never ahead of what w was sent, never below what it was told before.
	rev := w.next - 1
	if w.state == live {
		rev = max(rev, r.delivered)
	}
	ev := Event{Type: Progress, WatchID: w.id, Revision: rev}
	return w.stream.pushProgress(w, &ev)
}

// serveProgress answers pending progress requests; a watcher without room
// stays pending and is retried after the next batch, request, heartbeat or
// Take.
func (d *Dispatcher) serveProgress() {
	d.reg.mu.Lock()
	defer d.reg.mu.Unlock()
	kept := d.pending[:0]
	for _, w := range d.pending {
		if d.progress(w) {
			w.progressPending.Store(false)
		} else {
			kept = append(kept, w)
		}
	}
	clear(d.pending[len(kept):])
	d.pending = kept
}

// jittered returns the heartbeat interval ±heartbeatJitter.
func (d *Dispatcher) jittered() time.Duration {
	f := 1 + heartbeatJitter*(2*rand.Float64()-1)
	return time.Duration(f * float64(d.interval))
}
