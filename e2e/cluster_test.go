package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/raftwatch/raftwatch/client"
	"github.com/raftwatch/raftwatch/nodetest"
	pb "github.com/raftwatch/raftwatch/proto"
)

// proc is one raftwatch serve process.
type proc struct {
	id, dataDir, raftAddr, clientAddr, logPath string
	cmd                                        *exec.Cmd
	exited                                     chan struct{}
}

// testCluster is three real processes on loopback TCP.
type testCluster struct {
	t       *testing.T
	bin     string // the raftwatch executable the nodes run
	nodes   []*proc
	extra   []string
	initial string // --initial-cluster of the first start
	// perNode, when set, gives flags for one node only (e.g. its own
	// --metrics-addr), added after extra.
	perNode func(p *proc) []string
}

// The helpers e2e shares with the in-process tests of other packages,
// under the names its tests call them by.
var (
	freePorts  = nodetest.FreeAddrs
	eventually = nodetest.Eventually
	collect    = nodetest.Collect
	nextData   = nodetest.NextData
)

func startCluster(t *testing.T, extraFlags ...string) *testCluster {
	t.Helper()
	return startClusterOf(t, binary, extraFlags...)
}

// startClusterOf is startCluster with the nodes running bin.
func startClusterOf(t *testing.T, bin string, extraFlags ...string) *testCluster {
	t.Helper()
	return startClusterPerNode(t, bin, nil, extraFlags...)
}

// startClusterPerNode is startClusterOf with perNode's flags for each node.
func startClusterPerNode(t *testing.T, bin string, perNode func(p *proc) []string, extraFlags ...string) *testCluster {
	t.Helper()
	c := newTestCluster(t, bin, "n")
	c.extra, c.perNode = extraFlags, perNode
	for _, p := range c.nodes {
		c.start(p)
	}
	c.waitLeader()
	c.waitAddressesRecorded()
	return c
}

// newTestCluster lays out three nodes running bin, with ids idPrefix1 to
// idPrefix3, ports and data dirs of their own, and starts none. When t
// ends, it kills them and fails t if a node's log reports a data race; if
// t failed, it logs the tail of each node's log.
func newTestCluster(t *testing.T, bin, idPrefix string) *testCluster {
	t.Helper()
	ports := freePorts(t, 6)
	c := &testCluster{t: t, bin: bin}
	var initial []string
	for i := 0; i < 3; i++ {
		p := &proc{id: fmt.Sprintf("%s%d", idPrefix, i+1), raftAddr: ports[i], clientAddr: ports[3+i]}
		p.dataDir = filepath.Join(t.TempDir(), p.id)
		p.logPath = p.dataDir + ".log"
		initial = append(initial, p.id+"="+p.raftAddr)
		c.nodes = append(c.nodes, p)
	}
	c.initial = strings.Join(initial, ",")
	t.Cleanup(func() {
		for _, p := range c.nodes {
			c.kill(p)
		}
		for _, p := range c.nodes {
			if b, err := os.ReadFile(p.logPath); err == nil && strings.Contains(string(b), "DATA RACE") {
				t.Errorf("the race detector reported a data race in %s:\n%s", p.id, b)
			}
		}
		if t.Failed() {
			for _, p := range c.nodes {
				if b, err := os.ReadFile(p.logPath); err == nil {
					t.Logf("--- %s log tail ---\n%s", p.id, lastLines(string(b), 30))
				}
			}
		}
	})
	return c
}

// lastLines is the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitAddressesRecorded waits until every node lists every node's client
// address: each node records its own through the leader just after the
// election (node.recordClientAddr), and a test that compares indexes must
// not see those entries land in the middle of it.
func (c *testCluster) waitAddressesRecorded() {
	c.t.Helper()
	eventually(c.t, 15*time.Second, "every member's client address recorded on every node", func() bool {
		for _, p := range c.nodes {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			r, err := pb.NewClusterClient(c.conn(p)).Members(ctx, &pb.MembersRequest{})
			cancel()
			if err != nil {
				return false
			}
			got := map[string]string{}
			for _, m := range r.Members {
				got[m.Id] = m.ClientAddr
			}
			for _, q := range c.nodes {
				if got[q.id] != q.clientAddr {
					return false
				}
			}
		}
		return true
	})
}

// start runs p; on a restart the data dir exists and --initial-cluster is ignored.
func (c *testCluster) start(p *proc) {
	c.t.Helper()
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		c.t.Fatal(err)
	}
	args := append([]string{"serve", "--id", p.id, "--data-dir", p.dataDir, "--raft-addr", p.raftAddr,
		"--client-addr", p.clientAddr, "--initial-cluster", c.initial, "--progress-interval", "200ms"}, c.extra...)
	if c.perNode != nil {
		args = append(args, c.perNode(p)...)
	}
	cmd := exec.Command(c.bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	p.cmd, p.exited = cmd, make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(p.exited) }()
}

// kill sends SIGKILL and waits for the process to be gone.
func (c *testCluster) kill(p *proc) {
	if p.cmd == nil {
		return
	}
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// stop sends SIGTERM and waits for a clean exit.
func (c *testCluster) stop(p *proc) error {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return nil
	case <-time.After(15 * time.Second):
		return fmt.Errorf("%s did not exit within 15 s of SIGTERM; its goroutines:\n%s", p.id, c.goroutines(p))
	}
}

// goroutines makes the hung p print its goroutines (SIGQUIT: the Go
// runtime's dump, then exit) and returns what it printed to its log.
func (c *testCluster) goroutines(p *proc) string {
	before, _ := os.ReadFile(p.logPath)
	p.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		c.kill(p)
	}
	after, _ := os.ReadFile(p.logPath)
	if len(after) < len(before) {
		return "(log shrank)"
	}
	return string(after[len(before):])
}

func (c *testCluster) endpoints() []string {
	var out []string
	for _, p := range c.nodes {
		out = append(out, p.clientAddr)
	}
	return out
}

func (c *testCluster) client(endpoints ...string) *client.Client {
	c.t.Helper()
	if len(endpoints) == 0 {
		endpoints = c.endpoints()
	}
	cl, err := client.New(client.Config{Endpoints: endpoints})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

func (c *testCluster) conn(p *proc) *grpc.ClientConn {
	c.t.Helper()
	cc, err := grpc.NewClient(p.clientAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cc.Close() })
	return cc
}

func (c *testCluster) status(p *proc) (*pb.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return pb.NewClusterClient(c.conn(p)).Status(ctx, &pb.StatusRequest{})
}

// waitLeader waits until a running node is a ready leader (its address is
// known to the others) and returns it.
func (c *testCluster) waitLeader() *proc {
	c.t.Helper()
	var leader *proc
	eventually(c.t, 15*time.Second, "a leader", func() bool {
		for _, p := range c.nodes {
			if !p.running() {
				continue
			}
			st, err := c.status(p)
			if err == nil && st.Role == "leader" && st.LeaderAddr == p.clientAddr {
				leader = p
				return true
			}
		}
		return false
	})
	return leader
}

func (c *testCluster) followers() []*proc {
	leader := c.waitLeader()
	var out []*proc
	for _, p := range c.nodes {
		if p != leader && p.running() {
			out = append(out, p)
		}
	}
	return out
}

func (p *proc) running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}
