package server

import (
	"context"
	"sync"

	"google.golang.org/grpc/peer"

	"github.com/raftwatch/raftwatch/node"
	"github.com/raftwatch/raftwatch/watch"
)

// watchConns gives the watch streams of one client connection one
// watch.Conn, so that they share its byte budget and its watcher quota
// however many streams the client opens. A connection is known by its
// remote address (host:port, unique among open TCP connections); its entry
// lives while it has watch streams.
type watchConns struct {
	node *node.Node
	mu   sync.Mutex
	m    map[string]*connEntry
}

type connEntry struct {
	conn    *watch.Conn
	streams int
}

// acquire returns the watch.Conn of the connection ctx's stream arrived
// on and the function to call when the stream ends.
func (c *watchConns) acquire(ctx context.Context) (*watch.Conn, func()) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return c.node.NewWatchConn(), func() {} // no address: a Conn of its own
	}
	key := p.Addr.String()
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.m[key]
	if e == nil {
		e = &connEntry{conn: c.node.NewWatchConn()}
		c.m[key] = e
	}
	e.streams++
	return e.conn, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if e.streams--; e.streams == 0 && c.m[key] == e {
			delete(c.m, key)
		}
	}
}
