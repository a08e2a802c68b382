// Package certs issues throwaway X.509 certificates for a local or test
// cluster: a certificate authority and the two kinds of leaf certificate
// it signs, with Go's crypto only (no openssl). Invariant: every leaf it
// issues chains to the CA that issued it and carries its identity in the
// subject's common name; a node certificate (IssueNode) is valid for TLS
// server and client authentication on its hosts and names its node in a
// raftwatch://node/<id> URI, so one certificate serves a node's listeners
// and its dials to peers; a client certificate (IssueClient) is valid for
// client authentication only and names no host, so it can neither serve
// nor pass as a node.
//
// It is for development, tests and `scripts/cluster.sh up --tls`; a
// production cluster should use certificates from its own CA.
package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DefaultValidity is how long certificates issued here stay valid when no
// validity is given.
const DefaultValidity = 365 * 24 * time.Hour

// CA is a certificate authority that issues leaf certificates.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	key     crypto.Signer
}

// Leaf is an issued certificate and its private key, PEM-encoded.
type Leaf struct {
	CertPEM, KeyPEM []byte
}

// NewCA creates a self-signed CA named name, valid for validity (0:
// DefaultValidity).
func NewCA(name string, validity time.Duration) (*CA, error) {
	if validity <= 0 {
		validity = DefaultValidity
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"raftwatch"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key: key}, nil
}

// IssueNode signs the certificate of node id: common name and
// raftwatch://node/<id> URI (NodeURI) both name the node; it is valid for
// the given hosts (IP addresses or DNS names, as subject alternative
// names), for TLS server and client authentication (a node serves raft and
// its client API, and dials its peers with it), for validity (0:
// DefaultValidity).
func (ca *CA) IssueNode(id string, hosts []string, validity time.Duration) (Leaf, error) {
	if id == "" || strings.Contains(id, "/") {
		return Leaf{}, fmt.Errorf("a node certificate needs a node id without '/', not %q", id)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: id},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{NodeURI(id)},
	}
	addHosts(tmpl, hosts)
	return ca.sign(tmpl, validity)
}

// IssueClient signs a client certificate for identity (the subject's
// common name, which raftwatch's roles are bound to), valid for validity
// (0: DefaultValidity). It is good for TLS client authentication only: it
// names no host and no node, so it cannot serve a listener nor join raft.
func (ca *CA) IssueClient(identity string, validity time.Duration) (Leaf, error) {
	if identity == "" {
		return Leaf{}, errors.New("a client certificate needs a common name (the identity)")
	}
	return ca.sign(&x509.Certificate{
		Subject:     pkix.Name{CommonName: identity},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, validity)
}

// addHosts names hosts (IP addresses or DNS names) in tmpl's subject
// alternative names.
func addHosts(tmpl *x509.Certificate, hosts []string) {
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
}

// sign completes tmpl (serial, validity, key usage, organization) with a
// new key and signs it.
func (ca *CA) sign(tmpl *x509.Certificate, validity time.Duration) (Leaf, error) {
	cn := tmpl.Subject.CommonName
	if validity <= 0 {
		validity = DefaultValidity
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Leaf{}, fmt.Errorf("generate key for %q: %w", cn, err)
	}
	if tmpl.SerialNumber, err = serialNumber(); err != nil {
		return Leaf{}, err
	}
	now := time.Now()
	tmpl.Subject.Organization = []string{"raftwatch"}
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Minute), now.Add(validity)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return Leaf{}, fmt.Errorf("sign certificate for %q: %w", cn, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return Leaf{}, err
	}
	return Leaf{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

// WriteCA writes the CA certificate to dir/ca.crt.
func (ca *CA) WriteCA(dir string) (string, error) {
	path := filepath.Join(dir, "ca.crt")
	return path, writeAtomic(path, ca.CertPEM, 0o644)
}

// WriteKey writes the CA's private key to dir/ca.key, readable by its
// owner only: whoever reads it can issue certificates the cluster trusts.
func (ca *CA) WriteKey(dir string) (string, error) {
	der, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "ca.key")
	return path, writeAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

// LoadCA reads a CA written by WriteCA and WriteKey (or any PEM CA
// certificate and its PKCS#8, EC or PKCS#1 private key), to issue more
// certificates from it, e.g. when rotating one.
func LoadCA(certPath, keyPath string) (*CA, error) {
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("load CA %s and key %s: %w", certPath, keyPath, err)
	}
	cert := pair.Leaf
	if !cert.IsCA {
		return nil, fmt.Errorf("%s is not a CA certificate", certPath)
	}
	key, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("CA key %s cannot sign", keyPath)
	}
	return &CA{Cert: cert, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), key: key}, nil
}

// Write writes the leaf to dir/name.crt and dir/name.key (the key readable
// by its owner only) and returns both paths. Each file is replaced
// atomically (write, then rename), so a process reloading it never reads
// half a file; but the key is replaced before the certificate, so one
// reading between the two finds a pair that does not match (tlsfiles
// retries that before reporting it).
func (l Leaf) Write(dir, name string) (certPath, keyPath string, err error) {
	certPath, keyPath = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := writeAtomic(keyPath, l.KeyPEM, 0o600); err != nil {
		return "", "", err
	}
	return certPath, keyPath, writeAtomic(certPath, l.CertPEM, 0o644)
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename: nothing there
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func serialNumber() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	return n, nil
}
