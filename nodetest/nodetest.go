// Package nodetest starts real nodes in-process, on real TCP and bbolt
// files, for tests: a one-node cluster served through server's gRPC API,
// free loopback addresses, and helpers to read watch streams.
//
// # Invariant
//
// Everything it starts (nodes, gRPC servers, clients, connections) is
// stopped by t.Cleanup, so a test never stops what it did not start
// itself; the one exception, Collect's goroutine, ends with its watch.
//
// The package server's own (package server) tests cannot use it: it
// imports server, and a test of a package may not import what imports it.
package nodetest

import (
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/raftwatch/raftwatch/client"
	"github.com/raftwatch/raftwatch/node"
	pb "github.com/raftwatch/raftwatch/proto"
	"github.com/raftwatch/raftwatch/server"
)

// Node is a one-node cluster ("n1") served in this process on loopback TCP.
type Node struct {
	*node.Node
	Config node.Config // as the node was opened with
	// ClientAddr and RaftAddr are where the gRPC API and raft listen.
	ClientAddr, RaftAddr string
}

// Option changes how Start opens and serves a node.
type Option func(*settings)

type settings struct {
	setup     func(*node.Config) ([]grpc.ServerOption, error)
	serverOpt []grpc.ServerOption
	admin     string
	noWait    bool
}

// Setup is run on the node's config (ID, addresses and data dir set,
// after tune) before it opens; the options it returns build the gRPC
// server. It is where a test derives TLS the way serve's flags do.
func Setup(f func(*node.Config) ([]grpc.ServerOption, error)) Option {
	return func(s *settings) { s.setup = f }
}

// ServerOptions are added to the gRPC server's options (e.g. grpc.Creds).
func ServerOptions(opts ...grpc.ServerOption) Option {
	return func(s *settings) { s.serverOpt = append(s.serverOpt, opts...) }
}

// RequireAuth makes the server enforce roles with admin as the admin
// identity (server.Server.RequireAuth).
func RequireAuth(admin string) Option {
	return func(s *settings) { s.admin = admin }
}

// NoWait makes Start return as soon as the node serves, without waiting
// for it to take a plaintext write: for a node whose client API needs TLS
// or whose test waits itself.
func NoWait() Option {
	return func(s *settings) { s.noWait = true }
}

// Quiet is the logger the nodes log to: tests read state, not logs.
var Quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// Start opens a one-node cluster with node.DefaultConfig adjusted by tune
// (nil for none) and opts, serves it through server's gRPC API on
// 127.0.0.1 and, unless NoWait, waits until it takes writes (up to 20 s).
func Start(t *testing.T, tune func(*node.Config), opts ...Option) *Node {
	t.Helper()
	var s settings
	for _, o := range opts {
		o(&s)
	}
	addrs := FreeAddrs(t, 2)
	cfg := node.DefaultConfig()
	cfg.ID, cfg.DataDir, cfg.RaftAddr, cfg.ClientAddr = "n1", t.TempDir(), addrs[0], addrs[1]
	cfg.InitialCluster = map[string]string{"n1": addrs[0]}
	cfg.Logger = Quiet
	if tune != nil {
		tune(&cfg)
	}
	serverOpts := s.serverOpt
	if s.setup != nil {
		more, err := s.setup(&cfg)
		if err != nil {
			t.Fatal(err)
		}
		serverOpts = append(serverOpts, more...)
	}
	lis, err := net.Listen("tcp", cfg.ClientAddr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := node.Open(cfg)
	if err != nil {
		lis.Close()
		t.Fatal(err)
	}
	srv := server.New(n, cfg.Logger)
	if s.admin != "" {
		srv.RequireAuth(s.admin)
	}
	g := srv.NewGRPCServer(serverOpts...)
	go g.Serve(lis)
	t.Cleanup(func() {
		g.Stop()
		n.Close()
	})
	started := &Node{Node: n, Config: cfg, ClientAddr: cfg.ClientAddr, RaftAddr: cfg.RaftAddr}
	if !s.noWait {
		c := started.Client(t)
		Eventually(t, 20*time.Second, "the node takes writes", func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err := c.Put(ctx, []byte("/ready"), []byte("1"))
			return err == nil
		})
	}
	return started
}

// Client is a plaintext client of the node, closed by t.Cleanup.
func (n *Node) Client(t *testing.T) *client.Client {
	t.Helper()
	return Client(t, n.ClientAddr)
}

// Client is a plaintext client of the node at addr, closed by t.Cleanup.
func Client(t *testing.T, addr string) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{Endpoints: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Conn is a raw plaintext gRPC connection to the node with opts added,
// closed by t.Cleanup.
func (n *Node) Conn(t *testing.T, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(n.ClientAddr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// FreeAddrs returns n distinct 127.0.0.1 addresses that were free a moment
// ago, for processes a test starts. The ports are chosen at random in
// [testPortLow, testPortHigh), below the kernel's ephemeral range: a port
// the kernel hands out (to bind(0), or as the source port of an outgoing
// connection) could be taken by another socket between this check and the
// node's bind, which then fails with "address already in use". None is
// handed out twice in one test process, nor, for a minute, to two test
// processes at once (a lock file per port, held by the process).
func FreeAddrs(t *testing.T, n int) []string {
	t.Helper()
	ports.Lock()
	defer ports.Unlock()
	ports.release(time.Now().Add(-portHold))
	var out []string
	for tries := 0; len(out) < n; tries++ {
		if tries > 10000 {
			t.Fatalf("no free port in [%d, %d) after %d tries", testPortLow, testPortHigh, tries)
		}
		port := testPortLow + rand.IntN(testPortHigh-testPortLow)
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if ports.handedOut[addr] {
			continue
		}
		lock, ok := lockPort(port)
		if !ok {
			continue // another test process holds it
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			lock.Close()
			continue // in use
		}
		defer l.Close() // held until every address is chosen
		ports.handedOut[addr] = true
		ports.held = append(ports.held, heldPort{lock, time.Now()})
		out = append(out, addr)
	}
	return out
}

// The range FreeAddrs takes ports from: below Linux's default ephemeral
// range (32768-60999), apart from what scripts/cluster.sh's test (20000-
// 29999), the dev cluster (7101-7203) and bench.sh (7301-7403) use.
const (
	testPortLow  = 10000
	testPortHigh = 20000
)

// portHold is how long a port's lock file stays locked: long enough for
// the process it was chosen for to bind it.
const portHold = time.Minute

// ports is what FreeAddrs handed out in this process.
var ports = portRegistry{handedOut: map[string]bool{}}

type portRegistry struct {
	sync.Mutex
	handedOut map[string]bool
	held      []heldPort // oldest first
}

type heldPort struct {
	lock *os.File
	at   time.Time
}

// release unlocks the ports chosen before cutoff (they stay handed out in
// this process).
func (r *portRegistry) release(cutoff time.Time) {
	i := 0
	for ; i < len(r.held) && r.held[i].at.Before(cutoff); i++ {
		r.held[i].lock.Close()
	}
	r.held = append(r.held[:0], r.held[i:]...)
}

// lockPort takes the lock file of port, shared by the test processes of
// this machine; the kernel releases it when the process ends, however it
// ends.
func lockPort(port int) (*os.File, bool) {
	dir := filepath.Join(os.TempDir(), "raftwatch-test-ports")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, false
	}
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, false
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, false
	}
	return f, true
}

// Eventually polls cond until it holds or fails t when timeout passes.
func Eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Collect forwards w's events to a channel, closed when the watch ends
// (closing w or cancelling its context ends it).
func Collect(w *client.Watcher) <-chan *pb.WatchResponse {
	out := make(chan *pb.WatchResponse, 10000)
	go func() {
		defer close(out)
		for {
			ev, err := w.Recv()
			if err != nil {
				return
			}
			out <- ev
		}
	}()
	return out
}

// NextData returns the next PUT or DELETE from ch (skipping PROGRESS), or
// fails t when ch ends or nothing comes within timeout.
func NextData(t *testing.T, ch <-chan *pb.WatchResponse, timeout time.Duration) *pb.WatchResponse {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatal("watch stream ended")
			}
			if ev.Type == pb.EventType_PROGRESS {
				continue
			}
			return ev
		case <-deadline:
			t.Fatalf("no event within %v", timeout)
		}
	}
}
