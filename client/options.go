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
	consistency pb.Consistency
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

// WithLimit caps the number of keys List returns.
func WithLimit(n uint64) OpOption { return func(o *ops) { o.limit = n } }

// WithSerializable serves a read from the contacted node, possibly stale.
func WithSerializable() OpOption { return func(o *ops) { o.consistency = pb.Consistency_SERIALIZABLE } }

// WithModRevision makes a write happen only if the key's mod revision is rev.
func WithModRevision(rev uint64) OpOption { return func(o *ops) { o.modRevision = rev } }

// WithAbsent makes a write happen only if the key does not exist.
func WithAbsent() OpOption { return func(o *ops) { o.absent = true } }
