package client

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/raftwatch/raftwatch/proto"
)

// txnKV records every Txn it receives and answers each with the next of
// answers (an error), then with success.
type txnKV struct {
	pb.UnimplementedKVServer
	mu       sync.Mutex
	requests []*pb.TxnRequest
	answers  []error
}

func (s *txnKV) Txn(_ context.Context, req *pb.TxnRequest) (*pb.TxnResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, req)
	if len(s.answers) > 0 {
		err := s.answers[0]
		s.answers = s.answers[1:]
		return nil, err
	}
	return &pb.TxnResponse{Revision: 9, Succeeded: true}, nil
}

func (s *txnKV) received() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.requests)
}

func serveTxn(t *testing.T, kv *txnKV) *Client {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	pb.RegisterKVServer(g, kv)
	go g.Serve(l)
	t.Cleanup(g.Stop)
	c, err := New(Config{Endpoints: []string{l.Addr().String()}, RetryTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestTxnBuildsTheWireRequest(t *testing.T) {
	kv := &txnKV{}
	c := serveTxn(t, kv)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	k := []byte("/k")
	_, err := c.Txn(ctx).
		If(Compare(Value(k), "=", "v"), Compare(ModRevision(k), "<", 7), Compare(Version(k), "!=", uint64(2)),
			Compare(CreateRevision(k), ">", 1), Compare(LeaseValue(k), "=", int64(5)), Exists(k), Absent([]byte("/x"))).
		Then(OpPut(k, []byte("w"), WithPrevKV(), WithLease(5)), OpGet(k)).
		Else(OpDelete(k), OpDeletePrefix([]byte("/p/"), WithPrevKV())).
		Commit()
	if err != nil {
		t.Fatal(err)
	}
	want := &pb.TxnRequest{
		Compares: []*pb.Compare{
			{Key: k, Result: pb.Compare_EQUAL, Target: &pb.Compare_Value{Value: []byte("v")}},
			{Key: k, Result: pb.Compare_LESS, Target: &pb.Compare_ModRevision{ModRevision: 7}},
			{Key: k, Result: pb.Compare_NOT_EQUAL, Target: &pb.Compare_Version{Version: 2}},
			{Key: k, Result: pb.Compare_GREATER, Target: &pb.Compare_CreateRevision{CreateRevision: 1}},
			{Key: k, Result: pb.Compare_EQUAL, Target: &pb.Compare_Lease{Lease: 5}},
			{Key: k, Result: pb.Compare_EQUAL, Target: &pb.Compare_Exists{Exists: true}},
			{Key: []byte("/x"), Result: pb.Compare_EQUAL, Target: &pb.Compare_Exists{Exists: false}},
		},
		Success: []*pb.TxnOp{
			{Op: &pb.TxnOp_Put{Put: &pb.PutRequest{Key: k, Value: []byte("w"), PrevKv: true, Lease: 5}}},
			{Op: &pb.TxnOp_Get{Get: &pb.GetRequest{Key: k}}},
		},
		Failure: []*pb.TxnOp{
			{Op: &pb.TxnOp_Delete{Delete: &pb.DeleteRequest{Key: k}}},
			{Op: &pb.TxnOp_DeletePrefix{DeletePrefix: &pb.DeletePrefixRequest{Prefix: []byte("/p/"), PrevKv: true}}},
		},
	}
	if kv.received() != 1 || !proto.Equal(kv.requests[0], want) {
		t.Fatalf("server got %v, want %v", kv.requests, want)
	}
}

func TestTxnWithABadCompareIsNotSent(t *testing.T) {
	kv := &txnKV{}
	c := serveTxn(t, kv)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, cmp := range []Cmp{
		Compare(Value([]byte("/k")), "<=", "v"),
		Compare(ModRevision([]byte("/k")), "=", "7"),
		Compare(Version([]byte("/k")), "=", -1),
	} {
		_, err := c.Txn(ctx).If(cmp).Then(OpPut([]byte("/k"), nil)).Commit()
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("compare %v: error %v, want INVALID_ARGUMENT", cmp.cmp, err)
		}
	}
	if n := kv.received(); n != 0 {
		t.Fatalf("the server received %d txns, want none", n)
	}
}

func TestTxnIsRetriedOnlyWhenNotApplied(t *testing.T) {
	notApplied := status.New(codes.Unavailable, "no leader")
	notApplied, _ = notApplied.WithDetails(&errdetails.ErrorInfo{Reason: pb.ReasonNotApplied, Domain: pb.ErrorDomain})
	kv := &txnKV{answers: []error{notApplied.Err(), status.Error(codes.Unavailable, "write outcome unknown")}}
	c := serveTxn(t, kv)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Txn(ctx).Then(OpPut([]byte("/k"), []byte("v"))).Commit()
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("error %v, want the outcome-unknown UNAVAILABLE returned", err)
	}
	if n := kv.received(); n != 2 {
		t.Fatalf("the server received %d txns, want 2 (retried after NOT_APPLIED, not after outcome unknown)", n)
	}
}
