package client

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/raftwatch/raftwatch/proto"
)

// Grant creates a lease of ttl seconds with an id the cluster picks.
func (c *Client) Grant(ctx context.Context, ttl int64) (*pb.LeaseGrantResponse, error) {
	return c.GrantWithID(ctx, ttl, 0)
}

// GrantWithID creates a lease of ttl seconds with the given id (0: the
// cluster picks); an id in use is ALREADY_EXISTS.
func (c *Client) GrantWithID(ctx context.Context, ttl, id int64) (*pb.LeaseGrantResponse, error) {
	req := &pb.LeaseGrantRequest{Ttl: ttl, Id: id}
	var resp *pb.LeaseGrantResponse
	err := c.onLeader(ctx, func(ctx context.Context, cc *grpc.ClientConn) (err error) {
		resp, err = pb.NewLeaseClient(cc).Grant(ctx, req)
		return err
	})
	return resp, err
}

// Revoke deletes the lease and all its keys (in one revision); an unknown
// lease is NOT_FOUND.
func (c *Client) Revoke(ctx context.Context, id int64) (*pb.LeaseRevokeResponse, error) {
	req := &pb.LeaseRevokeRequest{Id: id}
	var resp *pb.LeaseRevokeResponse
	err := c.onLeader(ctx, func(ctx context.Context, cc *grpc.ClientConn) (err error) {
		resp, err = pb.NewLeaseClient(cc).Revoke(ctx, req)
		return err
	})
	return resp, err
}

// KeepAliveOnce renews the lease once; it returns after the renewal is
// committed and applied. An unknown lease is NOT_FOUND.
func (c *Client) KeepAliveOnce(ctx context.Context, id int64) (*pb.LeaseKeepAliveResponse, error) {
	req := &pb.LeaseKeepAliveRequest{Id: id}
	var resp *pb.LeaseKeepAliveResponse
	err := c.onLeader(ctx, func(ctx context.Context, cc *grpc.ClientConn) (err error) {
		resp, err = pb.NewLeaseClient(cc).KeepAliveOnce(ctx, req)
		return err
	})
	return resp, err
}

// TimeToLive returns the lease's remaining TTL as the leader estimates it
// and, with keys, the keys attached to it. An unknown lease is NOT_FOUND.
func (c *Client) TimeToLive(ctx context.Context, id int64, keys bool) (*pb.LeaseTimeToLiveResponse, error) {
	req := &pb.LeaseTimeToLiveRequest{Id: id, Keys: keys}
	var resp *pb.LeaseTimeToLiveResponse
	err := c.onLeader(ctx, func(ctx context.Context, cc *grpc.ClientConn) (err error) {
		resp, err = pb.NewLeaseClient(cc).TimeToLive(ctx, req)
		return err
	})
	return resp, err
}

// Leases lists every lease.
func (c *Client) Leases(ctx context.Context) (*pb.LeaseLeasesResponse, error) {
	var resp *pb.LeaseLeasesResponse
	err := c.onLeader(ctx, func(ctx context.Context, cc *grpc.ClientConn) (err error) {
		resp, err = pb.NewLeaseClient(cc).Leases(ctx, &pb.LeaseLeasesRequest{})
		return err
	})
	return resp, err
}

// keepAliveRetry is how long KeepAlive waits after a failed renewal before
// the next attempt.
const keepAliveRetry = 200 * time.Millisecond

// KeepAlive keeps the lease alive in the background: it renews it at once,
// then every TTL/3, each renewal sent to the leader (following leader
// changes, as every write does) and retried after a failure. Each
// acknowledged renewal is sent on the returned channel (dropped when the
// receiver is behind). The channel is closed when the lease no longer
// exists (a renewal answered NOT_FOUND), when a whole TTL has passed since
// the last acknowledged renewal was sent without another being
// acknowledged (the lease may have expired: whoever relies on it must
// assume it is lost), when ctx ends, or when the client is closed. The
// first renewal's failure is returned instead of a channel.
func (c *Client) KeepAlive(ctx context.Context, id int64) (<-chan *pb.LeaseKeepAliveResponse, error) {
	sent := time.Now()
	first, err := c.KeepAliveOnce(ctx, id)
	if err != nil {
		return nil, err
	}
	if first.Ttl <= 0 {
		return nil, status.Error(codes.NotFound, fmt.Sprintf("lease %x not found", id))
	}
	ch := make(chan *pb.LeaseKeepAliveResponse, 16)
	ch <- first
	go c.keepAlive(ctx, id, first.Ttl, sent, ch)
	return ch, nil
}

// keepAlive renews the lease until it is gone or may be: the lease is safe
// until the send time of the last acknowledged renewal plus its TTL, and
// not a moment longer as far as this client can tell.
func (c *Client) keepAlive(ctx context.Context, id, ttl int64, acked time.Time, ch chan *pb.LeaseKeepAliveResponse) {
	defer close(ch)
	safeUntil := acked.Add(time.Duration(ttl) * time.Second)
	every := time.Duration(ttl) * time.Second / 3
	wait := every
	for {
		timer := time.NewTimer(min(wait, time.Until(safeUntil)))
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-c.closed:
			timer.Stop()
			return
		case <-timer.C:
		}
		if !time.Now().Before(safeUntil) {
			return // no renewal acknowledged for a TTL: the lease may have expired
		}
		deadline := time.Now().Add(every)
		if safeUntil.Before(deadline) {
			deadline = safeUntil
		}
		rctx, cancel := context.WithDeadline(ctx, deadline)
		sent := time.Now()
		resp, err := c.KeepAliveOnce(rctx, id)
		cancel()
		switch {
		case status.Code(err) == codes.NotFound || err == nil && resp.Ttl <= 0:
			return // the lease is gone
		case err != nil:
			wait = keepAliveRetry
			continue
		}
		safeUntil = sent.Add(time.Duration(resp.Ttl) * time.Second)
		every = time.Duration(resp.Ttl) * time.Second / 3
		wait = every
		select {
		case ch <- resp:
		default:
		}
	}
}
