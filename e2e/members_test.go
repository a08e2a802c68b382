package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftwatch/raftwatch/client"
	pb "github.com/raftwatch/raftwatch/proto"
)

// members returns p's view of the configuration, by id.
func (c *testCluster) members(p *proc) map[string]*pb.Member {
	c.t.Helper()
	r, err := pb.NewClusterClient(c.conn(p)).Members(ctxT(c.t, 5*time.Second), &pb.MembersRequest{})
	if err != nil {
		c.t.Fatalf("members on %s: %v", p.id, err)
	}
	out := map[string]*pb.Member{}
	for _, m := range r.Members {
		out[m.Id] = m
	}
	return out
}

// newProc describes a node that is not started: a fourth member to add.
func (c *testCluster) newProc(id string) *proc {
	ports := freePorts(c.t, 2)
	p := &proc{id: id, raftAddr: ports[0], clientAddr: ports[1]}
	p.dataDir = filepath.Join(c.t.TempDir(), id)
	p.logPath = p.dataDir + ".log"
	return p
}

// startJoiner starts p with no --initial-cluster: it waits to be added.
func (c *testCluster) startJoiner(p *proc) {
	c.t.Helper()
	saved := c.initial
	c.initial = ""
	c.start(p)
	c.initial = saved
	c.nodes = append(c.nodes, p)
}

func wantCode(t *testing.T, what string, err error, code codes.Code, msgHas string) {
	t.Helper()
	st := status.Convert(err)
	if err == nil || st.Code() != code || !strings.Contains(st.Message(), msgHas) {
		t.Fatalf("%s: got %v, want %v mentioning %q", what, err, code, msgHas)
	}
}

// A membership change with a malformed or already used id or address is
// refused with a clear error and leaves the configuration alone.
func TestAddVoterRejectsBadInputAndChangesNothing(t *testing.T) {
	c := startCluster(t)
	leader := c.waitLeader()
	before := c.members(leader)
	n2 := c.nodes[1]
	free := freePorts(t, 2)
	cases := []struct {
		name string
		req  *pb.AddVoterRequest
		code codes.Code
		msg  string
	}{
		{"a raft address without a port (the issue's repro)", &pb.AddVoterRequest{Id: "bogus", RaftAddr: "not-an-addr", ClientAddr: free[1]}, codes.InvalidArgument, "not-an-addr"},
		{"a port that is not a number", &pb.AddVoterRequest{Id: "n4", RaftAddr: "127.0.0.1:http", ClientAddr: free[1]}, codes.InvalidArgument, "port"},
		{"a port out of range", &pb.AddVoterRequest{Id: "n4", RaftAddr: "127.0.0.1:70000", ClientAddr: free[1]}, codes.InvalidArgument, "port"},
		{"an address no other node can reach", &pb.AddVoterRequest{Id: "n4", RaftAddr: "0.0.0.0:7001", ClientAddr: free[1]}, codes.InvalidArgument, "0.0.0.0"},
		{"no client address", &pb.AddVoterRequest{Id: "n4", RaftAddr: free[0]}, codes.InvalidArgument, "client address"},
		{"a bad client address", &pb.AddVoterRequest{Id: "n4", RaftAddr: free[0], ClientAddr: "localhost"}, codes.InvalidArgument, "localhost"},
		{"no id", &pb.AddVoterRequest{RaftAddr: free[0], ClientAddr: free[1]}, codes.InvalidArgument, "id"},
		{"an id with a space", &pb.AddVoterRequest{Id: "n 4", RaftAddr: free[0], ClientAddr: free[1]}, codes.InvalidArgument, "n 4"},
		{"an id of another member", &pb.AddVoterRequest{Id: n2.id, RaftAddr: free[0], ClientAddr: free[1]}, codes.AlreadyExists, n2.id},
		{"the raft address of another member", &pb.AddVoterRequest{Id: "n4", RaftAddr: n2.raftAddr, ClientAddr: free[1]}, codes.AlreadyExists, n2.raftAddr},
		{"the client address of another member", &pb.AddVoterRequest{Id: "n4", RaftAddr: free[0], ClientAddr: n2.clientAddr}, codes.AlreadyExists, n2.clientAddr},
		{"an existing voter again", &pb.AddVoterRequest{Id: n2.id, RaftAddr: n2.raftAddr, ClientAddr: n2.clientAddr}, codes.AlreadyExists, "already a voter"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := pb.NewClusterClient(c.conn(leader)).AddVoter(ctxT(t, 10*time.Second), tc.req)
			wantCode(t, "AddVoter", err, tc.code, tc.msg)
			after := c.members(leader)
			if len(after) != len(before) {
				t.Fatalf("membership changed: %v, was %v", after, before)
			}
			for id, m := range before {
				if a := after[id]; a == nil || a.Voter != m.Voter || a.RaftAddr != m.RaftAddr {
					t.Fatalf("member %s changed: %v, was %v", id, a, m)
				}
			}
		})
	}
	t.Run("removing an unknown id is NOT_FOUND", func(t *testing.T) {
		_, err := pb.NewClusterClient(c.conn(leader)).RemoveServer(ctxT(t, 10*time.Second), &pb.RemoveServerRequest{Id: "nosuch"})
		wantCode(t, "RemoveServer", err, codes.NotFound, "nosuch")
		if after := c.members(leader); len(after) != len(before) {
			t.Fatalf("membership changed: %v", after)
		}
	})
}

// A new member joins as a non-voter, and is promoted only once it has
// caught up: a member that is slow to start stays a non-voter meanwhile,
// and `member add` reports its progress.
func TestAddedMemberIsPromotedOnlyAfterCatchingUp(t *testing.T) {
	c := startCluster(t)
	cl := c.client()
	for i := 0; i < 20; i++ {
		if _, err := cl.Put(ctxT(t, 10*time.Second), []byte("/before"), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	n4 := c.newProc("n4")
	var stdout, stderr bytes.Buffer
	add := exec.Command(binary, "member", "add", n4.id, n4.raftAddr, n4.clientAddr, "--timeout", "60s",
		"--endpoints", strings.Join(c.endpoints(), ","))
	add.Stdout, add.Stderr = &stdout, &stderr
	if err := add.Start(); err != nil {
		t.Fatal(err)
	}
	var addErr error
	added := make(chan struct{})
	go func() { addErr = add.Wait(); close(added) }()
	t.Cleanup(func() { add.Process.Kill(); <-added })

	// n4 is not running yet: it is in the configuration, as a non-voter.
	leader := c.waitLeader()
	eventually(t, 15*time.Second, "n4 listed as a non-voter", func() bool {
		m := c.members(leader)[n4.id]
		if m != nil && m.Voter {
			t.Fatalf("n4 became a voter before it was even started: %v", m)
		}
		return m != nil
	})
	select {
	case <-added:
		t.Fatalf("member add returned before n4 was started: %v\n%s%s", addErr, stdout.String(), stderr.String())
	default:
	}
	c.startJoiner(n4)
	select {
	case <-added:
		if addErr != nil {
			t.Fatalf("member add: %v\nstdout: %s\nstderr: %s", addErr, stdout.String(), stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("member add did not return\nstdout: %s\nstderr: %s", stdout.String(), stderr.String())
	}
	if !strings.Contains(stderr.String(), "catching up: applied") || !strings.Contains(stdout.String(), "promoted n4") {
		t.Fatalf("member add did not report progress and promotion:\nstdout: %s\nstderr: %s", stdout.String(), stderr.String())
	}
	if m := c.members(leader)[n4.id]; m == nil || !m.Voter || m.ClientAddr != n4.clientAddr {
		t.Fatalf("after member add: %v, want a voter with its client address", m)
	}
	// The promoted member holds what was written before it joined.
	r, err := pb.NewKVClient(c.conn(n4)).Get(ctxT(t, 5*time.Second), &pb.GetRequest{Key: []byte("/before"), Consistency: pb.Consistency_SERIALIZABLE})
	if err != nil || !bytes.Equal(r.Kv.GetValue(), []byte{19}) {
		t.Fatalf("n4 get /before: %v %v", r, err)
	}
}

// The repro: a member added at an address where nothing runs used
// to become a voter at once, so one more node failure cost the quorum. Now
// it never becomes a voter, and the cluster survives a node failure.
func TestGhostMemberCannotCostAvailability(t *testing.T) {
	c := startCluster(t)
	leader := c.waitLeader()
	ghost := freePorts(t, 2) // nothing listens there
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	_, err := pb.NewClusterClient(c.conn(leader)).AddVoter(ctx, &pb.AddVoterRequest{Id: "ghost", RaftAddr: ghost[0], ClientAddr: ghost[1]})
	wantCode(t, "AddVoter of a member that is not running", err, codes.DeadlineExceeded, "left as a non-voter")
	if m := c.members(leader)["ghost"]; m == nil || m.Voter {
		t.Fatalf("ghost: %v, want a non-voter", m)
	}

	f := c.followers()[0]
	c.kill(f)
	cl := c.client()
	if _, err := cl.Put(ctxT(t, 15*time.Second), []byte("/k"), []byte("still writable")); err != nil {
		t.Fatalf("put with one of three voters down and a ghost non-voter: %v", err)
	}
	// The non-voter can be removed without force: it counts toward no quorum.
	if _, err := cl.RemoveServer(ctxT(t, 10*time.Second), "ghost"); err != nil {
		t.Fatalf("remove ghost: %v", err)
	}
}

// A removal that would leave fewer reachable voters than a quorum is
// refused, naming the counts, unless forced.
func TestQuorumLosingRemovalIsRefusedUnlessForced(t *testing.T) {
	c := startCluster(t)
	leader := c.waitLeader()
	fs := c.followers()
	down, live := fs[0], fs[1]
	c.kill(down)
	eventually(t, 15*time.Second, "the leader to report "+down.id+" unreachable", func() bool {
		m := c.members(leader)
		return m[down.id].Reachable != nil && !*m[down.id].Reachable && m[live.id].GetReachable()
	})
	cc := pb.NewClusterClient(c.conn(leader))
	_, err := cc.RemoveServer(ctxT(t, 10*time.Second), &pb.RemoveServerRequest{Id: live.id})
	wantCode(t, "removing a live voter while another is down", err, codes.FailedPrecondition, "1 of 2 voters reachable, 2 needed")
	if len(c.members(leader)) != 3 {
		t.Fatalf("membership changed: %v", c.members(leader))
	}
	out, errOut, code := cli(t, "member", "remove", live.id, "--endpoints", leader.clientAddr)
	if code == 0 || !strings.Contains(errOut, "--force") {
		t.Fatalf("member remove without --force: exit %d %q %q, want a refusal suggesting --force", code, out, errOut)
	}
	// Forced, the removal is made; it commits once the down voter is back,
	// as the new configuration needs it. The removed node sees its removal
	// as soon as the leader has appended it.
	forced := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := cc.RemoveServer(ctx, &pb.RemoveServerRequest{Id: live.id, Force: true})
		forced <- err
	}()
	eventually(t, 15*time.Second, live.id+" to see itself removed", func() bool {
		st, err := c.status(live)
		return err == nil && st.Role == "removed"
	})
	c.start(down)
	if err := <-forced; status.Code(err) == codes.FailedPrecondition {
		t.Fatalf("forced removal refused: %v", err)
	}
	eventually(t, 20*time.Second, "the cluster to commit the forced removal", func() bool {
		for _, p := range []*proc{leader, down} {
			st, err := c.status(p)
			if err != nil || st.Role != "leader" {
				continue
			}
			m := c.members(p)
			return len(m) == 2 && m[live.id] == nil
		}
		return false
	})
}

// A removed node stops serving: its watchers are canceled with "removed
// from the cluster", reads are refused, its status says so, and a client
// moves its watch to another endpoint, or ends it when it has none.
func TestRemovedNodeStopsServing(t *testing.T) {
	c := startCluster(t)
	leader := c.waitLeader()
	gone, other := c.followers()[0], c.followers()[1]

	raw := createRaw(t, rawStream(t, gone), &pb.WatchCreate{Key: []byte("/w/"), Prefix: true, RequestId: 1})
	only := c.client(gone.clientAddr)
	alone, err := only.Watch(ctxT(t, time.Minute), []byte("/w/"), client.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	both := c.client(gone.clientAddr, other.clientAddr)
	moving, err := both.Watch(ctxT(t, time.Minute), []byte("/w/"), client.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	movingEvents := collect(moving)
	cliEvents, cliCmd := cliWatch(t, "--prefix", "/w/", "--endpoints", gone.clientAddr)
	select {
	case ev := <-cliEvents:
		if ev.Type != "CREATED" {
			t.Fatalf("CLI watch printed %+v first, want CREATED", ev)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("CLI watch printed no CREATED within 30s")
	}
	// Every watcher is attached and delivering before the removal.
	r0, err := c.client(leader.clientAddr).Put(ctxT(t, 10*time.Second), []byte("/w/0"), []byte("before"))
	if err != nil {
		t.Fatal(err)
	}
	if ev := nextRawData(t, raw); ev.Revision != r0.Revision {
		t.Fatalf("raw watcher got %v, want the put at %d", ev, r0.Revision)
	}
	for {
		ev, err := alone.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type == pb.EventType_PUT && ev.Revision == r0.Revision {
			break
		}
	}
	if ev := nextData(t, movingEvents, 10*time.Second); ev.Revision != r0.Revision {
		t.Fatalf("watch got %v, want the put at %d", ev, r0.Revision)
	}
	if ev := nextCLIData(t, cliEvents, 10*time.Second); ev.Revision != r0.Revision {
		t.Fatalf("CLI watch got %+v, want the put at %d", ev, r0.Revision)
	}

	if _, err := pb.NewClusterClient(c.conn(leader)).RemoveServer(ctxT(t, 10*time.Second), &pb.RemoveServerRequest{Id: gone.id}); err != nil {
		t.Fatalf("remove %s: %v", gone.id, err)
	}

	ev := nextRawData(t, raw)
	if ev.Type != pb.EventType_CANCELED || codes.Code(ev.Code) != codes.FailedPrecondition || !strings.Contains(ev.Reason, "removed from the cluster") {
		t.Fatalf("raw watcher on the removed node got %v, want CANCELED FAILED_PRECONDITION removed from the cluster", ev)
	}
	for {
		_, err := alone.Recv()
		if err == nil {
			continue // PROGRESS before the end
		}
		wantCode(t, "a watch whose only endpoint was removed", err, codes.FailedPrecondition, "removed from the cluster")
		break
	}
	for ev := range cliEvents {
		if ev.Type == "PUT" || ev.Type == "DELETE" {
			t.Fatalf("CLI watch got %+v from a removed node", ev)
		}
	}
	if err := cliCmd.Wait(); err == nil {
		t.Fatal("CLI watch on the removed node exited 0")
	}

	_, err = pb.NewKVClient(c.conn(gone)).Get(ctxT(t, 5*time.Second), &pb.GetRequest{Key: []byte("/w/a"), Consistency: pb.Consistency_SERIALIZABLE})
	wantCode(t, "serializable get on the removed node", err, codes.FailedPrecondition, "removed from the cluster")
	if st, err := c.status(gone); err != nil || st.Role != "removed" {
		t.Fatalf("status of the removed node: %v %v, want role removed", st, err)
	}

	// The client with another endpoint moved its watch there.
	r, err := c.client(leader.clientAddr).Put(ctxT(t, 10*time.Second), []byte("/w/a"), []byte("after removal"))
	if err != nil {
		t.Fatal(err)
	}
	if ev := nextData(t, movingEvents, 20*time.Second); ev.Revision != r.Revision || string(ev.Value) != "after removal" {
		t.Fatalf("moved watch got %v, want the put at %d", ev, r.Revision)
	}
	// And serializable reads through it skip the removed node.
	if g, err := both.Get(ctxT(t, 10*time.Second), []byte("/w/0"), client.WithSerializable()); err != nil || string(g.Kv.GetValue()) != "before" {
		t.Fatalf("serializable get through a client listing the removed node first: %v %v", g, err)
	}
}

// A removed node whose data directory was not wiped reports role
// "removed": adding it again fails at once, saying what to do, instead of
// waiting out the deadline for a node that will never catch up.
func TestReAddingRemovedNodeFailsFast(t *testing.T) {
	c := startCluster(t)
	leader := c.waitLeader()
	gone := c.followers()[0]
	if _, err := pb.NewClusterClient(c.conn(leader)).RemoveServer(ctxT(t, 10*time.Second), &pb.RemoveServerRequest{Id: gone.id}); err != nil {
		t.Fatalf("remove %s: %v", gone.id, err)
	}
	eventually(t, 15*time.Second, gone.id+" reports role removed and wrote the REMOVED marker", func() bool {
		st, err := c.status(gone)
		_, serr := os.Stat(filepath.Join(gone.dataDir, "REMOVED"))
		return err == nil && st.Role == "removed" && serr == nil
	})
	start := time.Now()
	_, err := pb.NewClusterClient(c.conn(leader)).AddVoter(ctxT(t, 60*time.Second),
		&pb.AddVoterRequest{Id: gone.id, RaftAddr: gone.raftAddr, ClientAddr: gone.clientAddr})
	if took := time.Since(start); took > 20*time.Second {
		t.Fatalf("adding the removed node back took %v (%v), want a quick refusal", took, err)
	}
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "wipe its data directory") {
		t.Fatalf("adding the removed node back: %v, want FAILED_PRECONDITION saying to wipe its data directory", err)
	}
	if m := c.members(leader)[gone.id]; m == nil || m.Voter {
		t.Fatalf("%s after the refused add: %v, want a non-voter", gone.id, m)
	}
}

// A leader removing itself gets the removal's index back (raft commits the
// entry before it shuts down), then reports role removed; the others go on.
func TestLeaderRemovingItselfAnswersAndStops(t *testing.T) {
	c := startCluster(t)
	leader := c.waitLeader()
	r, err := pb.NewClusterClient(c.conn(leader)).RemoveServer(ctxT(t, 10*time.Second), &pb.RemoveServerRequest{Id: leader.id})
	if err != nil || r.Index == 0 {
		t.Fatalf("leader %s removing itself: %v %v, want the entry's index", leader.id, r, err)
	}
	eventually(t, 15*time.Second, leader.id+" reports role removed and wrote the REMOVED marker", func() bool {
		st, err := c.status(leader)
		_, serr := os.Stat(filepath.Join(leader.dataDir, "REMOVED"))
		return err == nil && st.Role == "removed" && serr == nil
	})
	next := c.waitLeader()
	if next == leader {
		t.Fatal("the removed node leads")
	}
	if _, err := c.client(next.clientAddr).Put(ctxT(t, 10*time.Second), []byte("/after"), []byte("x")); err != nil {
		t.Fatalf("put after the leader removed itself: %v", err)
	}
	if _, ok := c.members(next)[leader.id]; ok {
		t.Fatalf("%s still listed after removing itself", leader.id)
	}
}
