// Package watch delivers the key changes committed by the state machine to
// watchers, the way etcd's watch does, without ever slowing the state
// machine, without unbounded memory, and without a silent gap.
//
// # Invariant
//
// The FSM never blocks on watchers. Every watcher receives every matching
// event with revision > its start revision, in revision order, exactly
// once, each revision whole — or, last, a CANCELED saying why: because the
// history it needs was compacted (CauseCompacted), the node is stopping, or
// it asked to follow the leader and the node lost it. Falling behind never
// cancels and never drops: a watcher that cannot take more is moved to
// catching up, which holds only its next revision, and is fed from history.
// A PROGRESS R means every matching event with revision <= R was already
// queued before it, and R never goes down. A stream PROGRESS (WatchID 0,
// only on a stream all of whose watchers asked for it with
// Options.StreamProgress) says so for every watcher registered on the
// stream before it was taken, as their own PROGRESS would: Register drops
// the stream PROGRESS events still queued.
//
// # Model
//
// The FSM commits one bbolt transaction per batch of log entries, with the
// batch's events in its history (History), and then hands the batch to
// Dispatcher.Publish, which never blocks: it queues the Batch or, when the
// queue is full, records its index. One goroutine, Dispatcher.Run, owns
// delivery. It hands each batch's events to the matching live watchers and
// then advances the registry's delivered revision; it feeds catching-up
// watchers from History in bounded steps between batches. A watcher is in
// one of three states (see state):
//
//   - live: the published batches feed it;
//   - catchingUp: history feeds it from its next revision, once its
//     stream has room; when next passes the delivered revision it is live
//     again, with no gap and no duplicate because only Run moves either;
//   - canceled: its CANCELED is queued; nothing follows.
//
// A live watcher falls behind when its stream has no room for a revision's
// first event (its buffer of Config.BufferSize events, the stream's byte
// budget, Config.StreamBytes, its Client's, Config.ClientBytes, or, for
// the clients holding the most, the node-wide Config.TotalBytes), when Publish had to drop batches (every live
// watcher does), when a snapshot replaced the state (the snapshot carries
// the history; every live watcher does), and when it wants previous values
// but the batch was applied without them (the FSM reads previous values
// during apply only while some watcher wants them: WantPrev). A watcher
// registered with a start revision in the past starts catching up; one in
// the future is live and skips what precedes it. A start revision below the
// oldest retained one is refused with a *CompactedError.
//
// Watchers are registered on a Stream, which carries the events of many
// watchers to one consumer (a gRPC stream) in one queue that grows only
// while events wait; Event.WatchID says whose an event is. The Registry
// indexes watchers by key and by prefix. A prefix starts and ends with '/',
// so delivering an event looks up its key and each '/'-terminated prefix of
// it: the cost per event grows with the depth of the key, not with the
// number of watchers.
//
// Locking: Registry.mu guards the maps, every watcher's state and position,
// and the delivered revision; Stream.mu guards a stream's queue. Lock order
// is Registry.mu, then Stream.mu, then the registry's pool of queue blocks. Every lock is taken and released in the
// same function. History and the logger are called without Registry.mu
// held (cancels are logged after it is released).
//
// Events are opaque: this package imports no protobuf types. The byte slices
// in events are shared between watchers and must be treated as read-only.
package watch
