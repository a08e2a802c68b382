package server_test

import (
	"crypto/tls"
	"crypto/x509"
	"testing"

	"github.com/raftwatch/raftwatch/certs"
)

// testCA is a throwaway CA for the in-process tests: node certificates
// carry certs.NodeURI, client ones do not, whatever their common name.
type testCA struct {
	t    *testing.T
	ca   *certs.CA
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	ca, err := certs.NewCA("test-ca", 0)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return &testCA{t: t, ca: ca, pool: pool}
}

func (ca *testCA) pair(leaf certs.Leaf, err error) tls.Certificate {
	ca.t.Helper()
	if err != nil {
		ca.t.Fatal(err)
	}
	c, err := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM)
	if err != nil {
		ca.t.Fatal(err)
	}
	return c
}

// client is a client certificate for identity: no node URI, even when the
// identity is a node id.
func (ca *testCA) client(identity string) tls.Certificate {
	return ca.pair(ca.ca.IssueClient(identity, 0))
}

// node is node id's certificate, valid for 127.0.0.1.
func (ca *testCA) node(id string) tls.Certificate {
	return ca.pair(ca.ca.IssueNode(id, []string{"127.0.0.1"}, 0))
}
