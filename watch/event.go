package watch

import "fmt"

// EventType says what an Event reports.
type EventType uint8

const (
	// Put reports that a key was created or updated.
	Put EventType = iota + 1
	// Delete reports that a key was removed.
	Delete
	// Progress reports that every matching event up to its revision has been
	// sent; it carries no key.
	Progress
	// Canceled is the last event a watcher receives (before its channel is
	// closed, in channel mode); Reason says why.
	Canceled
)

// String returns "PUT", "DELETE", "PROGRESS" or "CANCELED".
func (t EventType) String() string {
	switch t {
	case Put:
		return "PUT"
	case Delete:
		return "DELETE"
	case Progress:
		return "PROGRESS"
	case Canceled:
		return "CANCELED"
	default:
		return fmt.Sprintf("EventType(%d)", uint8(t))
	}
}

// Event is one message for a watcher, on its channel (channel mode) or in
// its Stream's queue (stream mode). Its byte slices may be shared with other
// watchers and with the state machine: do not modify them.
//
// Field order keeps Event at 120 bytes (Type and HasPrev share a word), so a
// channel of DefaultBufferSize+1 events fits a 32 KiB allocation.
type Event struct {
	Type EventType
	// HasPrev is true iff the watcher asked for previous values (PUT and
	// DELETE events only); PrevValue is meaningful only when it is set.
	HasPrev bool
	// WatchID is the ID of the watcher the event is for (Watcher.ID). The
	// dispatcher sets it on every event it delivers, in both modes; what
	// the FSM publishes in it is ignored.
	WatchID uint64
	Key     []byte
	Value   []byte // PUT: the new value
	// PrevValue is meaningful only when HasPrev is set. An empty PrevValue
	// then means the key did not exist before this event.
	PrevValue []byte
	// Revision is, for PUT and DELETE, the revision (log index) of the
	// mutation; for PROGRESS, the revision up to which every matching event
	// was sent; for CANCELED, the last revision the dispatcher delivered.
	Revision uint64
	Version  uint64 // PUT: the key's version after the put
	Reason   string // CANCELED: why the watcher was canceled
}

// Batch is what the FSM publishes after committing one bbolt transaction.
type Batch struct {
	// Index is the last log index applied in that transaction; every Event
	// has Revision <= Index.
	Index uint64
	// Events are the PUT and DELETE events in apply order. The FSM sets
	// HasPrev and PrevValue when it read previous values for this batch.
	Events []Event
	// Reset says the state was replaced by a snapshot install: every watcher
	// with a start revision below Index is canceled.
	Reset bool
}
