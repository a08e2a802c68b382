package watch

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// heartbeatJitter spreads heartbeats by ±10% of the interval, so nodes (and
// their clients) started together do not all wake on the same tick.
const heartbeatJitter = 0.10

// Dispatcher carries batches from the FSM to the watchers of a Registry.
// Publish is called by the FSM; Run is the one goroutine that delivers.
type Dispatcher struct {
	reg      *Registry
	log      *slog.Logger
	interval time.Duration
	queue    chan Batch

	halted    atomic.Bool   // Stop was called: Publish drops everything
	lost      atomic.Uint64 // highest index Publish had to drop; 0 = none
	delivered atomic.Uint64 // index of the last batch fully delivered

	mu       sync.Mutex // guards started and stopped
	started  bool
	stopped  bool
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once

	// Owned by the delivering goroutine.
	doomed  []*Watcher // canceled during a delivery, removed after it
	pending []*Watcher // progress requests not yet served
	// held is the stream whose lock the delivering goroutine holds across
	// consecutive sends to its watchers (one lock per stream per event, not
	// per watcher); nil outside a send loop. See holdStream.
	held *Stream
}

// NewDispatcher returns a dispatcher for r. Only the QueueSize,
// ProgressInterval and Logger fields of cfg are used here.
func NewDispatcher(r *Registry, cfg Config) *Dispatcher {
	cfg = cfg.withDefaults()
	return &Dispatcher{
		reg:      r,
		log:      cfg.logger(),
		interval: cfg.ProgressInterval,
		queue:    make(chan Batch, cfg.QueueSize),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
}

// Publish hands a committed batch to the dispatcher. It never blocks: when
// the queue is full the batch is dropped and, before delivering anything
// published later, the dispatcher cancels every watcher that needed it.
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

// Delivered returns the index of the last batch fully delivered.
func (d *Dispatcher) Delivered() uint64 { return d.delivered.Load() }

// Run delivers batches, progress requests and heartbeats until Stop. It is
// the only goroutine that sends to watchers; start it once with go d.Run().
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
	for {
		d.checkLost() // before idling
		select {
		case <-d.stop:
			return
		case b := <-d.queue:
			// A batch published after a loss must not reach a watcher
			// that missed the lost one: check again before delivering.
			d.checkLost()
			d.deliver(&b)
			if len(d.pending) > 0 {
				d.serveProgress()
			}
		case <-d.reg.reqSignal:
			d.pending = d.reg.takeRequests(d.pending)
			d.serveProgress()
		case <-tick:
			d.heartbeat()
			timer.Reset(d.jittered())
		}
	}
}

// Stop ends Run, then sends CANCELED with reason to every watcher and closes
// their channels; later registrations fail with ErrClosed. It is idempotent
// and also works when Run was never started.
func (d *Dispatcher) Stop(reason string) {
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
		d.reg.shutdown(d.delivered.Load(), reason)
	})
}

// deliver puts every event of b into the channels of the watchers it
// matches, then marks b delivered.
func (d *Dispatcher) deliver(b *Batch) {
	r := d.reg
	r.mu.RLock()
	if b.Reset {
		d.cancelBefore(b.Index, fmt.Sprintf("snapshot installed at revision %d: state was replaced; re-list and watch again", b.Index))
	}
	for i := range b.Events {
		ev := &b.Events[i]
		for _, w := range r.exact[string(ev.Key)] {
			d.send(w, ev)
		}
		for p := range prefixSegments(ev.Key) {
			for _, w := range r.prefix[string(p)] {
				d.send(w, ev)
			}
		}
		d.releaseStream() // a Take waits for at most one event's fan-out
	}
	r.mu.RUnlock()
	d.reap()
	d.advance(b.Index)
}

// send puts ev in w's channel, or cancels w when only the reserved slot is
// left; in stream mode, it appends ev to the stream's queue, or cancels w
// when BufferSize events of w are already waiting there. r.mu is
// read-locked.
func (d *Dispatcher) send(w *Watcher, ev *Event) {
	if w.canceled || ev.Revision <= w.start {
		return
	}
	if w.prevKV && !ev.HasPrev {
		// Fence in Register makes this impossible; if it happens anyway,
		// say so rather than send an event without its previous value.
		d.cancel(w, fmt.Sprintf("internal error: the event at revision %d lacks the previous value this watcher asked for; re-list and watch again", ev.Revision))
		return
	}
	if w.stream == nil && w.free() <= reservedSlots {
		d.cancel(w, fmt.Sprintf("watcher too slow: buffer of %d events full", cap(w.ch)-reservedSlots))
		return
	}
	out := *ev
	out.WatchID = w.id
	if w.prevKV {
		if out.PrevValue == nil {
			out.PrevValue = []byte{} // HasPrev with empty value: the key did not exist
		}
	} else {
		out.HasPrev, out.PrevValue = false, nil
	}
	if w.stream != nil {
		// The bound check and the append are one step under the stream's
		// lock, so a concurrent Take sees all or nothing of it. On refusal
		// CANCELED is appended after every event w was sent (a Take in
		// between only makes the cancel conservative), and w.canceled
		// stops anything more for w.
		if ok, pending := d.holdStream(w.stream).pushLocked(w, &out, d.reg.streamBufferSize); !ok {
			d.cancel(w, fmt.Sprintf("watcher too slow: %d events waiting, the most it may have is %d", pending, d.reg.streamBufferSize))
		}
		return
	}
	w.ch <- out // cannot block: at least two free slots and we are the only sender
}

// cancel sends CANCELED to w and schedules its removal. r.mu is held.
func (d *Dispatcher) cancel(w *Watcher, reason string) {
	d.releaseStream() // w.cancel takes the stream's lock itself
	if w.cancel(d.delivered.Load(), reason) {
		d.doomed = append(d.doomed, w)
		d.log.Warn("watcher canceled", "watcher_id", w.id, "key", w.key, "prefix", w.prefix, "start", w.start, "reason", reason)
	}
}

// cancelBefore cancels every watcher whose start is below index, logging
// one warning for all of them. r.mu is held.
func (d *Dispatcher) cancelBefore(index uint64, reason string) {
	d.releaseStream() // w.cancel takes the stream's lock itself
	n := 0
	rev := d.delivered.Load()
	d.reg.forEachLocked(func(w *Watcher) {
		if w.start < index && w.cancel(rev, reason) {
			d.doomed = append(d.doomed, w)
			n++
		}
	})
	if n > 0 {
		d.log.Warn("watchers canceled", "count", n, "reason", reason)
	}
}

// checkLost cancels the watchers that needed a batch Publish dropped.
func (d *Dispatcher) checkLost() {
	lost := d.lost.Swap(0)
	if lost == 0 {
		return
	}
	d.reg.mu.RLock()
	d.cancelBefore(lost, fmt.Sprintf("dispatcher fell behind the state machine; events up to revision %d could not be delivered", lost))
	d.reg.mu.RUnlock()
	// Every watcher still registered starts at or after lost, and every
	// watcher registered from now on starts at Applied() >= lost.
	d.reap()
	d.advance(lost)
}

func (d *Dispatcher) advance(index uint64) {
	if index > d.delivered.Load() {
		d.delivered.Store(index) // only this goroutine stores
	}
}

// reap removes the watchers canceled since the last call.
func (d *Dispatcher) reap() {
	if len(d.doomed) == 0 {
		return
	}
	r := d.reg
	r.mu.Lock()
	for _, w := range d.doomed {
		r.removeLocked(w)
	}
	r.mu.Unlock()
	clear(d.doomed)
	d.doomed = d.doomed[:0]
}

// progress sends w a PROGRESS if that leaves the reserved slot and one more
// free, so a heartbeat never causes a cancel. It reports whether w needs no
// retry (sent, canceled or removed). r.mu is held.
func (d *Dispatcher) progress(w *Watcher) bool {
	if w.removed || w.canceled {
		return true
	}
	// Never ahead of what w was sent, never below its start.
	ev := Event{Type: Progress, WatchID: w.id, Revision: max(d.delivered.Load(), w.start)}
	if w.stream != nil {
		// Only with at most StreamBufferSize-2 events waiting, so that room for
		// a data event is left after it (one stricter than channel mode).
		ok, _ := d.holdStream(w.stream).pushLocked(w, &ev, d.reg.streamBufferSize+reservedSlots-progressMinFree)
		return ok
	}
	if w.free() < progressMinFree {
		return false
	}
	w.ch <- ev
	return true
}

// serveProgress answers pending progress requests; a watcher whose buffer
// is too full stays pending and is retried after the next batch, request
// or heartbeat.
func (d *Dispatcher) serveProgress() {
	d.reg.mu.RLock()
	kept := d.pending[:0]
	for _, w := range d.pending {
		if d.progress(w) {
			w.progressPending.Store(false)
		} else {
			kept = append(kept, w)
		}
	}
	d.releaseStream()
	clear(d.pending[len(kept):])
	d.pending = kept
	d.reg.mu.RUnlock()
}

// heartbeat sends PROGRESS to every watcher with room for it.
func (d *Dispatcher) heartbeat() {
	d.reg.mu.RLock()
	d.reg.forEachLocked(func(w *Watcher) { d.progress(w) })
	d.releaseStream()
	d.reg.mu.RUnlock()
	if len(d.pending) > 0 {
		d.serveProgress()
	}
}

// holdStream returns s with its lock held by the delivering goroutine,
// releasing the lock of the stream held before, if another. Whoever calls
// it releases with releaseStream before leaving its send loop, before
// w.cancel, and before blocking on anything.
func (d *Dispatcher) holdStream(s *Stream) *Stream {
	if d.held != s {
		d.releaseStream()
		s.mu.Lock()
		d.held = s
	}
	return s
}

// releaseStream unlocks the stream held by holdStream, if any.
func (d *Dispatcher) releaseStream() {
	if d.held != nil {
		d.held.mu.Unlock()
		d.held = nil
	}
}

// jittered returns the heartbeat interval ±heartbeatJitter.
func (d *Dispatcher) jittered() time.Duration {
	f := 1 + heartbeatJitter*(2*rand.Float64()-1)
	return time.Duration(f * float64(d.interval))
}
