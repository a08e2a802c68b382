package watch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func quietRegistry(cfg Config) *Registry {
	cfg.Logger = slog.New(slog.DiscardHandler)
	return NewRegistry(cfg, newMemHistory(), 0)
}

func TestEventTypeString(t *testing.T) {
	for typ, want := range map[EventType]string{Put: "PUT", Delete: "DELETE", Progress: "PROGRESS", Canceled: "CANCELED", 0: "EventType(0)"} {
		if got := typ.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", uint8(typ), got, want)
		}
	}
}

// A refused registration says why, wraps the right error, and leaves no
// trace: no watcher, no reservation, no previous-value demand.
func TestRegisterValidation(t *testing.T) {
	cases := []struct {
		name    string
		key     string
		prefix  bool
		wantErr error
		wantMsg string
	}{
		{name: "exact key is accepted", key: "/config/db"},
		{name: "exact key without a leading slash is rejected", key: "config", wantErr: ErrInvalidKey,
			wantMsg: `invalid key "config": a key must start with '/' (try "/config")`},
		{name: "exact key may end with a slash", key: "/config/"},
		{name: "empty exact key is rejected", key: "", wantErr: ErrInvalidKey, wantMsg: `must not be empty and must start with '/'`},
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
			r := quietRegistry(Config{})
			s := r.NewStream()
			w, err := s.Register([]byte(tc.key), Options{Prefix: tc.prefix, PrevKV: true})
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Register: %v", err)
				}
				if r.Len() != 1 || s.Len() != 1 || !r.WantPrev() {
					t.Fatalf("Len=%d Stream.Len=%d WantPrev=%v, want 1, 1, true", r.Len(), s.Len(), r.WantPrev())
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Register error = %v, want %v", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("error %q does not contain %q", err, tc.wantMsg)
			}
			if w != nil || r.Len() != 0 || s.Len() != 0 || r.reserved.Load() != 0 || r.WantPrev() {
				t.Fatalf("failed registration left state: w=%v Len=%d reserved=%d WantPrev=%v", w, r.Len(), r.reserved.Load(), r.WantPrev())
			}
		})
	}
}

func TestWatcherIDsUnique(t *testing.T) {
	r := quietRegistry(Config{})
	seen := map[uint64]bool{}
	for i := range 100 {
		key := "/k"
		if i%2 == 1 {
			key = "/k/"
		}
		w, err := r.NewStream().Register([]byte(key), Options{Prefix: i%2 == 1})
		if err != nil {
			t.Fatal(err)
		}
		if w.ID() == 0 || seen[w.ID()] {
			t.Fatalf("watcher id %d is zero or a duplicate", w.ID())
		}
		seen[w.ID()] = true
	}
}

func TestRegisterLimit(t *testing.T) {
	r := quietRegistry(Config{MaxWatchers: 3})
	a, b := r.NewStream(), r.NewStream()
	var ws []*Watcher
	for i := range 3 {
		s := a
		if i == 2 {
			s = b // the cap is the registry's, whatever the stream
		}
		w, err := s.Register([]byte(fmt.Sprintf("/k%d", i)), Options{})
		if err != nil {
			t.Fatalf("Register %d: %v", i, err)
		}
		ws = append(ws, w)
	}
	_, err := b.Register([]byte("/k3"), Options{PrevKV: true})
	if !errors.Is(err, ErrLimitExceeded) || !strings.Contains(err.Error(), "maximum of 3 watchers") {
		t.Fatalf("4th Register error = %v, want ErrLimitExceeded mentioning the cap", err)
	}
	if r.WantPrev() || r.reserved.Load() != 3 {
		t.Fatalf("a refused registration left WantPrev=%v reserved=%d", r.WantPrev(), r.reserved.Load())
	}
	ws[0].Close()
	if _, err := b.Register([]byte("/k3"), Options{}); err != nil {
		t.Fatalf("Register after Close freed a slot: %v", err)
	}
	a.Close() // frees ws[1]
	if _, err := b.Register([]byte("/k4"), Options{}); err != nil {
		t.Fatalf("Register after Stream.Close freed a slot: %v", err)
	}
}

// Concurrent registrations never overshoot MaxWatchers, neither in
// registered watchers nor in reservations, and leave nothing behind.
func TestRegisterConcurrentNeverExceedsCap(t *testing.T) {
	const limit = 50
	r := quietRegistry(Config{MaxWatchers: limit, BufferSize: 1})

	// Phase 1: 200 goroutines race for 50 slots.
	var ok, full atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, err := r.NewStream().Register([]byte(fmt.Sprintf("/k/%d", i)), Options{PrevKV: i%2 == 0})
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

	// Phase 2: churn on shared streams (close one, race to take its slot)
	// while a monitor checks that neither the registered count nor the
	// reservations pass the cap.
	r2 := quietRegistry(Config{MaxWatchers: limit, BufferSize: 1})
	stop := make(chan struct{})
	var violations, resViolations atomic.Int64
	monitorDone := make(chan struct{})
	go func() {
		defer close(monitorDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if r2.Len() > limit {
				violations.Add(1)
			}
			if r2.reserved.Load() > limit {
				resViolations.Add(1)
			}
		}
	}()
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := r2.NewStream()
			defer s.Close()
			for i := range 200 {
				w, err := s.Register([]byte(fmt.Sprintf("/c/%d/%d/", g, i)), Options{Prefix: i%3 == 0, PrevKV: i%2 == 0})
				if err == nil {
					if i%5 != 0 {
						w.Close() // the rest go with s.Close
					}
				} else if !errors.Is(err, ErrLimitExceeded) {
					t.Errorf("Register: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-monitorDone
	if v, rv := violations.Load(), resViolations.Load(); v != 0 || rv != 0 {
		t.Fatalf("cap exceeded %d times by registered watchers, %d times by reservations", v, rv)
	}
	if r2.Len() != 0 || r2.reserved.Load() != 0 || r2.WantPrev() {
		t.Fatalf("after churn: Len=%d reserved=%d WantPrev=%v, want 0, 0, false", r2.Len(), r2.reserved.Load(), r2.WantPrev())
	}
}

// Close unregisters at once: nothing is queued for the watcher after it
// returns, what was queued before can still be taken, WantPrev and the
// reservation are given back, and it is idempotent and harmless with
// RequestProgress.
func TestWatcherClose(t *testing.T) {
	h := newHarness(t, Config{}, true)
	s, sr := h.stream()
	o, or := h.stream()
	closed := h.registerOn(s, "/k", Options{PrevKV: true})
	last := h.registerOn(s, "/", Options{Prefix: true})
	other := h.registerOn(o, "/k", Options{})
	h.publish(1, put("/k", 1))
	or.nextType(other, Put, 1) // barrier: rev 1 is queued in s, not taken
	closed.Close()
	if h.reg.Len() != 2 || s.Len() != 1 || h.reg.WantPrev() || h.reg.reserved.Load() != 2 {
		t.Fatalf("right after Close: Len=%d Stream.Len=%d WantPrev=%v reserved=%d", h.reg.Len(), s.Len(), h.reg.WantPrev(), h.reg.reserved.Load())
	}
	sr.nextType(closed, Put, 1) // queued before Close: still there
	closed.Close()              // idempotent
	closed.RequestProgress()    // harmless
	h.publish(2, put("/k", 2))
	or.nextType(other, Put, 2)
	sr.nextType(last, Put, 1)
	sr.nextType(last, Put, 2)
	sr.expectNone(closed)
	last.Close()
	other.Close()
	if s.Len() != 0 || o.Len() != 0 || h.reg.Len() != 0 || h.reg.reserved.Load() != 0 {
		t.Fatalf("Stream.Len=%d,%d Len=%d reserved=%d, want 0, 0, 0, 0", s.Len(), o.Len(), h.reg.Len(), h.reg.reserved.Load())
	}
	h.publish(3, put("/k", 3))
	waitFor(t, func() bool { return h.reg.Delivered() == 3 })
	if n := sr.takeNow() + or.takeNow(); n != 0 {
		t.Fatalf("took %d events after every watcher closed", n)
	}
}

// A catching-up watcher that closes leaves the catching-up set.
func TestCloseCatchingUpWatcher(t *testing.T) {
	h := newHarness(t, Config{BufferSize: 1}, false)
	w := h.register("/k", false, true)
	h.deliverNow(1, true, put("/k", 1))
	h.deliverNow(2, true, put("/k", 2))
	wantState(t, w, catchingUp)
	w.Close()
	if live, behind := h.reg.Counts(); live != 0 || behind != 0 || h.reg.WantPrev() {
		t.Fatalf("Counts = %d, %d WantPrev=%v after Close, want 0, 0, false", live, behind, h.reg.WantPrev())
	}
	if h.d.catchUpStep() {
		t.Fatal("a catch-up step found work after the only catching-up watcher closed")
	}
}

func TestCloseConcurrentWithDelivery(t *testing.T) {
	h := newHarness(t, Config{BufferSize: 64, CatchUpEvents: 16}, true)
	var ws []*Watcher
	streams := []*Stream{h.reg.NewStream(), h.reg.NewStream(), h.reg.NewStream()}
	for i := range 200 {
		w, err := streams[i%3].Register([]byte("/a/"), Options{Prefix: true, PrevKV: i%2 == 0, StartRevision: uint64(i % 4)})
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := uint64(1); i <= 500; i++ {
			h.publish(i, put("/a/x", i))
		}
	}()
	go func() { // a consumer, so that some watchers catch up
		defer wg.Done()
		var buf []Event
		for range 200 {
			for _, s := range streams {
				buf = s.Take(buf)
			}
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
	if h.reg.Len() != 0 || h.reg.WantPrev() || h.reg.reserved.Load() != 0 {
		t.Fatalf("Len=%d WantPrev=%v reserved=%d after closing everything", h.reg.Len(), h.reg.WantPrev(), h.reg.reserved.Load())
	}
	if live, behind := h.reg.Counts(); live != 0 || behind != 0 {
		t.Fatalf("Counts = %d, %d after closing everything", live, behind)
	}
	for _, s := range streams {
		s.Close()
		s.Close()
	}
}

// Stream.Close unregisters every watcher of the stream at once without
// CANCELED, discards its queue, refuses later registrations, and leaves the
// other streams alone.
func TestStreamCloseUnregistersAll(t *testing.T) {
	h := newHarness(t, Config{BufferSize: 1}, true)
	s, sr := h.stream()
	o, or := h.stream()
	mine := []*Watcher{
		h.registerOn(s, "/k", Options{PrevKV: true}),
		h.registerOn(s, "/a/", Options{Prefix: true}),
		h.registerOn(s, "/", Options{Prefix: true}),
	}
	kept := h.registerOn(o, "/k", Options{})
	h.publish(1, put("/k", 1))
	h.publish(2, put("/k", 2)) // s's watchers of /k fall behind (buffer of 1)
	or.nextType(kept, Put, 1)
	or.nextType(kept, Put, 2) // barrier: batch 2 was handled
	waitFor(t, func() bool { _, behind := h.reg.Counts(); return behind == 2 })

	s.Close()
	if h.reg.Len() != 1 || s.Len() != 0 || h.reg.WantPrev() || h.reg.reserved.Load() != 1 {
		t.Fatalf("right after Stream.Close: Len=%d Stream.Len=%d WantPrev=%v reserved=%d, want 1, 0, false, 1",
			h.reg.Len(), s.Len(), h.reg.WantPrev(), h.reg.reserved.Load())
	}
	if live, behind := h.reg.Counts(); live != 1 || behind != 0 {
		t.Fatalf("Counts = %d, %d after Stream.Close, want 1, 0", live, behind)
	}
	if n := sr.takeNow(); n != 0 {
		t.Fatalf("took %d events from a closed stream", n)
	}
	s.Close() // idempotent
	for _, w := range mine {
		w.Close() // harmless
		w.RequestProgress()
	}
	if _, err := s.Register([]byte("/k"), Options{}); !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "stream is closed") {
		t.Fatalf("Register on a closed stream: %v, want ErrClosed", err)
	}
	if h.reg.Len() != 1 || h.reg.reserved.Load() != 1 {
		t.Fatalf("a refused registration left Len=%d reserved=%d", h.reg.Len(), h.reg.reserved.Load())
	}
	h.publish(3, put("/k", 3))
	or.nextType(kept, Put, 3)
	if n := sr.takeNow(); n != 0 {
		t.Fatalf("took %d events from a closed stream", n)
	}
}

// WantPrev is true exactly while a registered watcher wants previous
// values, however it goes (Close, Stream.Close, cancel).
func TestWantPrevAccounting(t *testing.T) {
	h := newHarness(t, Config{}, false)
	if h.reg.WantPrev() {
		t.Fatal("WantPrev with no watcher")
	}
	plain := h.register("/k", false, false)
	if h.reg.WantPrev() {
		t.Fatal("WantPrev with only a plain watcher")
	}
	a := h.register("/k", false, true)
	s, _ := h.stream()
	h.registerOn(s, "/a/", Options{Prefix: true, PrevKV: true})
	h.registerOn(h.reg.NewStream(), "/b", Options{PrevKV: true, RequireLeader: true})
	a.Close()
	if !h.reg.WantPrev() {
		t.Fatal("WantPrev false with two prev-value watchers left")
	}
	s.Close()
	if !h.reg.WantPrev() {
		t.Fatal("WantPrev false with one prev-value watcher left")
	}
	h.reg.CancelRequireLeader("lost the leader")
	if h.reg.WantPrev() {
		t.Fatal("WantPrev true after the last prev-value watcher was canceled")
	}
	plain.Close()
}

// An exact-key watcher receives its key only: not the keys under it, not
// the keys it is a prefix of, not its prefix.
func TestExactKeyIsolation(t *testing.T) {
	h := newHarness(t, Config{}, true)
	a := h.register("/a", false, false)
	aSlash := h.register("/a/", false, false)
	keys := []string{"/a/b", "/ab", "/", "a", "/a/", "/A", "/a"}
	for i, k := range keys {
		h.publish(uint64(i+1), put(k, uint64(i+1)))
	}
	if ev := recv(t, a); ev.Revision != 7 || string(ev.Key) != "/a" {
		t.Fatalf("exact /a got %q@%d, want /a@7", ev.Key, ev.Revision)
	}
	if ev := recv(t, aSlash); ev.Revision != 5 || string(ev.Key) != "/a/" {
		t.Fatalf("exact /a/ got %q@%d, want /a/@5 (an exact key ending in '/' is no prefix)", ev.Key, ev.Revision)
	}
	h.publish(8, put("/a/c", 8), put("/a", 8))
	if ev := recv(t, a); ev.Revision != 8 {
		t.Fatalf("exact /a got %q@%d, want /a@8", ev.Key, ev.Revision)
	}
}

// Exact and prefix watchers of the same key each get the event, once.
func TestExactAndPrefixWatchersOnSameKeyBothReceive(t *testing.T) {
	h := newHarness(t, Config{}, true)
	s, sr := h.stream()
	ws := []*Watcher{
		h.registerOn(s, "/config/db", Options{}),
		h.registerOn(s, "/config/", Options{Prefix: true}),
		h.registerOn(s, "/", Options{Prefix: true}),
		h.registerOn(s, "/config/db", Options{}), // two watchers of one key
	}
	h.publish(1, put("/config/db", 1))
	for _, w := range ws {
		ev := sr.nextType(w, Put, 1)
		if string(ev.Key) != "/config/db" || string(ev.Value) != "v1" || ev.Version != 1 || ev.WatchID != w.ID() {
			t.Fatalf("watcher %d got %+v", w.ID(), ev)
		}
	}
	h.publish(2, put("/other", 2))
	sr.nextType(ws[2], Put, 2)
	for _, w := range ws[:2] {
		sr.expectNone(w)
	}
	if len(sr.taken) != 5 {
		t.Fatalf("took %d events, want 5", len(sr.taken))
	}
}

// Previous values, as asked and as they were, whether the event comes from
// a published batch (live) or from history (catching up).
func TestPrevValueSemantics(t *testing.T) {
	cases := []struct {
		name   string
		prevKV bool
		ev     Event // applied after /k=old at revision 1, unless fresh
		fresh  bool  // /k did not exist before ev
		want   []byte
	}{
		{name: "not asked: none, though the batch carries it", prevKV: false, ev: put("/k", 2)},
		{name: "asked, the key existed: previous value", prevKV: true, ev: put("/k", 2), want: []byte("old")},
		{name: "asked, the key was absent: empty", prevKV: true, ev: put("/k", 2), fresh: true, want: []byte{}},
		{name: "asked, delete: previous value", prevKV: true, ev: del("/k", 2), want: []byte("old")},
		{name: "not asked, delete: none", prevKV: false, ev: del("/k", 2)},
	}
	for _, tc := range cases {
		for _, path := range []string{"live", "history"} {
			t.Run(tc.name+"/"+path, func(t *testing.T) {
				h := newHarness(t, Config{}, true)
				h.prevRead = true // the batch carries previous values
				first := put("/k", 1)
				first.Value = []byte("old")
				if tc.fresh {
					first.Key = []byte("/other")
				}
				var w *Watcher
				if path == "live" {
					w = h.register("/k", false, tc.prevKV)
					h.publish(1, first)
					h.publish(2, tc.ev)
					if !tc.fresh {
						if ev := recv(t, w); ev.Revision != 1 {
							t.Fatalf("got %v@%d, want PUT@1", ev.Type, ev.Revision)
						}
					}
				} else {
					h.publish(1, first)
					h.publish(2, tc.ev)
					waitFor(t, func() bool { return h.reg.Delivered() == 2 })
					w = h.registerOpts("/k", Options{PrevKV: tc.prevKV, StartRevision: 2}) // fed from history
				}
				ev := recv(t, w)
				if ev.Revision != 2 || ev.Type != tc.ev.Type {
					t.Fatalf("got %v@%d, want %v@2", ev.Type, ev.Revision, tc.ev.Type)
				}
				if ev.HasPrev != tc.prevKV {
					t.Fatalf("HasPrev = %v, want %v", ev.HasPrev, tc.prevKV)
				}
				if !tc.prevKV {
					if ev.PrevValue != nil {
						t.Fatalf("PrevValue = %q, want nil", ev.PrevValue)
					}
					return
				}
				if !bytes.Equal(ev.PrevValue, tc.want) {
					t.Fatalf("PrevValue = %q, want %q", ev.PrevValue, tc.want)
				}
			})
		}
	}
}

// Start revisions: in the past (history feeds it, then live, no gap, no
// duplicate); at the oldest retained one; below it (refused with a
// *CompactedError, leaving no trace); just after the delivered one (live at
// once); in the future (waits, nothing before it).
func TestStartRevisions(t *testing.T) {
	h := newHarness(t, Config{}, false)
	for i := uint64(1); i <= 10; i++ {
		h.deliverNow(i, false, put("/k", i))
	}
	h.hist.compact(4)

	past := h.registerOpts("/k", Options{StartRevision: 6})
	oldest := h.registerOpts("/k", Options{StartRevision: 4, PrevKV: true})
	now := h.registerOpts("/k", Options{StartRevision: 11})
	zero := h.registerOpts("/k", Options{})
	future := h.registerOpts("/k", Options{StartRevision: 14})
	for _, c := range []struct {
		w     *Watcher
		start uint64
		st    state
	}{{past, 5, catchingUp}, {oldest, 3, catchingUp}, {now, 10, live}, {zero, 10, live}, {future, 13, live}} {
		if c.w.Start() != c.start {
			t.Fatalf("watcher %d: Start() = %d, want %d", c.w.ID(), c.w.Start(), c.start)
		}
		wantState(t, c.w, c.st)
	}
	if live, behind := h.reg.Counts(); live != 3 || behind != 2 {
		t.Fatalf("Counts = %d, %d, want 3, 2", live, behind)
	}

	before := h.reg.reserved.Load()
	_, err := h.reg.NewStream().Register([]byte("/k"), Options{StartRevision: 3, PrevKV: true})
	var ce *CompactedError
	if !errors.As(err, &ce) || ce.Requested != 3 || ce.Oldest != 4 || !errors.Is(err, ErrCompacted) {
		t.Fatalf("start below oldest: err = %v, want CompactedError{3, 4}", err)
	}
	if !strings.Contains(err.Error(), "revision 3 has been compacted; the oldest retained revision is 4") {
		t.Fatalf("error %q does not say what was asked and what is left", err)
	}
	if h.reg.reserved.Load() != before || h.reg.Len() != 5 {
		t.Fatalf("a refused start left reserved=%d (was %d) Len=%d", h.reg.reserved.Load(), before, h.reg.Len())
	}

	h.run()
	h.publish(11, put("/k", 11))
	h.publish(12, put("/k", 12))
	h.publish(13, put("/other", 13))
	h.publish(14, put("/k", 14))
	for _, c := range []struct {
		w    *Watcher
		from uint64
	}{{past, 6}, {oldest, 4}, {now, 11}, {zero, 11}, {future, 14}} {
		for rev := c.from; rev <= 14; rev++ {
			if rev == 13 {
				continue
			}
			ev := recv(t, c.w)
			if ev.Type != Put || ev.Revision != rev {
				t.Fatalf("watcher starting at %d: got %v@%d, want PUT@%d", c.from, ev.Type, ev.Revision, rev)
			}
			prev := rev - 1
			if rev == 14 {
				prev = 12 // 13 is another key
			}
			if c.w == oldest && (!ev.HasPrev || string(ev.PrevValue) != fmt.Sprintf("v%d", prev)) {
				t.Fatalf("prev-value watcher: %v@%d prev %q, want v%d", ev.Type, ev.Revision, ev.PrevValue, prev)
			}
		}
	}
	waitFor(t, func() bool { live, behind := h.reg.Counts(); return live == 5 && behind == 0 })
}

// A future start waits: until its revision comes, the watcher gets no event,
// and PROGRESS says its start.
func TestFutureStartWaits(t *testing.T) {
	h := newHarness(t, Config{}, true)
	s, sr := h.stream()
	h.publish(2, put("/k", 1), put("/k", 2))
	waitFor(t, func() bool { return h.reg.Delivered() == 2 })
	w := h.registerOn(s, "/k", Options{StartRevision: 5})
	w.RequestProgress()
	sr.nextType(w, Progress, 4)
	h.publish(3, put("/k", 3))
	h.publish(5, put("/k", 4), put("/k", 5)) // one batch across the start
	sr.nextType(w, Put, 5)
	w.RequestProgress()
	sr.nextType(w, Progress, 5)
	sr.expectNone(w)
}

// CancelRequireLeader cancels the require-leader watchers only, live or
// catching up, with CauseNoLeader; the others go on.
func TestCancelRequireLeader(t *testing.T) {
	h := newHarness(t, Config{BufferSize: 2}, false)
	s, sr := h.stream()
	rlLive := h.registerOn(s, "/k", Options{RequireLeader: true})
	rlPrefix := h.registerOn(s, "/p/", Options{Prefix: true, RequireLeader: true, PrevKV: true})
	plain := h.registerOn(s, "/k", Options{})
	o, or := h.stream()
	rlBehind := h.registerOn(o, "/b", Options{RequireLeader: true})
	plainBehind := h.registerOn(o, "/b", Options{})
	for i := uint64(1); i <= 3; i++ {
		h.deliverNow(i, true, put("/b", i))
	}
	wantState(t, rlBehind, catchingUp)
	wantState(t, plainBehind, catchingUp)

	if n := h.reg.CancelRequireLeader("this node lost the leader"); n != 3 {
		t.Fatalf("CancelRequireLeader = %d, want 3", n)
	}
	if h.reg.Len() != 2 || s.Len() != 1 || o.Len() != 1 {
		t.Fatalf("Len=%d s.Len=%d o.Len=%d, want 2, 1, 1", h.reg.Len(), s.Len(), o.Len())
	}
	if n := h.reg.CancelRequireLeader("again"); n != 0 {
		t.Fatalf("second CancelRequireLeader = %d, want 0", n)
	}
	for _, w := range []*Watcher{rlLive, rlPrefix} {
		if ev := sr.nextCanceled(w, CauseNoLeader, "this node lost the leader"); ev.Revision != 3 {
			t.Fatalf("live watcher: CANCELED@%d, want 3 (delivered)", ev.Revision)
		}
	}
	or.nextType(rlBehind, Put, 1)
	or.nextType(rlBehind, Put, 2)
	if ev := or.nextCanceled(rlBehind, CauseNoLeader); ev.Revision != 2 {
		t.Fatalf("catching-up watcher: CANCELED@%d, want 2 (its last event)", ev.Revision)
	}

	h.run()
	h.publish(4, put("/k", 4), put("/b", 4))
	sr.nextType(plain, Put, 4)
	for _, rev := range []uint64{1, 2, 3, 4} {
		or.nextType(plainBehind, Put, rev)
	}
	sr.expectNone(rlLive)
	or.expectNone(rlBehind)
}

// Stop cancels every watcher with CauseShutdown and its reason, at the
// revision it was sent up to; streams stay open to take the CANCELED, and
// every later registration fails with ErrClosed.
func TestStopCancelsEveryone(t *testing.T) {
	h := newHarness(t, Config{ProgressInterval: time.Hour, BufferSize: 1}, true)
	a, ra := h.stream()
	b, rb := h.stream()
	type sw struct {
		r   *streamReader
		w   *Watcher
		rev uint64
	}
	h.publish(1, put("unwatched", 1))
	waitFor(t, func() bool { return h.reg.Delivered() == 1 })
	ws := []sw{
		{ra, h.registerOn(a, "/k", Options{}), 3},
		{ra, h.registerOn(a, "/a/", Options{Prefix: true, PrevKV: true}), 3},
		{rb, h.registerOn(b, "/", Options{Prefix: true}), 2}, // catching up after rev 2
		{rb, h.registerOn(b, "/x", Options{StartRevision: 9}), 8},
	}
	h.publish(2, put("/z", 2))
	h.publish(3, put("/z", 3))
	waitFor(t, func() bool { return h.reg.Delivered() == 3 })
	wantState(t, ws[2].w, catchingUp) // its queue is never taken before Stop
	h.d.Stop("shutdown")
	select {
	case <-h.ran:
	case <-time.After(waitTimeout):
		t.Fatal("Run did not return after Stop")
	}
	rb.nextType(ws[2].w, Put, 2)
	for _, x := range ws {
		ev := x.r.nextCanceled(x.w, CauseShutdown)
		if ev.Reason != "shutdown" || ev.Revision != x.rev || ev.WatchID != x.w.ID() {
			t.Fatalf("CANCELED %q@%d for %d, want %q@%d for %d", ev.Reason, ev.Revision, ev.WatchID, "shutdown", x.rev, x.w.ID())
		}
	}
	if h.reg.Len() != 0 || h.reg.WantPrev() || a.Len() != 0 || b.Len() != 0 || h.reg.reserved.Load() != 0 {
		t.Fatalf("after Stop: Len=%d WantPrev=%v a.Len=%d b.Len=%d reserved=%d", h.reg.Len(), h.reg.WantPrev(), a.Len(), b.Len(), h.reg.reserved.Load())
	}
	if live, behind := h.reg.Counts(); live != 0 || behind != 0 {
		t.Fatalf("Counts = %d, %d after Stop", live, behind)
	}
	if _, err := a.Register([]byte("/k"), Options{}); !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "shutting down") {
		t.Fatalf("Register after Stop: %v, want ErrClosed", err)
	}
	if _, err := h.reg.NewStream().Register([]byte("/k"), Options{StartRevision: 1}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Register on a new stream after Stop: %v, want ErrClosed", err)
	}
	h.d.Stop("again") // idempotent
	h.publish(4, put("/k", 4))
	ws[0].w.Close() // harmless
	a.Close()
	if n := ra.takeNow() + rb.takeNow(); n != 0 {
		t.Fatalf("took %d events after Stop", n)
	}
}

func TestStopWithoutRun(t *testing.T) {
	h := newHarness(t, Config{}, false)
	s, sr := h.stream()
	w := h.registerOn(s, "/k", Options{})
	h.d.Stop("shutdown")
	if ev := sr.nextCanceled(w, CauseShutdown); ev.Reason != "shutdown" || ev.Revision != 0 {
		t.Fatalf("CANCELED %q@%d, want shutdown@0", ev.Reason, ev.Revision)
	}
	h.d.Run() // returns at once after Stop
}

// StopFor cancels with the cause it is given (a node removed from the
// cluster), live and catching-up watchers alike, and only its first call
// (or Stop's) counts.
func TestStopForCancelsWithItsCause(t *testing.T) {
	h := newHarness(t, Config{ProgressInterval: time.Hour}, true)
	s, sr := h.stream()
	live := h.registerOn(s, "/k", Options{})
	past := h.registerOn(s, "/x", Options{StartRevision: 9})
	h.d.StopFor(CauseRemoved, "removed from the cluster")
	h.d.Stop("shutdown")
	for _, w := range []*Watcher{live, past} {
		if ev := sr.nextCanceled(w, CauseRemoved); ev.Reason != "removed from the cluster" {
			t.Fatalf("CANCELED %q, want removed from the cluster", ev.Reason)
		}
	}
	if _, err := s.Register([]byte("/k"), Options{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Register after StopFor: %v, want ErrClosed", err)
	}
}

// within fails the test unless fn returns within waitTimeout.
func within(t *testing.T, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(waitTimeout):
		t.Fatalf("%s did not return within %v", what, waitTimeout)
	}
}

// slowOldest is a History whose OldestRevision blocks until released, like
// a slow disk read.
type slowOldest struct {
	*memHistory
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (h *slowOldest) OldestRevision() uint64 {
	h.entered <- struct{}{}
	<-h.release
	return h.memHistory.OldestRevision()
}

func (h *slowOldest) unblock() { h.once.Do(func() { close(h.release) }) }

// Registry.mu is not held while History is called: a registration waiting
// on a slow OldestRevision holds up neither delivery nor other
// registrations.
func TestSlowOldestRevisionBlocksNothing(t *testing.T) {
	hist := &slowOldest{memHistory: newMemHistory(), entered: make(chan struct{}), release: make(chan struct{})}
	cfg := Config{Logger: slog.New(slog.DiscardHandler)}
	r := NewRegistry(cfg, hist, 0)
	d := NewDispatcher(r, hist, cfg)
	go d.Run()
	t.Cleanup(func() { d.Stop("test over") })
	t.Cleanup(hist.unblock) // first: Stop waits for Run
	s := r.NewStream()
	w, err := s.Register([]byte("/k"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := r.NewStream().Register([]byte("/k"), Options{StartRevision: 1})
		errc <- err
	}()
	<-hist.entered // the registration is inside OldestRevision
	d.Publish(Batch{Index: 1, Events: hist.add(put("/k", 1))})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	var buf []Event
	if ev, err := s.Next(ctx, &buf); err != nil || ev.Revision != 1 {
		t.Fatalf("delivery while OldestRevision is slow: %v@%d, %v", ev.Type, ev.Revision, err)
	}
	within(t, "a registration without a start revision", func() {
		if _, err := r.NewStream().Register([]byte("/other"), Options{}); err != nil {
			t.Error(err)
		}
	})
	hist.unblock()
	if err := <-errc; err != nil {
		t.Fatalf("the slow registration: %v", err)
	}
	w.Close()
}

// blockingHandler is a slog.Handler whose Handle blocks, while armed, until
// released, like a logger writing to a stuck pipe.
type blockingHandler struct {
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (h *blockingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *blockingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *blockingHandler) WithGroup(string) slog.Handler            { return h }
func (h *blockingHandler) Handle(context.Context, slog.Record) error {
	if h.armed.Load() {
		select {
		case h.entered <- struct{}{}:
		default:
		}
		<-h.release
	}
	return nil
}

// Registry.mu is not held while logging: with the log handler stuck while
// CancelRequireLeader or the dispatcher logs (a cancel, a snapshot, an
// overflow), registrations and Close go on, and so does delivery when the
// one stuck is not the dispatcher.
func TestStuckLoggerBlocksNothing(t *testing.T) {
	for _, how := range []string{"CancelRequireLeader", "compaction", "history error", "Reset", "overflow"} {
		t.Run(how, func(t *testing.T) {
			lh := &blockingHandler{entered: make(chan struct{}, 1), release: make(chan struct{})}
			h := newHarness(t, Config{Logger: slog.New(lh), BufferSize: 1, QueueSize: 1}, false)
			s, sr := h.stream()
			o, or := h.stream()
			t.Cleanup(func() { close(lh.release) }) // first
			h.registerOn(s, "/v", Options{RequireLeader: true})
			h.deliverNow(1, false, put("/v", 1))
			h.deliverNow(2, false, put("/v", 2)) // behind at 2
			w := h.registerOn(o, "/k", Options{})
			lh.armed.Store(true)
			switch how {
			case "CancelRequireLeader":
				go h.reg.CancelRequireLeader("lost the leader")
			case "compaction":
				h.hist.compact(3)
				sr.takeNow()
			case "history error":
				h.hist.setFail(errors.New("disk on fire"))
				sr.takeNow()
			case "Reset":
				h.d.Publish(Batch{Index: 3, Reset: true})
			case "overflow":
				h.d.Publish(Batch{Index: 3})
				h.d.Publish(Batch{Index: 4}) // lost
			}
			h.run()
			select {
			case <-lh.entered:
			case <-time.After(waitTimeout):
				t.Fatal("nothing was logged")
			}
			within(t, "Register and Close with the logger stuck", func() {
				x, err := h.reg.NewStream().Register([]byte("/x"), Options{})
				if err != nil {
					t.Error(err)
					return
				}
				x.Close()
				h.reg.Counts()
			})
			if how == "CancelRequireLeader" {
				h.publish(5, put("/k", 5))
				or.nextType(w, Put, 5)
			}
		})
	}
}

// Watchers of one key are removed by index in any order: the key's slice
// keeps exactly the open ones, each knowing its place (a hot key may have
// a million watchers; a scan per removal made a client's departure
// quadratic).
func TestRemoveKeepsKeySlicesIndexed(t *testing.T) {
	r := quietRegistry(Config{})
	s := r.NewStream()
	defer s.Close()
	var ws []*Watcher
	for i := 0; i < 300; i++ {
		key, prefix := "/hot", false
		if i%3 == 0 {
			key, prefix = "/p/", true
		}
		w, err := s.Register([]byte(key), Options{Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	check := func(open map[*Watcher]bool) {
		t.Helper()
		r.mu.Lock()
		defer r.mu.Unlock()
		seen := 0
		for _, m := range []map[string][]*Watcher{r.exact, r.prefix} {
			for key, list := range m {
				for i, w := range list {
					if int(w.kidx) != i || w.key != key || !open[w] {
						t.Fatalf("key %q slot %d holds watcher %d (kidx %d, open %v)", key, i, w.id, w.kidx, open[w])
					}
					seen++
				}
			}
		}
		if seen != len(open) {
			t.Fatalf("%d watchers in the key slices, want %d", seen, len(open))
		}
	}
	open := map[*Watcher]bool{}
	for _, w := range ws {
		open[w] = true
	}
	check(open)
	// Close every 7th first (middle slots), then the rest from the front.
	for i := 0; i < len(ws); i += 7 {
		ws[i].Close()
		delete(open, ws[i])
		check(open)
	}
	for _, w := range ws {
		if open[w] {
			w.Close()
			delete(open, w)
			check(open)
		}
	}
	if len(r.exact) != 0 || len(r.prefix) != 0 {
		t.Fatalf("keys left after every watcher closed: %d exact, %d prefix", len(r.exact), len(r.prefix))
	}
}
