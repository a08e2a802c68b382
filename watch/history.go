package watch

import (
	"errors"
	"fmt"
)

// History reads committed events back from the state machine's retained
// event history. The dispatcher uses it to feed watchers that start at a
// past revision or fell behind (catching up), so it never has to hold
// events for them in memory. *fsm.FSM implements it.
type History interface {
	// ReadHistory calls fn for every retained event with from <= Revision
	// <= to, in (revision, position in entry) order, until fn returns
	// false. With withPrev each PUT and DELETE carries its previous value
	// (HasPrev set; an empty PrevValue means the key did not exist). All
	// events come from one consistent read of the history. When from is
	// below the oldest retained revision, it reads nothing and returns a
	// *CompactedError. The events' byte slices belong to the caller.
	ReadHistory(from, to uint64, withPrev bool, fn func(*Event) bool) error
	// OldestRevision returns the oldest revision a read may start at:
	// every event with a revision at or above it is retained.
	OldestRevision() uint64
}

// ErrCompacted is wrapped by every *CompactedError.
var ErrCompacted = errors.New("required revision has been compacted")

// CompactedError says that history no longer holds a revision a watch
// needs. Oldest is the oldest revision that can still be read.
type CompactedError struct {
	Requested, Oldest uint64
}

func (e *CompactedError) Error() string {
	return fmt.Sprintf("revision %d has been compacted; the oldest retained revision is %d", e.Requested, e.Oldest)
}

// Unwrap makes errors.Is(err, ErrCompacted) hold.
func (e *CompactedError) Unwrap() error { return ErrCompacted }
