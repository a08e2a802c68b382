package server

import (
	"context"
	"net"
	"sync"

	"google.golang.org/grpc/peer"

	"github.com/raftwatch/raftwatch/node"
	"github.com/raftwatch/raftwatch/watch"
)

// watchClients gives the watch streams of one client one watch.Client, so
// that they share its byte budget, its watcher quota and its stream quota
// however many streams and connections the client opens. A client is
// known by the identity of its verified certificate (the common name, as
// --auth uses it) when it presents one, and otherwise by its IP address
// (not host:port: a new connection must not buy a new budget; for IPv6 its
// /64). Its entry
// lives while it has watch streams.
type watchClients struct {
	node *node.Node
	mu   sync.Mutex
	m    map[string]*clientEntry
}

type clientEntry struct {
	client  *watch.Client
	streams int
}

// clientKey returns what the client of ctx's call is known by ("" when
// neither an identity nor an IP address is known).
func clientKey(ctx context.Context) string {
	if id := identityOf(ctx); id != "" {
		return "identity " + id
	}
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	switch a := p.Addr.(type) {
	case *net.TCPAddr:
		return ipKey(a.IP)
	}
	if host, _, err := net.SplitHostPort(p.Addr.String()); err == nil {
		return "ip " + host
	}
	return "addr " + p.Addr.String() // e.g. a unix socket: one client per address
}

// ipKey is the key of a client known by its IP address: the address
// itself for IPv4, its /64 for IPv6, since one IPv6 host usually holds a
// whole /64 and could otherwise open each connection from a new address.
func ipKey(ip net.IP) string {
	if ip4 := ip.To4(); ip4 != nil {
		return "ip " + ip4.String()
	}
	return "ip " + ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// acquire returns the watch.Client of the client ctx's stream comes from
// and the function to call when the stream ends.
func (c *watchClients) acquire(ctx context.Context) (*watch.Client, func()) {
	key := clientKey(ctx)
	if key == "" {
		return c.node.NewWatchClient(), func() {} // unknown: a Client of its own
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.m[key]
	if e == nil {
		e = &clientEntry{client: c.node.NewWatchClient()}
		c.m[key] = e
	}
	e.streams++
	return e.client, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if e.streams--; e.streams == 0 && c.m[key] == e {
			delete(c.m, key)
		}
	}
}
