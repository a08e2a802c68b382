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
	// Canceled is the last event a watcher receives; Reason and Cause say
	// why.
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

// CancelCause classifies a CANCELED event, so the edge (gRPC) can map it to
// a status code and a resuming client can tell whether to resume.
type CancelCause uint8

const (
	// CauseUnknown is the zero value; not used by this package.
	CauseUnknown CancelCause = iota
	// CauseShutdown: the node is stopping. Resume elsewhere.
	CauseShutdown
	// CauseCompacted: history no longer holds the revision the watcher
	// needs (Event.CompactRevision is the oldest retained). Re-list.
	CauseCompacted
	// CauseNoLeader: a require-leader watcher's node lost the leader.
	// Resume elsewhere.
	CauseNoLeader
	// CauseInternal: the node could not serve the watcher (a history read
	// failed). Resume elsewhere.
	CauseInternal
	// CauseRemoved: the node was removed from the cluster and will serve
	// no watch again. Resume on a node that is still a member.
	CauseRemoved
)

// Event is one message for a watcher, in its Stream's queue. Its byte
// slices may be shared with other watchers and with the state machine: do
// not modify them.
type Event struct {
	Type EventType
	// HasPrev is true iff the watcher asked for previous values (PUT and
	// DELETE events only); PrevValue is meaningful only when it is set.
	HasPrev bool
	// Cause classifies a CANCELED.
	Cause CancelCause
	// WatchID is the ID of the watcher the event is for (Watcher.ID). The
	// dispatcher sets it on every event it delivers; what the FSM publishes
	// in it is ignored.
	WatchID uint64
	Key     []byte
	Value   []byte // PUT: the new value
	// PrevValue is meaningful only when HasPrev is set. An empty PrevValue
	// then means the key did not exist before this event.
	PrevValue []byte
	// Revision is, for PUT and DELETE, the revision (log index) of the
	// mutation; for PROGRESS, the revision up to which every matching event
	// was sent; for CANCELED, the revision up to which every matching event
	// was sent before it.
	Revision uint64
	Version  uint64 // PUT: the key's version after the put
	// CompactRevision is set on a CANCELED with CauseCompacted: the oldest
	// revision history still holds.
	CompactRevision uint64
	Reason          string // CANCELED: why the watcher was canceled
}

// Batch is what the FSM publishes after committing one bbolt transaction.
type Batch struct {
	// Index is the last log index applied in that transaction; every Event
	// has Revision <= Index, and history holds every event <= Index.
	Index uint64
	// Events are the PUT and DELETE events in apply order.
	Events []Event
	// PrevRead says the FSM read previous values for this batch (it does
	// while WantPrev reports true): every event then has HasPrev set and
	// PrevValue filled.
	PrevRead bool
	// Reset says the state was replaced by a snapshot install. The events
	// between the old state and Index are not in Events; every watcher
	// catches up on them from history (which the snapshot carries).
	Reset bool
}

// eventOverhead is what a queued Event costs beyond its byte slices,
// counted against a stream's byte budget.
const eventOverhead = 128

// size is the number of bytes ev counts for against a stream's budget.
func (ev *Event) size() int {
	return eventOverhead + len(ev.Key) + len(ev.Value) + len(ev.PrevValue) + len(ev.Reason)
}
