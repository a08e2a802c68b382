package server

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"

	"github.com/raftwatch/raftwatch/fsm"
	"github.com/raftwatch/raftwatch/node"
	pb "github.com/raftwatch/raftwatch/proto"
)

// keepAliveInFlight bounds the renewals one KeepAlive stream has waiting
// for their commit; the stream reads no further request until one ends.
const keepAliveInFlight = 256

// leaseServer implements the Lease service over a node.
type leaseServer struct {
	pb.UnimplementedLeaseServer
	node *node.Node
	log  *slog.Logger
}

// Grant implements Lease.Grant.
func (l *leaseServer) Grant(ctx context.Context, req *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	g, err := l.node.Grant(ctx, req.Ttl, req.Id)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.LeaseGrantResponse{Id: g.ID, Ttl: g.TTL, Revision: g.Revision}, nil
}

// Revoke implements Lease.Revoke.
func (l *leaseServer) Revoke(ctx context.Context, req *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	rev, err := l.node.Revoke(ctx, req.Id)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.LeaseRevokeResponse{Revision: rev}, nil
}

// KeepAliveOnce implements Lease.KeepAliveOnce: an unknown lease is
// NOT_FOUND.
func (l *leaseServer) KeepAliveOnce(ctx context.Context, req *pb.LeaseKeepAliveRequest) (*pb.LeaseKeepAliveResponse, error) {
	ttl, rev, err := l.node.Renew(ctx, req.Id)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.LeaseKeepAliveResponse{Id: req.Id, Ttl: ttl, Revision: rev}, nil
}

// KeepAlive implements Lease.KeepAlive: each request is answered once its
// renewal is applied (ttl 0 when the lease does not exist). Any other
// failure — this node is not the leader (FAILED_PRECONDITION with the leader
// hint), leadership lost, shutdown — ends the stream with its status, so
// the client moves to the leader. With roles enforced, each renewal is
// checked against the caller's current roles: once it may hold leases no
// more, the stream ends with PERMISSION_DENIED (and its leases expire).
func (l *leaseServer) KeepAlive(stream pb.Lease_KeepAliveServer) error {
	c := callerOf(stream.Context())
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	var (
		sendMu   sync.Mutex
		errOnce  sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; cancel() })
	}
	// Recv blocks until the client sends or the stream ends (which
	// returning from here does), so it runs beside the loop that renews.
	reqs := make(chan int64)
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- req.Id:
			case <-ctx.Done():
				return
			}
		}
	}()
	slots := make(chan struct{}, keepAliveInFlight)
	for {
		var id int64
		select {
		case id = <-reqs:
		case <-recvErr: // the client closed its side, or went away
			wg.Wait()
			return firstErr
		case <-ctx.Done():
			wg.Wait()
			return firstErr
		}
		if c != nil {
			if acc := c.access(); !acc.mayHoldLeases() {
				fail(permissionDenied("identity %q has no readwrite permission any more, which leases need (roles: %s)", acc.identity, rolesText(acc)))
				wg.Wait()
				return firstErr
			}
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return firstErr
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			ttl, rev, err := l.node.Renew(ctx, id)
			if err != nil && !errors.Is(err, fsm.ErrLeaseNotFound) {
				fail(toStatus(err))
				return
			}
			sendMu.Lock()
			defer sendMu.Unlock()
			if err := stream.Send(&pb.LeaseKeepAliveResponse{Id: id, Ttl: ttl, Revision: rev}); err != nil {
				fail(err)
			}
		}()
	}
}

// TimeToLive implements Lease.TimeToLive, served by the leader. With roles
// enforced, it lists only the attached keys the caller may read.
func (l *leaseServer) TimeToLive(ctx context.Context, req *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	info, err := l.node.TimeToLive(ctx, req.Id, req.Keys, node.Linearizable)
	if err != nil {
		return nil, toStatus(err)
	}
	ms := info.Remaining.Milliseconds()
	keys := info.Keys
	if c := callerOf(ctx); c != nil && len(keys) > 0 {
		// Only the attached keys the caller may read (roles enforced).
		acc := c.access()
		keys = slices.DeleteFunc(keys, func(k []byte) bool { return !acc.mayRead(k) })
	}
	return &pb.LeaseTimeToLiveResponse{Id: info.ID, Ttl: ms / 1000, GrantedTtl: info.GrantedTTL, Keys: keys,
		RemainingMs: ms, Revision: info.Revision}, nil
}

// Leases implements Lease.Leases, served by the leader.
func (l *leaseServer) Leases(ctx context.Context, _ *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error) {
	ids, _, err := l.node.Leases(ctx, node.Linearizable)
	if err != nil {
		return nil, toStatus(err)
	}
	out := &pb.LeaseLeasesResponse{Leases: make([]*pb.LeaseStatus, len(ids))}
	for i, id := range ids {
		out.Leases[i] = &pb.LeaseStatus{Id: id}
	}
	return out, nil
}
