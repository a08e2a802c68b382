package node

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/raftwatch/raftwatch/certs"
	"github.com/raftwatch/raftwatch/tlsfiles"
)

// peerTLS issues name a certificate from ca (valid for 127.0.0.1) and
// returns the raft TLS settings a node with it uses.
func peerTLS(t *testing.T, ca *certs.CA, name string) *TLS {
	return peerTLSTrusting(t, ca, ca, name)
}

// peerTLSTrusting is peerTLS with the certificate from issuer and
// trusting (the peers' certificates of) trusted.
func peerTLSTrusting(t *testing.T, issuer, trusted *certs.CA, name string) *TLS {
	t.Helper()
	dir := t.TempDir()
	caPath, err := trusted.WriteCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := issuer.Issue(name, []string{"127.0.0.1"}, 0)
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

// A node whose raft port speaks TLS refuses raft requests from a peer
// without a certificate (plain TCP) and from one whose certificate another
// CA signed: a heartbeat with a far higher term from either leaves the
// node's term as it was. A peer with a certificate from the node's CA is
// answered (a stale heartbeat, which changes nothing).
func TestRaftRefusesPeerWithoutValidCertificate(t *testing.T) {
	ca := newTestCA(t)
	raftAddr := freeAddr(t)
	cfg := DefaultConfig()
	cfg.ID, cfg.DataDir, cfg.RaftAddr, cfg.ClientAddr = "n1", t.TempDir(), raftAddr, "127.0.0.1:1"
	cfg.InitialCluster = map[string]string{"n1": raftAddr}
	cfg.PeerTLS = peerTLS(t, ca, "n1")
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	n, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	waitFor(t, "the node leads", 20*time.Second, func() bool { return n.readyTerm.Load() != 0 })
	term := n.raft.CurrentTerm()

	logger := hclog.NewNullLogger()
	plain, err := raft.NewTCPTransportWithLogger("127.0.0.1:0", nil, 1, 2*time.Second, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	tlsPeer := func(p *TLS) *raft.NetworkTransport {
		trans, err := newTransport(Config{RaftAddr: freeAddr(t), PeerTLS: p}, mustTCPAddr(t, "127.0.0.1:1"), logger)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { trans.Close() })
		return trans
	}
	// A heartbeat of a far higher term would make the node step down and
	// take that term, were it accepted.
	usurp := &raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("intruder"), Addr: []byte("127.0.0.1:1")},
		Term:      term + 100,
	}
	for name, trans := range map[string]*raft.NetworkTransport{
		"no certificate (plain TCP)":    plain,
		"a certificate from another CA": tlsPeer(peerTLSTrusting(t, newTestCA(t), ca, "intruder")),
	} {
		var resp raft.AppendEntriesResponse
		if err := trans.AppendEntries("n1", raft.ServerAddress(raftAddr), usurp, &resp); err == nil {
			t.Errorf("%s: heartbeat answered (term %d)", name, resp.Term)
		}
	}
	if got := n.raft.CurrentTerm(); got != term {
		t.Fatalf("term moved from %d to %d after refused heartbeats", term, got)
	}

	good := tlsPeer(peerTLS(t, ca, "n2"))
	var resp raft.AppendEntriesResponse
	stale := &raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("n2"), Addr: []byte("127.0.0.1:1")},
		Term:      0,
	}
	if err := good.AppendEntries("n1", raft.ServerAddress(raftAddr), stale, &resp); err != nil {
		t.Fatalf("a peer with a certificate from the node's CA was not answered: %v", err)
	}
	if resp.Success || resp.Term != term {
		t.Fatalf("stale heartbeat answered success=%v term=%d, want refused at term %d", resp.Success, resp.Term, term)
	}
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
