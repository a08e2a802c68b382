package client

import (
	"context"
	"fmt"

	"google.golang.org/grpc"

	pb "github.com/raftwatch/raftwatch/proto"
)

// Watcher is one watch stream.
type Watcher struct {
	stream  pb.Watch_WatchClient
	cancel  context.CancelFunc
	created *pb.WatchResponse
}

// Watch opens a watch on key (or, WithPrefix, on a prefix) at the first
// endpoint that answers. It returns once the server has confirmed the watch;
// Created() is the revision the stream starts after.
func (c *Client) Watch(ctx context.Context, key []byte, opts ...OpOption) (*Watcher, error) {
	o := buildOps(opts)
	var w *Watcher
	err := c.onAny(ctx, func(_ context.Context, cc *grpc.ClientConn) error {
		sctx, cancel := context.WithCancel(ctx)
		stream, err := pb.NewWatchClient(cc).Watch(sctx)
		if err != nil {
			cancel()
			return err
		}
		create := &pb.WatchCreate{Key: key, Prefix: o.prefix, PrevKv: o.prevKV}
		if err := stream.Send(&pb.WatchRequest{Request: &pb.WatchRequest_Create{Create: create}}); err != nil {
			cancel()
			return err
		}
		first, err := stream.Recv()
		if err != nil {
			cancel()
			return err
		}
		if first.Type != pb.EventType_CREATED {
			cancel()
			return fmt.Errorf("client: watch stream began with %s instead of CREATED", first.Type)
		}
		w = &Watcher{stream: stream, cancel: cancel, created: first}
		return nil
	})
	return w, err
}

// Created returns the revision the watch starts after.
func (w *Watcher) Created() uint64 { return w.created.Revision }

// CreatedEvent returns the server's CREATED message.
func (w *Watcher) CreatedEvent() *pb.WatchResponse { return w.created }

// Recv returns the next event. After a CANCELED event the next Recv
// returns io.EOF.
func (w *Watcher) Recv() (*pb.WatchResponse, error) { return w.stream.Recv() }

// RequestProgress asks the server for a PROGRESS event.
func (w *Watcher) RequestProgress() error {
	return w.stream.Send(&pb.WatchRequest{Request: &pb.WatchRequest_Progress{Progress: &pb.WatchProgressRequest{}}})
}

// Close ends the stream; the server unregisters the watcher at once.
func (w *Watcher) Close() { w.cancel() }
