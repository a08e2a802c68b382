package server

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/raftwatch/raftwatch/node"
	pb "github.com/raftwatch/raftwatch/proto"
	"github.com/raftwatch/raftwatch/watch"
)

func TestConditionValidation(t *testing.T) {
	for _, tc := range []struct {
		name   string
		in     *pb.Condition
		want   *node.Condition
		errHas string
	}{
		{"none", nil, nil, ""},
		{"mod revision", &pb.Condition{Require: &pb.Condition_ModRevision{ModRevision: 5}}, &node.Condition{ModRevision: 5}, ""},
		{"absent", &pb.Condition{Require: &pb.Condition_Absent{Absent: true}}, &node.Condition{Absent: true}, ""},
		{"mod revision 0", &pb.Condition{Require: &pb.Condition_ModRevision{}}, nil, "use absent=true"},
		{"absent=false", &pb.Condition{Require: &pb.Condition_Absent{}}, nil, "leave the condition unset"},
		{"empty", &pb.Condition{}, nil, "set mod_revision or absent"},
	} {
		got, err := condition(tc.in)
		switch {
		case tc.errHas != "":
			if st, _ := status.FromError(err); got != nil || st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), tc.errHas) {
				t.Errorf("%s: condition = %+v, %v; want INVALID_ARGUMENT saying %q", tc.name, got, err, tc.errHas)
			}
		case err != nil || (got == nil) != (tc.want == nil) || got != nil && *got != *tc.want:
			t.Errorf("%s: condition = %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
	}
}

func TestConsistencyValidation(t *testing.T) {
	if c, err := consistency(pb.Consistency_LINEARIZABLE); err != nil || c != node.Linearizable {
		t.Errorf("LINEARIZABLE = %v, %v", c, err)
	}
	if c, err := consistency(pb.Consistency_SERIALIZABLE); err != nil || c != node.Serializable {
		t.Errorf("SERIALIZABLE = %v, %v", c, err)
	}
	_, err := consistency(pb.Consistency(7))
	if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "unknown consistency 7: use LINEARIZABLE or SERIALIZABLE") {
		t.Errorf("consistency 7: %v, want INVALID_ARGUMENT naming the valid values", err)
	}
}

// TestMalformedRequestsStopAtTheEdge: a Server without a node (any call
// reaching it would panic) refuses each malformed request itself, with
// INVALID_ARGUMENT.
func TestMalformedRequestsStopAtTheEdge(t *testing.T) {
	s := &Server{}
	ctx := context.Background()
	empty := &pb.Condition{}
	for _, tc := range []struct {
		name   string
		call   func() error
		errHas string
	}{
		{"put with an empty condition", func() error {
			_, err := s.Put(ctx, &pb.PutRequest{Key: []byte("/k"), Condition: empty})
			return err
		}, "empty condition"},
		{"delete with mod revision 0", func() error {
			_, err := s.Delete(ctx, &pb.DeleteRequest{Key: []byte("/k"), Condition: &pb.Condition{Require: &pb.Condition_ModRevision{}}})
			return err
		}, "mod_revision must be > 0"},
		{"get with an unknown consistency", func() error {
			_, err := s.Get(ctx, &pb.GetRequest{Key: []byte("/k"), Consistency: 3})
			return err
		}, "unknown consistency 3"},
		{"list with an unknown consistency", func() error {
			_, err := s.List(ctx, &pb.ListRequest{Prefix: []byte("/"), Consistency: 3})
			return err
		}, "unknown consistency 3"},
		{"list with a limit over 2^31", func() error {
			_, err := s.List(ctx, &pb.ListRequest{Prefix: []byte("/"), Limit: 1<<31 + 1})
			return err
		}, "limit 2147483649 is too large (at most 2147483648)"},
		{"list with the largest limit", func() error {
			_, err := s.List(ctx, &pb.ListRequest{Prefix: []byte("/"), Limit: math.MaxUint64})
			return err
		}, "is too large"},
	} {
		err := tc.call()
		if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), tc.errHas) {
			t.Errorf("%s: %v, want INVALID_ARGUMENT saying %q", tc.name, err, tc.errHas)
		}
	}
}

// edgeNode is a one-node cluster served by this package in this process,
// on loopback TCP.
type edgeNode struct {
	node     *node.Node
	addr     string // client address
	raftAddr string
	conn     *grpc.ClientConn
	limits   node.Limits
	kv       pb.KVClient
	watch    pb.WatchClient
}

// startEdgeNode opens a one-node cluster with cfg adjusted by tune, serves
// it through NewGRPCServer and waits until it takes writes. Its client
// connection lifts gRPC's client-side bounds, so that only the server's
// limits are tested. It is not nodetest.Start because this package's own
// tests cannot import nodetest, which imports server.
func startEdgeNode(t *testing.T, tune func(*node.Config)) *edgeNode {
	t.Helper()
	raftLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	raftAddr := raftLis.Addr().String()
	raftLis.Close() // the node binds it itself
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := node.DefaultConfig()
	cfg.ID, cfg.DataDir, cfg.RaftAddr, cfg.ClientAddr = "n1", t.TempDir(), raftAddr, lis.Addr().String()
	cfg.InitialCluster = map[string]string{"n1": raftAddr}
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if tune != nil {
		tune(&cfg)
	}
	n, err := node.Open(cfg)
	if err != nil {
		lis.Close()
		t.Fatal(err)
	}
	g := New(n, cfg.Logger).NewGRPCServer()
	go g.Serve(lis)
	t.Cleanup(func() {
		g.Stop()
		n.Close()
	})
	cc, err := grpc.NewClient(cfg.ClientAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(math.MaxInt32), grpc.MaxCallRecvMsgSize(math.MaxInt32)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	e := &edgeNode{node: n, addr: cfg.ClientAddr, raftAddr: raftAddr, conn: cc, limits: n.Limits(), kv: pb.NewKVClient(cc), watch: pb.NewWatchClient(cc)}
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := e.kv.Put(ctx, &pb.PutRequest{Key: []byte("/ready"), Value: []byte("1")})
		cancel()
		if err == nil {
			return e
		}
		if time.Now().After(deadline) {
			t.Fatalf("the single node takes no writes: %v", err)
		}
		<-tick.C
	}
}

func edgeCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// revisionOf reads key linearizably: its value (nil when absent) and the
// store's revision.
func (e *edgeNode) revisionOf(t *testing.T, key []byte) ([]byte, uint64) {
	t.Helper()
	r, err := e.kv.Get(edgeCtx(t), &pb.GetRequest{Key: key})
	if err != nil {
		t.Fatalf("get %q: %v", key, err)
	}
	return r.GetKv().GetValue(), r.Revision
}

// putOfSize returns a put of key whose encoded size is exactly size.
func putOfSize(t *testing.T, key []byte, size int) *pb.PutRequest {
	t.Helper()
	req := &pb.PutRequest{Key: key}
	for n := size; n > 0; n-- {
		req.Value = bytes.Repeat([]byte("v"), n)
		if got := proto.Size(req); got == size {
			return req
		} else if got < size {
			break
		}
	}
	t.Fatalf("no put of %d bytes with a %d-byte key", size, len(key))
	return nil
}

// TestRefusedRequestsChangeNothing: malformed writes on a real node are
// refused and leave the key and the revision as they were.
func TestRefusedRequestsChangeNothing(t *testing.T) {
	e := startEdgeNode(t, nil)
	key := []byte("/edge/k")
	_, before := e.revisionOf(t, key)
	ctx := edgeCtx(t)
	for name, req := range map[string]*pb.PutRequest{
		"empty condition":  {Key: key, Value: []byte("v"), Condition: &pb.Condition{}},
		"absent=false":     {Key: key, Value: []byte("v"), Condition: &pb.Condition{Require: &pb.Condition_Absent{}}},
		"mod revision 0":   {Key: key, Value: []byte("v"), Condition: &pb.Condition{Require: &pb.Condition_ModRevision{}}},
		"key without '/'":  {Key: []byte("edge"), Value: []byte("v")},
		"empty key":        {Value: []byte("v")},
		"value over limit": {Key: key, Value: make([]byte, e.limits.MaxValueSize+1)},
	} {
		if _, err := e.kv.Put(ctx, req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("put with %s: %v, want INVALID_ARGUMENT", name, err)
		}
	}
	if _, err := e.kv.List(ctx, &pb.ListRequest{Prefix: []byte("/"), Limit: 1<<31 + 1}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("list with a limit over 2^31: %v, want INVALID_ARGUMENT", err)
	}
	if r, err := e.kv.List(ctx, &pb.ListRequest{Prefix: []byte("/"), Limit: 1 << 31}); err != nil || len(r.Kvs) != 1 {
		t.Errorf("list with the largest limit: %v (%d keys), want the one key there is", err, len(r.GetKvs()))
	}
	if v, after := e.revisionOf(t, key); v != nil || after != before {
		t.Fatalf("after the refusals %q = %q at revision %d; want absent at %d", key, v, after, before)
	}
}

// TestMessageLimitsFollowTheNodesLimits: a request one byte over RecvLimit
// is refused by gRPC with RESOURCE_EXHAUSTED; one of exactly RecvLimit
// reaches the node (which refuses its oversize value with
// INVALID_ARGUMENT); the largest key and value the node accepts fit; and
// the largest response, a watch event carrying a maximum-size value, its
// maximum-size previous value and a maximum-size key, fits SendLimit. The
// txn limit is kept small so that the two-value term decides SendLimit.
func TestMessageLimitsFollowTheNodesLimits(t *testing.T) {
	e := startEdgeNode(t, func(c *node.Config) {
		c.MaxValueSize, c.MaxKeySize, c.MaxTxnBytes = 256<<10, 1<<10, 16<<10
	})
	recv := RecvLimit(e.limits)
	ctx := edgeCtx(t)
	key := []byte("/edge/big")

	if _, err := e.kv.Put(ctx, putOfSize(t, key, recv+1)); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("put of RecvLimit+1 = %d bytes: %v, want RESOURCE_EXHAUSTED", recv+1, err)
	}
	_, err := e.kv.Put(ctx, putOfSize(t, key, recv))
	if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "limit of 262144 bytes") {
		t.Fatalf("put of RecvLimit = %d bytes: %v, want the node's INVALID_ARGUMENT about the value limit", recv, err)
	}
	if v, _ := e.revisionOf(t, key); v != nil {
		t.Fatalf("a refused put left %d bytes at %q", len(v), key)
	}

	maxKey := append([]byte("/"), bytes.Repeat([]byte("k"), e.limits.MaxKeySize-1)...)
	first, second := bytes.Repeat([]byte("a"), e.limits.MaxValueSize), bytes.Repeat([]byte("b"), e.limits.MaxValueSize)
	r1, err := e.kv.Put(ctx, &pb.PutRequest{Key: maxKey, Value: first})
	if err != nil {
		t.Fatalf("put of the largest key and value: %v", err)
	}
	if _, err := e.kv.Put(ctx, &pb.PutRequest{Key: maxKey, Value: second}); err != nil {
		t.Fatal(err)
	}

	stream, err := e.watch.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	create := &pb.WatchCreate{Key: maxKey, PrevKv: true, StartRevision: r1.Revision}
	if err := stream.Send(&pb.WatchRequest{Request: &pb.WatchRequest_Create{Create: create}}); err != nil {
		t.Fatal(err)
	}
	var events []*pb.WatchResponse
	var lastBatch int // encoded size of the message that carried the last event
	for len(events) < 2 {
		b, err := stream.Recv()
		if err != nil {
			t.Fatalf("watch after %d events: %v (SendLimit %d too small for the largest event?)", len(events), err, SendLimit(e.limits))
		}
		for _, r := range b.Responses {
			switch r.Type {
			case pb.EventType_PUT:
				events, lastBatch = append(events, r), proto.Size(b)
			case pb.EventType_CANCELED:
				t.Fatalf("watch canceled: %v", r)
			}
		}
	}
	last := events[1]
	if !bytes.Equal(last.Key, maxKey) || !bytes.Equal(last.Value, second) || !bytes.Equal(last.PrevValue, first) {
		t.Fatalf("second event: %d-byte key, %d-byte value, %d-byte prev; want %d, %d, %d",
			len(last.Key), len(last.Value), len(last.PrevValue), len(maxKey), len(second), len(first))
	}
	if size, limit := lastBatch, SendLimit(e.limits); size > limit || size <= RecvLimit(e.limits) {
		t.Fatalf("the message carrying the largest event is %d bytes; want it over RecvLimit %d (so the send bound is what was tested) and within SendLimit %d",
			size, RecvLimit(e.limits), limit)
	}
}

// TestWatchEventsOnTheWire: the conversion of watch events keeps every
// field, gives a CANCELED its code, and tells "no previous value" (an
// empty PrevValue) from "previous value not asked for" (nil).
func TestWatchEventsOnTheWire(t *testing.T) {
	put := toWatchResponse(watch.Event{Type: watch.Put, Key: []byte("/k"), Value: []byte("v"), Revision: 9, Version: 2, WatchID: 4})
	if put.Type != pb.EventType_PUT || string(put.Key) != "/k" || string(put.Value) != "v" || put.Revision != 9 || put.Version != 2 || put.WatchId != 4 || put.PrevValue != nil {
		t.Errorf("put event became %v", put)
	}
	created := toWatchResponse(watch.Event{Type: watch.Put, Key: []byte("/k"), Value: []byte("v"), HasPrev: true})
	if created.PrevValue == nil || len(created.PrevValue) != 0 {
		t.Errorf("a put creating its key, prev asked for: PrevValue %v, want empty and not nil", created.PrevValue)
	}
	del := toWatchResponse(watch.Event{Type: watch.Delete, Key: []byte("/k"), HasPrev: true, PrevValue: []byte("old")})
	if del.Type != pb.EventType_DELETE || string(del.PrevValue) != "old" {
		t.Errorf("delete event became %v", del)
	}
	if p := toWatchResponse(watch.Event{Type: watch.Progress, Revision: 12}); p.Type != pb.EventType_PROGRESS || p.Revision != 12 {
		t.Errorf("progress event became %v", p)
	}
	c := toWatchResponse(watch.Event{Type: watch.Canceled, Cause: watch.CauseCompacted, CompactRevision: 40, Reason: "compacted", WatchID: 4})
	if c.Type != pb.EventType_CANCELED || codes.Code(c.Code) != codes.OutOfRange || c.CompactRevision != 40 || c.Reason != "compacted" || c.WatchId != 4 {
		t.Errorf("compacted cancel became %v", c)
	}
}

// TestRefusedWatchCreateIsCanceledWithItsCode: a watch the node refuses
// is answered on the stream with a CANCELED that echoes the request's key
// and request_id and carries the code and message of the refusal; the
// stream stays usable.
func TestRefusedWatchCreateIsCanceledWithItsCode(t *testing.T) {
	e := startEdgeNode(t, nil)
	stream, err := e.watch.Watch(edgeCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	next := func() *pb.WatchResponse {
		t.Helper()
		for {
			b, err := stream.Recv()
			if err != nil {
				t.Fatalf("watch stream: %v", err)
			}
			for _, r := range b.Responses {
				if r.Type != pb.EventType_PROGRESS {
					return r
				}
			}
		}
	}
	for i, tc := range []struct {
		create *pb.WatchCreate
		errHas string
	}{
		{&pb.WatchCreate{Key: []byte("k")}, "must start with '/'"},
		{&pb.WatchCreate{Key: []byte("/a"), Prefix: true}, "must start and end with '/'"},
		{&pb.WatchCreate{Key: append([]byte("/"), make([]byte, e.limits.MaxKeySize)...)}, "a key is at most"},
	} {
		tc.create.RequestId = uint64(100 + i)
		if err := stream.Send(&pb.WatchRequest{Request: &pb.WatchRequest_Create{Create: tc.create}}); err != nil {
			t.Fatal(err)
		}
		r := next()
		if r.Type != pb.EventType_CANCELED || codes.Code(r.Code) != codes.InvalidArgument || r.RequestId != tc.create.RequestId ||
			!bytes.Equal(r.Key, tc.create.Key) || !strings.Contains(r.Reason, tc.errHas) {
			t.Errorf("create %q (prefix %v): %v; want CANCELED, INVALID_ARGUMENT, request %d, reason saying %q",
				tc.create.Key, tc.create.Prefix, r, tc.create.RequestId, tc.errHas)
		}
	}
	if err := stream.Send(&pb.WatchRequest{Request: &pb.WatchRequest_Create{Create: &pb.WatchCreate{Key: []byte("/ok"), RequestId: 7}}}); err != nil {
		t.Fatal(err)
	}
	if r := next(); r.Type != pb.EventType_CREATED || r.RequestId != 7 || r.WatchId == 0 {
		t.Fatalf("a valid create after the refusals: %v, want CREATED for request 7", r)
	}
}
