package node

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/raftwatch/raftwatch/fsm"
	pb "github.com/raftwatch/raftwatch/proto"
)

// TTL bounds of a lease grant, in seconds.
const (
	MinLeaseTTL = 2
	MaxLeaseTTL = 30 * 24 * 3600
)

// DefaultLeaseCheckpointInterval is how often the leader records the
// remaining TTL of leases not renewed since.
const DefaultLeaseCheckpointInterval = 5 * time.Second

const (
	// leaseExpiryTick is how often the leader looks for expired leases.
	leaseExpiryTick = 100 * time.Millisecond
	// leaseOpsPerEntry bounds the leases one EXPIRE or CHECKPOINT carries;
	// the rest go in the next.
	leaseOpsPerEntry = 1000
	// leaseKeysPerExpiry bounds the keys one EXPIRE deletes (one bbolt
	// transaction, one watch batch); a lease with more goes alone.
	leaseKeysPerExpiry = 10_000
	// leaseProposeTimeout bounds the wait for one expiry or checkpoint.
	leaseProposeTimeout = 5 * time.Second
)

// LeaseConfig caps and paces leases. MaxLeases and MaxKeysPerLease are
// checked when the entry is applied, with the values the proposing leader
// wrote into it, so every node decides the same even when their flags
// differ; a new leader's flags take effect from its first proposal.
type LeaseConfig struct {
	MaxLeases          uint64        // 0 = fsm.DefaultMaxLeases
	MaxKeysPerLease    uint64        // 0 = fsm.DefaultMaxKeysPerLease
	CheckpointInterval time.Duration // 0 = DefaultLeaseCheckpointInterval
}

func (c LeaseConfig) checkpointInterval() time.Duration {
	if c.CheckpointInterval <= 0 {
		return DefaultLeaseCheckpointInterval
	}
	return c.CheckpointInterval
}

func (c LeaseConfig) maxLeases() uint64 {
	if c.MaxLeases == 0 {
		return fsm.DefaultMaxLeases
	}
	return c.MaxLeases
}

func (c LeaseConfig) maxKeysPerLease() uint64 {
	if c.MaxKeysPerLease == 0 {
		return fsm.DefaultMaxKeysPerLease
	}
	return c.MaxKeysPerLease
}

// LeaseGrant is a granted lease.
type LeaseGrant struct {
	ID       int64
	TTL      int64  // seconds
	Revision uint64 // the entry that granted it
}

// LeaseInfo is a lease as this node sees it.
type LeaseInfo = fsm.LeaseInfo

// Grant creates a lease of ttl seconds; id 0 lets the state machine pick the
// id. An id in use is refused with fsm.ErrLeaseExists, a full lease table
// with fsm.ErrLeaseLimit.
func (n *Node) Grant(ctx context.Context, ttl, id int64) (LeaseGrant, error) {
	if ttl < MinLeaseTTL || ttl > MaxLeaseTTL {
		return LeaseGrant{}, invalid("lease TTL %d s is outside the bounds %d s .. %d s (30 days)", ttl, MinLeaseTTL, MaxLeaseTTL)
	}
	if id < 0 {
		return LeaseGrant{}, invalid("lease id %d is negative", id)
	}
	index, res, err := n.submit(ctx, &pb.Op{Kind: pb.Op_LEASE_GRANT, Lease: id, Ttl: ttl, MaxLeases: n.cfg.Leases.maxLeases()})
	if err != nil {
		return LeaseGrant{}, err
	}
	return LeaseGrant{ID: res.Lease, TTL: res.TTL, Revision: index}, nil
}

// Revoke deletes the lease and all its keys in one entry and returns its
// index. An unknown lease is fsm.ErrLeaseNotFound.
func (n *Node) Revoke(ctx context.Context, id int64) (uint64, error) {
	if err := checkLeaseID(id); err != nil {
		return 0, err
	}
	index, _, err := n.submit(ctx, &pb.Op{Kind: pb.Op_LEASE_REVOKE, Lease: id})
	return index, err
}

// Renew is a keepalive: it proposes a renewal through the batcher and
// returns once it is applied, with the TTL the lease was renewed for and the
// entry's index. An unknown lease is fsm.ErrLeaseNotFound.
func (n *Node) Renew(ctx context.Context, id int64) (ttl int64, revision uint64, err error) {
	if err := checkLeaseID(id); err != nil {
		return 0, 0, err
	}
	index, res, err := n.submit(ctx, &pb.Op{Kind: pb.Op_LEASE_RENEW, Lease: id})
	return res.TTL, index, err
}

// TimeToLive returns the lease with the remaining TTL this node estimates
// and, with keys, its attached keys. An unknown lease is
// fsm.ErrLeaseNotFound.
func (n *Node) TimeToLive(ctx context.Context, id int64, keys bool, c Consistency) (LeaseInfo, error) {
	if err := checkLeaseID(id); err != nil {
		return LeaseInfo{}, err
	}
	if err := n.leaseRead(ctx, c); err != nil {
		return LeaseInfo{}, err
	}
	info, found, err := n.fsm.LeaseTimeToLive(id, keys)
	if err == nil && !found {
		err = leaseNotFound(id)
	}
	return info, err
}

// Leases returns the ids of every lease, in id order, and the applied index
// they were read at.
func (n *Node) Leases(ctx context.Context, c Consistency) ([]int64, uint64, error) {
	if err := n.leaseRead(ctx, c); err != nil {
		return nil, 0, err
	}
	return n.fsm.Leases()
}

func (n *Node) leaseRead(ctx context.Context, c Consistency) error {
	if err := n.readGate(c); err != nil {
		return err
	}
	if c == Linearizable {
		if _, err := n.readIndex(ctx); err != nil {
			return err
		}
	}
	return n.readable()
}

func checkLeaseID(id int64) error {
	if id <= 0 {
		return invalid("lease id %d is not a lease id (ids are positive)", id)
	}
	return nil
}

func leaseNotFound(id int64) error {
	return &leaseError{id: id, err: fsm.ErrLeaseNotFound}
}

type leaseError struct {
	id  int64
	err error
}

func (e *leaseError) Error() string { return fmt.Sprintf("%v: %x", e.err, e.id) }
func (e *leaseError) Unwrap() error { return e.err }

// submit proposes op and waits for it to be applied; see proposeOp.
func (n *Node) submit(ctx context.Context, op *pb.Op) (uint64, fsm.OpResult, error) {
	r, err := n.proposeOp(ctx, op)
	return r.index, r.res, err
}

// leaderReady reports whether this node is the leader and has applied its
// own first entry of the term: only then do its lease deadlines cover every
// renewal committed before it took over.
func (n *Node) leaderReady() bool {
	if n.raft.State() != raft.Leader {
		return false
	}
	t := n.readyTerm.Load()
	return t != 0 && t == n.raft.CurrentTerm()
}

// expireLeases runs on every node and acts only while it is the ready
// leader: every leaseExpiryTick it proposes one LEASE_EXPIRE for the leases
// past their deadline, each with the renewal it saw, so a renewal applied
// in between wins.
func (n *Node) expireLeases() {
	t := time.NewTicker(leaseExpiryTick)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		if !n.leaderReady() {
			continue
		}
		ex := n.fsm.ExpiredLeases()
		if len(ex) == 0 {
			continue
		}
		ex = n.expiryPart(ex)
		n.proposeLeaseOp(&pb.Op{Kind: pb.Op_LEASE_EXPIRE, LeaseExpiries: ex}, "expire leases", len(ex))
	}
}

// expiryPart is the front of ex one LEASE_EXPIRE carries: at most
// leaseOpsPerEntry leases and leaseKeysPerExpiry keys, but at least one
// lease; the rest wait for the next tick.
func (n *Node) expiryPart(ex []*pb.LeaseExpiry) []*pb.LeaseExpiry {
	var keys uint64
	for i, e := range ex {
		if i == leaseOpsPerEntry {
			return ex[:i]
		}
		info, _, err := n.fsm.LeaseTimeToLive(e.Lease, false)
		if err != nil {
			return ex[:max(i, 1)]
		}
		if i > 0 && keys+info.KeyCount > leaseKeysPerExpiry {
			return ex[:i]
		}
		keys += info.KeyCount
	}
	return ex
}

// checkpointLeases runs on every node and acts only while it is the ready
// leader: every interval it records the remaining TTL of the leases not
// renewed within it, so a restarted node, or a restarted cluster, goes on
// from there rather than from the full TTL.
func (n *Node) checkpointLeases(interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		if !n.leaderReady() {
			continue
		}
		cps := n.fsm.LeaseCheckpoints(interval)
		for len(cps) > 0 && n.leaderReady() {
			part := cps[:min(len(cps), leaseOpsPerEntry)]
			cps = cps[len(part):]
			if !n.proposeLeaseOp(&pb.Op{Kind: pb.Op_LEASE_CHECKPOINT, LeaseCheckpoints: part}, "checkpoint leases", len(part)) {
				break
			}
		}
	}
}

// proposeLeaseOp proposes a leader's lease op and logs a failure; the
// caller tries again at its next tick.
func (n *Node) proposeLeaseOp(op *pb.Op, what string, leases int) bool {
	ctx, cancel := context.WithTimeout(context.Background(), leaseProposeTimeout)
	defer cancel()
	go func() {
		select {
		case <-n.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	_, _, err := n.submit(ctx, op)
	if err != nil {
		n.log.Warn("lease op failed; retrying at the next tick", "op", what, "leases", leases, "err", err)
		return false
	}
	n.log.Debug("lease op applied", "op", what, "leases", leases)
	return true
}
