package main

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/raftwatch/raftwatch/certs"
)

func runRoot(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out strings.Builder
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

// certs create writes a CA and a certificate per name whose common name
// is the name: node certificates for nodes, client certificates for
// clients; a second create in the same directory is refused; certs issue
// replaces one with a new certificate of the same CA and kind, and issues
// new ones of either kind.
func TestCertsCreateAndIssue(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	if out, err := runRoot(t, "certs", "create", "--dir", dir, "--nodes", "n1,n2", "--clients", "root", "--hosts", "127.0.0.1"); err != nil {
		t.Fatalf("certs create: %v\n%s", err, out)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	// leaf checks that name's certificate is a node certificate (node) or
	// a client certificate of the CA, and returns it.
	leaf := func(name string, node bool) *x509.Certificate {
		t.Helper()
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"))
		if err != nil {
			t.Fatal(err)
		}
		if pair.Leaf.Subject.CommonName != name {
			t.Fatalf("%s.crt has common name %q", name, pair.Leaf.Subject.CommonName)
		}
		asServer := x509.VerifyOptions{Roots: roots, DNSName: "127.0.0.1"}
		asClient := x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		if _, err := pair.Leaf.Verify(asClient); err != nil {
			t.Fatalf("%s as a client: %v", name, err)
		}
		_, serverErr := pair.Leaf.Verify(asServer)
		id, isNode := certs.NodeID(pair.Leaf)
		switch {
		case node && (serverErr != nil || id != name):
			t.Fatalf("%s: not a node certificate: as a server %v; node %q", name, serverErr, id)
		case !node && (serverErr == nil || isNode || len(pair.Leaf.IPAddresses)+len(pair.Leaf.DNSNames) != 0):
			t.Fatalf("%s: a client certificate that serves, names a node (%v) or hosts %v %v", name, isNode, pair.Leaf.IPAddresses, pair.Leaf.DNSNames)
		}
		return pair.Leaf
	}
	leaf("n1", true)
	leaf("n2", true)
	leaf("root", false)
	for _, key := range []string{"ca.key", "n1.key"} {
		if fi, err := os.Stat(filepath.Join(dir, key)); err != nil {
			t.Fatal(err)
		} else if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", key, fi.Mode().Perm())
		}
	}
	if _, err := runRoot(t, "certs", "create", "--dir", dir, "--nodes", "n3"); err == nil || !strings.Contains(err.Error(), "already holds a CA") {
		t.Fatalf("second create in the same directory: %v", err)
	}
	before := leaf("n1", true).SerialNumber
	if out, err := runRoot(t, "certs", "issue", "--node", "n1", "--dir", dir, "--hosts", "127.0.0.1"); err != nil {
		t.Fatalf("certs issue --node: %v\n%s", err, out)
	}
	if after := leaf("n1", true).SerialNumber; after.Cmp(before) == 0 {
		t.Fatal("certs issue left the old certificate in place")
	}
	if out, err := runRoot(t, "certs", "issue", "alice", "--dir", dir); err != nil {
		t.Fatalf("certs issue: %v\n%s", err, out)
	}
	leaf("alice", false)
	for _, tc := range []struct {
		args   []string
		errHas string
	}{
		{[]string{"n1"}, "n1.crt is a node certificate: reissue it with --node"},
		{[]string{"--node", "root"}, "root.crt is not a node certificate"},
		{[]string{"bob", "--hosts", "127.0.0.1"}, "--hosts is for node certificates"},
	} {
		if _, err := runRoot(t, append([]string{"certs", "issue", "--dir", dir}, tc.args...)...); err == nil || !strings.Contains(err.Error(), tc.errHas) {
			t.Errorf("certs issue %v: %v, want an error containing %q", tc.args, err, tc.errHas)
		}
	}
	leaf("n1", true)
	leaf("root", false)
	if _, err := runRoot(t, "certs", "issue", "../escape", "--dir", dir); err == nil {
		t.Fatal("a name with a path separator was issued")
	}
}
