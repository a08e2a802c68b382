package server

import (
	"errors"

	"google.golang.org/grpc/codes"
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

// maxBatchBytes is a soft cap on the payload of one WatchBatch message (a
// single larger event still goes alone), keeping messages well under the
// client's receive limit.
const maxBatchBytes = 256 << 10

// Watch implements Watch.Watch. One stream carries any number of watches.
// A receiving goroutine reads the client's requests and hands them to this
// goroutine, the only one that registers, cancels and sends: so a watch's
// CREATED always precedes its events, and its CANCELED ends them.
func (s *Server) Watch(stream pb.Watch_WatchServer) error {
	ws := s.node.NewWatchStream()
	defer ws.Close()

	ctl := make(chan *pb.WatchRequest, watchCtlQueue)
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case ctl <- req:
			case <-stream.Context().Done():
				return
			}
		}
	}()

	ss := &watchSession{stream: stream, ws: ws, watchers: map[uint64]*watch.Watcher{}, buf: make([]watch.Event, 0, takeBatch)}
	for {
		select {
		case req := <-ctl:
			if err := ss.handle(req); err != nil {
				return err
			}
		case <-ws.Ready():
			if err := ss.flush(); err != nil {
				return err
			}
			if ss.serverCanceledLast && len(ss.watchers) == 0 {
				return nil // the server canceled the stream's last watch
			}
		case <-s.node.WatchersDone():
			// Shutdown or removal: send the CANCELED of every watch, then
			// end the stream (no new watch could be created on it); a
			// removed node says so, for creates it did not answer.
			if err := ss.flush(); err != nil {
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

// watchSession is the state of one Watch stream, owned by its sending
// goroutine.
type watchSession struct {
	stream             pb.Watch_WatchServer
	ws                 *node.WatchStream
	watchers           map[uint64]*watch.Watcher
	buf                []watch.Event
	serverCanceledLast bool
}

// flush sends every queued event, as few messages as the size cap allows.
func (ss *watchSession) flush() error {
	ss.buf = ss.ws.Take(ss.buf[:0])
	defer clear(ss.buf) // drop references to event payloads
	batch := &pb.WatchBatch{}
	size := 0
	for _, ev := range ss.buf {
		n := len(ev.Key) + len(ev.Value) + len(ev.PrevValue) + len(ev.Reason) + 32
		if len(batch.Responses) > 0 && size+n > maxBatchBytes {
			if err := ss.stream.Send(batch); err != nil {
				return err
			}
			batch, size = &pb.WatchBatch{}, 0
		}
		batch.Responses = append(batch.Responses, toWatchResponse(ev))
		size += n
		if ev.Type == watch.Canceled {
			delete(ss.watchers, ev.WatchID)
			ss.serverCanceledLast = len(ss.watchers) == 0
		}
	}
	if len(batch.Responses) == 0 {
		return nil
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
		w, err := ss.ws.Watch(c.Key, node.WatchOptions{Prefix: c.Prefix, PrevKV: c.PrevKv,
			StartRevision: c.StartRevision, RequireLeader: c.RequireLeader})
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
		ss.watchers[w.ID()] = w
		ss.serverCanceledLast = false
		return ss.send(&pb.WatchResponse{Type: pb.EventType_CREATED, Key: c.Key, Revision: w.Start(),
			WatchId: w.ID(), RequestId: c.RequestId})
	case *pb.WatchRequest_Progress:
		if id := r.Progress.WatchId; id != 0 {
			if w, ok := ss.watchers[id]; ok {
				w.RequestProgress()
			}
			return nil
		}
		for _, w := range ss.watchers {
			w.RequestProgress()
		}
	case *pb.WatchRequest_Cancel:
		id := r.Cancel.WatchId
		w, ok := ss.watchers[id]
		if !ok {
			return nil // already ended
		}
		// Unregister first, then send what it had queued, then CANCELED:
		// nothing of this watch can follow its CANCELED.
		w.Close()
		if err := ss.flush(); err != nil {
			return err
		}
		if _, ok := ss.watchers[id]; !ok {
			return nil // the server canceled it meanwhile; that CANCELED was sent
		}
		delete(ss.watchers, id)
		return ss.send(&pb.WatchResponse{Type: pb.EventType_CANCELED, WatchId: id, Reason: "canceled by the client"})
	}
	return nil
}

// cancelCode is the gRPC code a CANCELED carries: OUT_OF_RANGE when history
// was compacted (re-list; resuming cannot help), UNAVAILABLE when the node
// cannot serve the watch any more (resume on another node),
// FAILED_PRECONDITION when the node was removed from the cluster (resume on
// a member; never come back here).
func cancelCode(c watch.CancelCause) codes.Code {
	switch c {
	case watch.CauseCompacted:
		return codes.OutOfRange
	case watch.CauseRemoved:
		return codes.FailedPrecondition
	case watch.CauseShutdown, watch.CauseNoLeader, watch.CauseInternal:
		return codes.Unavailable
	}
	return codes.OK
}

func toWatchResponse(ev watch.Event) *pb.WatchResponse {
	r := &pb.WatchResponse{Key: ev.Key, Value: ev.Value, Revision: ev.Revision, Version: ev.Version,
		Reason: ev.Reason, WatchId: ev.WatchID}
	switch ev.Type {
	case watch.Put:
		r.Type = pb.EventType_PUT
	case watch.Delete:
		r.Type = pb.EventType_DELETE
	case watch.Progress:
		r.Type = pb.EventType_PROGRESS
	case watch.Canceled:
		r.Type = pb.EventType_CANCELED
		r.Code = int32(cancelCode(ev.Cause))
		r.CompactRevision = ev.CompactRevision
	}
	if ev.HasPrev {
		prev := ev.PrevValue
		if prev == nil {
			prev = []byte{}
		}
		r.PrevValue = prev
	}
	return r
}
