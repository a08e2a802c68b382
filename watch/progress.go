package watch

// Stream progress: one heartbeat PROGRESS for a whole stream.
//
// A per-watcher heartbeat costs one event per watcher per interval: a
// million watchers at rest are a million PROGRESS events a second, built,
// queued, encoded, sent and decoded. When every watcher of a stream asked
// for it (Options.StreamProgress), is live and has nothing a per-watcher
// PROGRESS would report differently, the heartbeat queues one PROGRESS
// with WatchID 0 at the delivered revision instead: it says, for each of
// them, exactly what its own PROGRESS would have said.
//
// Why it is exact: a per-watcher PROGRESS reports max(next-1, delivered)
// for a live watcher. A live watcher's next-1 is at most the delivered
// revision, except for a watcher registered with a start revision in the
// future (only the registration sets next past delivered+1; falling behind
// and catching up keep it at most delivered+1, or at that start). So the
// stream keeps the highest such start (ahead): once the delivered revision
// reaches it, every watcher's PROGRESS would be the delivered revision.
// Catching-up watchers are found from the registry's behind set, which is
// small; canceled watchers are removed under the same lock hold that
// cancels them, so a heartbeat never sees one.
//
// A stream PROGRESS covers the watchers registered when it was queued; a
// watcher registered while one still waits in the queue would be covered
// by it too, as its consumer sees it, though it may not be (it may start
// in the past). So Register drops the stream PROGRESS events still queued
// (a heartbeat is only a heartbeat: the next one comes). A consumer that
// sends what it takes before it registers more watchers (the gRPC server
// does) therefore sends each stream PROGRESS before the CREATED of any
// watcher it does not cover.

// streamProgress is what a Stream keeps to tell, without visiting its
// watchers, whether one stream PROGRESS may stand for theirs.
type streamProgress struct {
	// Guarded by reg.mu.
	//
	// optedOut counts the stream's watchers registered without
	// Options.StreamProgress.
	optedOut int
	// ahead is the highest start-1 of a watcher registered on the stream
	// with a start revision in the future: until the delivered revision
	// reaches it, a watcher may be owed a PROGRESS above the delivered one.
	ahead uint64
	// behindMark is the heartbeat that found a catching-up watcher on the
	// stream.
	behindMark uint64

	// Guarded by Stream.mu: a stream PROGRESS may be in the queue (set when
	// one is queued, cleared when Register drops them).
	queued bool
}

// joinedLocked notes that w was just registered on its stream; reg.mu is
// held. It drops the stream PROGRESS events still queued: they must not
// reach the consumer after w's registration (see above).
func (r *Registry) joinedLocked(w *Watcher) {
	s := w.stream
	if r.streams == nil {
		r.streams = make(map[*Stream]struct{})
	}
	r.streams[s] = struct{}{}
	if !w.streamProgress {
		s.progress.optedOut++
	}
	if w.next > r.delivered+1 {
		s.progress.ahead = max(s.progress.ahead, w.next-1)
	}
	s.mu.Lock()
	queued := s.progress.queued
	s.progress.queued = false
	s.mu.Unlock()
	if queued {
		s.discard(nil)
	}
}

// leftLocked notes that w was just taken out of its stream; reg.mu is held.
func (r *Registry) leftLocked(w *Watcher) {
	s := w.stream
	if !w.streamProgress {
		s.progress.optedOut--
	}
	if len(s.ws) == 0 {
		delete(r.streams, s)
		s.progress.ahead = 0
	}
}

// heartbeat queues a PROGRESS for every watcher with room for it: one for
// the whole stream where that says the same, else one per watcher.
func (d *Dispatcher) heartbeat() {
	r := d.reg
	r.mu.Lock()
	r.heartbeats++
	for w := range r.behind {
		w.stream.progress.behindMark = r.heartbeats
	}
	for s := range r.streams {
		if s.progress.optedOut == 0 && s.progress.ahead <= r.delivered && s.progress.behindMark != r.heartbeats {
			s.pushStreamProgress(r.delivered)
			continue
		}
		for _, w := range s.ws {
			d.progress(w)
		}
	}
	r.mu.Unlock()
	if len(d.pending) > 0 {
		d.serveProgress()
	}
}

// pushStreamProgress queues a PROGRESS for every watcher of s (WatchID 0)
// at rev, if the stream's budgets leave room for a data event after it,
// as pushProgress does for one watcher. The caller holds reg.mu.
func (s *Stream) pushStreamProgress(rev uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() || !s.roomLocked(nil, 0) {
		return
	}
	ev := Event{Type: Progress, Revision: rev}
	s.appendLocked(nil, &ev)
	s.progress.queued = true
}
