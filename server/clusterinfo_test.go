package server

import (
	"testing"
	"time"

	pb "github.com/raftwatch/raftwatch/proto"
)

// TestStatusAndMembersOfASingleNode: Cluster.Status and Cluster.Members
// report what the node knows, each field from its own source: a
// one-node cluster is its own ready, healthy leader, and its indexes have
// reached the revision of a write it acknowledged.
func TestStatusAndMembersOfASingleNode(t *testing.T) {
	e := startEdgeNode(t, nil)
	ctx := edgeCtx(t)
	put, err := e.kv.Put(ctx, &pb.PutRequest{Key: []byte("/info"), Value: []byte("v")})
	if err != nil {
		t.Fatal(err)
	}
	cluster := pb.NewClusterClient(e.conn)

	// The node records its own client address in the replicated state
	// shortly after it leads, checks readiness every 100 ms and scrubs its
	// state machine and raft log once at start: wait for all three.
	var st *pb.StatusResponse
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if st, err = cluster.Status(ctx, &pb.StatusRequest{}); err != nil {
			t.Fatal(err)
		}
		if st.LeaderAddr != "" && st.Ready && st.ScrubPasses > 0 && st.LogScrubPasses > 0 || time.Now().After(deadline) {
			break
		}
		<-tick.C
	}
	if st.Id != "n1" || st.Role != "leader" || st.LeaderId != "n1" || st.LeaderAddr != e.addr || st.ClientAddr != e.addr {
		t.Errorf("status names %q role %q leader %q at %q, client addr %q; want n1, leader, n1 at %s twice",
			st.Id, st.Role, st.LeaderId, st.LeaderAddr, st.ClientAddr, e.addr)
	}
	if !st.Ready || st.NotReadyReason != "" || !st.Healthy || st.UnhealthyReason != "" {
		t.Errorf("status ready %v (%q), healthy %v (%q); want a ready, healthy node", st.Ready, st.NotReadyReason, st.Healthy, st.UnhealthyReason)
	}
	if st.Term < 1 || st.AppliedIndex < put.Revision || st.FsmIndex < put.Revision ||
		st.CommitIndex < st.AppliedIndex || st.LastLogIndex < st.CommitIndex {
		t.Errorf("status term %d, last log %d, commit %d, applied %d, fsm %d after a write at revision %d; "+
			"want term >= 1 and last log >= commit >= applied, fsm >= the write",
			st.Term, st.LastLogIndex, st.CommitIndex, st.AppliedIndex, st.FsmIndex, put.Revision)
	}
	if st.ScrubPasses == 0 || st.ScrubLastPassUnixMs == 0 || st.LogScrubPasses == 0 || st.LogScrubLastPassUnixMs == 0 ||
		st.LogScrubLastPassEntries == 0 || st.ScrubMismatches != 0 || st.LogScrubMismatches != 0 {
		t.Errorf("status scrub: state %d passes (last %d ms, %d mismatches), log %d passes (last %d ms, %d entries, %d mismatches); "+
			"want a clean pass of each since the start", st.ScrubPasses, st.ScrubLastPassUnixMs, st.ScrubMismatches,
			st.LogScrubPasses, st.LogScrubLastPassUnixMs, st.LogScrubLastPassEntries, st.LogScrubMismatches)
	}
	if st.StateDbBytes <= 0 || st.RaftDbBytes <= 0 {
		t.Errorf("status state db %d bytes, raft db %d bytes; want both files measured", st.StateDbBytes, st.RaftDbBytes)
	}

	ms, err := cluster.Members(ctx, &pb.MembersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ms.Members) != 1 {
		t.Fatalf("members %v, want n1 alone", ms.Members)
	}
	m := ms.Members[0]
	if m.Id != "n1" || m.RaftAddr != e.raftAddr || m.ClientAddr != e.addr || !m.Voter || !m.Leader || m.Reachable == nil || !*m.Reachable {
		t.Errorf("member %v; want n1, voter, leader, reachable, at raft %s and client %s", m, e.raftAddr, e.addr)
	}
}
