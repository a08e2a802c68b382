package node

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
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
