package client

import (
	"context"
	"errors"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/raftwatch/raftwatch/proto"
)

// watchCreateTimeout is how long an attempt waits for a node to answer a
// create before trying the next endpoint: a partitioned node can keep an
// established connection open and never answer. The server answers a
// create at once, even one whose start_revision it has yet to apply.
const watchCreateTimeout = 5 * time.Second

// resumeMaxBackoff caps the pause after each full round of endpoints that
// did not take the watch (it starts at retryBackoff and doubles): a long
// outage costs each waiting watch about one attempt per endpoint a second.
const resumeMaxBackoff = time.Second

// errWatchEnded stops an attempt whose watch ended meanwhile.
var errWatchEnded = errors.New("client: the watch has ended")

// open makes the first create: the endpoints in order, until one answers
// without UNAVAILABLE, pausing after each full round, within ctx (or
// RetryTimeout), as the client's other serializable calls do.
func (w *Watcher) open(ctx context.Context) error {
	ctx, cancel := w.client.retryContext(ctx)
	defer cancel()
	eps := w.client.cfg.Endpoints
	var err error
	var unreachable []*DialError // this round's endpoints that did not connect
	removed := 0                 // this round's endpoints removed from the cluster
	for i := 0; ; i++ {
		if i > 0 && i%len(eps) == 0 {
			if len(unreachable) == len(eps) {
				// No endpoint connects: say so now, as the other calls do,
				// instead of retrying for the whole timeout.
				return &UnreachableError{Tried: unreachable}
			}
			if removed == len(eps) {
				return err // no endpoint is a member any more
			}
			unreachable, removed = unreachable[:0], 0
			if sleep(ctx.Done(), retryBackoff) != nil {
				return err // the last node's answer says more than "deadline exceeded"
			}
		}
		_, err = w.attempt(ctx, eps[i%len(eps)])
		var de *DialError
		if errors.As(err, &de) {
			unreachable = append(unreachable, de)
		}
		if removedRefusal(err) {
			removed++
			continue
		}
		if err == nil || status.Code(err) != codes.Unavailable {
			return err
		}
	}
}

// resume finds the watch a stream again, from endpoint w.from on, for as
// long as the watch lasts. It runs in its own goroutine, one per watch at
// most (the state moved from parked to connecting to start it). When every
// endpoint in turn refuses it as removed from the cluster, it ends the
// watch with that refusal.
func (w *Watcher) resume() {
	eps := w.client.cfg.Endpoints
	w.mu.Lock()
	from := w.from
	w.mu.Unlock()
	removed := 0 // consecutive refusals by removed nodes
	for i := 0; ; i++ {
		if !w.pace(len(eps)) {
			return
		}
		r, err := w.attempt(context.Background(), eps[(from+i)%len(eps)])
		switch {
		case err == nil, errors.Is(err, errWatchEnded):
			return
		case r != nil:
			// Refused. Compaction ends the watch; so does a create the
			// server can never accept. Anything else: the next node.
			if ferr := finalError(r); ferr != nil {
				w.end(ferr, r, false)
				return
			}
		}
		// A node removed from the cluster refuses the create, or ends the
		// stream, with FAILED_PRECONDITION: when every endpoint in turn
		// has, no node will take the watch.
		if !removedRefusal(err) {
			removed = 0
			continue
		}
		if removed++; removed >= len(eps) {
			w.end(err, r, false)
			return
		}
	}
}

// pace counts an attempt and, after each full round of attempts that
// delivered nothing, pauses; it reports false if the watch ended.
func (w *Watcher) pace(endpoints int) bool {
	w.mu.Lock()
	n := w.misses
	w.misses++
	w.mu.Unlock()
	if n == 0 || n%endpoints != 0 {
		return true
	}
	d := retryBackoff
	for round := n / endpoints; round > 1 && d < resumeMaxBackoff; round-- {
		d *= 2
	}
	return sleep(w.done, min(d, resumeMaxBackoff)) == nil
}

// attempt creates the watch on endpoint addr from its position and waits
// for the answer. It returns the CREATED (the watch is then attached), or
// the refusal and its error, or why there was no answer.
func (w *Watcher) attempt(ctx context.Context, addr string) (*pb.WatchResponse, error) {
	cc, err := w.client.connect(ctx, addr) // within DialTimeout, or a *DialError
	if err != nil {
		return nil, err
	}
	m, err := w.client.watchMux(cc, addr)
	if err != nil {
		return nil, err
	}
	reply := make(chan *pb.WatchResponse, 1)
	w.mu.Lock()
	if w.state == ended {
		w.mu.Unlock()
		return nil, errWatchEnded
	}
	create := w.createLocked(requestIDs.Add(1))
	w.state, w.mux, w.reqID, w.reqFrom, w.reply = creating, m, create.RequestId, create.StartRevision, reply
	w.mu.Unlock()
	if err := m.sendCreate(w, create); err != nil {
		w.abandon(m, create.RequestId) // nothing was sent: nothing can answer
		return nil, err
	}
	timeout := time.NewTimer(watchCreateTimeout)
	defer timeout.Stop()
	var giveUp error
	select {
	case r := <-reply:
		return answer(m, r)
	case <-w.done:
		return nil, errWatchEnded
	case <-ctx.Done():
		giveUp = ctx.Err()
	case <-timeout.C:
		giveUp = status.Errorf(codes.Unavailable, "client: %s did not answer a watch create within %v", addr, watchCreateTimeout)
	}
	if w.abandon(m, create.RequestId) {
		return nil, giveUp
	}
	// The answer came in the same instant (or the watch ended): take it,
	// or the watch would be live on a stream it no longer reads.
	select {
	case r := <-reply:
		return answer(m, r)
	default:
		return nil, errWatchEnded
	}
}

// answer reads what a create got back: its CREATED, a refusal and its
// error, or nil when the stream broke.
func answer(m *watchMux, r *pb.WatchResponse) (*pb.WatchResponse, error) {
	switch {
	case r == nil:
		return nil, m.error()
	case r.Type == pb.EventType_CREATED:
		return r, nil
	}
	return r, refusalError(r)
}

// abandon gives up on a create, unless it was answered (or the watch
// ended) meanwhile; it reports whether it did. If the CREATED still
// comes, the watch cancels it as an orphan.
func (w *Watcher) abandon(m *watchMux, requestID uint64) bool {
	w.mu.Lock()
	mine := w.state == creating && w.reqID == requestID
	if mine {
		w.state, w.mux = connecting, nil
	}
	w.mu.Unlock()
	m.forgetCreate(requestID)
	return mine
}

// finalError is the error a server CANCELED (of a live watch, or refusing
// a create) ends the watch with, or nil when the watch should resume
// elsewhere. Only compaction, and a create no node will ever accept, end
// it: "shutdown", "no leader" (UNAVAILABLE), overload and the like are
// about one node.
func finalError(r *pb.WatchResponse) error {
	switch code := codes.Code(r.Code); {
	case r.CompactRevision != 0 || code == codes.OutOfRange:
		return &CompactedError{Oldest: r.CompactRevision}
	case code == codes.InvalidArgument:
		return status.Error(code, r.Reason)
	}
	return nil
}

// removedRefusal reports a watch refused or canceled, or a watch stream
// ended, by a node removed from the cluster: on a watch, only removal
// carries FAILED_PRECONDITION.
func removedRefusal(err error) bool { return status.Code(err) == codes.FailedPrecondition }

// refusalError is what a refused first create returns from Watch.
func refusalError(r *pb.WatchResponse) error {
	if err := finalError(r); err != nil {
		return err
	}
	code := codes.Code(r.Code)
	if code == codes.OK {
		code = codes.Unknown
	}
	return status.Error(code, r.Reason)
}

// sleep waits d, or until done is closed (then it returns an error).
func sleep(done <-chan struct{}, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-done:
		return errWatchEnded
	}
}

// endpointIndex returns addr's index in Config.Endpoints (0 if absent).
func (c *Client) endpointIndex(addr string) int {
	for i, e := range c.cfg.Endpoints {
		if e == addr {
			return i
		}
	}
	return 0
}

// endpointAfter returns the index of the endpoint after addr: where a
// watch that addr failed resumes.
func (c *Client) endpointAfter(addr string) int {
	return (c.endpointIndex(addr) + 1) % len(c.cfg.Endpoints)
}

// watchSet is a Client's live watches and their resume goroutines, so that
// Close ends them all and leaves none running. Its zero value is ready.
type watchSet struct {
	mu     sync.Mutex
	closed bool
	live   map[*Watcher]struct{}
	ctx    context.Context // parent of every watch stream; canceled by close
	cancel context.CancelFunc
	loops  sync.WaitGroup
}

func (s *watchSet) add(w *Watcher) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.live == nil {
		s.live = map[*Watcher]struct{}{}
	}
	s.live[w] = struct{}{}
	return true
}

func (s *watchSet) remove(w *Watcher) {
	s.mu.Lock()
	delete(s.live, w)
	s.mu.Unlock()
}

// spawn runs fn in a goroutine that close waits for; false once closed.
func (s *watchSet) spawn(fn func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.loops.Add(1)
	go func() {
		defer s.loops.Done()
		fn()
	}()
	return true
}

// context returns the parent context of watch streams.
func (s *watchSet) context() context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	return s.ctx
}

func (s *watchSet) initLocked() {
	if s.ctx == nil {
		s.ctx, s.cancel = context.WithCancel(context.Background())
	}
}

// close ends every watch and its streams, and waits for the resume
// goroutines to return, so none opens a connection after the Client closed.
func (s *watchSet) close() {
	s.mu.Lock()
	s.closed = true
	s.initLocked()
	live := s.live
	s.live = nil
	s.mu.Unlock()
	for w := range live {
		w.end(errClientClosed, nil, false)
	}
	s.cancel()
	s.loops.Wait()
}
