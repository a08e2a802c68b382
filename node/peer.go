package node

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/raftwatch/raftwatch/proto"
)

// dialMember opens a connection to another member's client API: the one
// place node/ dials its peers (recording its client address with the
// leader, polling a new member's catch-up, confirming a removal), so the
// one place their transport settings live.
func dialMember(clientAddr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(clientAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
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
	cc, err := dialMember(clientAddr)
	if err != nil {
		return err
	}
	defer cc.Close()
	return call(ctx, pb.NewClusterClient(cc))
}
