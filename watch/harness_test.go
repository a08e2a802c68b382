package watch

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"testing"
	"time"
)

// memHistory is an in-memory History that behaves like the FSM's: it holds
// every published event from oldest on, fills previous values, and can be
// compacted.
type memHistory struct {
	mu     sync.Mutex
	evs    []Event // in revision order; PrevValue/HasPrev filled
	oldest uint64
	cur    map[string][]byte // live value per key, to compute previous values
	reads  int               // ReadHistory calls
	all    []Event           // every event ever added, never compacted
	// onRead, if set, runs at the start of every ReadHistory, without mu
	// held (it may compact, or close watchers).
	onRead func(from, to uint64)
	// fail, if set, is what every ReadHistory returns.
	fail error
}

func newMemHistory() *memHistory { return &memHistory{oldest: 1, cur: map[string][]byte{}} }

// add records events as the FSM's history would, and returns them with
// previous values filled (as a batch applied with WantPrev).
func (h *memHistory) add(evs ...Event) []Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Event, len(evs))
	for i, ev := range evs {
		prev, ok := h.cur[string(ev.Key)]
		ev.HasPrev, ev.PrevValue = true, []byte{}
		if ok {
			ev.PrevValue = prev
		}
		if ev.Type == Put {
			h.cur[string(ev.Key)] = ev.Value
		} else {
			delete(h.cur, string(ev.Key))
		}
		h.evs = append(h.evs, ev)
		h.all = append(h.all, ev)
		out[i] = ev
	}
	return out
}

// compact drops every event below rev.
func (h *memHistory) compact(rev uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	i := 0
	for i < len(h.evs) && h.evs[i].Revision < rev {
		i++
	}
	h.evs = append([]Event(nil), h.evs[i:]...)
	h.oldest = rev
}

func (h *memHistory) ReadHistory(from, to uint64, withPrev bool, fn func(*Event) bool) error {
	h.mu.Lock()
	h.reads++
	hook, fail := h.onRead, h.fail
	h.mu.Unlock()
	if hook != nil {
		hook(from, to)
	}
	if fail != nil {
		return fail
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if from == 0 {
		from = h.oldest
	}
	if from < h.oldest {
		return &CompactedError{Requested: from, Oldest: h.oldest}
	}
	i := sort.Search(len(h.evs), func(i int) bool { return h.evs[i].Revision >= from })
	var ev Event // one variable: &ev escapes to fn
	for _, ev = range h.evs[i:] {
		if ev.Revision > to {
			break
		}
		if !withPrev {
			ev.HasPrev, ev.PrevValue = false, nil
		}
		if !fn(&ev) {
			return nil
		}
	}
	return nil
}

// readCount returns the number of ReadHistory calls so far.
func (h *memHistory) readCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.reads
}

// setOnRead installs a hook run at the start of every ReadHistory.
func (h *memHistory) setOnRead(fn func(from, to uint64)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.onRead = fn
}

// setFail makes every ReadHistory return err (nil: succeed again).
func (h *memHistory) setFail(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fail = err
}

// allEvents returns a copy of every event ever added, with previous values.
func (h *memHistory) allEvents() []Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Event(nil), h.all...)
}

func (h *memHistory) OldestRevision() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.oldest
}

// harness is a registry and dispatcher over a memHistory, fed the way the
// FSM feeds them: history first, then Publish.
type harness struct {
	t    *testing.T
	hist *memHistory
	reg  *Registry
	d    *Dispatcher
	ran  chan struct{}
	// prevRead: publish batches as read with previous values (the FSM
	// does while WantPrev is true).
	prevRead bool

	mu   sync.Mutex
	bufs map[*Watcher]*[]Event // events taken from a watcher's stream, not yet received
}

func newHarness(t *testing.T, cfg Config, run bool) *harness {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h := &harness{t: t, hist: newMemHistory(), ran: make(chan struct{}), bufs: map[*Watcher]*[]Event{}}
	h.reg = NewRegistry(cfg, h.hist, 0)
	h.d = NewDispatcher(h.reg, h.hist, cfg)
	t.Cleanup(func() { h.d.Stop("test over") })
	harnessMu.Lock()
	harnessOf[h.reg] = h
	harnessMu.Unlock()
	if run {
		h.run()
	}
	return h
}

func (h *harness) run() {
	go func() {
		h.d.Run()
		close(h.ran)
	}()
}

// publish commits a batch the way the FSM does: history first, then
// Publish, with previous values read while some watcher wants them.
func (h *harness) publish(index uint64, evs ...Event) {
	full := h.hist.add(evs...)
	prevRead := h.reg.WantPrev() || h.prevRead
	if !prevRead {
		for i := range full {
			full[i].HasPrev, full[i].PrevValue = false, nil
		}
	}
	h.d.Publish(Batch{Index: index, Events: full, PrevRead: prevRead})
}

// commit adds evs to history and returns their batch as the FSM would
// publish it, read with previous values or not.
func (h *harness) commit(index uint64, prevRead bool, evs ...Event) Batch {
	full := h.hist.add(evs...)
	if !prevRead {
		for i := range full {
			full[i].HasPrev, full[i].PrevValue = false, nil
		}
	}
	return Batch{Index: index, Events: full, PrevRead: prevRead}
}

// publishPrev is publish with an explicit PrevRead.
func (h *harness) publishPrev(index uint64, prevRead bool, evs ...Event) {
	h.d.Publish(h.commit(index, prevRead, evs...))
}

// deliverNow commits a batch and delivers it on the calling goroutine; only
// for tests that do not run the dispatcher.
func (h *harness) deliverNow(index uint64, prevRead bool, evs ...Event) {
	b := h.commit(index, prevRead, evs...)
	h.d.deliver(&b)
}

// register adds a watcher on a stream of its own.
func (h *harness) register(key string, prefix, prevKV bool) *Watcher {
	h.t.Helper()
	return h.registerOpts(key, Options{Prefix: prefix, PrevKV: prevKV})
}

func (h *harness) registerOpts(key string, o Options) *Watcher {
	h.t.Helper()
	s := h.reg.NewStream()
	h.t.Cleanup(s.Close)
	w, err := s.Register([]byte(key), o)
	if err != nil {
		h.t.Fatalf("Register(%q, %+v): %v", key, o, err)
	}
	return w
}

// next returns w's next event (PROGRESS included), waiting up to 5 s.
func (h *harness) next(w *Watcher) (Event, bool) {
	h.mu.Lock()
	buf, ok := h.bufs[w]
	if !ok {
		buf = new([]Event)
		h.bufs[w] = buf
	}
	h.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ev, err := w.stream.Next(ctx, buf)
	return ev, err == nil
}

// recv returns w's next PUT, DELETE or CANCELED, skipping PROGRESS.
func recv(t *testing.T, w *Watcher) Event {
	t.Helper()
	harnessMu.Lock()
	h := harnessOf[w.stream.reg]
	harnessMu.Unlock()
	for {
		ev, ok := h.next(w)
		if !ok {
			t.Fatalf("watcher %d: no event within 5 s", w.id)
		}
		if ev.Type != Progress {
			return ev
		}
	}
}

// harnessOf finds a registry's harness for recv.
var (
	harnessMu sync.Mutex
	harnessOf = map[*Registry]*harness{}
)

func put(key string, rev uint64) Event {
	return Event{Type: Put, Key: []byte(key), Value: []byte(fmt.Sprintf("v%d", rev)), Revision: rev, Version: 1}
}

func del(key string, rev uint64) Event {
	return Event{Type: Delete, Key: []byte(key), Revision: rev}
}
