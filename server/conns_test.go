package server

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc/peer"
)

// ctxOnConn is the context of a stream arriving on the connection from
// 127.0.0.1:port.
func ctxOnConn(port int) context.Context {
	return peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}})
}

// TestWatchStreamsOfOneConnectionShareItsConn: streams from one remote
// address share one watch.Conn (one byte budget, one watcher quota) for
// as long as any of them lives; another address, or none, gets its own.
func TestWatchStreamsOfOneConnectionShareItsConn(t *testing.T) {
	e := startEdgeNode(t, nil)
	c := &watchConns{node: e.node, m: map[string]*connEntry{}}
	a1, releaseA1 := c.acquire(ctxOnConn(5001))
	a2, releaseA2 := c.acquire(ctxOnConn(5001))
	b, releaseB := c.acquire(ctxOnConn(5002))
	if a1 != a2 {
		t.Fatal("two streams of one connection got different watch.Conns")
	}
	if b == a1 {
		t.Fatal("streams of two connections share a watch.Conn")
	}
	if n1, _ := c.acquire(context.Background()); n1 == a1 || n1 == b {
		t.Fatal("a stream with no peer address shares another's watch.Conn")
	}
	if len(c.m) != 2 {
		t.Fatalf("%d connections tracked, want 2 (no entry for a stream without an address)", len(c.m))
	}

	releaseA1()
	if again, release := c.acquire(ctxOnConn(5001)); again != a1 {
		t.Fatal("a stream joining a connection with a live stream got a new watch.Conn")
	} else {
		release()
	}
	releaseA2()
	releaseB()
	if len(c.m) != 0 {
		t.Fatalf("%d connections still tracked after their last stream ended, want 0", len(c.m))
	}
	// A new connection from a reused address starts afresh.
	if fresh, release := c.acquire(ctxOnConn(5001)); fresh == a1 {
		t.Fatal("a new connection reusing an address inherited the old one's watch.Conn")
	} else {
		release()
	}
}
