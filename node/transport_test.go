package node

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/raftwatch/raftwatch/certs"
	"github.com/raftwatch/raftwatch/tlsfiles"
)

// peerTLS issues node name a certificate from ca (valid for 127.0.0.1)
// and returns the raft TLS settings a node with it uses.
func peerTLS(t *testing.T, ca *certs.CA, name string) *TLS {
	return peerTLSWith(t, ca, nodeLeaf(t, ca, name), name)
}

func nodeLeaf(t *testing.T, ca *certs.CA, id string) certs.Leaf {
	t.Helper()
	leaf, err := ca.IssueNode(id, []string{"127.0.0.1"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

// peerTLSWith returns raft TLS settings presenting leaf (written as
// name.crt and name.key) and trusting (the peers' certificates of)
// trusted.
func peerTLSWith(t *testing.T, trusted *certs.CA, leaf certs.Leaf, name string) *TLS {
	t.Helper()
	dir := t.TempDir()
	caPath, err := trusted.WriteCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := leaf.Write(dir, name)
	if err != nil {
		t.Fatal(err)
	}
	src, err := tlsfiles.Load(tlsfiles.Files{Cert: cert, Key: key, CA: caPath}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return &TLS{Server: src.ServerConfig(tls.RequireAndVerifyClientCert), Dial: src.ClientConfig}
}

func newTestCA(t *testing.T) *certs.CA {
	t.Helper()
	ca, err := certs.NewCA("test-ca", 0)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// Three members talking raft over mutual TLS elect a leader, and a write
// through it reaches every follower.
func TestTLSClusterElectsAndReplicates(t *testing.T) {
	ca := newTestCA(t)
	initial := map[string]string{}
	var ms []*testMember
	for i := 1; i <= 3; i++ {
		m := &testMember{id: fmt.Sprintf("n%d", i), dir: t.TempDir(), raftAddr: freeAddr(t), clientAddr: freeAddr(t)}
		initial[m.id] = m.raftAddr
		ms = append(ms, m)
	}
	for _, m := range ms {
		cfg := DefaultConfig()
		cfg.ID, cfg.DataDir, cfg.RaftAddr, cfg.ClientAddr = m.id, m.dir, m.raftAddr, m.clientAddr
		cfg.InitialCluster = initial
		cfg.PeerTLS = peerTLS(t, ca, m.id)
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		n, err := Open(cfg)
		if err != nil {
			t.Fatalf("open %s: %v", m.id, err)
		}
		m.n = n
		t.Cleanup(func() { n.Close() })
	}
	waitFor(t, "a leader is elected over TLS", 20*time.Second, func() bool { return leaderOf(ms) != nil })
	leader := leaderOf(ms)
	if _, err := leader.n.Put(ctxFor(t, 10*time.Second), []byte("/k"), []byte("over tls"), WriteOptions{}); err != nil {
		t.Fatalf("put through the leader: %v", err)
	}
	for _, m := range ms {
		waitFor(t, m.id+" has the write", 10*time.Second, func() bool {
			kv, _, err := m.n.Get(ctxFor(t, time.Second), []byte("/k"), Serializable)
			return err == nil && kv != nil && bytes.Equal(kv.Value, []byte("over tls"))
		})
	}
}

// openTLSNode opens a one-member cluster with raft over TLS with a node
// certificate of ca, logging to log, and waits until it leads.
func openTLSNode(t *testing.T, ca *certs.CA, log io.Writer) (*Node, string) {
	t.Helper()
	raftAddr := freeAddr(t)
	cfg := DefaultConfig()
	cfg.ID, cfg.DataDir, cfg.RaftAddr, cfg.ClientAddr = "n1", t.TempDir(), raftAddr, "127.0.0.1:1"
	cfg.InitialCluster = map[string]string{"n1": raftAddr}
	cfg.PeerTLS = peerTLS(t, ca, "n1")
	cfg.Logger = slog.New(slog.NewTextHandler(log, nil))
	n, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	waitFor(t, "the node leads", 20*time.Second, func() bool { return n.readyTerm.Load() != 0 })
	return n, raftAddr
}

// tlsPeer is a raft transport with the TLS settings p, to send a node
// raft requests as a peer would.
func tlsPeer(t *testing.T, p *TLS) *raft.NetworkTransport {
	t.Helper()
	trans, err := newTransport(Config{RaftAddr: freeAddr(t), PeerTLS: p}, mustTCPAddr(t, "127.0.0.1:1"), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { trans.Close() })
	return trans
}

// A node whose raft port speaks TLS refuses raft requests from a peer
// without a certificate (plain TCP), from one whose certificate another
// CA signed, and from one with a client certificate of its own CA (which
// chains, but is no node certificate): a heartbeat with a far higher term
// from any of them leaves the node's term as it was, and the node logs
// why it refused the client certificate. A peer with a node certificate
// from the node's CA is answered (a stale heartbeat, which changes
// nothing).
func TestRaftRefusesPeerWithoutValidCertificate(t *testing.T) {
	ca := newTestCA(t)
	var logged syncBuffer
	n, raftAddr := openTLSNode(t, ca, &logged)
	term := n.raft.CurrentTerm()

	plain, err := raft.NewTCPTransportWithLogger("127.0.0.1:0", nil, 1, 2*time.Second, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	alice, err := ca.IssueClient("alice", 0)
	if err != nil {
		t.Fatal(err)
	}
	// A heartbeat of a far higher term would make the node step down and
	// take that term, were it accepted.
	usurp := &raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("intruder"), Addr: []byte("127.0.0.1:1")},
		Term:      term + 100,
	}
	for name, trans := range map[string]*raft.NetworkTransport{
		"no certificate (plain TCP)":              plain,
		"a certificate from another CA":           tlsPeer(t, peerTLSWith(t, ca, nodeLeaf(t, newTestCA(t), "intruder"), "intruder")),
		"a client certificate from the node's CA": tlsPeer(t, peerTLSWith(t, ca, alice, "alice")),
	} {
		var resp raft.AppendEntriesResponse
		if err := trans.AppendEntries("n1", raft.ServerAddress(raftAddr), usurp, &resp); err == nil {
			t.Errorf("%s: heartbeat answered (term %d)", name, resp.Term)
		}
	}
	if got := n.raft.CurrentTerm(); got != term {
		t.Fatalf("term moved from %d to %d after refused heartbeats", term, got)
	}
	waitFor(t, "the refused client certificate is logged", 5*time.Second, func() bool {
		return strings.Contains(logged.String(), `refused a raft connection at the TLS handshake`) &&
			strings.Contains(logged.String(), `(common name \"alice\") is not a node certificate`)
	})

	good := tlsPeer(t, peerTLS(t, ca, "n2"))
	var resp raft.AppendEntriesResponse
	stale := &raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("n2"), Addr: []byte("127.0.0.1:1")},
		Term:      0,
	}
	if err := good.AppendEntries("n1", raft.ServerAddress(raftAddr), stale, &resp); err != nil {
		t.Fatalf("a peer with a node certificate from the node's CA was not answered: %v", err)
	}
	if resp.Success || resp.Term != term {
		t.Fatalf("stale heartbeat answered success=%v term=%d, want refused at term %d", resp.Success, resp.Term, term)
	}
}

// A node dialing a raft peer refuses a peer whose certificate chains to
// the peer CA but is no node certificate.
func TestRaftDialRefusesANonNodeCertificate(t *testing.T) {
	ca := newTestCA(t)
	_, dial := nodesOnly(peerTLS(t, ca, "n1"))
	alice, err := ca.IssueClient("alice", 0)
	if err != nil {
		t.Fatal(err)
	}
	state := func(l certs.Leaf) tls.ConnectionState {
		pair, err := tls.X509KeyPair(l.CertPEM, l.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return tls.ConnectionState{PeerCertificates: []*x509.Certificate{pair.Leaf}}
	}
	verify := dial("127.0.0.1").VerifyConnection
	if err := verify(state(alice)); err == nil || !strings.Contains(err.Error(), "not a node certificate") {
		t.Fatalf("dialing a peer with a client certificate: %v", err)
	}
	if err := verify(state(nodeLeaf(t, ca, "n2"))); err != nil {
		t.Fatalf("dialing a peer with a node certificate: %v", err)
	}
}

// A connection to the raft port that never starts its TLS handshake is
// closed by the node within peerHandshakeTimeout, while a peer's pooled
// connection, idle for longer than that after its handshake, stays open.
func TestRaftDropsConnectionsThatDoNotHandshake(t *testing.T) {
	ca := newTestCA(t)
	n, raftAddr := openTLSNode(t, ca, io.Discard)
	good := tlsPeer(t, peerTLS(t, ca, "n2"))
	stale := &raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("n2"), Addr: []byte("127.0.0.1:1")},
	}
	var resp raft.AppendEntriesResponse
	if err := good.AppendEntries("n1", raft.ServerAddress(raftAddr), stale, &resp); err != nil {
		t.Fatalf("a peer with a node certificate was not answered: %v", err)
	}

	silent, err := net.Dial("tcp", raftAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	start := time.Now()
	silent.SetReadDeadline(start.Add(peerHandshakeTimeout + 5*time.Second))
	_, err = silent.Read(make([]byte, 1))
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("a connection that sent nothing is still open after %v", time.Since(start))
	}
	if err == nil {
		t.Fatal("the node sent a silent connection data")
	}

	// The pooled connection has now been idle longer than the handshake
	// timeout: it still carries a request.
	if err := good.AppendEntries("n1", raft.ServerAddress(raftAddr), stale, &resp); err != nil {
		t.Fatalf("a peer's connection idle since its handshake was dropped: %v", err)
	}
	if resp.Term != n.raft.CurrentTerm() {
		t.Fatalf("answered at term %d, want %d", resp.Term, n.raft.CurrentTerm())
	}
}

// syncBuffer is a log destination the node's goroutines and the test
// share.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func mustTCPAddr(t *testing.T, s string) *net.TCPAddr {
	t.Helper()
	a, err := net.ResolveTCPAddr("tcp", s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// Open refuses peer TLS that would let a peer in without a certificate.
func TestPeerTLSMustVerifyPeers(t *testing.T) {
	p := peerTLS(t, newTestCA(t), "n1")
	p.Server.ClientAuth = tls.VerifyClientCertIfGiven
	raftAddr := freeAddr(t)
	cfg := DefaultConfig()
	cfg.ID, cfg.DataDir, cfg.RaftAddr, cfg.ClientAddr = "n1", t.TempDir(), raftAddr, "127.0.0.1:1"
	cfg.InitialCluster = map[string]string{"n1": raftAddr}
	cfg.PeerTLS = p
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	n, err := Open(cfg)
	if err == nil {
		n.Close()
		t.Fatal("a node opened with peer TLS that does not require the peers' certificates")
	}
	if !strings.Contains(err.Error(), "RequireAndVerifyClientCert") {
		t.Fatalf("error does not say what to set: %v", err)
	}
}
