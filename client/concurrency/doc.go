// Package concurrency builds distributed locks (Mutex) and leader elections
// (Election) on a raftwatch cluster, from leases, transactions and watches.
//
// Invariant: every contender for one prefix holds one key,
// prefix + <its session's lease id in hex>, attached to its session's
// lease, and contenders are ordered by (create_revision, key) — a total
// order, even when two keys were created by one log entry and so share a
// create revision. The first in that order holds the lock (or leads), and
// only it: before Lock (or Campaign) returns, the holder commits a Txn
// conditioned on its key's create revision, whose revision is the fencing
// token. The previous holder's key was deleted before, at a lower
// revision, so tokens strictly increase across holders, and a write fenced
// by the holder's key (Mutex.IsOwner, or mod_revision(key) = token) fails
// once the key is gone.
//
// Waiting is fair and quiet: a contender waits for the one key just before
// its own to be deleted (watching it from the revision it was read at, so
// no deletion is missed), then reads the order again; keys created later
// sort after it, so contenders acquire in creation order (FIFO) and a
// release wakes one waiter, not all of them.
//
// A session is a lease kept alive in the background. When it is lost (it
// expired, was revoked, or its keepalives could not be acknowledged for a
// TTL) its keys are, or soon will be, deleted by the cluster: whoever held
// the lock through it no longer does, and Session.Done says so. The
// cluster, not the client's clock, decides; that is why writes that matter
// must be fenced.
package concurrency
