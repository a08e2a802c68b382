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

// Roles a kvNode plays.
const (
	roleLeader   = "leader"   // applies every put
	roleFollower = "follower" // answers NotLeader with its hint
	roleStopped  = "stopped"  // answers nothing, as a SIGSTOPped node
	roleDamaged  = "damaged"  // refuses reads with DATA_LOSS, as a node that found damaged data
)

// kvNode serves KV.Put and Cluster.Status over real TCP and plays a role
// the test can change.
type kvNode struct {
	pb.UnimplementedKVServer
	pb.UnimplementedClusterServer
	addr string
	srv  *grpc.Server

	mu   sync.Mutex
	role string
	hint string // a follower's leader hint (client address)
	puts int    // puts received, whatever the role
}

func startKVNode(t *testing.T, role string) *kvNode {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &kvNode{addr: lis.Addr().String(), srv: grpc.NewServer(), role: role}
	pb.RegisterKVServer(n.srv, n)
	pb.RegisterClusterServer(n.srv, n)
	go n.srv.Serve(lis)
	t.Cleanup(n.srv.Stop)
	return n
}

func (n *kvNode) set(role, hint string) {
	n.mu.Lock()
	n.role, n.hint = role, hint
	n.mu.Unlock()
}

func (n *kvNode) state() (role, hint string, puts int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.role, n.hint, n.puts
}

func (n *kvNode) Put(ctx context.Context, req *pb.PutRequest) (*pb.PutResponse, error) {
	n.mu.Lock()
	n.puts++
	n.mu.Unlock()
	role, hint, _ := n.state()
	switch role {
	case roleStopped:
		<-ctx.Done()
		return nil, ctx.Err()
	case roleFollower:
		st, err := status.New(codes.FailedPrecondition, "not leader").WithDetails(&pb.NotLeader{LeaderAddr: hint})
		if err != nil {
			return nil, err
		}
		return nil, st.Err()
	}
	return &pb.PutResponse{Revision: 1, Succeeded: true}, nil
}

func (n *kvNode) Get(ctx context.Context, req *pb.GetRequest) (*pb.GetResponse, error) {
	switch role, _, _ := n.state(); role {
	case roleStopped:
		<-ctx.Done()
		return nil, ctx.Err()
	case roleDamaged:
		return nil, status.Error(codes.DataLoss, "data loss: stored value of \"/k\" is damaged; read from another node")
	}
	return &pb.GetResponse{Revision: 1}, nil
}

func (n *kvNode) Status(ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
	if role, _, _ := n.state(); role == roleStopped {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return &pb.StatusResponse{}, nil
}

// timedPut writes through c with its own deadline, as an application does.
func timedPut(c *Client, timeout time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	_, err := c.Put(ctx, []byte("/k"), []byte("v"))
	return time.Since(start), err
}

// opTimeout is the deadline of each request in these tests.
const opTimeout = 2 * time.Second

// A stopped leader keeps its connections open, so a request sent to it
// waits out its deadline and may or may not apply later: the client must not
// send it elsewhere. But the requests after it must not wait out theirs on
// the same node while the followers still point at it.
func TestWriteAfterATimeoutOnAStoppedLeaderGoesToTheNewLeader(t *testing.T) {
	old := startKVNode(t, roleLeader)
	follower := startKVNode(t, roleFollower)
	leader := startKVNode(t, roleFollower)
	follower.set(roleFollower, old.addr)
	leader.set(roleFollower, old.addr)
	c, err := New(Config{Endpoints: []string{old.addr, follower.addr, leader.addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := timedPut(c, opTimeout); err != nil {
		t.Fatalf("put on the healthy cluster: %v", err)
	}

	// The leader stops; one node takes over, the other still points at the
	// stopped one (its view is stale until it hears from the new leader).
	old.set(roleStopped, "")
	leader.set(roleLeader, "")
	took, err := timedPut(c, opTimeout)
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("put sent to the stopped leader: %v after %v, want DEADLINE_EXCEEDED", err, took)
	}
	if _, _, n := old.state(); n != 2 {
		t.Fatalf("the stopped leader got %d puts, want 2: a write of unknown outcome was sent again", n)
	}

	took, err = timedPut(c, opTimeout)
	if err != nil {
		t.Fatalf("put after the timeout: %v after %v, want it applied by the new leader", err, took)
	}
	if _, _, n := leader.state(); n != 1 {
		t.Fatalf("the new leader got %d puts, want 1", n)
	}
	// A probe of the stopped node and a hop through the stale follower, not
	// another wait for the deadline.
	if took > opTimeout/2 {
		t.Errorf("put after the timeout took %v; want well under its %v deadline", took, opTimeout)
	}
	if _, _, n := old.state(); n != 2 {
		t.Errorf("the stopped leader got %d puts, want still 2", n)
	}
}

// A node that left a request unanswered is used again once it answers: a
// slow leader is not shunned.
func TestASuspectNodeThatAnswersAgainIsUsedAgain(t *testing.T) {
	slow := startKVNode(t, roleStopped)
	other := startKVNode(t, roleFollower)
	other.set(roleFollower, slow.addr)
	c, err := New(Config{Endpoints: []string{slow.addr, other.addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := timedPut(c, 300*time.Millisecond); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("put on the stalled node: %v, want DEADLINE_EXCEEDED", err)
	}
	slow.set(roleLeader, "")
	if took, err := timedPut(c, opTimeout); err != nil {
		t.Fatalf("put once the node answers again: %v after %v", err, took)
	}
	if _, _, n := slow.state(); n != 2 {
		t.Fatalf("the node that answers again got %d puts, want 2", n)
	}
}

// Serializable reads go to the first endpoint that answers: one that left a
// read unanswered is passed over by the next, instead of each read waiting
// out its deadline on it.
func TestSerializableReadsPassOverAStoppedNode(t *testing.T) {
	stopped := startKVNode(t, roleStopped)
	other := startKVNode(t, roleFollower)
	c, err := New(Config{Endpoints: []string{stopped.addr, other.addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	get := func() (time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := c.Get(ctx, []byte("/k"), WithSerializable())
		return time.Since(start), err
	}
	if took, err := get(); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("read on the stopped node: %v after %v, want DEADLINE_EXCEEDED", err, took)
	}
	for i := range 3 {
		if took, err := get(); err != nil {
			t.Fatalf("read %d after the timeout: %v after %v, want it served by the other node", i, err, took)
		}
	}
}

// A node that found damaged data refuses reads with DATA_LOSS; a client
// given other endpoints reads there instead, and one given only that node
// gets the DATA_LOSS at once rather than retrying until its deadline.
func TestSerializableReadsPassOverADamagedNode(t *testing.T) {
	damaged := startKVNode(t, roleDamaged)
	other := startKVNode(t, roleFollower)
	c, err := New(Config{Endpoints: []string{damaged.addr, other.addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if _, err := c.Get(ctx, []byte("/k"), WithSerializable()); err != nil {
		t.Fatalf("read with a damaged node first: %v, want it served by the other node", err)
	}

	only, err := New(Config{Endpoints: []string{damaged.addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer only.Close()
	start := time.Now()
	if _, err := only.Get(ctx, []byte("/k"), WithSerializable()); status.Code(err) != codes.DataLoss {
		t.Fatalf("read on the damaged node alone: %v, want DATA_LOSS", err)
	} else if took := time.Since(start); took > opTimeout/2 {
		t.Fatalf("DATA_LOSS took %v: the client retried the damaged node", took)
	}
}

// The same for linearizable reads, which look for the leader: a DATA_LOSS
// refusal sends them to the next endpoint, not back to the caller.
func TestLinearizableReadsPassOverADamagedNode(t *testing.T) {
	damaged := startKVNode(t, roleDamaged)
	leader := startKVNode(t, roleLeader)
	c, err := New(Config{Endpoints: []string{damaged.addr, leader.addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if _, err := c.Get(ctx, []byte("/k")); err != nil {
		t.Fatalf("linearizable read with a damaged node first: %v, want it served by the leader", err)
	}

	other := startKVNode(t, roleDamaged)
	all, err := New(Config{Endpoints: []string{damaged.addr, other.addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer all.Close()
	start := time.Now()
	if _, err := all.Get(ctx, []byte("/k")); status.Code(err) != codes.DataLoss {
		t.Fatalf("read when every node refuses: %v, want DATA_LOSS", err)
	} else if took := time.Since(start); took > opTimeout/2 {
		t.Fatalf("DATA_LOSS took %v: the client went round the refusing nodes", took)
	}
}
