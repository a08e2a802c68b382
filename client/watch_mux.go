package client

import (
	"context"
	"errors"
	"io"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/raftwatch/raftwatch/proto"
)

// watchMux is one shared watch stream to one endpoint.
type watchMux struct {
	client *Client
	cc     *grpc.ClientConn
	stream pb.Watch_WatchClient
	cancel context.CancelFunc
	sendMu sync.Mutex // grpc streams allow one sender at a time

	mu       sync.Mutex
	nextReq  uint64
	pending  map[uint64]chan *pb.WatchResponse // request_id -> CREATED or refusal
	watchers map[uint64]*Watcher
	creating map[uint64]*Watcher // request_id -> watcher awaiting CREATED
	err      error               // the stream has ended
}

func (c *Client) watchMux(cc *grpc.ClientConn) (*watchMux, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m, ok := c.muxes[cc]; ok {
		return m, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := pb.NewWatchClient(cc).Watch(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	m := &watchMux{client: c, cc: cc, stream: stream, cancel: cancel,
		pending: map[uint64]chan *pb.WatchResponse{}, watchers: map[uint64]*Watcher{}, creating: map[uint64]*Watcher{}}
	c.muxes[cc] = m
	go m.read()
	return m, nil
}

func (m *watchMux) send(req *pb.WatchRequest) error {
	m.sendMu.Lock()
	defer m.sendMu.Unlock()
	return m.stream.Send(req)
}

// read routes the stream's messages to their watches until it ends.
func (m *watchMux) read() {
	type delivery struct {
		w *Watcher
		r *pb.WatchResponse
	}
	var out []delivery
	for {
		b, err := m.stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = status.Error(codes.Unavailable, "the server ended the watch stream")
			}
			m.fail(err)
			return
		}
		// Route the whole batch under one lock, then hand events over.
		m.mu.Lock()
		for _, r := range b.Responses {
			if w := m.routeLocked(r); w != nil {
				out = append(out, delivery{w, r})
			}
		}
		m.mu.Unlock()
		for i, d := range out {
			d.w.push(d.r, nil)
			out[i] = delivery{}
		}
		out = out[:0]
	}
}

// routeLocked settles creates and returns the watch an event is for (nil
// when it is for no live watch). m.mu is held.
func (m *watchMux) routeLocked(r *pb.WatchResponse) *Watcher {
	if r.Type == pb.EventType_CREATED || (r.Type == pb.EventType_CANCELED && r.WatchId == 0) {
		if r.Type == pb.EventType_CREATED {
			if w := m.creating[r.RequestId]; w != nil {
				m.watchers[r.WatchId] = w // before its events can arrive
			} else {
				// The creator gave up; end the orphan on the server.
				go m.send(&pb.WatchRequest{Request: &pb.WatchRequest_Cancel{Cancel: &pb.WatchCancelRequest{WatchId: r.WatchId}}})
			}
		}
		if ch := m.pending[r.RequestId]; ch != nil {
			ch <- r
		}
		delete(m.pending, r.RequestId)
		delete(m.creating, r.RequestId)
		return nil
	}
	w := m.watchers[r.WatchId]
	if r.Type == pb.EventType_CANCELED {
		delete(m.watchers, r.WatchId)
	}
	return w
}

// fail ends the stream and every watch on it with err.
func (m *watchMux) fail(err error) {
	m.mu.Lock()
	if m.err != nil {
		m.mu.Unlock()
		return
	}
	m.err = err
	watchers, pending := m.watchers, m.pending
	m.watchers, m.pending, m.creating = map[uint64]*Watcher{}, map[uint64]chan *pb.WatchResponse{}, map[uint64]*Watcher{}
	m.mu.Unlock()
	m.cancel()
	m.client.mu.Lock()
	if m.client.muxes[m.cc] == m {
		delete(m.client.muxes, m.cc)
	}
	m.client.mu.Unlock()
	for _, ch := range pending {
		ch <- nil
	}
	for _, w := range watchers {
		w.push(nil, err)
	}
}
