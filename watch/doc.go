// Package watch delivers the key changes committed by the state machine to
// watchers, the way etcd's watch does, without ever slowing the state machine.
//
// # Invariant
//
// The FSM never blocks on watchers. Every watcher either receives every
// matching event with revision > its start revision, in revision order, or
// receives a CANCELED event saying why: events are never lost silently. A
// PROGRESS R on a watcher means every matching event with revision <= R was
// already put in its channel or its stream's queue. Nothing follows a
// CANCELED.
//
// # Model
//
// The FSM commits one bbolt transaction per batch of log entries, stores the
// applied index, and then hands the batch's events to Dispatcher.Publish,
// which never blocks: it enqueues the Batch or, when the queue is full,
// records that the batch was lost. One goroutine, Dispatcher.Run, takes
// batches off the queue and delivers each event to every matching watcher.
// A watcher that lets BufferSize events wait undelivered, or that the
// dispatcher could not keep up for, is canceled with a reason; the client
// re-lists and watches again from a fresh revision.
//
// # Delivery modes
//
// Channel mode (Registry.Register): each watcher owns a channel of
// BufferSize+1 events, allocated up front; the last slot is reserved for
// CANCELED, so a full watcher can always be told why it stops. This suits
// one consumer goroutine per watcher.
//
// Stream mode (Registry.NewStream, Stream.Register): many watchers share
// one Stream, whose queue holds the events of all of them in dispatch order,
// each tagged with its Event.WatchID. The queue grows only while events are
// waiting and is emptied by Stream.Take, so an idle watcher costs only its
// own struct and map entries; the consumer (one goroutine per gRPC stream,
// say) waits on Stream.Ready and takes everything at once. The bound is the
// same: a watcher with StreamBufferSize events not yet taken gets CANCELED in
// place of the next one (the CANCELED needs no reserved room, the queue is
// unbounded), and the others sharing the stream are not affected. Every
// other rule (start revision, previous values, PROGRESS, heartbeats, lag
// and snapshot cancels, Stop) is the same in both modes.
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
// Events are opaque: this package imports no protobuf types. The byte slices
// in events are shared between watchers and must be treated as read-only.
package watch
