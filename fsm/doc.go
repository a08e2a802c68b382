// Package fsm is raftwatch's replicated state machine: a raft.BatchingFSM that
// keeps the key-value data in bbolt.
//
// Invariant: every batch of committed log entries is applied in exactly one
// bbolt transaction that also stores the index of the last entry applied, so
// the data and the applied index never disagree, and an entry at or below the
// stored index is never applied twice (no double version bumps, no duplicate
// events after a restart). Watch events for a batch are published only after
// its transaction has committed, and publishing never blocks.
package fsm
