package node

import (
	"context"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/raftwatch/raftwatch/proto"
)

// dialMember opens a connection to another member's client API: the one
// place node/ dials its peers (recording its client address with the
// leader, polling a new member's catch-up, confirming a removal), so the
// one place their transport settings live. With ClientAPITLS it dials TLS,
// a fresh config per connection so rotated certificates are used.
func (n *Node) dialMember(clientAddr string) (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if n.cfg.ClientAPITLS != nil {
		host, _, err := net.SplitHostPort(clientAddr)
		if err != nil {
			return nil, err
		}
		creds = credentials.NewTLS(n.cfg.ClientAPITLS(host))
	}
	return grpc.NewClient(clientAddr, grpc.WithTransportCredentials(creds))
}

// callMember runs call against the Cluster service of the member at
// clientAddr within timeout; Close does not wait it out.
func (n *Node) callMember(clientAddr string, timeout time.Duration, call func(context.Context, pb.ClusterClient) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	go func() {
		select {
		case <-n.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	cc, err := n.dialMember(clientAddr)
	if err != nil {
		return err
	}
	defer cc.Close()
	return call(ctx, pb.NewClusterClient(cc))
}
