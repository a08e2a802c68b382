package main

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
// is the name; a second create in the same directory is refused; certs
// issue replaces one with a new certificate of the same CA.
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
	leaf := func(name string) *x509.Certificate {
		t.Helper()
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "127.0.0.1"}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if pair.Leaf.Subject.CommonName != name {
			t.Fatalf("%s.crt has common name %q", name, pair.Leaf.Subject.CommonName)
		}
		return pair.Leaf
	}
	for _, name := range []string{"n1", "n2", "root"} {
		leaf(name)
	}
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
	before := leaf("n1").SerialNumber
	if out, err := runRoot(t, "certs", "issue", "n1", "--dir", dir, "--hosts", "127.0.0.1"); err != nil {
		t.Fatalf("certs issue: %v\n%s", err, out)
	}
	if after := leaf("n1").SerialNumber; after.Cmp(before) == 0 {
		t.Fatal("certs issue left the old certificate in place")
	}
	if _, err := runRoot(t, "certs", "issue", "../escape", "--dir", dir); err == nil {
		t.Fatal("a name with a path separator was issued")
	}
}
