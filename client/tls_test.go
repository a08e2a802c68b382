package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/raftwatch/raftwatch/certs"
	pb "github.com/raftwatch/raftwatch/proto"
)

// The endpoints' schemes and Config.TLS decide between plaintext and TLS;
// contradictions are refused.
func TestEndpointSchemesChooseTheTransport(t *testing.T) {
	some := &tls.Config{}
	cases := []struct {
		name    string
		eps     []string
		tls     *tls.Config
		errHas  string
		wantTLS bool
	}{
		{name: "bare", eps: []string{"127.0.0.1:1"}},
		{name: "http", eps: []string{"http://127.0.0.1:1"}},
		{name: "https without a config", eps: []string{"https://127.0.0.1:1", "127.0.0.1:2"}, wantTLS: true},
		{name: "bare with a config", eps: []string{"127.0.0.1:1"}, tls: some, wantTLS: true},
		{name: "https with a config", eps: []string{"https://127.0.0.1:1"}, tls: some, wantTLS: true},
		{name: "mixed", eps: []string{"http://127.0.0.1:1", "https://127.0.0.1:2"}, errHas: "mix http:// and https://"},
		{name: "http with a config", eps: []string{"http://127.0.0.1:1"}, tls: some, errHas: "http:// endpoints are plaintext"},
	}
	for _, tc := range cases {
		c, err := New(Config{Endpoints: tc.eps, TLS: tc.tls})
		if tc.errHas != "" {
			if err == nil || !strings.Contains(err.Error(), tc.errHas) {
				t.Errorf("%s: New = %v, want an error containing %q", tc.name, err, tc.errHas)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if got := c.cfg.TLS != nil; got != tc.wantTLS {
			t.Errorf("%s: TLS %v, want %v", tc.name, got, tc.wantTLS)
		}
		c.Close()
	}
}

type statusServer struct{ pb.UnimplementedClusterServer }

func (statusServer) Status(context.Context, *pb.StatusRequest) (*pb.StatusResponse, error) {
	return &pb.StatusResponse{Id: "tls-node"}, nil
}

// A client with Config.TLS trusting the server's CA reaches a TLS server;
// one speaking plaintext, or trusting only the system's roots (https://
// without a config), does not.
func TestTLSConfigReachesATLSServer(t *testing.T) {
	ca, err := certs.NewCA("test-ca", 0)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.IssueNode("n1", []string{"127.0.0.1"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{pair}})))
	pb.RegisterClusterServer(g, statusServer{})
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	addr := lis.Addr().String()

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM)
	status := func(cfg Config) error {
		t.Helper()
		cfg.DialTimeout = time.Second
		c, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := c.Status(ctx, addr)
		if err == nil && resp.Id != "tls-node" {
			t.Fatalf("status answered by %q", resp.Id)
		}
		return err
	}
	if err := status(Config{Endpoints: []string{addr}, TLS: &tls.Config{RootCAs: roots}}); err != nil {
		t.Fatalf("TLS client trusting the CA: %v", err)
	}
	if err := status(Config{Endpoints: []string{"https://" + addr}, TLS: &tls.Config{RootCAs: roots}}); err != nil {
		t.Fatalf("https:// endpoint with the CA: %v", err)
	}
	if err := status(Config{Endpoints: []string{addr}}); err == nil {
		t.Fatal("a plaintext client got an answer from a TLS server")
	}
	if err := status(Config{Endpoints: []string{"https://" + addr}}); err == nil {
		t.Fatal("a client trusting only the system's roots accepted a certificate from a throwaway CA")
	}
}
