package node

import (
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"

	"github.com/raftwatch/raftwatch/fsm"
	"github.com/raftwatch/raftwatch/watch"
)

// ApplyObserver is told of every batch of committed entries the state
// machine applies: how many entries, and how long the one transaction took.
// It runs on raft's apply goroutine: it must be cheap and never block.
type ApplyObserver func(entries int, took time.Duration)

// observedFSM is the state machine raft drives when Config.ApplyObserver
// is set: it times every ApplyBatch.
type observedFSM struct {
	*fsm.FSM
	observe ApplyObserver
}

func (f observedFSM) ApplyBatch(logs []*raft.Log) []interface{} {
	start := time.Now()
	out := f.FSM.ApplyBatch(logs)
	f.observe(len(logs), time.Since(start))
	return out
}

// raftFSM is the state machine handed to raft.
func (n *Node) raftFSM() raft.BatchingFSM {
	if n.cfg.ApplyObserver == nil {
		return n.fsm
	}
	return observedFSM{FSM: n.fsm, observe: n.cfg.ApplyObserver}
}

// Figures are the gauges and totals an operator watches: what Status says
// plus the watchers' running totals, the dispatcher's position and the
// sizes on disk. Reading them costs a registry lock, a bbolt read
// transaction over the leases bucket and a stat of each file measured;
// call it per scrape, not per request.
type Figures struct {
	Status
	Watch watch.Stats
	// DispatcherLag is how many revisions this node has applied and not
	// yet offered to its live watchers (FSMIndex - Watch.Delivered).
	DispatcherLag uint64
	// ApplyLag is how many committed entries this node has not applied
	// (CommitIndex - FSMIndex, 0 when ahead: the commit index a follower
	// knows trails the leader's).
	ApplyLag uint64
	// StateDBBytes and RaftDBBytes are the sizes of state.db (the state
	// machine) and of the raft log and stable store: raft.db, or the wal
	// directory's files (its segments are preallocated).
	StateDBBytes, RaftDBBytes int64
	// Leases is the number of leases in the state machine (-1: unreadable).
	Leases int
}

// Figures returns this node's figures now.
func (n *Node) Figures() Figures {
	f := Figures{Status: n.Status(), Watch: n.registry.Stats(), Leases: -1}
	if f.FSMIndex > f.Watch.Delivered {
		f.DispatcherLag = f.FSMIndex - f.Watch.Delivered
	}
	if f.CommitIndex > f.FSMIndex {
		f.ApplyLag = f.CommitIndex - f.FSMIndex
	}
	f.StateDBBytes = fileSize(filepath.Join(n.cfg.DataDir, "state.db"))
	f.RaftDBBytes = logStoreBytes(n.logStorePath, n.cfg.LogStore)
	if ids, _, err := n.fsm.Leases(); err == nil {
		f.Leases = len(ids)
	}
	return f
}

// fileSize is the size of path, or -1 when it cannot be read.
func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return -1
	}
	return fi.Size()
}
