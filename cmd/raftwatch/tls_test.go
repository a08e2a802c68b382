package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftwatch/raftwatch/certs"
	"github.com/raftwatch/raftwatch/node"
	"github.com/raftwatch/raftwatch/nodetest"
)

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestServeTLSFlagsRefuseIncompleteCombinations(t *testing.T) {
	cases := []struct {
		args   []string
		errHas string
	}{
		{[]string{"--cert-file", "c"}, "--cert-file needs --key-file"},
		{[]string{"--key-file", "k"}, "--key-file needs --cert-file"},
		{[]string{"--cert-file", "c", "--key-file", "k", "--client-cert-auth"}, "--client-cert-auth needs --trusted-ca-file"},
		{[]string{"--trusted-ca-file", "ca"}, "need --cert-file and --key-file"},
		{[]string{"--peer-cert-file", "c", "--peer-key-file", "k"}, "missing --peer-trusted-ca-file"},
		{[]string{"--peer-trusted-ca-file", "ca"}, "missing --peer-cert-file, --peer-key-file"},
		{[]string{"--cert-file", "/nonexistent.crt", "--key-file", "/nonexistent.key"}, "client TLS: load certificate"},
	}
	for _, tc := range cases {
		fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
		s := addServeTLSFlags(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		cfg := node.DefaultConfig()
		_, err := s.apply(&cfg, false, quietLog)
		if err == nil || !strings.Contains(err.Error(), tc.errHas) {
			t.Errorf("%v: %v, want an error containing %q", tc.args, err, tc.errHas)
		}
		if cfg.PeerTLS != nil || cfg.ClientAPITLS != nil {
			t.Errorf("%v: refused, yet the node config was changed", tc.args)
		}
	}
	cfg := node.DefaultConfig()
	if opts, err := (&serveTLSFlags{}).apply(&cfg, false, quietLog); err != nil || opts != nil || cfg.PeerTLS != nil || cfg.ClientAPITLS != nil {
		t.Fatalf("no TLS flag: %v, %d options, peer TLS %v", err, len(opts), cfg.PeerTLS != nil)
	}
}

// issueTo writes ca.crt and, for node n1 (valid for 127.0.0.1) and each
// client named, NAME.crt and NAME.key into dir.
func issueTo(t *testing.T, ca *certs.CA, dir string, clients ...string) {
	t.Helper()
	if _, err := ca.WriteCA(dir); err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.IssueNode("n1", []string{"127.0.0.1"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := leaf.Write(dir, "n1"); err != nil {
		t.Fatal(err)
	}
	for _, name := range clients {
		leaf, err := ca.IssueClient(name, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := leaf.Write(dir, name); err != nil {
			t.Fatal(err)
		}
	}
}

// startTLSNode runs a one-node cluster in this process the way serve
// wires it, with the certificates of n1 in dir on both the client API
// (requiring client certificates) and raft; it returns the client address.
func startTLSNode(t *testing.T, dir string) string {
	t.Helper()
	p := func(name string) string { return filepath.Join(dir, name) }
	flags := &serveTLSFlags{
		certFile: p("n1.crt"), keyFile: p("n1.key"), trustedCAFile: p("ca.crt"), clientCertAuth: true,
		peerCertFile: p("n1.crt"), peerKeyFile: p("n1.key"), peerTrustedCAFile: p("ca.crt"),
	}
	n := nodetest.Start(t, nil, nodetest.NoWait(), nodetest.Setup(func(cfg *node.Config) ([]grpc.ServerOption, error) {
		return flags.apply(cfg, false, quietLog)
	}))
	return n.ClientAddr
}

// put writes key through the CLI's client built from flags.
func put(t *testing.T, addr string, flags clientTLSFlags, key string) error {
	t.Helper()
	g := &clientFlags{endpoints: addr, timeout: 3 * time.Second, dialTimeout: time.Second, tls: &flags}
	c, ctx, done, err := g.open()
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	_, err = c.Put(ctx, []byte(key), []byte("v"))
	return err
}

// The client API with --client-cert-auth serves a client whose certificate
// its CA signed, and refuses (UNAVAILABLE: the handshake fails) a client
// without a certificate, one with a certificate from another CA, and one
// speaking plaintext.
func TestClientAPIServesOnlyClientsWithAValidCertificate(t *testing.T) {
	ca, err := certs.NewCA("test-ca", 0)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	issueTo(t, ca, dir, "root")
	other, err := certs.NewCA("other-ca", 0)
	if err != nil {
		t.Fatal(err)
	}
	otherDir := t.TempDir()
	issueTo(t, other, otherDir, "mallory")
	addr := startTLSNode(t, dir)

	good := clientTLSFlags{cacert: filepath.Join(dir, "ca.crt"), cert: filepath.Join(dir, "root.crt"), key: filepath.Join(dir, "root.key")}
	waitPut(t, addr, good, "/ready", "a client with a certificate from the CA was not served")
	for name, flags := range map[string]clientTLSFlags{
		"no certificate":                {cacert: good.cacert},
		"a certificate from another CA": {cacert: good.cacert, cert: filepath.Join(otherDir, "mallory.crt"), key: filepath.Join(otherDir, "mallory.key")},
		"plaintext":                     {},
	} {
		err := put(t, addr, flags, "/intruder")
		if status.Code(err) != codes.Unavailable {
			t.Errorf("%s: put returned %v, want UNAVAILABLE", name, err)
		}
	}
}

// Certificate files replaced on disk are served to new connections without
// a restart.
func TestRotatedServerCertificateReachesNewConnections(t *testing.T) {
	ca, err := certs.NewCA("test-ca", 0)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	issueTo(t, ca, dir, "root")
	addr := startTLSNode(t, dir)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM)
	client, err := tls.LoadX509KeyPair(filepath.Join(dir, "root.crt"), filepath.Join(dir, "root.key"))
	if err != nil {
		t.Fatal(err)
	}
	served := func() *big.Int {
		t.Helper()
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
			&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{client}, NextProtos: []string{"h2"}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber
	}
	before := served()

	leaf, err := ca.IssueNode("n1", []string{"127.0.0.1"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := leaf.Write(dir, "n1"); err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	want := pair.Leaf.SerialNumber
	deadline := time.Now().Add(10 * time.Second)
	for got := served(); got.Cmp(want) != 0; got = served() {
		if got.Cmp(before) != 0 {
			t.Fatalf("served serial %v, neither the old %v nor the new %v", got, before, want)
		}
		if time.Now().After(deadline) {
			t.Fatalf("still serving the old certificate (serial %v) 10 s after it was replaced", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	good := clientTLSFlags{cacert: filepath.Join(dir, "ca.crt"), cert: filepath.Join(dir, "root.crt"), key: filepath.Join(dir, "root.key")}
	waitPut(t, addr, good, "/after-rotation", "no write after the rotation")
}

// Raft's certificate must be this node's node certificate, and so must
// the client API's with --auth (the node presents it to the members it
// calls, which recognise it by it); the member calls present it.
func TestServeTLSFlagsRequireNodeCertificates(t *testing.T) {
	ca, err := certs.NewCA("test-ca", 0)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	issueTo(t, ca, dir, "alice")
	p := func(name string) string { return filepath.Join(dir, name) }
	flags := func(client, peer string) *serveTLSFlags {
		return &serveTLSFlags{
			certFile: p(client + ".crt"), keyFile: p(client + ".key"), trustedCAFile: p("ca.crt"), clientCertAuth: true,
			peerCertFile: p(peer + ".crt"), peerKeyFile: p(peer + ".key"), peerTrustedCAFile: p("ca.crt"),
		}
	}
	for _, tc := range []struct {
		id, client, peer string
		auth             bool
		errHas           string
	}{
		{"n1", "n1", "alice", false, "--peer-cert-file " + p("alice.crt") + " is not a node certificate"},
		{"n2", "n1", "n1", false, "--peer-cert-file " + p("n1.crt") + " is the node certificate of n1, and this node is n2"},
		{"n1", "alice", "n1", true, "with --auth, --cert-file " + p("alice.crt") + " is not a node certificate"},
		{"n2", "n1", "n1", true, "is the node certificate of n1"},
	} {
		cfg := node.DefaultConfig()
		cfg.ID = tc.id
		_, err := flags(tc.client, tc.peer).apply(&cfg, tc.auth, quietLog)
		if err == nil || !strings.Contains(err.Error(), tc.errHas) {
			t.Errorf("node %s, --cert-file %s, --peer-cert-file %s, auth %v: %v, want an error containing %q", tc.id, tc.client, tc.peer, tc.auth, err, tc.errHas)
		}
		if cfg.PeerTLS != nil || cfg.ClientAPITLS != nil {
			t.Errorf("node %s: refused, yet the node config was changed", tc.id)
		}
	}
	// Without --auth the client API may serve any server certificate,
	// another node's included, but not a client certificate.
	n2, err := ca.IssueNode("n2", []string{"127.0.0.1"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := n2.Write(dir, "n2"); err != nil {
		t.Fatal(err)
	}
	cfg := node.DefaultConfig()
	cfg.ID = "n1"
	if _, err := flags("n2", "n1").apply(&cfg, false, quietLog); err != nil {
		t.Fatalf("another node's certificate on the client API, without --auth: %v", err)
	}
	cfg = node.DefaultConfig()
	cfg.ID = "n1"
	_, err = flags("alice", "n1").apply(&cfg, false, quietLog)
	if want := "--cert-file " + p("alice.crt") + " lacks serverAuth in its extended key usage"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("a client certificate on the client API, without --auth: %v, want an error containing %q", err, want)
	}
	cfg = node.DefaultConfig()
	cfg.ID = "n1"
	if _, err := flags("n1", "n1").apply(&cfg, true, quietLog); err != nil {
		t.Fatal(err)
	}
	member, err := cfg.ClientAPITLS("127.0.0.1").GetClientCertificate(&tls.CertificateRequestInfo{})
	if err != nil {
		t.Fatal(err)
	}
	if id, ok := certs.NodeID(member.Leaf); !ok || id != "n1" {
		t.Fatalf("a member call presents a certificate of node %q (%v), want n1's node certificate", id, ok)
	}
}

// writeCert writes a self-signed certificate valid for 127.0.0.1 and the
// extended key usages given (none: the extension left out) to dir as
// name.crt and name.key, naming node id in its URI unless id is empty. It
// stands for one from an operator's own CA, whose usages serve's checks
// are about.
func writeCert(t *testing.T, dir, name, id string, usages ...x509.ExtKeyUsage) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usages,
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	if id != "" {
		tmpl.URIs = []*url.URL{certs.NodeURI(id)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	leaf := certs.Leaf{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
	if _, _, err := leaf.Write(dir, name); err != nil {
		t.Fatal(err)
	}
}

// serve refuses, naming the file and the usage it lacks, a certificate
// whose extended key usage the other side would refuse: raft's without
// clientAuth or serverAuth, the client API's without serverAuth, and
// without clientAuth too under --auth. One without the extension is valid
// for any usage.
func TestServeTLSFlagsRequireExtendedKeyUsage(t *testing.T) {
	ca, err := certs.NewCA("test-ca", 0)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	issueTo(t, ca, dir)
	server, client := x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth
	writeCert(t, dir, "server-only", "n1", server)
	writeCert(t, dir, "client-only", "n1", client)
	writeCert(t, dir, "no-eku", "n1")
	writeCert(t, dir, "any", "n1", x509.ExtKeyUsageAny)
	p := func(name string) string { return filepath.Join(dir, name) }
	flags := func(client, peer string) *serveTLSFlags {
		return &serveTLSFlags{
			certFile: p(client + ".crt"), keyFile: p(client + ".key"),
			peerCertFile: p(peer + ".crt"), peerKeyFile: p(peer + ".key"), peerTrustedCAFile: p("ca.crt"),
		}
	}
	for _, tc := range []struct {
		client, peer string
		auth         bool
		errHas       string // "": accepted
	}{
		{"n1", "server-only", false, "peer TLS: --peer-cert-file " + p("server-only.crt") + " lacks clientAuth in its extended key usage (raft peers require serverAuth of the node they dial and clientAuth of the node dialing them): reissue it with serverAuth and clientAuth"},
		{"n1", "client-only", false, "--peer-cert-file " + p("client-only.crt") + " lacks serverAuth in its extended key usage"},
		{"client-only", "n1", false, "client TLS: --cert-file " + p("client-only.crt") + " lacks serverAuth in its extended key usage (clients require serverAuth of the client API)"},
		{"server-only", "n1", true, "client TLS: --cert-file " + p("server-only.crt") + " lacks clientAuth in its extended key usage (clients require serverAuth of the client API and, with --auth, members clientAuth"},
		{"server-only", "n1", false, ""},
		{"no-eku", "no-eku", true, ""},
		{"any", "any", true, ""},
	} {
		cfg := node.DefaultConfig()
		cfg.ID = "n1"
		_, err := flags(tc.client, tc.peer).apply(&cfg, tc.auth, quietLog)
		switch {
		case tc.errHas == "" && err != nil:
			t.Errorf("--cert-file %s, --peer-cert-file %s, auth %v: %v", tc.client, tc.peer, tc.auth, err)
		case tc.errHas != "" && (err == nil || !strings.Contains(err.Error(), tc.errHas)):
			t.Errorf("--cert-file %s, --peer-cert-file %s, auth %v: %v, want an error containing %q", tc.client, tc.peer, tc.auth, err, tc.errHas)
		case tc.errHas != "" && (cfg.PeerTLS != nil || cfg.ClientAPITLS != nil):
			t.Errorf("--cert-file %s, --peer-cert-file %s: refused, yet the node config was changed", tc.client, tc.peer)
		}
	}
}

// A --peer-cert-file rotated to a client certificate (which raft peers
// would refuse) is not loaded: the node goes on presenting its node
// certificate, on both sides of raft's handshakes, and logs why.
func TestPeerCertificateRotatedToAClientCertificateIsRefused(t *testing.T) {
	ca, err := certs.NewCA("test-ca", 0)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	issueTo(t, ca, dir)
	p := func(name string) string { return filepath.Join(dir, name) }
	flags := &serveTLSFlags{peerCertFile: p("n1.crt"), peerKeyFile: p("n1.key"), peerTrustedCAFile: p("ca.crt")}
	var logged lockedBuffer
	cfg := node.DefaultConfig()
	cfg.ID = "n1"
	if _, err := flags.apply(&cfg, false, slog.New(slog.NewTextHandler(&logged, nil))); err != nil {
		t.Fatal(err)
	}
	// presented returns the node ids of the certificates raft's handshakes
	// present, accepting and dialing.
	presented := func() (accepting, dialing string) {
		t.Helper()
		srv, err := cfg.PeerTLS.Server.GetConfigForClient(&tls.ClientHelloInfo{})
		if err != nil {
			t.Fatal(err)
		}
		dial, err := cfg.PeerTLS.Dial("127.0.0.1").GetClientCertificate(&tls.CertificateRequestInfo{})
		if err != nil {
			t.Fatal(err)
		}
		accepting, _ = certs.NodeID(srv.Certificates[0].Leaf)
		dialing, _ = certs.NodeID(dial.Leaf)
		return accepting, dialing
	}

	alice, err := ca.IssueClient("alice", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := alice.Write(dir, "n1"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logged.String(), "is not a node certificate") {
		if a, d := presented(); a != "n1" || d != "n1" {
			t.Fatalf("after a rotation to a client certificate raft presents node %q accepting and %q dialing, want n1's node certificate", a, d)
		}
		if time.Now().After(deadline) {
			t.Fatalf("a rotation to a client certificate was not reported in 10 s:\n%s", logged.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if a, d := presented(); a != "n1" || d != "n1" {
		t.Fatalf("after the refused rotation was reported raft presents node %q accepting and %q dialing, want n1", a, d)
	}
	if !strings.Contains(logged.String(), "keeping the previous certificates") {
		t.Fatalf("the refusal was logged without saying the node certificate stays:\n%s", logged.String())
	}
}

// lockedBuffer is a log destination that handshakes and the test share.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestClientTLSFlagsComeFromTheEnvironment(t *testing.T) {
	t.Setenv("RAFTWATCH_CACERT", "/ca.pem")
	t.Setenv("RAFTWATCH_CERT", "/c.pem")
	t.Setenv("RAFTWATCH_KEY", "/k.pem")
	fs := pflag.NewFlagSet("put", pflag.ContinueOnError)
	f := addClientTLSFlags(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if f.cacert != "/ca.pem" || f.cert != "/c.pem" || f.key != "/k.pem" {
		t.Fatalf("flags from the environment: %+v", *f)
	}
	if _, err := (&clientTLSFlags{cert: "/c.pem"}).config(); err == nil || !strings.Contains(err.Error(), "--cert needs --key") {
		t.Fatalf("--cert without --key: %v", err)
	}
}

func TestTLSHintOnlyForAMissingPreface(t *testing.T) {
	preface := status.New(codes.Unavailable, `no endpoint reachable; tried 1: 127.0.0.1:7101: connection error: desc = "error reading server preface: EOF"`)
	if h := tlsHint(preface); !strings.Contains(h, "--cacert") {
		t.Fatalf("no hint for a missing preface: %q", h)
	}
	for _, st := range []*status.Status{
		status.New(codes.Unavailable, "no endpoint reachable; tried 1: 127.0.0.1:7101: connection refused"),
		status.New(codes.Internal, "error reading server preface"),
	} {
		if h := tlsHint(st); h != "" {
			t.Errorf("hint for %v: %q", st, h)
		}
	}
}

// waitPut retries a put of key with flags until it succeeds, failing the
// test with what and the last error after 20 s.
func waitPut(t *testing.T, addr string, flags clientTLSFlags, key, what string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for err := put(t, addr, flags, key); err != nil; err = put(t, addr, flags, key) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond) // polling with a deadline
	}
}
