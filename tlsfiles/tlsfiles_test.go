package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/raftwatch/raftwatch/certs"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// issue writes ca.crt and a node certificate for name (valid for
// 127.0.0.1) to dir.
func issue(t *testing.T, ca *certs.CA, dir, name string) Files {
	t.Helper()
	return write(t, ca, dir, name, func() (certs.Leaf, error) { return ca.IssueNode(name, []string{"127.0.0.1"}, 0) })
}

// issueClient writes ca.crt and a client certificate for name to dir.
func issueClient(t *testing.T, ca *certs.CA, dir, name string) Files {
	t.Helper()
	return write(t, ca, dir, name, func() (certs.Leaf, error) { return ca.IssueClient(name, 0) })
}

func write(t *testing.T, ca *certs.CA, dir, name string, issue func() (certs.Leaf, error)) Files {
	t.Helper()
	caPath, err := ca.WriteCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := issue()
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := leaf.Write(dir, name)
	if err != nil {
		t.Fatal(err)
	}
	return Files{Cert: cert, Key: key, CA: caPath}
}

func newCA(t *testing.T) *certs.CA {
	t.Helper()
	ca, err := certs.NewCA("test-ca", 0)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func load(t *testing.T, f Files) *Source {
	t.Helper()
	s, err := Load(f, quiet)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// serve accepts TLS connections with cfg on 127.0.0.1 and writes one byte
// on each after its handshake; it returns the address.
func serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if c.(*tls.Conn).Handshake() == nil {
					c.Write([]byte{1})
				}
			}()
		}
	}()
	return lis.Addr().String()
}

// exchange dials addr with cfg and reads the server's byte: with TLS 1.3
// a refused client certificate shows only there, after the client's side
// of the handshake. It returns the serial of the server's certificate.
func exchange(addr string, cfg *tls.Config) (*big.Int, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		return nil, err
	}
	return c.ConnectionState().PeerCertificates[0].SerialNumber, nil
}

func TestLoadRefusesIncompleteOrBrokenFiles(t *testing.T) {
	dir := t.TempDir()
	f := issue(t, newCA(t), dir, "n1")
	notPEM := filepath.Join(dir, "notpem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, files := range map[string]Files{
		"cert without key":  {Cert: f.Cert},
		"key without cert":  {Key: f.Key},
		"missing cert file": {Cert: filepath.Join(dir, "nope.crt"), Key: f.Key},
		"key of no cert":    {Cert: f.Cert, Key: notPEM},
		"CA without PEM":    {CA: notPEM},
		"missing CA":        {CA: filepath.Join(dir, "nope.crt")},
	} {
		if _, err := Load(files, quiet); err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
	if _, err := Load(f, quiet); err != nil {
		t.Fatalf("complete files: %v", err)
	}
}

// A server requiring client certificates accepts one from its CA and
// refuses none, or one from another CA.
func TestServerVerifiesClientCertificates(t *testing.T) {
	ca := newCA(t)
	srv := load(t, issue(t, ca, t.TempDir(), "n1"))
	addr := serve(t, srv.ServerConfig(tls.RequireAndVerifyClientCert))

	good := load(t, issueClient(t, ca, t.TempDir(), "alice"))
	if _, err := exchange(addr, good.ClientConfig("127.0.0.1")); err != nil {
		t.Fatalf("client with a certificate from the CA: %v", err)
	}
	noCert := load(t, Files{CA: good.files.CA})
	if _, err := exchange(addr, noCert.ClientConfig("127.0.0.1")); err == nil {
		t.Fatal("client without a certificate was served")
	}
	otherDir := t.TempDir()
	other := issueClient(t, newCA(t), otherDir, "mallory")
	other.CA = good.files.CA // trusts the server, but its own cert is from another CA
	if _, err := exchange(addr, load(t, other).ClientConfig("127.0.0.1")); err == nil {
		t.Fatal("client with a certificate from another CA was served")
	}
	// And the client checks the server: one that trusts another CA only.
	distrust := load(t, Files{CA: filepath.Join(otherDir, "ca.crt")})
	if _, err := exchange(addr, distrust.ClientConfig("127.0.0.1")); err == nil {
		t.Fatal("client accepted a server certificate from a CA it does not trust")
	}
}

// Rotated files are picked up by new connections without a restart; a
// broken replacement keeps the previous certificate.
func TestRotatedCertificateIsServedToNewConnections(t *testing.T) {
	ca := newCA(t)
	dir := t.TempDir()
	f := issue(t, ca, dir, "n1")
	var logged syncBuffer
	srv, err := Load(f, slog.New(slog.NewTextHandler(&logged, nil)))
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, srv.ServerConfig(tls.NoClientCert))
	cli := load(t, Files{CA: f.CA})
	first, err := exchange(addr, cli.ClientConfig("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}

	// A broken rotation: the certificate replaced by garbage.
	if err := os.WriteFile(f.Cert, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * checkInterval)
	for time.Now().Before(deadline) {
		got, err := exchange(addr, cli.ClientConfig("127.0.0.1"))
		if err != nil {
			t.Fatalf("a broken replacement broke the server: %v", err)
		}
		if got.Cmp(first) != 0 {
			t.Fatalf("served serial %v after a broken replacement, want the old %v", got, first)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(logged.String(), "cannot be loaded") {
		t.Fatalf("the failed reload was not logged:\n%s", logged.String())
	}

	leaf, err := ca.IssueNode("n1", []string{"127.0.0.1"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := leaf.Write(dir, "n1"); err != nil {
		t.Fatal(err)
	}
	want := srvSerial(t, leaf)
	deadline = time.Now().Add(10 * checkInterval)
	for {
		got, err := exchange(addr, cli.ClientConfig("127.0.0.1"))
		if err != nil {
			t.Fatal(err)
		}
		if got.Cmp(want) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still serving serial %v %v after the files were replaced, want %v", got, 10*checkInterval, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// lookNow makes the next handshake look at the files, as it would
// checkInterval after the last look.
func lookNow(s *Source) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checked = time.Time{}
}

// replace writes data to path with a modification time of its own (file
// systems with coarse timestamps could give two quick writes the same).
func replace(t *testing.T, path string, data []byte, mod time.Time) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mod, mod); err != nil {
		t.Fatal(err)
	}
}

// A look between the replacement of the key and that of the certificate
// (a rotation under way) logs no warning; a replacement that stays broken
// is reported once.
func TestHalfDoneRotationIsNotReported(t *testing.T) {
	ca := newCA(t)
	f := issue(t, ca, t.TempDir(), "n1")
	var logged syncBuffer
	s, err := Load(f, slog.New(slog.NewTextHandler(&logged, nil)))
	if err != nil {
		t.Fatal(err)
	}
	serial := func() *big.Int { return s.current().cert.Leaf.SerialNumber }
	old := serial()
	leaf, err := ca.IssueNode("n1", []string{"127.0.0.1"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	mod := time.Now().Add(time.Minute)
	replace(t, f.Key, leaf.KeyPEM, mod)
	lookNow(s)
	if got := serial(); got.Cmp(old) != 0 {
		t.Fatalf("serving serial %v with a new key and the old certificate", got)
	}
	replace(t, f.Cert, leaf.CertPEM, mod.Add(time.Second))
	lookNow(s)
	if got, want := serial(), srvSerial(t, leaf); got.Cmp(want) != 0 {
		t.Fatalf("serving serial %v after the rotation, want %v", got, want)
	}
	if strings.Contains(logged.String(), "cannot be loaded") {
		t.Fatalf("a rotation under way was reported as broken:\n%s", logged.String())
	}

	replace(t, f.Cert, []byte("not a certificate"), mod.Add(2*time.Second))
	for i := 0; i < 3; i++ {
		lookNow(s)
		s.current()
	}
	if n := strings.Count(logged.String(), "cannot be loaded"); n != 1 {
		t.Fatalf("a broken replacement reported %d times, want once:\n%s", n, logged.String())
	}
}

// nodeOnly is a check that refuses any certificate but a node's.
func nodeOnly(leaf *x509.Certificate) error {
	if _, ok := certs.NodeID(leaf); !ok {
		return fmt.Errorf("certificate %q is not a node certificate", leaf.Subject.CommonName)
	}
	return nil
}

// A certificate the check refuses is not loaded: at the first load the
// check's error is returned; a rotation to one keeps the previous
// certificate and is logged once, and a later good rotation is picked up.
func TestCheckRefusesCertificates(t *testing.T) {
	ca := newCA(t)
	dir := t.TempDir()
	client := issueClient(t, ca, dir, "alice")
	if _, err := LoadChecked(client, nodeOnly, quiet); err == nil || err.Error() != `certificate "alice" is not a node certificate` {
		t.Fatalf("loading a certificate the check refuses: %v, want the check's error", err)
	}

	f := issue(t, ca, dir, "n1")
	var logged syncBuffer
	s, err := LoadChecked(f, nodeOnly, slog.New(slog.NewTextHandler(&logged, nil)))
	if err != nil {
		t.Fatal(err)
	}
	serial := func() *big.Int { return s.current().cert.Leaf.SerialNumber }
	old := serial()
	alice, err := ca.IssueClient("alice", 0)
	if err != nil {
		t.Fatal(err)
	}
	mod := time.Now().Add(time.Minute)
	replace(t, f.Key, alice.KeyPEM, mod)
	replace(t, f.Cert, alice.CertPEM, mod)
	for i := 0; i < 3; i++ {
		lookNow(s)
		if got := serial(); got.Cmp(old) != 0 {
			t.Fatalf("look %d: serving serial %v, the refused certificate's, want the old %v", i+1, got, old)
		}
	}
	if n := strings.Count(logged.String(), "not a node certificate"); n != 1 {
		t.Fatalf("a refused rotation reported %d times, want once with the check's error:\n%s", n, logged.String())
	}

	leaf, err := ca.IssueNode("n1", []string{"127.0.0.1"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	replace(t, f.Key, leaf.KeyPEM, mod.Add(time.Second))
	replace(t, f.Cert, leaf.CertPEM, mod.Add(time.Second))
	lookNow(s)
	if got, want := serial(), srvSerial(t, leaf); got.Cmp(want) != 0 {
		t.Fatalf("serving serial %v after a good rotation followed a refused one, want %v", got, want)
	}
}

// A client cannot resume a session: each connection verifies its
// certificate anew, against the CA file of the moment.
func TestSessionsAreNotResumed(t *testing.T) {
	ca := newCA(t)
	addr := serve(t, load(t, issue(t, ca, t.TempDir(), "n1")).ServerConfig(tls.RequireAndVerifyClientCert))
	cli := load(t, issueClient(t, ca, t.TempDir(), "alice"))
	cache := tls.NewLRUClientSessionCache(4)
	for i := 0; i < 2; i++ {
		cfg := cli.ClientConfig("127.0.0.1")
		cfg.ClientSessionCache = cache
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = io.ReadFull(c, make([]byte, 1)) // after the handshake, where TLS 1.3 tickets come
		resumed := c.ConnectionState().DidResume
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resumed {
			t.Fatalf("connection %d resumed a session", i+1)
		}
	}
}

func srvSerial(t *testing.T, l certs.Leaf) *big.Int {
	t.Helper()
	pair, err := tls.X509KeyPair(l.CertPEM, l.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return pair.Leaf.SerialNumber
}

// syncBuffer is a log destination the server's goroutines and the test
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
