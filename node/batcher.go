package node

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/raftwatch/raftwatch/fsm"
	pb "github.com/raftwatch/raftwatch/proto"
)

// proposal is one client write waiting to be put into a log entry.
type proposal struct {
	op   *pb.Op
	done chan proposalResult // buffered(1): the completer never blocks
}

// proposals recycles proposals with their channels: a write allocates
// neither. The batcher answers each proposal exactly once and touches it no
// more; the writer that received the answer (or never handed the proposal
// over) owns it and releases it. One abandoned on a timeout is left to the
// garbage collector, as its answer may still come.
var proposals = sync.Pool{New: func() any { return &proposal{done: make(chan proposalResult, 1)} }}

func newProposal(op *pb.Op) *proposal {
	p := proposals.Get().(*proposal)
	p.op = op
	return p
}

// release returns p to the pool; its channel must be empty.
func (p *proposal) release() {
	p.op = nil
	proposals.Put(p)
}

type proposalResult struct {
	index uint64
	res   fsm.OpResult
	err   error
}

// inflight is one proposed log entry and the writes it carries.
type inflight struct {
	future raft.ApplyFuture
	props  []*proposal
}

// applyEnqueueTimeout bounds how long the batcher waits for raft to accept
// an entry before failing the writes (definitely not applied).
const applyEnqueueTimeout = 5 * time.Second

// batcher groups concurrent writes into chunks (one log entry each), so that
// one fsync serves many writes. While raft is busy, writes accumulate in
// the queue and leave together. Two ops on the same key never share a chunk,
// so a (revision, key) pair names exactly one mutation.
type batcher struct {
	raft    *raft.Raft
	await   func(raft.Future) error
	in      chan *proposal
	pending chan inflight
	// slots holds one token per chunk raft may have in flight; while all
	// are taken, writes wait in `in` and leave together as one chunk.
	slots chan struct{}
	stop  chan struct{}
}

func newBatcher(r *raft.Raft, await func(raft.Future) error) *batcher {
	return &batcher{
		raft:    r,
		await:   await,
		in:      make(chan *proposal, proposalQueue),
		pending: make(chan inflight, inflightChunks),
		slots:   make(chan struct{}, inflightChunks),
		stop:    make(chan struct{}),
	}
}

// run builds chunks and proposes them; it is the only sender on pending.
func (b *batcher) run() {
	defer close(b.pending)
	var carry *proposal
	var fp chunkFootprint // reset for each chunk, its map kept
	for {
		first := carry
		carry = nil
		if first == nil {
			select {
			case first = <-b.in:
			case <-b.stop:
				b.drain()
				return
			}
		}
		select {
		case b.slots <- struct{}{}:
		case <-b.stop:
			first.done <- proposalResult{err: ErrShuttingDown}
			b.drain()
			return
		}
		props := []*proposal{first}
		fp.reset()
		fp.add(footprintOf(first.op))
		size := opSize(first.op)
	drain:
		for len(props) < chunkMaxOps && size < chunkMaxBytes && !fp.solo {
			select {
			case p := <-b.in:
				f := footprintOf(p.op)
				if fp.conflicts(f) || size+opSize(p.op) > chunkMaxBytes {
					carry = p
					break drain
				}
				fp.add(f)
				size += opSize(p.op)
				props = append(props, p)
			default:
				break drain
			}
		}
		chunk := &pb.Chunk{Ops: make([]*pb.Op, len(props))}
		for i, p := range props {
			chunk.Ops[i] = p.op
		}
		data, err := proto.Marshal(chunk)
		if err != nil {
			<-b.slots
			fail(props, err)
			continue
		}
		b.pending <- inflight{future: b.raft.Apply(data, applyEnqueueTimeout), props: props}
	}
}

// drain fails the writes still queued at shutdown; none was proposed.
func (b *batcher) drain() {
	for {
		select {
		case p := <-b.in:
			p.done <- proposalResult{err: ErrShuttingDown}
		default:
			return
		}
	}
}

func opSize(op *pb.Op) int {
	switch op.Kind {
	case pb.Op_PUT, pb.Op_DELETE:
		return len(op.Key) + len(op.Value) + 16
	}
	return proto.Size(op) + 16
}

// footprint is what an op may mutate, as far as the batcher can tell before
// it is applied. No two ops of a chunk may mutate the same key, so that a
// (revision, key) pair names exactly one mutation; an op whose keys are only
// known at apply time (a lease revoke or expiry deletes whatever keys the
// lease holds then) is solo: its chunk holds nothing else.
type footprint struct {
	keys     [][]byte
	prefixes [][]byte // every key under each may be mutated
	solo     bool
}

func footprintOf(op *pb.Op) footprint {
	switch op.Kind {
	case pb.Op_PUT, pb.Op_DELETE:
		return footprint{keys: [][]byte{op.Key}}
	case pb.Op_TXN:
		var f footprint
		for _, branch := range [][]*pb.TxnOp{op.Txn.GetSuccess(), op.Txn.GetFailure()} {
			for _, t := range branch {
				switch o := t.Op.(type) {
				case *pb.TxnOp_Put:
					f.keys = append(f.keys, o.Put.GetKey())
				case *pb.TxnOp_Delete:
					f.keys = append(f.keys, o.Delete.GetKey())
				case *pb.TxnOp_DeletePrefix:
					f.prefixes = append(f.prefixes, o.DeletePrefix.GetPrefix())
				}
			}
		}
		return f
	case pb.Op_LEASE_REVOKE, pb.Op_LEASE_EXPIRE:
		return footprint{solo: true}
	}
	return footprint{} // SET_MEMBER, LEASE_GRANT, LEASE_RENEW, LEASE_CHECKPOINT: no user key
}

// chunkFootprint is the union of the footprints of a chunk's ops.
type chunkFootprint struct {
	n        int
	keys     map[string]struct{}
	prefixes []string
	solo     bool
}

// conflicts reports whether an op with footprint f may not join the chunk.
func (c *chunkFootprint) conflicts(f footprint) bool {
	if c.n > 0 && (c.solo || f.solo) {
		return true
	}
	for _, k := range f.keys {
		if _, dup := c.keys[string(k)]; dup {
			return true
		}
		for _, p := range c.prefixes {
			if strings.HasPrefix(string(k), p) {
				return true
			}
		}
	}
	for _, p := range f.prefixes {
		for k := range c.keys {
			if strings.HasPrefix(k, string(p)) {
				return true
			}
		}
		for _, q := range c.prefixes {
			if strings.HasPrefix(q, string(p)) || strings.HasPrefix(string(p), q) {
				return true
			}
		}
	}
	return false
}

// reset empties c for the next chunk.
func (c *chunkFootprint) reset() {
	c.n, c.solo = 0, false
	clear(c.keys)
	c.prefixes = c.prefixes[:0]
}

func (c *chunkFootprint) add(f footprint) {
	if c.keys == nil {
		c.keys = map[string]struct{}{}
	}
	c.n++
	c.solo = c.solo || f.solo
	for _, k := range f.keys {
		c.keys[string(k)] = struct{}{}
	}
	for _, p := range f.prefixes {
		c.prefixes = append(c.prefixes, string(p))
	}
}

// complete answers each write once its entry is applied (or failed). Futures
// are answered in the order they were proposed, which is commit order.
func (b *batcher) complete() {
	for f := range b.pending {
		err := b.await(f.future)
		<-b.slots
		if err != nil {
			fail(f.props, classifyApplyError(err))
			continue
		}
		switch resp := f.future.Response().(type) {
		case *fsm.EntryResult:
			for i, p := range f.props {
				p.done <- proposalResult{index: resp.Index, res: resp.Ops[i]}
			}
		case error:
			fail(f.props, resp)
		default:
			fail(f.props, errors.Join(ErrOutcomeUnknown, errors.New("the entry had been applied before this node restarted")))
		}
	}
}

func fail(props []*proposal, err error) {
	for _, p := range props {
		p.done <- proposalResult{err: err}
	}
}

// classifyApplyError separates writes that were definitely not applied from
// those whose outcome is unknown.
func classifyApplyError(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return ErrNoLeader // rejected before it reached the log
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("%w: raft did not accept the write within %v", ErrNotApplied, applyEnqueueTimeout)
	case errors.Is(err, raft.ErrRaftShutdown):
		return errors.Join(ErrOutcomeUnknown, ErrShuttingDown)
	default:
		return errors.Join(ErrOutcomeUnknown, err)
	}
}
