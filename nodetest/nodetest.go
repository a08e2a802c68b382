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
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/raftwatch/raftwatch/client"
	"github.com/raftwatch/raftwatch/node"
	pb "github.com/raftwatch/raftwatch/proto"
	"github.com/raftwatch/raftwatch/server"
	"github.com/raftwatch/raftwatch/testport"
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

// FreeAddrs returns n distinct free 127.0.0.1 addresses for processes a
// test starts (testport.Addrs).
func FreeAddrs(t *testing.T, n int) []string {
	t.Helper()
	return testport.Addrs(t, n)
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
