package node

import (
	"bytes"
	"context"
	"fmt"
	"sync"

	"github.com/hashicorp/raft"
	"github.com/raftwatch/raftwatch/fsm"
)

// readRequest asks the read confirmer for a read index.
type readRequest struct {
	done chan readResult // buffered(1)
}

// readDones recycles readRequest channels: the confirmer answers each
// request exactly once, so a reader that received its answer (or never
// sent the request) owns an empty channel and returns it; one that gave up
// waiting leaves it to the garbage collector.
var readDones = sync.Pool{New: func() any { return make(chan readResult, 1) }}

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
	req := readRequest{done: readDones.Get().(chan readResult)}
	select {
	case n.reads <- req:
	case <-n.stop:
		readDones.Put(req.done)
		return 0, ErrShuttingDown
	case <-ctx.Done():
		readDones.Put(req.done)
		return 0, ctx.Err()
	}
	select {
	case r := <-req.done:
		readDones.Put(req.done)
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
	for {
		advanced := n.fsm.Advanced()
		if n.fsm.Applied() >= index {
			return nil
		}
		select {
		case <-advanced:
		case <-ctx.Done():
			return ctx.Err()
		case <-n.stop:
			return ErrShuttingDown
		}
	}
}

// Consistency selects how a read is served.
type Consistency int

const (
	// Linearizable reads are served by the leader after confirming leadership.
	Linearizable Consistency = iota
	// Serializable reads are served locally and may be stale.
	Serializable
)

// readGate is what a read checks first, in this order: a removed node
// refuses; a linearizable read on a follower gets the leader hint, so a
// client finds the leader even through a node that found damaged data; an
// unhealthy node refuses with DATA_LOSS.
func (n *Node) readGate(c Consistency) error {
	if err := n.Serving(); err != nil {
		return err
	}
	if c == Linearizable && n.raft.State() != raft.Leader {
		return n.notLeader()
	}
	return n.readable()
}

// Get returns the key (nil when absent) and the revision it was read at.
func (n *Node) Get(ctx context.Context, key []byte, c Consistency) (*KeyValue, uint64, error) {
	if err := n.checkKey(key); err != nil {
		return nil, 0, err
	}
	if err := n.readGate(c); err != nil {
		return nil, 0, err
	}
	if c == Linearizable {
		if _, err := n.readIndex(ctx); err != nil {
			return nil, 0, err
		}
	}
	kv, rev, err := n.fsm.Get(key)
	if rerr := n.readable(); rerr != nil {
		return nil, 0, rerr // whatever was read, this node found damage meanwhile
	}
	return kv, rev, err
}

// ListOptions select one page of a List.
type ListOptions struct {
	// Start is the first key to return (inclusive), under the prefix;
	// empty: from the prefix. A later page passes the previous one's Next.
	Start []byte
	// Revision reads the keys as they were at this revision; 0 = now. A
	// later page passes the first page's Revision, so the pages together
	// are one revision's keys. A Linearizable page refuses a revision past
	// the commit index (no page was read there); a Serializable one waits
	// until this node has applied it. One whose state history no longer
	// reaches is refused with a *fsm.RevisionUnavailableError (it wraps
	// watch.ErrCompacted).
	Revision uint64
	// Limit bounds the pairs (0 = no bound); MaxBytes their key, value and
	// fsm.KVOverhead bytes (0 = no bound), at least one pair whatever its
	// size.
	Limit, MaxBytes int
}

// ListResult is one page of the keys under a prefix.
type ListResult struct {
	KVs      []KeyValue
	Revision uint64 // the revision the page was read at
	More     bool   // a bound cut the page short; Next is where to go on
	Next     []byte // the first key left out (nil when none)
}

// List returns one page of the keys starting with prefix, in key order,
// from one read transaction. With c Linearizable every page confirms
// leadership first, so the first page (Revision 0) is linearizable and
// later pages, pinned to its revision, are consistent with it.
func (n *Node) List(ctx context.Context, prefix []byte, o ListOptions, c Consistency) (ListResult, error) {
	if err := checkList(prefix, o, n.cfg.MaxKeySize); err != nil {
		return ListResult{}, err
	}
	if err := n.readGate(c); err != nil {
		return ListResult{}, err
	}
	if c == Linearizable {
		// Every revision a page was ever read at is committed, so at or
		// below the index a confirmed leader reads at: one above it was
		// never handed out, and waiting for it could take forever.
		index, err := n.readIndex(ctx)
		if err != nil {
			return ListResult{}, err
		}
		if o.Revision > index {
			return ListResult{}, invalid("revision %d is past the commit index %d: pass the revision of the list's first page", o.Revision, index)
		}
	} else if o.Revision > 0 {
		// A page read at this revision on another node: wait until this
		// node has applied it, as a watch from a future revision does.
		if err := n.fsm.WaitApplied(ctx, o.Revision); err != nil {
			return ListResult{}, fmt.Errorf("wait until this node has applied revision %d (it has applied %d): %w", o.Revision, n.fsm.Applied(), err)
		}
	}
	p, err := n.fsm.List(prefix, fsm.ListOptions{Start: o.Start, Revision: o.Revision, Limit: o.Limit, MaxBytes: o.MaxBytes})
	if rerr := n.readable(); rerr != nil {
		return ListResult{}, rerr // whatever was read, this node found damage meanwhile
	}
	return ListResult{KVs: p.KVs, Revision: p.Revision, More: p.Next != nil, Next: p.Next}, err
}

// checkList refuses a List page request that breaks the key rule for its
// prefix, starts outside its prefix or has a negative bound.
func checkList(prefix []byte, o ListOptions, maxKeySize int) error {
	if err := checkPrefix(prefix, maxKeySize); err != nil {
		return err
	}
	if len(o.Start) > 0 && (!bytes.HasPrefix(o.Start, prefix) || len(o.Start) > maxKeySize) {
		return invalid("start key %.80q is not a key under the prefix %.80q", o.Start, prefix)
	}
	if o.Limit < 0 || o.MaxBytes < 0 {
		return invalid("limit %d and byte bound %d must not be negative", o.Limit, o.MaxBytes)
	}
	return nil
}
