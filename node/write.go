package node

import (
	"context"
	"errors"

	pb "github.com/raftwatch/raftwatch/proto"

	"github.com/hashicorp/raft"
)

// Condition makes a write depend on the key's current state.
type Condition struct {
	ModRevision uint64 // when nonzero: the key exists with this mod revision
	Absent      bool   // the key does not exist
}

// WriteOptions modify Put and Delete.
type WriteOptions struct {
	PrevKV bool       // return the key's previous state
	If     *Condition // nil: unconditional
	Lease  int64      // Put: attach the key to this lease (0: none, detaching it from any)
}

// WriteResult is the outcome of a Put or Delete.
type WriteResult struct {
	Revision    uint64    // index of the log entry that carried the write
	Succeeded   bool      // false when the condition did not hold; nothing changed
	Deleted     bool      // Delete removed an existing key
	Prev        *KeyValue // previous state when asked or a condition was set (nil: absent)
	ModRevision uint64    // the key's mod revision afterwards (0: absent)
}

// Put writes key=value through the leader's batcher.
func (n *Node) Put(ctx context.Context, key, value []byte, opt WriteOptions) (WriteResult, error) {
	op, err := n.putOp(key, value, opt)
	if err != nil {
		return WriteResult{}, err
	}
	return n.propose(ctx, op)
}

// putOp checks a Put request and returns the op it proposes.
func (n *Node) putOp(key, value []byte, opt WriteOptions) (*pb.Op, error) {
	if err := n.checkKey(key); err != nil {
		return nil, err
	}
	if len(value) > n.cfg.MaxValueSize {
		return nil, invalid("value of %d bytes exceeds the limit of %d bytes", len(value), n.cfg.MaxValueSize)
	}
	op, err := writeOp(pb.Op_PUT, key, value, opt)
	if err != nil {
		return nil, err
	}
	if op.Lease != 0 {
		op.MaxKeysPerLease = n.cfg.Leases.maxKeysPerLease()
	}
	return op, nil
}

// Delete removes key through the leader's batcher.
func (n *Node) Delete(ctx context.Context, key []byte, opt WriteOptions) (WriteResult, error) {
	if err := n.checkKey(key); err != nil {
		return WriteResult{}, err
	}
	op, err := writeOp(pb.Op_DELETE, key, nil, opt)
	if err != nil {
		return WriteResult{}, err
	}
	return n.propose(ctx, op)
}

func writeOp(kind pb.Op_Kind, key, value []byte, opt WriteOptions) (*pb.Op, error) {
	if opt.Lease < 0 || kind != pb.Op_PUT && opt.Lease != 0 {
		return nil, invalid("lease %d: only a put attaches a key, to a positive lease id", opt.Lease)
	}
	op := &pb.Op{Kind: kind, Key: key, Value: value, WantPrev: opt.PrevKV, Lease: opt.Lease}
	if c := opt.If; c != nil {
		switch {
		case c.ModRevision != 0 && c.Absent:
			return nil, invalid("a condition cannot require both a mod revision and absence")
		case c.ModRevision != 0:
			op.Condition = &pb.Condition{Require: &pb.Condition_ModRevision{ModRevision: c.ModRevision}}
		case c.Absent:
			op.Condition = &pb.Condition{Require: &pb.Condition_Absent{Absent: true}}
		}
	}
	return op, nil
}

// checkKey applies the key rule (package keyspace) to a request's key.
func (n *Node) checkKey(key []byte) error { return checkKey(key, n.cfg.MaxKeySize) }

func (n *Node) propose(ctx context.Context, op *pb.Op) (WriteResult, error) {
	r, err := n.proposeOp(ctx, op)
	if err != nil {
		return WriteResult{}, err
	}
	return WriteResult{Revision: r.index, Succeeded: r.res.Succeeded, Deleted: r.res.Deleted,
		Prev: r.res.Prev, ModRevision: r.res.ModRevision}, nil
}

// proposeOp hands op to the leader's batcher and waits until its entry is
// applied.
func (n *Node) proposeOp(ctx context.Context, op *pb.Op) (proposalResult, error) {
	if err := n.Serving(); err != nil {
		return proposalResult{}, err
	}
	if n.raft.State() != raft.Leader {
		return proposalResult{}, n.notLeader()
	}
	if err := n.writable(); err != nil {
		return proposalResult{}, err
	}
	p := newProposal(op)
	select {
	case n.batcher.in <- p:
	case <-n.stop:
		p.release()
		return proposalResult{}, ErrShuttingDown
	case <-ctx.Done():
		p.release()
		return proposalResult{}, ctx.Err() // not yet proposed
	}
	select {
	case r := <-p.done:
		p.release()
		if r.err == nil && r.res.Err != nil {
			r.err = r.res.Err // refused at apply (e.g. its lease does not exist); nothing changed
		}
		return r, r.err
	case <-ctx.Done():
		return proposalResult{}, errors.Join(ErrOutcomeUnknown, ctx.Err())
	case <-n.stop:
		return proposalResult{}, errors.Join(ErrOutcomeUnknown, ErrShuttingDown)
	}
}
