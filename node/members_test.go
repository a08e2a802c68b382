package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"

	pb "github.com/raftwatch/raftwatch/proto"
)

func TestMemberInputChecks(t *testing.T) {
	ids := []struct {
		id string
		ok bool
	}{
		{"n4", true},
		{"db-1.eu_west", true},
		{"", false},
		{"n 4", false},
		{"n/4", false},
		{string(make([]byte, maxMemberIDLen+1)), false},
	}
	for _, tc := range ids {
		if err := checkMemberID(tc.id); (err == nil) != tc.ok || err != nil && !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("checkMemberID(%q) = %v, want ok=%v", tc.id, err, tc.ok)
		}
	}
	addrs := []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:7001", true},
		{"node4.example:7001", true},
		{"[::1]:7001", true},
		{"not-an-addr", false},
		{"127.0.0.1", false},
		{":7001", false},
		{"127.0.0.1:http", false},
		{"127.0.0.1:0", false},
		{"127.0.0.1:65536", false},
		{"0.0.0.0:7001", false},
		{"[::]:7001", false},
		{"", false},
	}
	for _, tc := range addrs {
		if err := checkAddr("raft address", tc.addr); (err == nil) != tc.ok || err != nil && !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("checkAddr(%q) = %v, want ok=%v", tc.addr, err, tc.ok)
		}
	}
}

// A follower whose heartbeats fail counts unreachable once the leader has
// not heard from it for the window, and reachable again when they resume
// or a new leader takes over.
func TestContactsFollowHeartbeatObservations(t *testing.T) {
	var c contacts
	const window = time.Second
	if !c.reachable("n2", window) {
		t.Fatal("a follower never reported failing counts unreachable")
	}
	c.note(raft.FailedHeartbeatObservation{PeerID: "n2", LastContact: time.Now()})
	if !c.reachable("n2", window) {
		t.Fatal("a follower heard from just now counts unreachable")
	}
	c.note(raft.FailedHeartbeatObservation{PeerID: "n2", LastContact: time.Now().Add(-2 * window)})
	if c.reachable("n2", window) || !c.reachable("n3", window) {
		t.Fatal("want n2 unreachable, n3 reachable")
	}
	c.note(raft.ResumedHeartbeatObservation{PeerID: "n2"})
	if !c.reachable("n2", window) {
		t.Fatal("resumed heartbeats leave n2 unreachable")
	}
	c.note(raft.FailedHeartbeatObservation{PeerID: "n2", LastContact: time.Now().Add(-2 * window)})
	c.note(raft.LeaderObservation{LeaderID: "n3"})
	if !c.reachable("n2", window) {
		t.Fatal("a new leader inherits the old one's failures")
	}
}

// An unhealthy leader refuses membership changes at once, as it refuses
// writes, instead of proposing them in the moments before it hands over
// leadership (here it has no one to hand over to).
func TestMembershipChangesRefusedOnUnhealthyLeader(t *testing.T) {
	n := openSingle(t, t.TempDir(), freeAddr(t))
	defer n.Close()
	n.markLogDamaged(&LogCorruptError{Index: 1, Path: "raft.db", Detail: "test"})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := n.AddVoter(ctx, "n2", freeAddr(t), freeAddr(t), true, nil); !errors.Is(err, ErrNotApplied) || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("AddVoter on an unhealthy leader: %v, want ErrNotApplied saying the data is damaged", err)
	}
	if _, err := n.RemoveServer(ctx, "n1", true); !errors.Is(err, ErrNotApplied) || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("RemoveServer on an unhealthy leader: %v, want ErrNotApplied saying the data is damaged", err)
	}
	if servers := n.raft.GetConfiguration().Configuration().Servers; len(servers) != 1 || servers[0].ID != "n1" {
		t.Fatalf("configuration after refused changes: %v, want only n1", servers)
	}
}

// caughtUpMember answers Cluster.Status as member id having applied
// everything leader has committed: a new member that has caught up.
type caughtUpMember struct {
	pb.UnimplementedClusterServer
	id     string
	leader *Node
}

func (m caughtUpMember) Status(context.Context, *pb.StatusRequest) (*pb.StatusResponse, error) {
	return &pb.StatusResponse{Id: m.id, Role: "follower", Healthy: true, AppliedIndex: m.leader.raft.CommitIndex()}, nil
}

// serveCaughtUpMember serves caughtUpMember on a free port until t ends
// and returns its address.
func serveCaughtUpMember(t *testing.T, id string, leader *Node) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	pb.RegisterClusterServer(s, caughtUpMember{id: id, leader: leader})
	go s.Serve(l)
	t.Cleanup(s.Stop)
	return l.Addr().String()
}

// A promotion that would leave fewer than a majority of voters reachable
// is refused (ErrQuorumAtRisk), the member staying a non-voter, and done
// with force. Adding a caught-up member can only lose quorum when the
// leader already cannot reach a majority, so the leader of three is made
// to see two followers' heartbeats fail for a minute (the observations
// raft reports, fed as raft would), while raft itself still commits.
func TestQuorumLosingPromotionIsRefusedUnlessForced(t *testing.T) {
	ms := openCluster(t, 3)
	var leader *testMember
	waitFor(t, "a ready leader", 10*time.Second, func() bool { leader = leaderOf(ms); return leader != nil })
	var followers []raft.ServerID
	for _, m := range ms {
		if m != leader {
			followers = append(followers, raft.ServerID(m.id))
			leader.n.contacts.note(raft.FailedHeartbeatObservation{PeerID: raft.ServerID(m.id), LastContact: time.Now().Add(-time.Minute)})
		}
	}
	clientAddr := serveCaughtUpMember(t, "n4", leader.n)
	raftAddr := freeAddr(t)

	_, err := leader.n.AddVoter(ctxFor(t, 10*time.Second), "n4", raftAddr, clientAddr, false, nil)
	want := fmt.Sprintf("promoting n4 would leave 2 of 4 voters reachable, 3 needed to commit (unreachable: %s, %s)", followers[0], followers[1])
	if !errors.Is(err, ErrQuorumAtRisk) || !strings.Contains(err.Error(), want) {
		t.Fatalf("promotion with two of three voters unreachable: %v, want ErrQuorumAtRisk saying %q", err, want)
	}
	if s, ok := serverIn(leader.n, "n4"); !ok || s.Suffrage != raft.Nonvoter {
		t.Fatalf("after a refused promotion n4 is %+v (present %v), want a non-voter", s, ok)
	}

	if _, err := leader.n.AddVoter(ctxFor(t, 10*time.Second), "n4", raftAddr, clientAddr, true, nil); err != nil {
		t.Fatalf("forced promotion: %v", err)
	}
	if s, ok := serverIn(leader.n, "n4"); !ok || s.Suffrage != raft.Voter {
		t.Fatalf("after a forced promotion n4 is %+v (present %v), want a voter", s, ok)
	}
}

// serverIn returns member id of n's latest configuration.
func serverIn(n *Node, id string) (raft.Server, bool) {
	for _, s := range n.raft.GetConfiguration().Configuration().Servers {
		if string(s.ID) == id {
			return s, true
		}
	}
	return raft.Server{}, false
}
