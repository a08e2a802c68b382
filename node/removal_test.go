package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// testMember is one in-process node of a test cluster; no gRPC server
// runs, so no member can confirm another's removal: what these tests see
// comes from each node's own log.
type testMember struct {
	id, dir, raftAddr, clientAddr string
	n                             *Node
	// configure, when set, adjusts the member's configuration at open.
	configure func(*Config)
}

// openCluster starts size in-process nodes bootstrapped together.
func openCluster(t *testing.T, size int) []*testMember {
	t.Helper()
	return openClusterWith(t, size, nil)
}

// openClusterWith is openCluster with configure adjusting each member's
// configuration (nil: none).
func openClusterWith(t *testing.T, size int, configure func(*Config)) []*testMember {
	t.Helper()
	initial := map[string]string{}
	var ms []*testMember
	for i := 1; i <= size; i++ {
		m := &testMember{id: fmt.Sprintf("n%d", i), dir: t.TempDir(), raftAddr: freeAddr(t), clientAddr: freeAddr(t),
			configure: configure}
		initial[m.id] = m.raftAddr
		ms = append(ms, m)
	}
	for _, m := range ms {
		m.open(t, initial)
	}
	t.Cleanup(func() {
		for _, m := range ms {
			if m.n != nil {
				m.n.Close()
			}
		}
	})
	return ms
}

func (m *testMember) open(t *testing.T, initial map[string]string) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.ID, cfg.DataDir, cfg.RaftAddr, cfg.ClientAddr = m.id, m.dir, m.raftAddr, m.clientAddr
	cfg.InitialCluster = initial
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if m.configure != nil {
		m.configure(&cfg)
	}
	n, err := Open(cfg)
	if err != nil {
		t.Fatalf("open %s: %v", m.id, err)
	}
	m.n = n
}

func (m *testMember) close(t *testing.T) {
	t.Helper()
	if err := m.n.Close(); err != nil {
		t.Fatalf("close %s: %v", m.id, err)
	}
	m.n = nil
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting until %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func leaderOf(ms []*testMember) *testMember {
	for _, m := range ms {
		if m.n != nil && m.n.raft.State() == raft.Leader && m.n.readyTerm.Load() == m.n.raft.CurrentTerm() {
			return m
		}
	}
	return nil
}

func inLatest(n *Node, id string) bool {
	for _, s := range n.raft.GetConfiguration().Configuration().Servers {
		if string(s.ID) == id {
			return true
		}
	}
	return false
}

func markerExists(t *testing.T, dir, name string) bool {
	t.Helper()
	_, err := os.Stat(filepath.Join(dir, name))
	return err == nil
}

// A follower that receives the entry removing it, from a leader that then
// crashes before a majority has it, is still a voter once a new leader
// truncates the entry: it must not have written the REMOVED marker nor
// stopped raft, and must serve again.
func TestUncommittedRemovalIsUndone(t *testing.T) {
	ms := openCluster(t, 5)
	var leader *testMember
	waitFor(t, "a leader is ready", 30*time.Second, func() bool { leader = leaderOf(ms); return leader != nil })
	var x *testMember
	var down []*testMember
	for _, m := range ms {
		switch {
		case m == leader:
		case x == nil:
			x = m
		default:
			down = append(down, m)
		}
	}
	if _, err := leader.n.Put(ctxFor(t, 10*time.Second), []byte("/k"), []byte("v"), WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, x.id+" has the MEMBER marker", 10*time.Second, func() bool { return markerExists(t, x.dir, memberMarker) })
	for _, m := range down {
		m.close(t)
	}
	// Only x gets the entry; {leader, 3 down} cannot commit it.
	go leader.n.RemoveServer(context.Background(), x.id, true)
	waitFor(t, x.id+" has the entry removing it", 10*time.Second, func() bool { return !inLatest(x.n, x.id) })
	waitFor(t, x.id+" refuses requests while its removal is pending", 5*time.Second, func() bool {
		return errors.Is(x.n.Serving(), ErrRemoved)
	})
	if st := x.n.Status(); st.Role != "removed" {
		t.Fatalf("%s role %q while its removal is pending, want removed", x.id, st.Role)
	}
	leader.close(t) // crashes before the entry reaches a majority
	if markerExists(t, x.dir, removedMarker) {
		t.Fatalf("%s wrote the REMOVED marker for a removal that has not committed", x.id)
	}
	if s := x.n.raft.State(); s == raft.Shutdown {
		t.Fatalf("%s shut raft down for a removal that has not committed", x.id)
	}

	for _, m := range down {
		m.open(t, nil)
	}
	var next *testMember
	waitFor(t, "a new leader is ready", 30*time.Second, func() bool { next = leaderOf(ms); return next != nil })
	if next == x {
		t.Fatalf("%s, whose log removes it, became leader", x.id)
	}
	waitFor(t, x.id+" is back in its configuration and serving", 20*time.Second, func() bool {
		return inLatest(x.n, x.id) && x.n.Serving() == nil
	})
	r, err := next.n.Put(ctxFor(t, 10*time.Second), []byte("/k"), []byte("after"), WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, x.id+" applies the new leader's write", 10*time.Second, func() bool { return x.n.fsm.Applied() >= r.Revision })
	if markerExists(t, x.dir, removedMarker) {
		t.Fatalf("%s wrote the REMOVED marker", x.id)
	}
}

// A node that crashed after the entry removing it reached it, before it
// wrote the REMOVED marker, must notice the removal at restart.
func TestRemovalNoticedAfterRestart(t *testing.T) {
	ms := openCluster(t, 3)
	var leader *testMember
	waitFor(t, "a leader is ready", 30*time.Second, func() bool { leader = leaderOf(ms); return leader != nil })
	var x *testMember
	for _, m := range ms {
		if m != leader {
			x = m
			break
		}
	}
	waitFor(t, x.id+" has the MEMBER marker", 10*time.Second, func() bool { return markerExists(t, x.dir, memberMarker) })
	if _, err := leader.n.RemoveServer(ctxFor(t, 10*time.Second), x.id, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, x.id+" has the entry removing it", 10*time.Second, func() bool { return !inLatest(x.n, x.id) })
	x.close(t)
	// The crash came before the marker was written.
	if err := os.Remove(filepath.Join(x.dir, removedMarker)); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	x.open(t, nil)
	waitFor(t, x.id+" refuses requests after restart", 5*time.Second, func() bool {
		return errors.Is(x.n.Serving(), ErrRemoved)
	})
	if _, _, err := x.n.Get(ctxFor(t, 5*time.Second), []byte("/k"), Serializable); !errors.Is(err, ErrRemoved) {
		t.Fatalf("serializable get on the removed node: %v, want ErrRemoved", err)
	}
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
