package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/raftwatch/raftwatch/proto"
)

// The statuses below are built the way server/status.go builds them (code,
// message, a google.rpc.ErrorInfo in pb.ErrorDomain first, then any other
// detail), so these tests exercise the client against the wire shapes a
// node really sends.

// notLeaderStatus is a follower's answer to a write: FAILED_PRECONDITION
// with a NotLeader detail naming the leader it knows (none when addr is
// empty).
func notLeaderStatus(t *testing.T, id, addr string) error {
	t.Helper()
	st, err := status.New(codes.FailedPrecondition, "this node is not the leader").WithDetails(&pb.NotLeader{LeaderId: id, LeaderAddr: addr})
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}

// reasonStatus is a status carrying a raftwatch ErrorInfo reason.
func reasonStatus(t *testing.T, code codes.Code, msg, reason string) error {
	t.Helper()
	st, err := status.New(code, msg).WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: pb.ErrorDomain})
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}

// cannedNode is a fake node on real TCP that answers every Put and Get
// with the status answer returns (nil: success) and counts what it
// received. Its Status always answers, so connecting to it and probing it
// succeed.
type cannedNode struct {
	pb.UnimplementedKVServer
	pb.UnimplementedClusterServer
	addr   string
	answer func() error
	puts   atomic.Int32
	gets   atomic.Int32
}

// loopbackListener opens a listener on 127.0.0.1, so that a fake node's
// address is known before any answer naming it is built.
func loopbackListener(t *testing.T) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return lis
}

// serveCanned serves a cannedNode on lis until the test ends.
func serveCanned(t *testing.T, lis net.Listener, answer func() error) *cannedNode {
	t.Helper()
	n := &cannedNode{addr: lis.Addr().String(), answer: answer}
	g := grpc.NewServer()
	pb.RegisterKVServer(g, n)
	pb.RegisterClusterServer(g, n)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return n
}

// startCanned serves a cannedNode that always answers answer.
func startCanned(t *testing.T, answer error) *cannedNode {
	t.Helper()
	return serveCanned(t, loopbackListener(t), func() error { return answer })
}

func (n *cannedNode) Put(context.Context, *pb.PutRequest) (*pb.PutResponse, error) {
	n.puts.Add(1)
	if err := n.answer(); err != nil {
		return nil, err
	}
	return &pb.PutResponse{Revision: 7, Succeeded: true}, nil
}

func (n *cannedNode) Get(context.Context, *pb.GetRequest) (*pb.GetResponse, error) {
	n.gets.Add(1)
	if err := n.answer(); err != nil {
		return nil, err
	}
	return &pb.GetResponse{Revision: 7}, nil
}

func (n *cannedNode) Status(context.Context, *pb.StatusRequest) (*pb.StatusResponse, error) {
	return &pb.StatusResponse{}, nil
}

// clientOf returns a client for cfg, closed when the test ends.
func clientOf(t *testing.T, cfg Config) *Client {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// putOnce writes /k through c within timeout, as an application does.
func putOnce(t *testing.T, c *Client, timeout time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, err := c.Put(ctx, []byte("/k"), []byte("v"))
	return err
}

// putsOf is how many puts each node received so far.
func putsOf(nodes ...*cannedNode) []int32 {
	out := make([]int32, len(nodes))
	for i, n := range nodes {
		out[i] = n.puts.Load()
	}
	return out
}

// A follower's hint is followed even to a leader the client was not given,
// and remembered: the next write goes to the leader directly.
func TestLeaderHintIsFollowedAndRemembered(t *testing.T) {
	leader := startCanned(t, nil)
	follower := startCanned(t, notLeaderStatus(t, "n2", leader.addr))
	c := clientOf(t, Config{Endpoints: []string{follower.addr}})
	if err := putOnce(t, c, 5*time.Second); err != nil {
		t.Fatalf("put through a follower: %v, want it applied by the hinted leader", err)
	}
	if got := putsOf(follower, leader); got[0] != 1 || got[1] != 1 {
		t.Fatalf("follower, leader received %v puts, want [1 1]", got)
	}
	if err := putOnce(t, c, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := putsOf(follower, leader); got[0] != 1 || got[1] != 2 {
		t.Fatalf("follower, leader received %v puts after a second put, want [1 2]: the leader was not remembered", got)
	}
}

// A hint that leads nowhere (no leader known, or the node naming itself)
// sends the write to the next endpoint instead of back to the same node.
func TestUselessHintsMoveToTheNextEndpoint(t *testing.T) {
	noLeader := startCanned(t, notLeaderStatus(t, "", ""))
	selfLis := loopbackListener(t)
	selfHint := notLeaderStatus(t, "n2", selfLis.Addr().String())
	self := serveCanned(t, selfLis, func() error { return selfHint })
	leader := startCanned(t, nil)
	c := clientOf(t, Config{Endpoints: []string{noLeader.addr, self.addr, leader.addr}})
	if err := putOnce(t, c, 5*time.Second); err != nil {
		t.Fatalf("put: %v", err)
	}
	if got := putsOf(noLeader, self, leader); got[0] != 1 || got[1] != 1 || got[2] != 1 {
		t.Fatalf("endpoints received %v puts, want [1 1 1]", got)
	}
}

// Two followers with stale views pointing at each other: the client keeps
// following (both answers guarantee nothing was applied) but paces itself,
// and ends with the last hint when its deadline passes.
func TestHintPingPongIsPaced(t *testing.T) {
	la, lb := loopbackListener(t), loopbackListener(t)
	toB, toA := notLeaderStatus(t, "b", lb.Addr().String()), notLeaderStatus(t, "a", la.Addr().String())
	a := serveCanned(t, la, func() error { return toB })
	b := serveCanned(t, lb, func() error { return toA })
	c := clientOf(t, Config{Endpoints: []string{a.addr}})
	// Long enough that a loaded machine completes hops before it passes (a
	// deadline that ends the first call returns DeadlineExceeded, no hint).
	const deadline = 1200 * time.Millisecond
	err := putOnce(t, c, deadline)
	// The deadline usually passes during a pause, and the put ends with the
	// last hint; on a loaded machine it may pass during a hop instead, and
	// then the honest answer is DeadlineExceeded (that hop's outcome is not
	// known).
	if status.Code(err) != codes.DeadlineExceeded {
		if hint, ok := NotLeaderHint(err); !ok || (hint.LeaderAddr != a.addr && hint.LeaderAddr != b.addr) {
			t.Fatalf("put between two stale followers: %v, want their last NotLeader answer", err)
		}
		if !NotApplied(err) {
			t.Fatalf("a NotLeader answer must count as not applied: %v", err)
		}
	}
	// Unpaced, a loopback hop costs well under a millisecond: hundreds of
	// calls. Paced, maxHintHops hops per retryBackoff.
	hops := a.puts.Load() + b.puts.Load()
	t.Logf("%d hops in %v", hops, deadline)
	if most := int32(2 * maxHintHops * (deadline/retryBackoff + 1)); hops > most || hops < maxHintHops {
		t.Fatalf("%d hops in %v; want between %d and %d (paced by retryBackoff)", hops, deadline, maxHintHops, most)
	}
}

// A removed node refuses everything: the write moves on and is applied
// once elsewhere; when every endpoint refuses, the refusal comes back at
// once, marked not applied.
func TestRemovedNodesArePassedOver(t *testing.T) {
	removed := func() error {
		return reasonStatus(t, codes.FailedPrecondition, "this node was removed from the cluster; use another member", pb.ReasonRemoved)
	}
	gone, leader := startCanned(t, removed()), startCanned(t, nil)
	c := clientOf(t, Config{Endpoints: []string{gone.addr, leader.addr}})
	if err := putOnce(t, c, 5*time.Second); err != nil {
		t.Fatalf("put with a removed node first: %v", err)
	}
	if got := putsOf(gone, leader); got[0] != 1 || got[1] != 1 {
		t.Fatalf("removed, leader received %v puts, want [1 1]", got)
	}

	other := startCanned(t, removed())
	all := clientOf(t, Config{Endpoints: []string{gone.addr, other.addr}})
	start := time.Now()
	err := putOnce(t, all, 5*time.Second)
	if !Removed(err) || !NotApplied(err) || status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("put when every node is removed: %v, want the REMOVED refusal, not applied", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("the refusal took %v: the client went round the removed nodes", took)
	}
	if got := putsOf(gone, other); got[0] != 2 || got[1] != 1 {
		t.Fatalf("removed nodes received %v puts, want [2 1]: each asked once by this client", got)
	}
}

// UNAVAILABLE with NOT_APPLIED (no leader, shutting down) moves the write
// to the next endpoint; UNAVAILABLE without it (the outcome is unknown)
// ends the write there, however available the next endpoint is.
func TestOnlyNotAppliedUnavailableMovesAWriteOn(t *testing.T) {
	leaderless := startCanned(t, reasonStatus(t, codes.Unavailable, "no leader is elected; the request was not applied, retry shortly", pb.ReasonNotApplied))
	leader := startCanned(t, nil)
	c := clientOf(t, Config{Endpoints: []string{leaderless.addr, leader.addr}})
	if err := putOnce(t, c, 5*time.Second); err != nil {
		t.Fatalf("put with a leaderless node first: %v", err)
	}
	if got := putsOf(leaderless, leader); got[0] != 1 || got[1] != 1 {
		t.Fatalf("leaderless, leader received %v puts, want [1 1]", got)
	}

	unknown := startCanned(t, status.Error(codes.Unavailable, "write outcome unknown: leadership was lost after it was proposed"))
	other := startCanned(t, nil)
	c = clientOf(t, Config{Endpoints: []string{unknown.addr, other.addr}})
	err := putOnce(t, c, 5*time.Second)
	if status.Code(err) != codes.Unavailable || NotApplied(err) {
		t.Fatalf("put whose outcome is unknown: %v (NotApplied %v), want the UNAVAILABLE back, maybe applied", err, NotApplied(err))
	}
	if got := putsOf(unknown, other); got[0] != 1 || got[1] != 0 {
		t.Fatalf("unknown, other received %v puts, want [1 0]: a write of unknown outcome was sent again", got)
	}
}

// A serializable read goes to the next endpoint only when one is
// UNAVAILABLE; any other answer is the read's.
func TestSerializableReadMovesOnOnlyWhenUnavailable(t *testing.T) {
	get := func(c *Client) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := c.Get(ctx, []byte("/k"), WithSerializable())
		return err
	}
	down := startCanned(t, status.Error(codes.Unavailable, "node is shutting down"))
	up := startCanned(t, nil)
	if err := get(clientOf(t, Config{Endpoints: []string{down.addr, up.addr}})); err != nil {
		t.Fatalf("read with an unavailable node first: %v", err)
	}
	if down.gets.Load() != 1 || up.gets.Load() != 1 {
		t.Fatalf("unavailable, up received %d, %d gets; want 1, 1", down.gets.Load(), up.gets.Load())
	}

	bad := startCanned(t, status.Error(codes.InvalidArgument, "key must start with '/'"))
	other := startCanned(t, nil)
	if err := get(clientOf(t, Config{Endpoints: []string{bad.addr, other.addr}})); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("read refused as invalid: %v, want the INVALID_ARGUMENT", err)
	}
	if other.gets.Load() != 0 {
		t.Fatalf("an invalid read was sent to another node too")
	}
}

// When no endpoint can be connected to, the error names every endpoint,
// in the configured order, each with its own DialError.
func TestUnreachableErrorNamesEveryEndpoint(t *testing.T) {
	eps := []string{refusedEndpoint(t), refusedEndpoint(t), refusedEndpoint(t)}
	c := clientOf(t, Config{Endpoints: []string{eps[0], "http://" + eps[1], "http://" + eps[2] + "/"}, DialTimeout: time.Second})
	err := putOnce(t, c, 10*time.Second)
	var ue *UnreachableError
	if !errors.As(err, &ue) {
		t.Fatalf("put with every endpoint refusing: %v, want an UnreachableError", err)
	}
	if len(ue.Tried) != len(eps) {
		t.Fatalf("tried %d endpoints, want %d: %v", len(ue.Tried), len(eps), err)
	}
	for i, d := range ue.Tried {
		if d.Endpoint != eps[i] || d.Err == nil {
			t.Errorf("tried[%d] = %q (%v), want %q with its reason", i, d.Endpoint, d.Err, eps[i])
		}
		if !strings.Contains(err.Error(), eps[i]+": ") {
			t.Errorf("error %q does not name %s", err, eps[i])
		}
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("tried %d", len(eps))) {
		t.Errorf("error %q does not say how many endpoints were tried", err)
	}
	var de *DialError
	if !errors.As(err, &de) || status.Code(err) != codes.Unavailable || !NotApplied(err) {
		t.Fatalf("%v: want it to unwrap to a DialError, be UNAVAILABLE and not applied", err)
	}
}

// One endpoint down and another answering that it has no leader is not
// "unreachable": the write waits for a leader and ends with its deadline.
func TestALeaderlessClusterIsNotUnreachable(t *testing.T) {
	leaderless := startCanned(t, reasonStatus(t, codes.Unavailable, "no leader is elected; the request was not applied, retry shortly", pb.ReasonNotApplied))
	c := clientOf(t, Config{Endpoints: []string{refusedEndpoint(t), leaderless.addr}})
	err := putOnce(t, c, 400*time.Millisecond)
	var ue *UnreachableError
	if err == nil || errors.As(err, &ue) {
		t.Fatalf("put on a leaderless cluster with a node down: %v, want a failure that is not an UnreachableError", err)
	}
	if leaderless.puts.Load() < 2 {
		t.Fatalf("the leaderless node was asked %d times; the client should keep trying until its retry timeout", leaderless.puts.Load())
	}
}

// NeverSentMarker makes a connection made outside a Client tell a call
// that never left the process (the port refuses) from one a server
// answered UNAVAILABLE; without the marker neither is known not applied.
func TestNeverSentMarkerDecidesFromTheCallNotItsText(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	putOn := func(addr string, opts ...grpc.DialOption) error {
		cc, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		_, err = pb.NewKVClient(cc).Put(ctx, &pb.PutRequest{Key: []byte("/k"), Value: []byte("v")})
		return err
	}
	refused := refusedEndpoint(t)
	err := putOn(refused, NeverSentMarker())
	if status.Code(err) != codes.Unavailable || !NotApplied(err) {
		t.Fatalf("marked put on a refused port: %v (NotApplied %v), want UNAVAILABLE, not applied", err, NotApplied(err))
	}
	if unmarked := putOn(refused); status.Convert(unmarked).Message() != status.Convert(err).Message() {
		t.Errorf("the marker changed the status: %q, unmarked %q", status.Convert(err).Message(), status.Convert(unmarked).Message())
	} else if NotApplied(unmarked) {
		t.Errorf("an unmarked call's UNAVAILABLE counts as not applied: %v", unmarked)
	}

	// The same text from a server: the request was sent.
	answering := startCanned(t, status.Error(codes.Unavailable, status.Convert(err).Message()))
	err = putOn(answering.addr, NeverSentMarker())
	var ns *neverSentError
	if status.Code(err) != codes.Unavailable || NotApplied(err) || errors.As(err, &ns) {
		t.Fatalf("a server's UNAVAILABLE: %v (NotApplied %v), want it maybe applied", err, NotApplied(err))
	}
	if answering.puts.Load() != 1 {
		t.Fatalf("the server received %d puts, want 1", answering.puts.Load())
	}
}

// The classification functions read codes and details only, and only in
// the combinations a node sends.
func TestClassificationOfStatuses(t *testing.T) {
	notLeader := notLeaderStatus(t, "n2", "127.0.0.1:7102")
	hintUnderWrongCode, err := status.New(codes.Unavailable, "x").WithDetails(&pb.NotLeader{LeaderAddr: "127.0.0.1:7102"})
	if err != nil {
		t.Fatal(err)
	}
	removed := reasonStatus(t, codes.FailedPrecondition, "removed", pb.ReasonRemoved)
	notApplied := reasonStatus(t, codes.Unavailable, "no leader", pb.ReasonNotApplied)
	dial := &DialError{Endpoint: "127.0.0.1:1", Err: errors.New("connection refused")}
	for _, tc := range []struct {
		name                             string
		err                              error
		hint, removed, refused, notAppld bool
	}{
		{"NotLeader", notLeader, true, false, false, true},
		{"NotLeader wrapped", fmt.Errorf("put /k: %w", notLeader), true, false, false, true},
		{"NotLeader detail under UNAVAILABLE", hintUnderWrongCode.Err(), false, false, false, false},
		{"REMOVED", removed, false, true, true, true},
		{"REMOVED reason under UNAVAILABLE", reasonStatus(t, codes.Unavailable, "x", pb.ReasonRemoved), false, false, false, false},
		{"FAILED_PRECONDITION without details (quorum at risk)", status.Error(codes.FailedPrecondition, "the change would leave the cluster unable to commit"), false, false, false, false},
		{"NOT_APPLIED", notApplied, false, false, false, true},
		{"DATA_LOSS", status.Error(codes.DataLoss, "damaged"), false, false, true, false},
		{"DialError", dial, false, false, false, true},
		{"UnreachableError", &UnreachableError{Tried: []*DialError{dial}}, false, false, false, true},
		{"never sent", &neverSentError{err: status.Error(codes.Unavailable, "connection refused")}, false, false, false, true},
		{"DEADLINE_EXCEEDED", status.Error(codes.DeadlineExceeded, "not applied"), false, false, false, false},
		{"context deadline", context.DeadlineExceeded, false, false, false, false},
		{"plain error", errors.New("NOT_APPLIED REMOVED"), false, false, false, false},
		{"nil", nil, false, false, false, false},
	} {
		_, hint := NotLeaderHint(tc.err)
		if hint != tc.hint || Removed(tc.err) != tc.removed || refusedBy(tc.err) != tc.refused || NotApplied(tc.err) != tc.notAppld {
			t.Errorf("%s: hint %v removed %v refusedBy %v NotApplied %v; want %v %v %v %v", tc.name,
				hint, Removed(tc.err), refusedBy(tc.err), NotApplied(tc.err), tc.hint, tc.removed, tc.refused, tc.notAppld)
		}
	}
	if hint, _ := NotLeaderHint(notLeader); hint.LeaderId != "n2" || hint.LeaderAddr != "127.0.0.1:7102" {
		t.Errorf("NotLeaderHint = %v, want n2 at 127.0.0.1:7102", hint)
	}
}

// With no leader anywhere, a write goes round every endpoint, pausing
// retryBackoff after each round, until its deadline.
func TestLeaderlessRotationVisitsEveryEndpointPaced(t *testing.T) {
	noLeader := reasonStatus(t, codes.Unavailable, "no leader is elected; the request was not applied, retry shortly", pb.ReasonNotApplied)
	nodes := []*cannedNode{startCanned(t, noLeader), startCanned(t, noLeader), startCanned(t, noLeader)}
	c := clientOf(t, Config{Endpoints: []string{nodes[0].addr, nodes[1].addr, nodes[2].addr}})
	// Long enough that a loaded machine completes hops before it passes (a
	// deadline that ends the first call returns DeadlineExceeded, no hint).
	const deadline = 1200 * time.Millisecond
	err := putOnce(t, c, deadline)
	if !NotApplied(err) && status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("put on a leaderless cluster: %v, want its last NOT_APPLIED answer or the deadline", err)
	}
	got := putsOf(nodes...)
	t.Logf("puts per node in %v: %v", deadline, got)
	total := int32(0)
	for i, n := range got {
		if n < 2 {
			t.Errorf("node %d was asked %d times; the rotation should reach every endpoint round after round", i, n)
		}
		total += n
	}
	if most := int32(len(nodes)) * int32(deadline/retryBackoff+2); total > most {
		t.Errorf("%d puts in %v, want at most %d: one round per retryBackoff", total, deadline, most)
	}
}

// A request whose own deadline passes while it waits for a connection
// ends with DEADLINE_EXCEEDED, not with the endpoint declared unreachable.
func TestTheRequestsDeadlineEndsAWaitForAConnection(t *testing.T) {
	c := clientOf(t, Config{Endpoints: []string{hungEndpoint(t)}, DialTimeout: 10 * time.Second})
	start := time.Now()
	err := putOnce(t, c, 300*time.Millisecond)
	var ue *UnreachableError
	if status.Code(err) != codes.DeadlineExceeded || errors.As(err, &ue) {
		t.Fatalf("put with a short deadline on a hung endpoint: %v, want DEADLINE_EXCEEDED", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the put took %v: it waited for the dial timeout, not its deadline", took)
	}
}

// A remembered leader that has since lost leadership answers with a hint:
// the write follows it, and the new leader is remembered instead.
func TestAStaleLeaderGuessIsCorrectedByItsHint(t *testing.T) {
	newLeader := startCanned(t, nil)
	var answer atomic.Pointer[error] // nil: the old node is still leader
	old := serveCanned(t, loopbackListener(t), func() error {
		if p := answer.Load(); p != nil {
			return *p
		}
		return nil
	})
	c := clientOf(t, Config{Endpoints: []string{old.addr}})
	if err := putOnce(t, c, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	hint := notLeaderStatus(t, "n2", newLeader.addr)
	answer.Store(&hint)
	for i := range 2 {
		if err := putOnce(t, c, 5*time.Second); err != nil {
			t.Fatalf("put %d after the leader changed: %v", i, err)
		}
	}
	if got := putsOf(old, newLeader); got[0] != 2 || got[1] != 2 {
		t.Fatalf("old, new leader received %v puts, want [2 2]: one hop through the old leader, then the new one directly", got)
	}
}
