// Package node assembles a raftwatch node: hashicorp/raft (log and stable
// store in raft-boltdb or raft-wal, Config.LogStore), the bbolt state
// machine (package fsm), the watch registry and dispatcher (package watch),
// the write batcher and the read confirmer. It is the embeddable library;
// the gRPC server is a thin adapter over it.
//
// Invariant: a write is acknowledged only after its log entry is committed by
// a majority (fsynced on each) and applied to this node's state machine; a
// linearizable read is answered only after this node has confirmed it is
// still the leader of a term in which it committed an entry, and has applied
// everything committed before the read began. A keepalive is acknowledged
// only after its renewal is applied; only a leader that has applied its own
// first entry of the term proposes lease expiries and checkpoints.
package node
