package certs

import (
	"crypto/x509"
	"net/url"
	"strings"
)

// A node certificate names its node in a URI subject alternative name,
// raftwatch://node/<id>. Raft accepts only node certificates from peers,
// and the client API recognises a member node by it: a client certificate
// from the same CA (no such URI) can do neither. With certificates from
// another CA, add the URI to each node's certificate (openssl:
// -addext "subjectAltName=IP:10.0.0.1,URI:raftwatch://node/n1").
const (
	nodeURIScheme = "raftwatch"
	nodeURIHost   = "node"
)

// NodeURI is the URI that marks the certificate of node id.
func NodeURI(id string) *url.URL {
	return &url.URL{Scheme: nodeURIScheme, Host: nodeURIHost, Path: "/" + id}
}

// NodeID returns the node id cert was issued to, from its
// raftwatch://node/<id> URI, and false when it is not a node certificate
// (no such URI, or more than one).
func NodeID(cert *x509.Certificate) (string, bool) {
	var id string
	found := 0
	for _, u := range cert.URIs {
		if u.Scheme != nodeURIScheme || u.Host != nodeURIHost {
			continue
		}
		found++
		id = strings.TrimPrefix(u.Path, "/")
	}
	if found != 1 || id == "" || strings.Contains(id, "/") {
		return "", false
	}
	return id, true
}
