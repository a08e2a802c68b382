package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/raftwatch/raftwatch/proto"
)

// Watcher is one watch. Its consumer (Recv) sees one unbroken sequence of
// events: every matching event after the start, in revision order, each
// exactly once, until the watch is closed, its context ends, or the server
// can no longer supply what it needs (compaction).
//
// Watches opened by one Client on one endpoint share a single gRPC stream
// (a watchMux, as etcd's client does), so thousands of watches cost the
// server one stream, not thousands. When a watch's stream breaks (node
// killed, shut down, removed, partitioned, leaderless under
// WithRequireLeader), the watch resumes by itself on the next endpoint, at
// its position (see position): a resume never re-issues a write. A node
// removed from the cluster is never come back to; when every endpoint has
// been removed, the watch ends with its FAILED_PRECONDITION.
//
// Back-pressure. Each watch queues at most WithWatchBufferSize responses
// (default 1024). The shared stream is always read: a watch
// whose queue is full is parked instead, alone. It drops the response that
// did not fit, ends its server watch, and once its consumer has drained
// the queue to half, resumes from its position like after a failure. So a
// consumer that stops reading costs a bounded queue, never stalls the other
// watches on its stream, and loses nothing; the price is that the server
// re-reads from its history what the parked watch dropped, and a consumer
// slower than history retention ends with a *CompactedError. PROGRESS
// responses never park a watch: an unread one is replaced by the next, and
// one that finds the queue full of events is dropped.
type Watcher struct {
	client *Client
	ctx    context.Context // the watch ends when it does
	spec   *pb.WatchCreate // key, prefix, prev_kv, require_leader: each create is a copy
	bound  int             // responses queued for the consumer at most (a final CANCELED aside)
	done   chan struct{}   // closed when the watch ends
	notify chan struct{}   // capacity 1: poked when queue or err changes

	mu      sync.Mutex
	state   watchState
	mux     *watchMux              // creating: where the create went; attached: the stream it is on
	id      uint64                 // attached: the server's watch id
	reqID   uint64                 // creating: the create's request_id
	reqFrom uint64                 // creating: the create's start_revision
	reply   chan *pb.WatchResponse // creating: gets the CREATED, the refusal, or nil if the stream broke
	from    int                    // parked: the endpoint index the resume starts at
	pos     position
	created *pb.WatchResponse // the first CREATED
	resumes int
	// misses counts the attempts since the watch last delivered anything,
	// to pace the resume: nodes that accept the create and cancel it at
	// once ("no leader") are tried no faster than a failing connection.
	misses         int
	progressWanted bool // RequestProgress is owed a PROGRESS
	// progSeq numbers the last stream PROGRESS of mux this watch took (or
	// the newest when it attached, which is not its own).
	progSeq uint64
	queue   responseQueue
	err     error // set once the watch has ended
	stop    func() bool
}

// watchState is where a Watcher stands with the server.
type watchState uint8

const (
	// connecting: on no stream; one goroutine (Watch or the resume loop)
	// is finding it one.
	connecting watchState = iota
	// creating: a create is in flight on mux; that goroutine waits on reply.
	creating
	// attached: live on mux as server watch id.
	attached
	// parked: on no stream and no goroutine works for it; it resumes once
	// the consumer has drained its queue to resumeWatermark.
	parked
	// ended: closed, canceled for good, or its client closed.
	ended
)

// defaultWatchBuffer is how many responses a watch queues for a consumer
// that falls behind: enough to ride out a burst (the server sends up to
// 256 KiB per message) without parking the watch.
const defaultWatchBuffer = 1024

// resumeWatermark is the queue length, as a fraction of the bound, at or
// below which a parked watch resumes: early enough that the consumer need
// not wait for the new create, late enough that a consumer slower than the
// stream does not re-create the watch for every few events.
func (w *Watcher) resumeWatermark() int { return w.bound / 2 }

// requestIDs numbers creates across streams: a watch moves between them.
var requestIDs atomic.Uint64

// errClientClosed ends the watches of a closed Client.
var errClientClosed = status.Error(codes.Canceled, "client closed")

// ErrCompacted is wrapped by every *CompactedError.
var ErrCompacted = errors.New("client: the history a watch needs has been compacted")

// CompactedError ends a watch that needs events the server no longer
// retains: it fell further behind (or asked to start further back) than
// the server's history reaches. Oldest is the oldest revision that can
// still be asked for (0 if the server did not say).
type CompactedError struct {
	Oldest uint64
}

func (e *CompactedError) Error() string {
	if e.Oldest == 0 {
		return "client: watch history has been compacted past the watch's position; read the keys again and watch from a fresh revision"
	}
	return fmt.Sprintf("client: watch history before revision %d has been compacted; read the keys again and watch from a fresh revision (or WithStartRevision(%d) or later)", e.Oldest, e.Oldest)
}

// Unwrap makes errors.Is(err, ErrCompacted) hold.
func (e *CompactedError) Unwrap() error { return ErrCompacted }

// Watch opens a watch on key (or, WithPrefix, on a prefix) at the first
// endpoint that answers, and returns once the server has confirmed it;
// Created() is the revision it starts after. It starts from now unless
// WithStartRevision. The watch ends when ctx ends, on Close, or on
// compaction; node failures only move it (see Watcher).
func (c *Client) Watch(ctx context.Context, key []byte, opts ...OpOption) (*Watcher, error) {
	o := buildOps(opts)
	w := &Watcher{client: c, ctx: ctx, bound: o.watchBuffer,
		spec:   &pb.WatchCreate{Key: key, Prefix: o.prefix, PrevKv: o.prevKV, RequireLeader: o.requireLeader},
		done:   make(chan struct{}),
		notify: make(chan struct{}, 1)}
	if w.bound < 1 {
		w.bound = defaultWatchBuffer
	}
	if o.startRevision != 0 {
		w.pos = startingAfter(o.startRevision - 1)
	}
	if !c.watches.add(w) {
		return nil, errClientClosed
	}
	if err := w.open(ctx); err != nil {
		w.end(err, nil, true)
		if errors.Is(err, errWatchEnded) { // the client closed meanwhile
			err = errClientClosed
		}
		return nil, err
	}
	w.mu.Lock()
	if w.state != ended { // Close may run at once, from AfterFunc's goroutine
		w.stop = context.AfterFunc(ctx, w.Close)
	}
	w.mu.Unlock()
	return w, nil
}

// createLocked is the create for the next attempt: from the user's start
// the first time, from the position after that. It always takes stream
// PROGRESS: a server then sends one heartbeat for the whole stream, not
// one per watch.
func (w *Watcher) createLocked(requestID uint64) *pb.WatchCreate {
	c := &pb.WatchCreate{Key: w.spec.Key, Prefix: w.spec.Prefix, PrevKv: w.spec.PrevKv,
		RequireLeader: w.spec.RequireLeader, RequestId: requestID, StreamProgress: true}
	if w.pos.set {
		c.StartRevision = w.pos.resumeAt()
	}
	return c
}

// push takes one message for this watch from m's reading goroutine.
func (w *Watcher) push(m *watchMux, r *pb.WatchResponse) {
	var after func()
	w.mu.Lock()
	switch {
	case r.Type == pb.EventType_CREATED:
		after = w.createdLocked(m, r)
	case r.Type == pb.EventType_CANCELED && r.WatchId == 0:
		w.refusedLocked(m, r)
	case w.state != attached || w.mux != m || w.id != r.WatchId:
		// From a server watch it has left (parked, or ended).
	case r.Type == pb.EventType_CANCELED:
		after = w.canceledLocked(m, r)
	default:
		after = w.eventLocked(m, r)
	}
	w.mu.Unlock()
	if after != nil {
		after()
	}
}

func (w *Watcher) createdLocked(m *watchMux, r *pb.WatchResponse) func() {
	if w.state != creating || w.mux != m || w.reqID != r.RequestId {
		// Its creator gave up, or the watch ended: end the orphan.
		return func() { m.cancelWatch(r.WatchId, false) }
	}
	if w.reqFrom > 0 && r.Revision != w.reqFrom-1 {
		// The node started the watch elsewhere than asked (a version
		// that ignores start_revision starts from now): events between
		// would be skipped silently. Refuse it; the next node is tried.
		w.state, w.mux = connecting, nil
		w.reply <- &pb.WatchResponse{Type: pb.EventType_CANCELED, Code: int32(codes.Unavailable),
			Reason: fmt.Sprintf("%s started the watch after revision %d, not at the requested %d", m.addr, r.Revision, w.reqFrom)}
		return func() { m.cancelWatch(r.WatchId, false) }
	}
	w.state, w.id = attached, r.WatchId
	w.progSeq = m.progress.Load().seq // stream PROGRESS before its CREATED is not its own
	w.poke()                          // a consumer in Recv waits on this stream's PROGRESS now
	if w.created == nil {
		w.created = r
		if !w.pos.set {
			w.pos = startingAfter(r.Revision)
		}
	} else {
		w.resumes++ // its CREATED is not for the consumer
	}
	w.reply <- r
	if w.progressWanted {
		return func() { m.requestProgress(r.WatchId) }
	}
	return nil
}

func (w *Watcher) refusedLocked(m *watchMux, r *pb.WatchResponse) {
	if w.state == creating && w.mux == m && w.reqID == r.RequestId {
		w.state, w.mux = connecting, nil
		w.reply <- r
	}
}

// canceledLocked handles the server ending the watch: compaction (or a
// create it can never accept) ends it for the consumer too; anything else
// ("shutdown", "no leader", ...) moves it to the next endpoint.
func (w *Watcher) canceledLocked(m *watchMux, r *pb.WatchResponse) func() {
	if err := finalError(r); err != nil {
		return w.endLocked(err, r, false)
	}
	return w.detachLocked(w.client.endpointAfter(m.addr))
}

// eventLocked queues a PUT, DELETE or PROGRESS for the consumer, unless it
// repeats what was delivered; an event that finds the queue full parks the
// watch (a PROGRESS never does: progressLocked).
func (w *Watcher) eventLocked(m *watchMux, r *pb.WatchResponse) func() {
	w.streamProgressLocked() // it came before r
	if r.Type == pb.EventType_PROGRESS {
		w.progressLocked(r)
		return nil
	}
	if !w.pos.fresh(r) {
		return nil
	}
	if w.queue.len() >= w.bound {
		id := w.id
		resume := w.detachLocked(w.client.endpointIndex(m.addr))
		return func() {
			m.cancelWatch(id, false)
			if resume != nil {
				resume()
			}
		}
	}
	w.pos.record(r)
	w.queue.push(r)
	w.misses = 0
	w.poke()
	return nil
}

// progressLocked queues a PROGRESS for the consumer unless it says nothing
// new. One the consumer has not taken yet says less than this one: it is
// replaced, so a watch nobody reads (or reads rarely) holds one PROGRESS,
// not one per heartbeat. A PROGRESS that finds the queue full of events is
// dropped: it carries no event, and the watch stays on its stream.
func (w *Watcher) progressLocked(r *pb.WatchResponse) {
	if !w.pos.fresh(r) {
		return
	}
	switch last := w.queue.last(); {
	case last != nil && last.Type == pb.EventType_PROGRESS:
		w.queue.replaceLast(r)
	case w.queue.len() < w.bound:
		w.queue.push(r)
	default:
		return
	}
	w.pos.record(r)
	w.misses = 0
	w.progressWanted = false
	w.poke()
}

// streamProgressLocked takes the stream PROGRESS that w's stream read since
// w last took one, if w is attached there: as if it had been queued when it
// arrived. Everything that reads or adds to the queue, or moves w off its
// stream, calls it first, so the consumer sees what eager queuing would
// have shown, while the reading goroutine does nothing per watch.
func (w *Watcher) streamProgressLocked() {
	if w.state != attached {
		return
	}
	p := w.mux.progress.Load()
	if p.seq <= w.progSeq {
		return
	}
	w.progSeq = p.seq
	w.progressLocked(p.r)
}

// streamFailed is told by m that its stream ended.
func (w *Watcher) streamFailed(m *watchMux) {
	var after func()
	w.mu.Lock()
	if w.mux == m {
		switch w.state {
		case creating:
			w.state, w.mux = connecting, nil
			w.reply <- nil
		case attached:
			after = w.detachLocked(w.client.endpointAfter(m.addr))
		}
	}
	w.mu.Unlock()
	if after != nil {
		after()
	}
}

// detachLocked takes the watch off its stream; it resumes at endpoint
// index from, now if its queue is low, else once Recv has drained it. It
// returns what starts the resume, if it is now.
func (w *Watcher) detachLocked(from int) func() {
	w.streamProgressLocked()
	w.state, w.mux, w.from = parked, nil, from
	return w.resumeIfDrainedLocked()
}

func (w *Watcher) resumeIfDrainedLocked() func() {
	if w.state != parked || w.queue.len() > w.resumeWatermark() {
		return nil
	}
	w.state = connecting
	return func() {
		if !w.client.watches.spawn(w.resume) {
			w.end(errClientClosed, nil, false)
		}
	}
}

// end ends the watch: Recv returns what is queued, then final (if any),
// then err. tellServer cancels its server watch, if it has one.
func (w *Watcher) end(err error, final *pb.WatchResponse, tellServer bool) {
	w.mu.Lock()
	after := w.endLocked(err, final, tellServer)
	w.mu.Unlock()
	if after != nil {
		after()
	}
}

func (w *Watcher) endLocked(err error, final *pb.WatchResponse, tellServer bool) func() {
	if w.state == ended {
		return nil
	}
	w.streamProgressLocked()
	prev, m, id, reqID, stop := w.state, w.mux, w.id, w.reqID, w.stop
	w.state, w.mux, w.err = ended, nil, err
	if final != nil {
		w.queue.push(final)
	}
	close(w.done)
	w.poke()
	return func() {
		if stop != nil {
			stop()
		}
		w.client.watches.remove(w)
		switch prev {
		case attached:
			if tellServer {
				m.cancelWatch(id, true)
			}
		case creating:
			m.forgetCreate(reqID)
		}
	}
}

func (w *Watcher) poke() {
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

// Created returns the revision the watch starts after (its first CREATED;
// a resumed watch keeps it).
func (w *Watcher) Created() uint64 { return w.created.Revision }

// CreatedEvent returns the server's first CREATED message.
func (w *Watcher) CreatedEvent() *pb.WatchResponse { return w.created }

// ID returns the server's id for this watch on its current (or last)
// stream; it changes when the watch resumes.
func (w *Watcher) ID() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.id
}

// Resumes returns how many times the watch was created again after its
// stream broke, its server canceled it, or it was parked.
func (w *Watcher) Resumes() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.resumes
}

// Recv returns the next event: PUT, DELETE, PROGRESS, or a final CANCELED.
// A PROGRESS may be one the server sent for every watch of the stream
// (watch_id 0): the same message is then returned by each of those
// watches, so treat what Recv returns as read-only.
// After a CANCELED for compaction it returns a *CompactedError; after
// Close, or once the watch's context ended, io.EOF; after the Client's
// Close, a Canceled status. It never returns a transport error: the watch
// resumes instead.
func (w *Watcher) Recv() (*pb.WatchResponse, error) {
	for {
		w.mu.Lock()
		w.streamProgressLocked()
		if w.queue.len() > 0 {
			r := w.queue.pop()
			resume := w.resumeIfDrainedLocked()
			w.mu.Unlock()
			if resume != nil {
				resume()
			}
			return r, nil
		}
		err := w.err
		var newProgress chan struct{} // nil when on no stream: never ready
		if w.state == attached {
			newProgress = w.mux.progress.Load().next
		}
		w.mu.Unlock()
		if err != nil {
			return nil, err
		}
		select {
		case <-w.notify:
		case <-newProgress:
		case <-w.ctx.Done():
			w.Close()
		}
	}
}

// RequestProgress asks the server for a PROGRESS event on this watch. If
// the watch is between streams, it asks once resumed.
func (w *Watcher) RequestProgress() error {
	w.mu.Lock()
	if w.state == ended {
		err := w.err
		w.mu.Unlock()
		return fmt.Errorf("client: %v has ended: %w", w, err)
	}
	w.progressWanted = true
	m, id, live := w.mux, w.id, w.state == attached
	w.mu.Unlock()
	if !live {
		return nil
	}
	if err := m.send(&pb.WatchRequest{Request: &pb.WatchRequest_Progress{Progress: &pb.WatchProgressRequest{WatchId: id}}}); err != nil {
		m.fail(err) // the watch resumes, and asks again
	}
	return nil
}

// Close ends the watch; the server unregisters it at once. Recv returns
// what was queued, then io.EOF.
func (w *Watcher) Close() { w.end(io.EOF, nil, true) }

// queued returns how many responses wait for the consumer.
func (w *Watcher) queued() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.streamProgressLocked()
	return w.queue.len()
}

func (w *Watcher) String() string { return fmt.Sprintf("watch on %q", w.spec.Key) }
