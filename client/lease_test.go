package client

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/raftwatch/raftwatch/proto"
)

// leaseNode answers KeepAliveOnce over real TCP, with a TTL of ttl seconds
// until failing is set, then UNAVAILABLE (as a leader cut off from its
// quorum); it records when each renewal arrived.
type leaseNode struct {
	pb.UnimplementedLeaseServer
	addr string
	ttl  int64

	mu      sync.Mutex
	failing bool
	calls   []time.Time
}

func startLeaseNode(t *testing.T, ttl int64) *leaseNode {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &leaseNode{addr: lis.Addr().String(), ttl: ttl}
	srv := grpc.NewServer()
	pb.RegisterLeaseServer(srv, n)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return n
}

func (n *leaseNode) KeepAliveOnce(ctx context.Context, req *pb.LeaseKeepAliveRequest) (*pb.LeaseKeepAliveResponse, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.calls = append(n.calls, time.Now())
	if n.failing {
		return nil, status.Error(codes.Unavailable, "no quorum")
	}
	return &pb.LeaseKeepAliveResponse{Id: req.Id, Ttl: n.ttl}, nil
}

func (n *leaseNode) state() (calls int, last time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.calls), n.calls[len(n.calls)-1]
}

func waitClosed(t *testing.T, ch <-chan *pb.LeaseKeepAliveResponse, within time.Duration) time.Time {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return time.Now()
			}
		case <-deadline:
			t.Fatalf("the keepalive channel is still open after %v", within)
		}
	}
}

// TestKeepAliveStopsWhenTheClientCloses: Close ends KeepAlive (before, it
// went on renewing through fresh connections and kept the lease alive).
func TestKeepAliveStopsWhenTheClientCloses(t *testing.T) {
	n := startLeaseNode(t, 3)
	c, err := New(Config{Endpoints: []string{n.addr}})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := c.KeepAlive(context.Background(), 7)
	if err != nil {
		t.Fatal(err)
	}
	<-ch // the first renewal
	c.Close()
	waitClosed(t, ch, 5*time.Second)
	if _, err := c.KeepAliveOnce(context.Background(), 7); err == nil {
		t.Fatal("a renewal after Close succeeded")
	}
}

// TestKeepAliveGivesUpOneTTLAfterTheLastAcknowledgedSend: while renewals
// fail, the channel closes once a TTL has passed since the last
// acknowledged renewal was sent, no earlier and not much later: the lease
// may have expired by then.
func TestKeepAliveGivesUpOneTTLAfterTheLastAcknowledgedSend(t *testing.T) {
	n := startLeaseNode(t, 3)
	c, err := New(Config{Endpoints: []string{n.addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ch, err := c.KeepAlive(context.Background(), 7)
	if err != nil {
		t.Fatal(err)
	}
	<-ch
	<-ch // a renewal from the background loop
	n.mu.Lock()
	n.failing = true
	lastAcked := n.calls[len(n.calls)-1]
	n.mu.Unlock()
	closed := waitClosed(t, ch, 10*time.Second)
	// The client counts from when it sent the renewal, a little before it
	// arrived here.
	if gap := closed.Sub(lastAcked); gap < 2900*time.Millisecond || gap > 4*time.Second {
		t.Fatalf("closed %v after the last acknowledged renewal arrived; want within [2.9s, 4s] (TTL 3 s)", gap)
	}
	if calls, _ := n.state(); calls < 4 {
		t.Fatalf("only %d renewal attempts: the failing ones were not retried", calls)
	}
}
