// Package watch delivers the key changes committed by the state machine to
// watchers, the way etcd's watch does, without ever slowing the state machine.
//
// # Invariant
//
// The FSM never blocks on watchers. Every watcher either receives every
// matching event with revision > its start revision, in revision order, or
// receives a CANCELED event saying why: events are never lost silently. A
// PROGRESS R on a watcher means every matching event with revision <= R was
// already put in its channel.
//
// # Model
//
// The FSM commits one bbolt transaction per batch of log entries, stores the
// applied index, and then hands the batch's events to Dispatcher.Publish,
// which never blocks: it enqueues the Batch or, when the queue is full,
// records that the batch was lost. One goroutine, Dispatcher.Run, takes
// batches off the queue and puts each event into the channel of every
// matching watcher. A watcher that lets its channel fill up, or that the
// dispatcher could not keep up for, is canceled with a reason; the client
// re-lists and watches again from a fresh revision.
//
// The Registry holds the watchers: exact-key watchers by key, prefix watchers
// by prefix. A prefix starts and ends with '/', so delivering an event looks
// up its key and each '/'-terminated prefix of it (`/config/db/host` is
// matched by the prefixes `/`, `/config/` and `/config/db/`): the cost per
// event grows with the depth of the key, not with the number of watchers.
//
// A watcher starts at the revision the FSM had applied when it registered
// (Watcher.Start) and receives the events after it. Registration and batch
// delivery exclude each other (a sync.RWMutex), and the FSM stores the applied
// index before publishing, so no event after the start is missed and none at
// or before it is repeated. A watcher that asks for previous values raises
// the count the FSM polls (WantPrev) and waits for the batch in flight
// (RevisionSource.Fence) before it takes its start, so every event it
// receives carries the previous value.
//
// Events are opaque: this package imports no protobuf types. Event slices are
// shared between watchers and must be treated as read-only.
package watch
