package watch

import (
	"testing"
	"time"
)

// progressTaker takes a stream's queue and checks every event with the
// watchCheck of its watcher; a stream PROGRESS is checked as the PROGRESS
// of every watcher registered on the stream.
type progressTaker struct {
	t      *testing.T
	s      *Stream
	checks map[uint64]*watchCheck
	buf    []Event
	// streamProgs and ownProgs count the PROGRESS events of the last take.
	streamProgs, ownProgs int
}

func newProgressTaker(t *testing.T, s *Stream) *progressTaker {
	return &progressTaker{t: t, s: s, checks: map[uint64]*watchCheck{}}
}

// watch starts checking w against history h.
func (p *progressTaker) watch(h *harness, w *Watcher) {
	p.checks[w.ID()] = &watchCheck{w: w, delivered: h.reg.Delivered}
}

// take takes the queue, checks it and returns the PROGRESS events taken
// (stream ones with WatchID 0).
func (p *progressTaker) take(h *harness) []Event {
	p.t.Helper()
	for _, c := range p.checks {
		c.want = expectedFor(h.hist.allEvents(), c.w.key, c.w.prefix, c.w.Start())
	}
	p.buf = p.s.Take(p.buf)
	p.streamProgs, p.ownProgs = 0, 0
	var progs []Event
	for _, ev := range p.buf {
		if ev.Type == Progress {
			progs = append(progs, ev)
		}
		if ev.WatchID == 0 {
			if ev.Type != Progress {
				p.t.Fatalf("stream: %v@%d without a WatchID", ev.Type, ev.Revision)
			}
			p.streamProgs++
			for id, c := range p.checks {
				one := ev
				one.WatchID = id
				if err := c.see(one); err != nil {
					p.t.Fatalf("stream PROGRESS %d: %v", ev.Revision, err)
				}
			}
			continue
		}
		if ev.Type == Progress {
			p.ownProgs++
		}
		c, ok := p.checks[ev.WatchID]
		if !ok {
			p.t.Fatalf("event %v@%d for unknown watcher %d", ev.Type, ev.Revision, ev.WatchID)
		}
		if err := c.see(ev); err != nil {
			p.t.Fatal(err)
		}
	}
	return progs
}

// A stream whose watchers all asked for stream progress and are live gets
// one PROGRESS per heartbeat, at the delivered revision, whatever its
// number of watchers.
func TestStreamProgressOnePerHeartbeat(t *testing.T) {
	h := newHarness(t, Config{}, false)
	s, _ := h.stream()
	p := newProgressTaker(t, s)
	sp := Options{StreamProgress: true}
	for _, w := range []*Watcher{
		h.registerOn(s, "/k", sp),
		h.registerOn(s, "/a/", Options{Prefix: true, PrevKV: true, StreamProgress: true}),
		h.registerOn(s, "/x", sp),
	} {
		p.watch(h, w)
	}
	h.deliverNow(1, true, put("/k", 1)) // read with previous values: the PrevKV watcher stays live
	h.deliverNow(2, true, put("/a/b", 2))
	h.deliverNow(3, true, put("/other", 3))
	h.d.heartbeat()
	progs := p.take(h)
	if len(progs) != 1 || progs[0].WatchID != 0 || progs[0].Revision != 3 {
		t.Fatalf("one heartbeat on 3 opted-in watchers queued %+v; want one PROGRESS, watch 0, revision 3", progs)
	}
	h.d.heartbeat()
	h.d.heartbeat()
	if progs := p.take(h); len(progs) != 2 || p.streamProgs != 2 {
		t.Fatalf("two heartbeats queued %+v; want two stream PROGRESS", progs)
	}
	// An empty stream gets nothing.
	empty, _ := h.stream()
	w := h.registerOn(empty, "/k", sp)
	w.Close()
	h.d.heartbeat()
	if evs := empty.Take(nil); len(evs) != 0 {
		t.Fatalf("a stream without watchers got %+v", evs)
	}
}

// The dispatcher's heartbeat timer queues stream PROGRESS too.
func TestStreamProgressFromTimer(t *testing.T) {
	h := newHarness(t, Config{ProgressInterval: 5 * time.Millisecond}, true)
	s, _ := h.stream()
	h.publish(4)
	waitFor(t, func() bool { return h.reg.Delivered() == 4 })
	h.registerOn(s, "/k", Options{StreamProgress: true})
	h.registerOn(s, "/j", Options{StreamProgress: true})
	var buf []Event
	for n := 0; n < 3; {
		select {
		case <-s.Ready():
		case <-time.After(waitTimeout):
			t.Fatalf("no heartbeat within %v", waitTimeout)
		}
		buf = s.Take(buf)
		for _, ev := range buf {
			if ev.Type != Progress || ev.WatchID != 0 || ev.Revision != 4 {
				t.Fatalf("got %v@%d for watch %d; want stream PROGRESS 4 only", ev.Type, ev.Revision, ev.WatchID)
			}
			n++
		}
	}
}

// A stream with one watcher that did not ask for stream progress, one
// catching up, or one owed a PROGRESS above the delivered revision (a
// future start) gets a PROGRESS per watcher, each at its own revision, as
// before; once that watcher is gone, live or reached, one for the stream.
func TestStreamProgressFallsBackPerWatcher(t *testing.T) {
	sp := Options{StreamProgress: true}
	cases := []struct {
		name string
		// odd registers the odd one out; gone makes it ordinary again.
		odd  func(h *harness, s *Stream) *Watcher
		gone func(h *harness, w *Watcher)
		// oddRev is the PROGRESS revision the odd one gets.
		oddRev uint64
	}{
		{
			name:   "opted out",
			odd:    func(h *harness, s *Stream) *Watcher { return h.registerOn(s, "/o", Options{}) },
			gone:   func(h *harness, w *Watcher) { w.Close() },
			oddRev: 5,
		},
		{
			name: "catching up",
			odd: func(h *harness, s *Stream) *Watcher {
				return h.registerOn(s, "/o", Options{StartRevision: 2, StreamProgress: true})
			},
			gone:   func(h *harness, w *Watcher) { h.d.catchUpStep(); wantState(h.t, w, live) },
			oddRev: 1,
		},
		{
			name: "future start",
			odd: func(h *harness, s *Stream) *Watcher {
				return h.registerOn(s, "/o", Options{StartRevision: 8, StreamProgress: true})
			},
			gone:   func(h *harness, w *Watcher) { h.deliverNow(6, false); h.deliverNow(7, false) },
			oddRev: 7,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{}, false)
			for rev := uint64(1); rev <= 5; rev++ {
				h.deliverNow(rev, false, put("/o", rev))
			}
			s, _ := h.stream()
			p := newProgressTaker(t, s)
			a := h.registerOn(s, "/a", sp)
			b := h.registerOn(s, "/b", sp)
			odd := tc.odd(h, s)
			for _, w := range []*Watcher{a, b, odd} {
				p.watch(h, w)
			}
			h.d.heartbeat()
			progs := p.take(h)
			if p.streamProgs != 0 || p.ownProgs != 3 {
				t.Fatalf("heartbeat queued %+v; want one PROGRESS per watcher", progs)
			}
			for _, ev := range progs {
				want := uint64(5)
				if ev.WatchID == odd.ID() {
					want = tc.oddRev
				}
				if ev.Revision != want {
					t.Fatalf("watcher %d got PROGRESS %d, want %d", ev.WatchID, ev.Revision, want)
				}
			}
			tc.gone(h, odd)
			p.take(h)
			h.d.heartbeat()
			if progs := p.take(h); p.streamProgs != 1 || p.ownProgs != 0 {
				t.Fatalf("heartbeat after the odd one was gone queued %+v; want one stream PROGRESS", progs)
			}
		})
	}
}

// Every watcher of a stream sees PROGRESS that never goes down and never
// runs ahead of its events while one of them falls behind (full buffer,
// lost batches) and comes back, the heartbeat switching between stream
// and per-watcher PROGRESS.
func TestStreamProgressInvariantAcrossCatchUp(t *testing.T) {
	h := newHarness(t, Config{BufferSize: 3}, false)
	s, _ := h.stream()
	p := newProgressTaker(t, s)
	sp := Options{StreamProgress: true}
	k := h.registerOn(s, "/k", sp)
	o := h.registerOn(s, "/o", sp)
	p.watch(h, k)
	p.watch(h, o)
	beat := func(wantStream bool) {
		t.Helper()
		h.d.heartbeat()
		p.take(h)
		if got := p.streamProgs == 1; got != wantStream {
			t.Fatalf("heartbeat: %d stream and %d own PROGRESS; want stream PROGRESS: %v", p.streamProgs, p.ownProgs, wantStream)
		}
	}
	for rev := uint64(1); rev <= 3; rev++ {
		h.deliverNow(rev, false, put("/o", rev))
	}
	beat(true)
	h.deliverNow(4, false, put("/k", 4))
	h.deliverNow(5, false, put("/k", 5))
	h.deliverNow(6, false, put("/k", 6))
	h.deliverNow(7, false, put("/k", 7)) // 4, 5, 6 fill k's buffer: behind at 7
	wantState(t, k, catchingUp)
	beat(false) // k: PROGRESS 6 (not yet taken: 3 queued, no room); o: 7
	h.d.heartbeat()
	p.take(h) // k's 4..6 and o's PROGRESS
	h.d.heartbeat()
	p.take(h) // k: PROGRESS 6, o: PROGRESS 7
	if p.ownProgs != 2 {
		t.Fatalf("catching up: %d own PROGRESS, want 2", p.ownProgs)
	}
	h.d.catchUpStep()
	wantState(t, k, live)
	beat(true) // 7 for both, after k's 7
	h.deliverNow(8, false, put("/k", 8))
	h.d.lost.Store(10) // batches 9 and 10 could not be queued
	h.hist.add(put("/o", 9), put("/k", 10))
	h.d.checkLost()
	wantState(t, k, catchingUp)
	wantState(t, o, catchingUp)
	beat(false)
	h.d.catchUpStep()
	wantState(t, k, live)
	wantState(t, o, live)
	beat(true)
	for id, c := range p.checks {
		if !c.done() || c.lastProg != 10 {
			t.Fatalf("watcher %d saw %d of %d events, last PROGRESS %d; want all and 10", id, c.i, len(c.want), c.lastProg)
		}
	}
}

// A stream PROGRESS still queued when a watcher registers is dropped: the
// consumer would take it as covering the new watcher, which may start in
// the past.
func TestRegisterDropsQueuedStreamProgress(t *testing.T) {
	h := newHarness(t, Config{}, false)
	for rev := uint64(1); rev <= 5; rev++ {
		h.deliverNow(rev, false, put("/k", rev))
	}
	s, _ := h.stream()
	a := h.registerOn(s, "/a", Options{StreamProgress: true})
	h.d.heartbeat()
	h.d.heartbeat()
	before := s.Bytes()
	if before == 0 {
		t.Fatal("heartbeats queued nothing")
	}
	past := h.registerOn(s, "/k", Options{StartRevision: 2, StreamProgress: true})
	if n := s.Bytes(); n != 0 {
		t.Fatalf("stream holds %d bytes after Register, want 0: the stream PROGRESS was not dropped", n)
	}
	h.d.catchUpStep()
	evs := s.TakeBytes(nil, 1<<20)
	for _, ev := range evs {
		if ev.WatchID != past.ID() || ev.Type != Put {
			t.Fatalf("took %v@%d for watch %d; want only the PUTs of watcher %d", ev.Type, ev.Revision, ev.WatchID, past.ID())
		}
	}
	if len(evs) != 4 {
		t.Fatalf("took %d events, want 4 (revisions 2..5)", len(evs))
	}
	// The stream PROGRESS taken with TakeBytes counts for no watcher.
	h.d.heartbeat()
	if evs := s.TakeBytes(nil, 1<<20); len(evs) != 1 || evs[0].WatchID != 0 {
		t.Fatalf("took %+v; want one stream PROGRESS", evs)
	}
	if st, _ := stateOf(a); st != live {
		t.Fatalf("watcher a is %v", st)
	}
}
