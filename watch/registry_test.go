package watch

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// waitTimeout bounds every wait in these tests; nothing should take close.
const waitTimeout = 5 * time.Second

// fakeSource is a RevisionSource whose applied index the test sets, the way
// the FSM stores it before publishing.
type fakeSource struct {
	applied atomic.Uint64
	fences  atomic.Int64
	onFence func() // runs inside Fence, if set
}

func (f *fakeSource) Applied() uint64 { return f.applied.Load() }

func (f *fakeSource) Fence() uint64 {
	f.fences.Add(1)
	if f.onFence != nil {
		f.onFence()
	}
	return f.applied.Load()
}

type harness struct {
	t   *testing.T
	src *fakeSource
	reg *Registry
	d   *Dispatcher
	ran chan struct{} // closed when Run returns
}

// newHarness builds a registry and dispatcher on a fake source. Run is
// started only when run is set (tests that fill the queue start it later).
func newHarness(t *testing.T, cfg Config, run bool) *harness {
	t.Helper()
	h := &harness{t: t, src: &fakeSource{}, ran: make(chan struct{})}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h.reg = NewRegistry(cfg, h.src)
	h.d = NewDispatcher(h.reg, cfg)
	t.Cleanup(func() { h.d.Stop("test over") })
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

// publish commits a batch the way the FSM does: Applied first, then Publish.
func (h *harness) publish(index uint64, evs ...Event) {
	h.src.applied.Store(index)
	h.d.Publish(Batch{Index: index, Events: evs})
}

func (h *harness) register(key string, prefix, prevKV bool) *Watcher {
	h.t.Helper()
	w, err := h.reg.Register([]byte(key), prefix, prevKV)
	if err != nil {
		h.t.Fatalf("Register(%q, prefix=%v, prevKV=%v): %v", key, prefix, prevKV, err)
	}
	return w
}

func put(key string, rev uint64) Event {
	return Event{Type: Put, Key: []byte(key), Value: []byte(fmt.Sprintf("v%d", rev)), Revision: rev, Version: 1}
}

// recv returns the next event of w, failing the test if none arrives in time
// or the channel is closed.
func recv(t *testing.T, w *Watcher) Event {
	t.Helper()
	select {
	case ev, ok := <-w.Events():
		if !ok {
			t.Fatalf("watcher %d: channel closed, want an event", w.ID())
		}
		return ev
	case <-time.After(waitTimeout):
		t.Fatalf("watcher %d: no event within %v", w.ID(), waitTimeout)
	}
	return Event{}
}

// recvType receives the next event and checks its type and revision.
func recvType(t *testing.T, w *Watcher, typ EventType, rev uint64) Event {
	t.Helper()
	ev := recv(t, w)
	if ev.Type != typ || ev.Revision != rev {
		t.Fatalf("watcher %d: got %v@%d (key %q, reason %q), want %v@%d", w.ID(), ev.Type, ev.Revision, ev.Key, ev.Reason, typ, rev)
	}
	return ev
}

// recvCanceled checks that the next event is CANCELED with a reason
// containing every fragment, and that the channel is closed after it.
func recvCanceled(t *testing.T, w *Watcher, fragments ...string) Event {
	t.Helper()
	ev := recv(t, w)
	if ev.Type != Canceled {
		t.Fatalf("watcher %d: got %v@%d, want CANCELED", w.ID(), ev.Type, ev.Revision)
	}
	for _, f := range fragments {
		if !strings.Contains(ev.Reason, f) {
			t.Fatalf("watcher %d: cancel reason %q does not mention %q", w.ID(), ev.Reason, f)
		}
	}
	expectClosed(t, w)
	return ev
}

func expectClosed(t *testing.T, w *Watcher) {
	t.Helper()
	select {
	case ev, ok := <-w.Events():
		if ok {
			t.Fatalf("watcher %d: got %v@%d, want the channel closed", w.ID(), ev.Type, ev.Revision)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("watcher %d: channel not closed within %v", w.ID(), waitTimeout)
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestRegisterValidation(t *testing.T) {
	cases := []struct {
		name    string
		key     string
		prefix  bool
		wantErr error
		wantMsg string
	}{
		{name: "exact key is accepted", key: "/config/db"},
		{name: "exact key needs no slash", key: "config"},
		{name: "empty exact key is rejected", key: "", wantErr: ErrInvalidKey, wantMsg: "must not be empty"},
		{name: "prefix / is accepted", key: "/", prefix: true},
		{name: "prefix /config/ is accepted", key: "/config/", prefix: true},
		{name: "prefix config is rejected", key: "config", prefix: true, wantErr: ErrInvalidPrefix,
			wantMsg: `invalid prefix "config": a prefix must start and end with '/' (try "/config/")`},
		{name: "prefix /config is rejected", key: "/config", prefix: true, wantErr: ErrInvalidPrefix, wantMsg: `(try "/config/")`},
		{name: "prefix config/ is rejected", key: "config/", prefix: true, wantErr: ErrInvalidPrefix, wantMsg: `(try "/config/")`},
		{name: "empty prefix is rejected", key: "", prefix: true, wantErr: ErrInvalidPrefix, wantMsg: `(try "/")`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := NewRegistry(Config{}, &fakeSource{})
			w, err := r.Register([]byte(tc.key), tc.prefix, false)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Register: %v", err)
				}
				if r.Len() != 1 {
					t.Fatalf("Len = %d, want 1", r.Len())
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Register error = %v, want %v", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("error %q does not contain %q", err, tc.wantMsg)
			}
			if w != nil || r.Len() != 0 || r.reserved.Load() != 0 {
				t.Fatalf("failed registration left state: w=%v Len=%d reserved=%d", w, r.Len(), r.reserved.Load())
			}
		})
	}
}

func TestRegisterLimit(t *testing.T) {
	r := NewRegistry(Config{MaxWatchers: 3}, &fakeSource{})
	var ws []*Watcher
	for i := range 3 {
		w, err := r.Register([]byte(fmt.Sprintf("/k%d", i)), false, false)
		if err != nil {
			t.Fatalf("Register %d: %v", i, err)
		}
		ws = append(ws, w)
	}
	_, err := r.Register([]byte("/k3"), false, true)
	if !errors.Is(err, ErrLimitExceeded) || !strings.Contains(err.Error(), "maximum of 3 watchers") {
		t.Fatalf("4th Register error = %v, want ErrLimitExceeded mentioning the cap", err)
	}
	if r.WantPrev() {
		t.Fatal("a rejected prev-value registration left WantPrev set")
	}
	ws[0].Close()
	if _, err := r.Register([]byte("/k3"), false, false); err != nil {
		t.Fatalf("Register after Close freed a slot: %v", err)
	}
}

func TestRegisterConcurrentNeverExceedsCap(t *testing.T) {
	const limit = 50
	r := NewRegistry(Config{MaxWatchers: limit, BufferSize: 1}, &fakeSource{})

	// Phase 1: 200 goroutines race for 50 slots.
	var ok, full atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, err := r.Register([]byte(fmt.Sprintf("/k/%d", i)), false, i%2 == 0)
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, ErrLimitExceeded):
				full.Add(1)
			default:
				t.Errorf("Register: %v", err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if ok.Load() != limit || full.Load() != 200-limit || r.Len() != limit {
		t.Fatalf("ok=%d full=%d Len=%d, want %d, %d, %d", ok.Load(), full.Load(), r.Len(), limit, 200-limit, limit)
	}

	// Phase 2: churn (close one, race to take its slot) while a monitor
	// checks that neither the registered count nor the reservations pass
	// the cap.
	r2 := NewRegistry(Config{MaxWatchers: limit, BufferSize: 1}, &fakeSource{})
	stop := make(chan struct{})
	var violations atomic.Int64
	monitorDone := make(chan struct{})
	go func() {
		defer close(monitorDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if r2.Len() > limit || r2.reserved.Load() > limit {
				violations.Add(1)
			}
		}
	}()
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				w, err := r2.Register([]byte(fmt.Sprintf("/c/%d/%d/", g, i)), i%3 == 0, i%2 == 0)
				if err == nil {
					w.Close()
				} else if !errors.Is(err, ErrLimitExceeded) {
					t.Errorf("Register: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-monitorDone
	if v := violations.Load(); v != 0 {
		t.Fatalf("cap exceeded %d times", v)
	}
	if r2.Len() != 0 || r2.reserved.Load() != 0 || r2.WantPrev() {
		t.Fatalf("after churn: Len=%d reserved=%d WantPrev=%v, want 0, 0, false", r2.Len(), r2.reserved.Load(), r2.WantPrev())
	}
}

func TestRegisterStartRevision(t *testing.T) {
	t.Run("start is the applied index", func(t *testing.T) {
		src := &fakeSource{}
		src.applied.Store(7)
		r := NewRegistry(Config{}, src)
		w, err := r.Register([]byte("/k"), false, false)
		if err != nil {
			t.Fatal(err)
		}
		if w.Start() != 7 {
			t.Fatalf("Start = %d, want 7", w.Start())
		}
		if src.fences.Load() != 0 {
			t.Fatal("a watcher without prev values called Fence")
		}
	})
	t.Run("prev-value watcher raises WantPrev before Fence and starts after the fenced batch", func(t *testing.T) {
		src := &fakeSource{}
		src.applied.Store(7)
		r := NewRegistry(Config{}, src)
		var wantPrevAtFence bool
		src.onFence = func() {
			wantPrevAtFence = r.WantPrev()
			src.applied.Store(9) // the batch in flight commits
		}
		w, err := r.Register([]byte("/k"), false, true)
		if err != nil {
			t.Fatal(err)
		}
		if !wantPrevAtFence {
			t.Fatal("WantPrev was false when Fence ran: the batch after Fence might not read previous values")
		}
		if w.Start() != 9 {
			t.Fatalf("Start = %d, want 9 (after the fenced batch)", w.Start())
		}
		if !r.WantPrev() {
			t.Fatal("WantPrev = false with a prev-value watcher registered")
		}
		w.Close()
		if r.WantPrev() {
			t.Fatal("WantPrev = true after the only prev-value watcher closed")
		}
	})
}

func TestWatcherIDsUnique(t *testing.T) {
	r := NewRegistry(Config{}, &fakeSource{})
	seen := map[uint64]bool{}
	for range 100 {
		w, err := r.Register([]byte("/k"), false, false)
		if err != nil {
			t.Fatal(err)
		}
		if seen[w.ID()] {
			t.Fatalf("duplicate watcher id %d", w.ID())
		}
		seen[w.ID()] = true
	}
}

func TestCloseUnregisters(t *testing.T) {
	h := newHarness(t, Config{}, true)
	closed := h.register("/k", false, true)
	other := h.register("/k", false, false)
	if h.reg.Len() != 2 {
		t.Fatalf("Len = %d, want 2", h.reg.Len())
	}
	closed.Close()
	if h.reg.Len() != 1 {
		t.Fatalf("Len = %d right after Close, want 1", h.reg.Len())
	}
	if h.reg.WantPrev() {
		t.Fatal("WantPrev still set after the prev-value watcher closed")
	}
	expectClosed(t, closed)
	closed.Close() // idempotent
	if h.reg.Len() != 1 {
		t.Fatalf("Len = %d after a second Close, want 1", h.reg.Len())
	}
	h.publish(1, put("/k", 1))
	recvType(t, other, Put, 1)
	closed.RequestProgress() // harmless on a closed watcher
	h.publish(2, put("/k", 2))
	recvType(t, other, Put, 2)
	if _, ok := <-closed.Events(); ok {
		t.Fatal("closed watcher received an event")
	}
}

func TestCloseConcurrentWithDelivery(t *testing.T) {
	h := newHarness(t, Config{BufferSize: 4096}, true)
	var ws []*Watcher
	for i := range 200 {
		ws = append(ws, h.register("/a/", true, i%2 == 0))
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := uint64(1); i <= 500; i++ {
			ev := put("/a/x", i)
			ev.HasPrev, ev.PrevValue = true, []byte("old")
			h.publish(i, ev)
		}
	}()
	for _, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.RequestProgress()
			w.Close()
			w.Close()
		}()
	}
	wg.Wait()
	if h.reg.Len() != 0 || h.reg.WantPrev() {
		t.Fatalf("Len=%d WantPrev=%v after closing everything", h.reg.Len(), h.reg.WantPrev())
	}
	for _, w := range ws {
		for range w.Events() { // drains and ends: every channel is closed
		}
	}
}
