package certs

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"testing"
)

func leafOf(t *testing.T, l Leaf) *x509.Certificate {
	t.Helper()
	pair, err := tls.X509KeyPair(l.CertPEM, l.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return pair.Leaf
}

// A node certificate verifies against its CA as both a server (for its
// hosts) and a client certificate, names its node in common name and node
// URI, and does not verify against another CA.
func TestNodeCertificate(t *testing.T) {
	ca, err := NewCA("test-ca", 0)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.IssueNode("n1", []string{"127.0.0.1", "localhost"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	cert := leafOf(t, leaf)
	if cert.Subject.CommonName != "n1" {
		t.Fatalf("common name %q, want n1", cert.Subject.CommonName)
	}
	if id, ok := NodeID(cert); !ok || id != "n1" {
		t.Fatalf("NodeID = %q, %v; want n1, true", id, ok)
	}
	if len(cert.IPAddresses) != 1 || !cert.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) || len(cert.DNSNames) != 1 {
		t.Fatalf("SANs: IPs %v DNS %v", cert.IPAddresses, cert.DNSNames)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM)
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: "localhost", KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Fatalf("verify for usage %v: %v", usage, err)
		}
	}
	other, err := NewCA("other-ca", 0)
	if err != nil {
		t.Fatal(err)
	}
	otherRoots := x509.NewCertPool()
	otherRoots.AppendCertsFromPEM(other.CertPEM)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: otherRoots}); err == nil {
		t.Fatal("a leaf verified against a CA that did not issue it")
	}
	for _, id := range []string{"", "a/b"} {
		if _, err := ca.IssueNode(id, nil, 0); err == nil {
			t.Fatalf("a node certificate for id %q was issued", id)
		}
	}
}

// A client certificate verifies as a client certificate only, names no
// host, and is no node certificate.
func TestClientCertificate(t *testing.T) {
	ca, err := NewCA("test-ca", 0)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.IssueClient("alice", 0)
	if err != nil {
		t.Fatal(err)
	}
	cert := leafOf(t, leaf)
	if cert.Subject.CommonName != "alice" {
		t.Fatalf("common name %q, want alice", cert.Subject.CommonName)
	}
	if id, ok := NodeID(cert); ok {
		t.Fatalf("a client certificate passes as node %q", id)
	}
	if len(cert.IPAddresses)+len(cert.DNSNames)+len(cert.URIs) != 0 {
		t.Fatalf("a client certificate names hosts: IPs %v DNS %v URIs %v", cert.IPAddresses, cert.DNSNames, cert.URIs)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("verify as a client certificate: %v", err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Fatal("a client certificate verified as a server certificate")
	}
	if _, err := ca.IssueClient("", 0); err == nil {
		t.Fatal("a client certificate without a common name was issued")
	}
}

func TestWriteKeepsTheKeyPrivate(t *testing.T) {
	ca, err := NewCA("test-ca", 0)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := ca.WriteCA(dir); err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.IssueClient("root", 0)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath, err := leaf.Write(dir, "root")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.LoadX509KeyPair(certPath, keyPath); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 {
		t.Fatalf("%d files in the directory, want ca.crt, root.crt, root.key (no temporary files left)", len(entries))
	}
}

// A CA written to disk and loaded back issues leaves that chain to the
// original CA certificate; its key file is private.
func TestLoadedCAIssuesLeavesOfTheSameCA(t *testing.T) {
	ca, err := NewCA("test-ca", 0)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certPath, err := ca.WriteCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	keyPath, err := ca.WriteKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(keyPath); err != nil {
		t.Fatal(err)
	} else if fi.Mode().Perm() != 0o600 {
		t.Fatalf("CA key file mode %v, want 0600", fi.Mode().Perm())
	}
	loaded, err := LoadCA(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := loaded.IssueNode("n4", []string{"127.0.0.1"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM)
	if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("leaf of the loaded CA does not chain to the original: %v", err)
	}
	other, _, err := leaf.Write(dir, "n4")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCA(other, filepath.Join(dir, "n4.key")); err == nil {
		t.Fatal("a leaf certificate was loaded as a CA")
	}
}
