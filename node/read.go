package node

import (
	"context"

	"github.com/hashicorp/raft"
)

// readRequest asks the read confirmer for a read index.
type readRequest struct {
	done chan readResult // buffered(1)
}

type readResult struct {
	index uint64
	err   error
}

// readConfirmer serves linearizable reads: it takes every read waiting,
// records the commit index, confirms leadership with one round of
// heartbeats to a quorum (raft.VerifyLeader), and answers all of them with
// that index. Concurrent reads thus share one confirmation.
func (n *Node) readConfirmer() {
	for {
		var first readRequest
		select {
		case first = <-n.reads:
		case <-n.stop:
			return
		}
		batch := []readRequest{first}
	drain:
		for len(batch) < readBatch {
			select {
			case r := <-n.reads:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		index, err := n.confirmLeadership()
		for _, r := range batch {
			r.done <- readResult{index: index, err: err}
		}
	}
}

// confirmLeadership pins the whole check to one term: were this node to
// lose and regain leadership between the steps, a commit index read in the
// new term could trail writes committed by the leader in between.
func (n *Node) confirmLeadership() (uint64, error) {
	term := n.raft.CurrentTerm()
	if n.raft.State() != raft.Leader {
		return 0, n.notLeader()
	}
	if n.readyTerm.Load() != term {
		return 0, ErrNotReady
	}
	index := n.raft.CommitIndex()
	if err := n.await(n.raft.VerifyLeader()); err != nil {
		return 0, n.notLeader()
	}
	if n.raft.CurrentTerm() != term || n.raft.State() != raft.Leader {
		return 0, n.notLeader()
	}
	return index, nil
}

// readIndex returns an index such that a read served from the state machine
// once it has applied that index is linearizable.
func (n *Node) readIndex(ctx context.Context) (uint64, error) {
	req := readRequest{done: make(chan readResult, 1)}
	select {
	case n.reads <- req:
	case <-n.stop:
		return 0, ErrShuttingDown
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	select {
	case r := <-req.done:
		if r.err != nil {
			return 0, r.err
		}
		return r.index, n.waitApplied(ctx, r.index)
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-n.stop:
		return 0, ErrShuttingDown
	}
}

// waitApplied waits until the state machine has applied index, or ctx
// ends, or the node shuts down: a node closing before it applies the
// index must not leave its readers waiting for ever.
func (n *Node) waitApplied(ctx context.Context, index uint64) error {
	if n.fsm.Applied() >= index {
		return nil
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-n.stop:
			cancel()
		case <-wctx.Done():
		}
	}()
	if err := n.fsm.WaitApplied(wctx, index); err != nil {
		if ctx.Err() == nil {
			return ErrShuttingDown
		}
		return err
	}
	return nil
}
