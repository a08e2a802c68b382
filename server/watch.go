package server

import (
	"errors"
	"slices"
	"sync"

	"google.golang.org/grpc/status"

	"github.com/raftwatch/raftwatch/node"
	pb "github.com/raftwatch/raftwatch/proto"
	"github.com/raftwatch/raftwatch/watch"
)

// watchCtlQueue bounds the client requests (create, cancel, progress)
// waiting for the stream's sending goroutine.
const watchCtlQueue = 64

// takeBatch is the initial capacity of the slice events are taken into.
const takeBatch = 64

// maxBatchBytes caps what one WatchBatch message takes from the stream (a
// single larger event still goes alone). Events count more there
// (watch's per-event overhead) than encoded, so a message fits gRPC's
// 32 KiB buffer class: a send stuck on a client that does not read holds
// 32 KiB, not the 1 MiB buffer a larger message takes.
const maxBatchBytes = 32 << 10

// flushMessages is how many messages one flush sends before the stream's
// loop handles the client's requests again.
const flushMessages = 8

// Watch implements Watch.Watch. One stream carries any number of watches.
// A receiving goroutine reads the client's requests and hands them to this
// goroutine, the only one that registers and sends: so a watch's CREATED
// always precedes its events, and its CANCELED ends them. A cancel is
// applied at once by the receiving goroutine (the watcher and its queued
// events are dropped, releasing their memory even while a send is stuck
// on a client that does not read); this goroutine then sends its CANCELED.
//
// The streams of one client (one certificate identity, or else one IP
// address: clients.go) share one watch.Client: one byte budget, one
// watcher quota and one stream quota; a stream past that quota ends at
// once with RESOURCE_EXHAUSTED.
func (s *Server) Watch(stream pb.Watch_WatchServer) error {
	wc, done := s.conns.acquire(stream.Context())
	defer done()
	ws, err := s.node.NewWatchStreamOn(wc)
	if err != nil {
		return toStatus(err)
	}
	defer ws.Close()

	ss := &watchSession{stream: stream, ws: ws, caller: callerOf(stream.Context()), watchers: map[uint64]*watch.Watcher{},
		buf: make([]watch.Event, 0, takeBatch), canceled: make(chan struct{}, 1)}
	ctl := make(chan *pb.WatchRequest, watchCtlQueue)
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			if c, ok := req.Request.(*pb.WatchRequest_Cancel); ok {
				ss.cancel(c.Cancel.WatchId)
				continue
			}
			select {
			case ctl <- req:
			case <-stream.Context().Done():
				return
			}
		}
	}()

	for {
		select {
		case req := <-ctl:
			if err := ss.handle(req); err != nil {
				return err
			}
		case <-ss.canceled:
			if err := ss.sendCanceled(); err != nil {
				return err
			}
		case <-ws.Ready():
			if err := ss.flush(false); err != nil {
				return err
			}
			if ss.serverCanceledLast && ss.count() == 0 {
				return nil // the server canceled the stream's last watch
			}
		case <-s.node.WatchersDone():
			// Shutdown or removal: send the CANCELED of every watch, then
			// end the stream (no new watch could be created on it); a
			// removed node says so, for creates it did not answer.
			if err := ss.flush(true); err != nil {
				return err
			}
			return toStatus(s.node.Serving())
		case <-recvErr:
			return nil // the client closed its side or went away
		case <-stream.Context().Done():
			return nil
		}
	}
}

// watchSession is the state of one Watch stream. Its sending goroutine
// owns everything but watchers and cancels, which the receiving goroutine
// also uses, under mu.
type watchSession struct {
	stream             pb.Watch_WatchServer
	ws                 *node.WatchStream
	buf                []watch.Event
	serverCanceledLast bool
	// caller is nil when the node does not enforce roles; otherwise a
	// create needs read access, and each PUT or DELETE is sent only if
	// the caller may read its key under the roles applied when it is sent.
	caller *caller

	mu       sync.Mutex
	watchers map[uint64]*watch.Watcher
	// cancels holds the watches the client canceled whose CANCELED is
	// not sent yet; canceled signals that it is not empty.
	cancels  []uint64
	canceled chan struct{}
}

// count returns the number of the stream's watches.
func (ss *watchSession) count() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return len(ss.watchers)
}

// flush sends what is queued, one message of at most maxBatchBytes each,
// until the queue is empty or, unless all, flushMessages were sent (the
// rest is signaled Ready again).
func (ss *watchSession) flush(all bool) error {
	defer clear(ss.buf[:cap(ss.buf)]) // drop references to event payloads
	var enc batchEncoder
	enc.start()
	defer enc.release()
	for i := 0; all || i < flushMessages; i++ {
		ss.buf = ss.ws.TakeBytes(ss.buf[:0], maxBatchBytes)
		if len(ss.buf) == 0 {
			return nil
		}
		enc.reset()
		for j := range ss.buf {
			ev := &ss.buf[j]
			if !ss.mayDeliver(ev) {
				continue
			}
			enc.add(ev)
			if ev.Type == watch.Canceled {
				ss.serverEnded(ev.WatchID)
			}
		}
		clear(ss.buf)
		if enc.empty() {
			continue // every event was one the caller may not read
		}
		if err := ss.stream.Send(enc.message()); err != nil {
			return err
		}
	}
	return nil
}

// mayDeliver reports whether ev may be sent: without roles enforced,
// always; otherwise a PUT or DELETE only when the caller may read its key
// now (a revoked role stops delivery at once).
func (ss *watchSession) mayDeliver(ev *watch.Event) bool {
	if ss.caller == nil || ev.Type != watch.Put && ev.Type != watch.Delete {
		return true
	}
	return ss.caller.access().mayRead(ev.Key)
}

// mayWatch returns the PERMISSION_DENIED of a create the caller's roles do
// not allow: a key it may not read, or a prefix under which it may read
// nothing (a prefix partly readable is watched, and delivers what is).
func (ss *watchSession) mayWatch(c *pb.WatchCreate) error {
	if ss.caller == nil {
		return nil
	}
	a := ss.caller.access()
	if !c.Prefix {
		return needRead(a, c.Key)
	}
	if !a.mayReadSome(c.Key) {
		return permissionDenied("identity %q may read no key under %q (roles: %s)", a.identity, c.Key, rolesText(a))
	}
	return nil
}

// serverEnded records that the server's CANCELED of watch id is being sent.
// When the client canceled it after that CANCELED was taken from the
// stream, this one is the watch's last word: the client's is not sent.
func (ss *watchSession) serverEnded(id uint64) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if _, ok := ss.watchers[id]; ok {
		delete(ss.watchers, id)
		ss.serverCanceledLast = len(ss.watchers) == 0
		return
	}
	ss.cancels = slices.DeleteFunc(ss.cancels, func(c uint64) bool { return c == id })
}

// cancel applies a client's cancel at once: the watch is dropped with its
// queued events and its CANCELED is left to the sending goroutine. An
// unknown (or already ended) watch is ignored.
func (ss *watchSession) cancel(id uint64) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	w, ok := ss.watchers[id]
	if !ok {
		return
	}
	delete(ss.watchers, id)
	w.Drop()
	ss.cancels = append(ss.cancels, id)
	select {
	case ss.canceled <- struct{}{}:
	default:
	}
}

// sendCanceled sends the CANCELED of every watch the client canceled.
func (ss *watchSession) sendCanceled() error {
	ss.mu.Lock()
	ids := ss.cancels
	ss.cancels = nil
	ss.mu.Unlock()
	if len(ids) == 0 {
		return nil
	}
	batch := &pb.WatchBatch{}
	for _, id := range ids {
		batch.Responses = append(batch.Responses, &pb.WatchResponse{Type: pb.EventType_CANCELED, WatchId: id, Reason: "canceled by the client"})
	}
	return ss.stream.Send(batch)
}

// send sends one response on its own.
func (ss *watchSession) send(r *pb.WatchResponse) error {
	return ss.stream.Send(&pb.WatchBatch{Responses: []*pb.WatchResponse{r}})
}

func (ss *watchSession) handle(req *pb.WatchRequest) error {
	switch r := req.Request.(type) {
	case *pb.WatchRequest_Create:
		c := r.Create
		err := ss.mayWatch(c)
		var w *watch.Watcher
		if err == nil {
			w, err = ss.ws.Watch(c.Key, node.WatchOptions{Prefix: c.Prefix, PrevKV: c.PrevKv,
				StartRevision: c.StartRevision, RequireLeader: c.RequireLeader, StreamProgress: c.StreamProgress})
		}
		if err != nil {
			st := status.Convert(toStatus(err))
			r := &pb.WatchResponse{Type: pb.EventType_CANCELED, Key: c.Key, RequestId: c.RequestId,
				Reason: st.Message(), Code: int32(st.Code())}
			var ce *watch.CompactedError
			if errors.As(err, &ce) {
				r.CompactRevision = ce.Oldest
			}
			return ss.send(r)
		}
		ss.mu.Lock()
		ss.watchers[w.ID()] = w
		ss.mu.Unlock()
		ss.serverCanceledLast = false
		return ss.send(&pb.WatchResponse{Type: pb.EventType_CREATED, Key: c.Key, Revision: w.Start(),
			WatchId: w.ID(), RequestId: c.RequestId})
	case *pb.WatchRequest_Progress:
		ss.mu.Lock()
		defer ss.mu.Unlock()
		if id := r.Progress.WatchId; id != 0 {
			if w, ok := ss.watchers[id]; ok {
				w.RequestProgress()
			}
			return nil
		}
		for _, w := range ss.watchers {
			w.RequestProgress()
		}
	}
	return nil
}
