package client

import (
	"context"
	"fmt"
	"io"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/raftwatch/raftwatch/proto"
)

// Watcher is one watch. Watches opened by one Client on one endpoint share
// a single gRPC stream (as etcd's client does), so thousands of watches
// cost the server one stream, not thousands.
type Watcher struct {
	mux     *watchMux
	ctx     context.Context
	stop    func() bool // unregisters the context callback
	created *pb.WatchResponse

	mu     sync.Mutex
	queue  []*pb.WatchResponse // unbounded: a slow reader never stalls the stream's other watches
	err    error               // set once the watch has ended
	notify chan struct{}       // capacity 1: poked when queue or err changes
}

// Watch opens a watch on key (or, WithPrefix, on a prefix) at the first
// endpoint that answers, and returns once the server has confirmed it;
// Created() is the revision it starts after. The watch ends when ctx ends,
// on Close, or when the server cancels it.
func (c *Client) Watch(ctx context.Context, key []byte, opts ...OpOption) (*Watcher, error) {
	o := buildOps(opts)
	create := &pb.WatchCreate{Key: key, Prefix: o.prefix, PrevKv: o.prevKV}
	var w *Watcher
	err := c.onAny(ctx, func(cctx context.Context, cc *grpc.ClientConn) error {
		m, err := c.watchMux(cc)
		if err != nil {
			return err
		}
		w, err = m.create(cctx, ctx, create)
		return err
	})
	if err != nil {
		return nil, err
	}
	return w, nil
}

func (m *watchMux) create(ctx, watchCtx context.Context, create *pb.WatchCreate) (*Watcher, error) {
	reply := make(chan *pb.WatchResponse, 1)
	w := &Watcher{mux: m, ctx: watchCtx, notify: make(chan struct{}, 1)}
	m.mu.Lock()
	if m.err != nil {
		err := m.err
		m.mu.Unlock()
		return nil, err
	}
	m.nextReq++
	id := m.nextReq
	m.pending[id], m.creating[id] = reply, w
	m.mu.Unlock()
	c := &pb.WatchCreate{Key: create.Key, Prefix: create.Prefix, PrevKv: create.PrevKv, RequestId: id}
	if err := m.send(&pb.WatchRequest{Request: &pb.WatchRequest_Create{Create: c}}); err != nil {
		m.fail(err)
	}
	select {
	case r := <-reply:
		if r == nil {
			m.mu.Lock()
			err := m.err
			m.mu.Unlock()
			return nil, err
		}
		if r.Type != pb.EventType_CREATED {
			return nil, status.Error(codes.Code(r.Code), r.Reason)
		}
		w.created = r
		w.mu.Lock() // Close may run at once, from AfterFunc's goroutine
		w.stop = context.AfterFunc(watchCtx, w.Close)
		w.mu.Unlock()
		return w, nil
	case <-ctx.Done():
		m.mu.Lock()
		delete(m.pending, id)
		delete(m.creating, id)
		m.mu.Unlock()
		// The CREATED may have been routed in the same instant: then the
		// watch exists on both sides and nobody holds it; end it.
		select {
		case r := <-reply:
			if r != nil && r.Type == pb.EventType_CREATED {
				m.mu.Lock()
				delete(m.watchers, r.WatchId)
				m.mu.Unlock()
				go m.send(&pb.WatchRequest{Request: &pb.WatchRequest_Cancel{Cancel: &pb.WatchCancelRequest{WatchId: r.WatchId}}})
			}
		default:
		}
		return nil, ctx.Err()
	}
}

func (w *Watcher) push(r *pb.WatchResponse, err error) {
	w.mu.Lock()
	if w.err == nil {
		if r != nil {
			w.queue = append(w.queue, r)
			if r.Type == pb.EventType_CANCELED {
				w.err = io.EOF
			}
		} else {
			w.err = err
		}
	}
	w.mu.Unlock()
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

// Created returns the revision the watch starts after.
func (w *Watcher) Created() uint64 { return w.created.Revision }

// CreatedEvent returns the server's CREATED message.
func (w *Watcher) CreatedEvent() *pb.WatchResponse { return w.created }

// ID returns the server's id for this watch.
func (w *Watcher) ID() uint64 { return w.created.WatchId }

// Recv returns the next event: PUT, DELETE, PROGRESS, or a final CANCELED.
// After the CANCELED, and after Close, it returns io.EOF; if the stream
// broke, the stream's error.
func (w *Watcher) Recv() (*pb.WatchResponse, error) {
	for {
		w.mu.Lock()
		if len(w.queue) > 0 {
			r := w.queue[0]
			w.queue[0] = nil
			w.queue = w.queue[1:]
			w.mu.Unlock()
			return r, nil
		}
		err := w.err
		w.mu.Unlock()
		if err != nil {
			return nil, err
		}
		select {
		case <-w.notify:
		case <-w.ctx.Done():
			w.Close()
		}
	}
}

// RequestProgress asks the server for a PROGRESS event on this watch.
func (w *Watcher) RequestProgress() error {
	return w.mux.send(&pb.WatchRequest{Request: &pb.WatchRequest_Progress{Progress: &pb.WatchProgressRequest{WatchId: w.ID()}}})
}

// Close ends the watch; the server unregisters it at once.
func (w *Watcher) Close() {
	w.mu.Lock()
	stop := w.stop
	w.mu.Unlock()
	if stop != nil {
		stop()
	}
	m := w.mux
	m.mu.Lock()
	_, live := m.watchers[w.ID()]
	delete(m.watchers, w.ID())
	alive := m.err == nil
	m.mu.Unlock()
	if live && alive {
		m.send(&pb.WatchRequest{Request: &pb.WatchRequest_Cancel{Cancel: &pb.WatchCancelRequest{WatchId: w.ID()}}})
	}
	w.push(nil, io.EOF)
}

func (w *Watcher) String() string { return fmt.Sprintf("watch %d", w.ID()) }
