package watch

import "sync/atomic"

// counters are the registry's running totals, kept with atomic adds so the
// delivery and cancel paths take no extra lock for them.
type counters struct {
	taken   atomic.Uint64                   // events handed to consumers (Take, TakeBytes)
	cancels [CauseRemoved + 1]atomic.Uint64 // CANCELED events queued, by cause
}

// Stats is a snapshot of a registry's watchers and running totals.
type Stats struct {
	Live, CatchingUp int
	// Delivered is the revision up to which every event was offered to
	// every live watcher (Registry.Delivered).
	Delivered uint64
	// EventsTaken counts the events consumers took from their streams
	// (data, progress and CANCELED events alike) since the registry began.
	EventsTaken uint64
	// Cancels counts the watchers canceled, by cause (index CancelCause).
	Cancels [CauseRemoved + 1]uint64
}

// Stats returns the registry's counts and totals.
func (r *Registry) Stats() Stats {
	var s Stats
	r.mu.Lock()
	s.Live, s.CatchingUp, s.Delivered = r.n-len(r.behind), len(r.behind), r.delivered
	r.mu.Unlock()
	s.EventsTaken = r.counters.taken.Load()
	for i := range s.Cancels {
		s.Cancels[i] = r.counters.cancels[i].Load()
	}
	return s
}

// String names a cause for logs and metric labels.
func (c CancelCause) String() string {
	switch c {
	case CauseShutdown:
		return "shutdown"
	case CauseCompacted:
		return "compacted"
	case CauseNoLeader:
		return "no_leader"
	case CauseInternal:
		return "internal"
	case CauseRemoved:
		return "removed"
	}
	return "unknown"
}
