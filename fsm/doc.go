// Package fsm is raftwatch's replicated state machine: a raft.BatchingFSM that
// keeps the key-value data in bbolt, with a bounded history of the mutations
// that watches read back (watch.History).
//
// Invariant: every batch of committed log entries is applied in exactly one
// bbolt transaction that also stores the index of the last entry applied, the
// history records of the batch's events and the history's bounds, so the
// data, the applied index and the history never disagree, and an entry at or
// below the stored index is never applied twice (no double version bumps, no
// duplicate events after a restart). Watch events for a batch are published
// only after its transaction has committed, and publishing never blocks.
//
// Transactions and leases (txn.go, lease.go): an op refused at apply time (a
// put to a missing lease, a cap) changes nothing and emits nothing, and a
// Txn or a lease revoke or expiry applies all of its mutations in its entry
// or none. Lease state (TTL, the index of the last renewal, the last
// checkpointed remainder, the keys) is replicated with the data; a lease's
// deadline is kept only in memory, set when a grant, renewal or checkpoint
// applies here, so it is never earlier than the send time of the last
// acknowledged keepalive plus the TTL; it only ever decides when the leader
// proposes an expiry, which applies only if the lease was not renewed since.
//
// History: every event with a revision at or above the oldest retained
// revision is in history, in (revision, position in entry) order; compaction
// removes whole revisions from the front only, so the oldest retained
// revision is always a revision boundary. The previous value of every
// retained event is servable: from history when the key's previous version is
// retained (the history index, hidx, finds it in its revision), otherwise
// from the history base (hbase), which holds each key's newest version at or
// below the compaction point, the way etcd's MVCC keeps the newest revision
// at or below its compaction revision.
//
// Authorization (auth.go): roles and their grants to identities are
// replicated in their own buckets, applied like the data; the published view
// (Auth) always matches the applied index's buckets and is never modified.
//
// The files: fsm.go applies batches and serves reads, snapshots and restores;
// record.go is the key-value record; history.go is the history's format,
// writer and compaction; history_read.go is ReadHistory; auth.go is the authorization state.
package fsm
