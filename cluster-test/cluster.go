package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	rwclient "github.com/raftwatch/raftwatch/client"
	"github.com/raftwatch/raftwatch/cluster-test/netns"
	pb "github.com/raftwatch/raftwatch/proto"
)

// Ports every node serves on, inside its own namespace.
const (
	clientPort = 7101
	raftPort   = 7201
	// stopGrace: how long a SIGTERM'd node gets before SIGKILL.
	stopGrace = 5 * time.Second
	// killWait: how long to wait for a SIGKILL'd process to be reaped.
	killWait = 5 * time.Second
)

// proc is one started node process. Its pid leads its own process group, so
// signals go to -pid and reach exactly what we started.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has been reaped
	err  error         // exit status, valid after done
	// expected: the harness killed or stopped it on purpose.
	expected bool
}

// cluster runs the node processes in the test network and implements
// nemesis.Cluster.
type cluster struct {
	net     *netns.Network
	binary  string
	out     string
	initial string

	mu     sync.Mutex
	procs  map[string]*proc
	paused map[string]bool
	// unexpected records node exits the harness did not cause.
	unexpected []string

	conns map[string]*grpc.ClientConn // harness's own connection to each node
}

func newCluster(nw *netns.Network, binary, out string) *cluster {
	var parts []string
	for _, n := range nw.Nodes {
		parts = append(parts, fmt.Sprintf("%s=%s:%d", n.ID, n.IP, raftPort))
	}
	return &cluster{net: nw, binary: binary, out: out, initial: strings.Join(parts, ","),
		procs: map[string]*proc{}, paused: map[string]bool{}, conns: map[string]*grpc.ClientConn{}}
}

func clientAddr(n netns.Node) string { return fmt.Sprintf("%s:%d", n.IP, clientPort) }

// dialOptions: reconnect quickly after a node restarts (gRPC's default backoff
// grows to two minutes), and mark calls that never left the process so
// classify (through the client's NotApplied) records them as fail.
func dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		rwclient.NeverSentMarker(),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: time.Second,
		}),
	}
}

func (c *cluster) Nodes() []string {
	var ids []string
	for _, n := range c.net.Nodes {
		ids = append(ids, n.ID)
	}
	return ids
}

func (c *cluster) dialAll() error {
	for _, n := range c.net.Nodes {
		conn, err := grpc.NewClient(clientAddr(n), dialOptions()...)
		if err != nil {
			return fmt.Errorf("dial %s: %w", n.ID, err)
		}
		c.conns[n.ID] = conn
	}
	return nil
}

func (c *cluster) closeConns() {
	for _, conn := range c.conns {
		conn.Close()
	}
}

// Start launches node id in its namespace, appending to OUT/<id>.log.
func (c *cluster) Start(id string) error {
	n, ok := c.net.Node(id)
	if !ok {
		return fmt.Errorf("unknown node %q", id)
	}
	logf, err := os.OpenFile(filepath.Join(c.out, id+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "### cluster-test: starting %s at %s\n", id, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command("ip", "netns", "exec", n.NS, c.binary, "serve",
		"--id", id,
		"--data-dir", filepath.Join(c.out, "data", id),
		"--raft-addr", fmt.Sprintf("%s:%d", n.IP, raftPort),
		"--client-addr", clientAddr(n),
		"--initial-cluster", c.initial,
		"--snapshot-threshold", "1000000",
		"--log-format", "json")
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group (signals to -pid reach only this node); die with the
	// harness if it is killed before it can clean up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", id, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	c.mu.Lock()
	c.procs[id] = p
	c.paused[id] = false
	c.mu.Unlock()
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		c.mu.Lock()
		if !p.expected {
			c.unexpected = append(c.unexpected, fmt.Sprintf("%s (pid %d) exited on its own: %v", id, cmd.Process.Pid, p.err))
		}
		c.mu.Unlock()
		close(p.done)
	}()
	return nil
}

func (c *cluster) proc(id string) *proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.procs[id]
}

func (c *cluster) running(id string) bool {
	p := c.proc(id)
	if p == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (c *cluster) signal(id string, sig syscall.Signal) error {
	p := c.proc(id)
	if p == nil {
		return fmt.Errorf("%s was never started", id)
	}
	if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %v to %s (pgid %d): %w", sig, id, p.cmd.Process.Pid, err)
	}
	return nil
}

// Kill sends SIGKILL to the node and waits until it is reaped.
func (c *cluster) Kill(id string) error {
	p := c.proc(id)
	if p == nil || !c.running(id) {
		return nil
	}
	c.mu.Lock()
	p.expected = true
	c.mu.Unlock()
	if err := c.signal(id, syscall.SIGKILL); err != nil {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(killWait):
		return fmt.Errorf("%s did not exit %v after SIGKILL", id, killWait)
	}
}

// Restart starts the node again on the same data if it is not running.
func (c *cluster) Restart(id string) error {
	if c.running(id) {
		return nil
	}
	return c.Start(id)
}

func (c *cluster) Pause(id string) error {
	if err := c.signal(id, syscall.SIGSTOP); err != nil {
		return err
	}
	c.mu.Lock()
	c.paused[id] = true
	c.mu.Unlock()
	return nil
}

func (c *cluster) Resume(id string) error {
	if err := c.signal(id, syscall.SIGCONT); err != nil {
		return err
	}
	c.mu.Lock()
	c.paused[id] = false
	c.mu.Unlock()
	return nil
}

func (c *cluster) Drop(id string, peers []string) error { return c.net.Drop(id, peers) }
func (c *cluster) HealNetwork() error                   { return c.net.Heal() }

// StopAll resumes and terminates every node: SIGTERM, then SIGKILL after
// stopGrace. It returns the nodes that did not shut down cleanly.
func (c *cluster) StopAll() []string {
	var bad []string
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, id := range c.Nodes() {
		p := c.proc(id)
		if p == nil || !c.running(id) {
			continue
		}
		c.mu.Lock()
		p.expected = true
		c.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.signal(id, syscall.SIGCONT)
			_ = c.signal(id, syscall.SIGTERM)
			select {
			case <-p.done:
				if p.err != nil {
					mu.Lock()
					bad = append(bad, fmt.Sprintf("%s: exit after SIGTERM: %v", id, p.err))
					mu.Unlock()
				}
			case <-time.After(stopGrace):
				_ = c.signal(id, syscall.SIGKILL)
				<-p.done
				mu.Lock()
				bad = append(bad, fmt.Sprintf("%s: no exit %v after SIGTERM, killed", id, stopGrace))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return bad
}

// Unexpected returns the node exits the harness did not cause.
func (c *cluster) Unexpected() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.unexpected...)
}

// statusTimeout bounds one Cluster.Status call.
const statusTimeout = time.Second

// Status asks node id for its status.
func (c *cluster) Status(ctx context.Context, id string) (*pb.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	return pb.NewClusterClient(c.conns[id]).Status(ctx, &pb.StatusRequest{})
}

// Statuses asks every node in parallel; failed nodes are missing from the map.
func (c *cluster) Statuses(ctx context.Context) (map[string]*pb.StatusResponse, map[string]error) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	out, errs := map[string]*pb.StatusResponse{}, map[string]error{}
	for _, id := range c.Nodes() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := c.Status(ctx, id)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs[id] = err
			} else {
				out[id] = st
			}
		}()
	}
	wg.Wait()
	return out, errs
}

// Leader returns the id of a node that says it is the leader (the one with
// the highest term if several do), or "".
func (c *cluster) Leader(ctx context.Context) string {
	sts, _ := c.Statuses(ctx)
	var best *pb.StatusResponse
	for _, st := range sts {
		if st.Role == "leader" && (best == nil || st.Term > best.Term) {
			best = st
		}
	}
	if best != nil {
		return best.Id
	}
	return ""
}

// WaitReady polls until some node reports itself leader and every node
// answers Status, or the deadline passes.
func (c *cluster) WaitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last string
	for {
		sts, errs := c.Statuses(ctx)
		if len(errs) == 0 && c.Leader(ctx) != "" {
			return nil
		}
		last = fmt.Sprintf("%d/%d nodes answered, errors %v", len(sts), len(c.net.Nodes), errs)
		for _, id := range c.Nodes() {
			if !c.running(id) {
				return fmt.Errorf("node %s exited during startup (see %s.log)", id, id)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster not ready after %v: %s", timeout, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
