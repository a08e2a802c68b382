package certs

import (
	"crypto/x509"
	"net/url"
	"testing"
)

func TestNodeID(t *testing.T) {
	u := func(s string) *url.URL {
		v, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, c := range []struct {
		uris []*url.URL
		id   string
		ok   bool
	}{
		{[]*url.URL{NodeURI("n1")}, "n1", true},
		{[]*url.URL{u("spiffe://x/y"), NodeURI("n2")}, "n2", true},
		{nil, "", false},
		{[]*url.URL{u("raftwatch://client/n1")}, "", false},
		{[]*url.URL{u("https://node/n1")}, "", false},
		{[]*url.URL{u("raftwatch://node/")}, "", false},
		{[]*url.URL{u("raftwatch://node/a/b")}, "", false},
		{[]*url.URL{NodeURI("n1"), NodeURI("n2")}, "", false},
	} {
		id, ok := NodeID(&x509.Certificate{URIs: c.uris})
		if id != c.id || ok != c.ok {
			t.Errorf("NodeID(%v) = %q, %v; want %q, %v", c.uris, id, ok, c.id, c.ok)
		}
	}
}
