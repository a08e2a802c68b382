package node

import (
	"errors"
	"fmt"
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
		keys := map[string]struct{}{string(first.op.Key): {}}
		size := opSize(first.op)
	drain:
		for len(props) < chunkMaxOps && size < chunkMaxBytes {
			select {
			case p := <-b.in:
				if _, dup := keys[string(p.op.Key)]; dup || size+opSize(p.op) > chunkMaxBytes {
					carry = p
					break drain
				}
				keys[string(p.op.Key)] = struct{}{}
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

func opSize(op *pb.Op) int { return len(op.Key) + len(op.Value) + 16 }

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
