package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"testing"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// ctxFrom is the context of a stream arriving from ip:port.
func ctxFrom(ip string, port int) context.Context {
	return peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(ip), Port: port}})
}

// ctxOfIdentity is the context of a stream from ip:port whose verified
// client certificate names cn.
func ctxOfIdentity(ip string, port int, cn string) context.Context {
	cert := &x509.Certificate{Subject: pkix.Name{CommonName: cn}}
	info := credentials.TLSInfo{State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert}}}}
	return peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(ip), Port: port}, AuthInfo: info})
}

// TestWatchStreamsOfOneClientShareItsClient: streams from one IP address,
// over any number of connections (ports), share one watch.Client (one byte
// budget, one watcher quota, one stream quota) for as long as any of them
// lives; so do streams of one certificate identity from any address.
// Another IP or identity, or no address at all, gets its own.
func TestWatchStreamsOfOneClientShareItsClient(t *testing.T) {
	e := startEdgeNode(t, nil)
	c := &watchClients{node: e.node, m: map[string]*clientEntry{}}
	a1, releaseA1 := c.acquire(ctxFrom("127.0.0.1", 5001))
	a2, releaseA2 := c.acquire(ctxFrom("127.0.0.1", 5002)) // another connection
	b, releaseB := c.acquire(ctxFrom("127.0.0.2", 5001))
	if a1 != a2 {
		t.Fatal("two connections from one IP address got different watch.Clients")
	}
	if b == a1 {
		t.Fatal("streams from two IP addresses share a watch.Client")
	}
	if n1, _ := c.acquire(context.Background()); n1 == a1 || n1 == b {
		t.Fatal("a stream with no peer address shares another's watch.Client")
	}
	id1, releaseID1 := c.acquire(ctxOfIdentity("127.0.0.1", 6001, "alice"))
	id2, releaseID2 := c.acquire(ctxOfIdentity("127.0.0.3", 6002, "alice"))
	bob, releaseBob := c.acquire(ctxOfIdentity("127.0.0.1", 6003, "bob"))
	if id1 != id2 {
		t.Fatal("one identity from two addresses got different watch.Clients")
	}
	if id1 == a1 || bob == id1 || bob == a1 {
		t.Fatal("an identity shares a watch.Client with another identity or with its IP address's anonymous streams")
	}
	if len(c.m) != 4 {
		t.Fatalf("%d clients tracked, want 4 (two IPs, two identities; no entry for a stream without an address)", len(c.m))
	}

	releaseA1()
	if again, release := c.acquire(ctxFrom("127.0.0.1", 5003)); again != a1 {
		t.Fatal("a stream of a client with a live stream got a new watch.Client")
	} else {
		release()
	}
	releaseA2()
	releaseB()
	releaseID1()
	releaseID2()
	releaseBob()
	if len(c.m) != 0 {
		t.Fatalf("%d clients still tracked after their last stream ended, want 0", len(c.m))
	}
	// A client coming back starts afresh (its old budget was all given back).
	if fresh, release := c.acquire(ctxFrom("127.0.0.1", 5001)); fresh == a1 {
		t.Fatal("a client coming back inherited its old watch.Client")
	} else {
		release()
	}
}

// An IPv6 client is known by its /64: a host that holds a whole prefix
// cannot buy a new budget per address; IPv4 addresses stay their own.
func TestIPv6ClientsAreKnownByTheirSlash64(t *testing.T) {
	for _, c := range []struct {
		a, b string
		same bool
	}{
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff::7", true},
		{"2001:db8:1:2::1", "2001:db8:1:3::1", false},
		{"10.0.0.1", "10.0.0.2", false},
		{"::ffff:10.0.0.1", "10.0.0.1", true}, // IPv4-mapped is the IPv4 address
	} {
		ka, kb := ipKey(net.ParseIP(c.a)), ipKey(net.ParseIP(c.b))
		if (ka == kb) != c.same {
			t.Errorf("%s -> %q, %s -> %q: same client = %v, want %v", c.a, ka, c.b, kb, ka == kb, c.same)
		}
	}
}
