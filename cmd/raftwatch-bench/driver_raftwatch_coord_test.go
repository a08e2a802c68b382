//go:build !noraftwatch

package main

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/raftwatch/raftwatch/proto"
)

// stubNode is a gRPC server on 127.0.0.1 with the KV.Txn and Lease calls
// the bench uses: a follower answers every call with FAILED_PRECONDITION
// and a NotLeader hint to leaderAddr, as raftwatch's server does; a leader
// serves them and counts what it served.
type stubNode struct {
	pb.UnimplementedKVServer
	pb.UnimplementedLeaseServer
	addr       string
	leaderAddr string // "" on the leader

	mu      sync.Mutex
	calls   int // every Txn, Grant, Revoke, and every keepalive stream opened
	txnResp *pb.TxnResponse
	renewed []int64
}

func startStubNode(t *testing.T, leaderAddr string, lis net.Listener) *stubNode {
	t.Helper()
	n := &stubNode{addr: lis.Addr().String(), leaderAddr: leaderAddr}
	s := grpc.NewServer()
	pb.RegisterKVServer(s, n)
	pb.RegisterLeaseServer(s, n)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return n
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return lis
}

func (n *stubNode) notLeader() error {
	st, err := status.New(codes.FailedPrecondition, "not the leader").WithDetails(&pb.NotLeader{LeaderAddr: n.leaderAddr})
	if err != nil {
		panic(err)
	}
	return st.Err()
}

func (n *stubNode) count() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.calls
}

func (n *stubNode) answerTxn(resp *pb.TxnResponse) {
	n.mu.Lock()
	n.txnResp = resp
	n.mu.Unlock()
}

func (n *stubNode) Txn(_ context.Context, req *pb.TxnRequest) (*pb.TxnResponse, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.calls++
	if n.leaderAddr != "" {
		return nil, n.notLeader()
	}
	return n.txnResp, nil
}

func (n *stubNode) Grant(_ context.Context, req *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.calls++
	if n.leaderAddr != "" {
		return nil, n.notLeader()
	}
	return &pb.LeaseGrantResponse{Id: 42, Ttl: req.GetTtl()}, nil
}

func (n *stubNode) KeepAlive(st pb.Lease_KeepAliveServer) error {
	n.mu.Lock()
	n.calls++
	n.mu.Unlock()
	for {
		req, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if n.leaderAddr != "" {
			return n.notLeader()
		}
		ttl := int64(60)
		if req.GetId() == 7 { // an unknown lease
			ttl = 0
		}
		n.mu.Lock()
		n.renewed = append(n.renewed, req.GetId())
		n.mu.Unlock()
		if err := st.Send(&pb.LeaseKeepAliveResponse{Id: req.GetId(), Ttl: ttl}); err != nil {
			return err
		}
	}
}

// twoNodes starts a leader and a follower that hints to it, and a driver
// listing the follower first.
func twoNodes(t *testing.T) (follower, leader *stubNode, d Driver) {
	t.Helper()
	leader = startStubNode(t, "", listen(t))
	follower = startStubNode(t, leader.addr, listen(t))
	d, err := dialRaftwatch([]string{follower.addr, leader.addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return follower, leader, d
}

// Txn goes to the leader: a follower's NotLeader hint is followed once,
// and later calls go straight to the leader. The failure branch's reads
// give the keys' revisions, 0 for an absent key.
func TestRaftwatchDriverTxnFollowsTheLeader(t *testing.T) {
	follower, leader, d := twoNodes(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	leader.answerTxn(&pb.TxnResponse{Revision: 9, Succeeded: true})
	out, err := d.Txn2(ctx, []byte("/a"), []byte("/b"), 1, 2, []byte("v"))
	if err != nil {
		t.Fatal(err)
	}
	if out != (TxnOutcome{Succeeded: true, RevA: 9, RevB: 9}) {
		t.Fatalf("outcome %+v, want succeeded at 9", out)
	}
	if follower.count() != 1 || leader.count() != 1 {
		t.Fatalf("follower got %d calls, leader %d; want 1 and 1", follower.count(), leader.count())
	}
	leader.answerTxn(&pb.TxnResponse{Revision: 10, Results: []*pb.TxnOpResult{
		{Result: &pb.TxnOpResult_Get{Get: &pb.GetResponse{Kv: &pb.KeyValue{Key: []byte("/a"), ModRevision: 8}}}},
		{Result: &pb.TxnOpResult_Get{Get: &pb.GetResponse{}}},
	}})
	out, err = d.Txn2(ctx, []byte("/a"), []byte("/b"), 1, 2, []byte("v"))
	if err != nil {
		t.Fatal(err)
	}
	if out != (TxnOutcome{RevA: 8, RevB: 0}) {
		t.Fatalf("outcome %+v, want failed with revisions 8 and 0", out)
	}
	if follower.count() != 1 || leader.count() != 2 {
		t.Fatalf("follower got %d calls, leader %d; want 1 and 2 (the leader remembered)", follower.count(), leader.count())
	}
	if id, err := d.Grant(ctx, 600); err != nil || id != 42 {
		t.Fatalf("grant: id %d, %v", id, err)
	}
}

// A keepalive stream opened on a follower is ended with a NotLeader hint
// at the first receive; the driver reopens it on the leader, where every
// later keepalive of that stream goes. A lease the leader does not know
// (ttl 0) is an error.
func TestRaftwatchDriverKeepAliveStreamMovesToTheLeader(t *testing.T) {
	follower, leader, d := twoNodes(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ka, err := d.KeepAliveStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer ka.Close()
	for _, id := range []int64{1, 2, 3} {
		if err := ka.KeepAlive(ctx, id); err != nil {
			t.Fatalf("keepalive %d: %v", id, err)
		}
	}
	if follower.count() != 1 || leader.count() != 1 {
		t.Fatalf("streams: follower %d, leader %d; want 1 and 1", follower.count(), leader.count())
	}
	leader.mu.Lock()
	renewed := append([]int64(nil), leader.renewed...)
	leader.mu.Unlock()
	if len(renewed) != 3 || renewed[0] != 1 || renewed[2] != 3 {
		t.Fatalf("leader renewed %v, want [1 2 3]", renewed)
	}
	if err := ka.KeepAlive(ctx, 7); err == nil {
		t.Fatal("keepalive of an unknown lease succeeded")
	}
}
