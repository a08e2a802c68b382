package client

import pb "github.com/raftwatch/raftwatch/proto"

// OpOption modifies a request.
type OpOption func(*ops)

type ops struct {
	prevKV      bool
	prefix      bool
	limit       uint64
	modRevision uint64
	absent      bool
	lease       int64
	consistency pb.Consistency
	revision    uint64 // List: read at this revision (0 = now)
	// watches
	startRevision uint64
	requireLeader bool
	watchBuffer   int
	// membership changes
	force bool
}

func buildOps(opts []OpOption) ops {
	var o ops
	for _, f := range opts {
		f(&o)
	}
	return o
}

func (o ops) condition() *pb.Condition {
	switch {
	case o.modRevision != 0:
		return &pb.Condition{Require: &pb.Condition_ModRevision{ModRevision: o.modRevision}}
	case o.absent:
		return &pb.Condition{Require: &pb.Condition_Absent{Absent: true}}
	}
	return nil
}

// WithPrevKV asks for the previous value (writes: in the response; watches:
// in every event).
func WithPrevKV() OpOption { return func(o *ops) { o.prevKV = true } }

// WithPrefix makes a watch match every key under a prefix ending in '/'.
func WithPrefix() OpOption { return func(o *ops) { o.prefix = true } }

// WithLimit caps the number of keys List (or ListPages, over all pages)
// returns.
func WithLimit(n uint64) OpOption { return func(o *ops) { o.limit = n } }

// WithRevision makes List read the keys as they were at revision rev (0,
// the default: now); a revision the server's history no longer reaches is
// OUT_OF_RANGE.
func WithRevision(rev uint64) OpOption { return func(o *ops) { o.revision = rev } }

// WithSerializable serves a read from the contacted node, possibly stale.
func WithSerializable() OpOption { return func(o *ops) { o.consistency = pb.Consistency_SERIALIZABLE } }

// WithModRevision makes a write happen only if the key's mod revision is rev.
func WithModRevision(rev uint64) OpOption { return func(o *ops) { o.modRevision = rev } }

// WithAbsent makes a write happen only if the key does not exist.
func WithAbsent() OpOption { return func(o *ops) { o.absent = true } }

// WithLease attaches the written key to lease id (Put and OpPut; it must
// exist, else the write fails with NOT_FOUND); without it a put detaches
// the key from any lease.
func WithLease(id int64) OpOption { return func(o *ops) { o.lease = id } }

// WithStartRevision makes a watch deliver every matching event with
// revision >= rev (from the server's retained history), then continue
// live. 0, the default, starts from now: the events after the revision
// the watch's CREATED reports. A rev older than the server retains ends
// Watch with a *CompactedError.
func WithStartRevision(rev uint64) OpOption { return func(o *ops) { o.startRevision = rev } }

// WithRequireLeader makes a node cancel the watch when it loses touch with
// the leader, so the watch resumes on a node that has not. Without it, a
// watch served by a partitioned node goes quiet until the partition heals.
func WithRequireLeader() OpOption { return func(o *ops) { o.requireLeader = true } }

// WithWatchBufferSize bounds how many responses a watch queues for a
// consumer that falls behind (default 1024). A watch whose queue is full is
// parked and resumed from its position once the consumer catches up (see
// Watcher), so a smaller bound saves memory and costs re-reads of history.
func WithWatchBufferSize(n int) OpOption { return func(o *ops) { o.watchBuffer = n } }

// WithForce makes AddVoter and RemoveServer go ahead even when the voters
// the leader can reach would be too few to commit afterwards.
func WithForce() OpOption { return func(o *ops) { o.force = true } }
