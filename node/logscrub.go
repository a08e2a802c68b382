package node

import (
	"errors"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/raftwatch/raftwatch/fsm"
)

// The raft log at rest is scrubbed like the state machine: entries are
// verified when raft reads them (at start, to apply, to send), but an entry
// kept only for slow followers may sit unread for hours. A scrub pass reads
// every entry from FirstIndex to LastIndex through the checksums, paced
// (fsm.ScrubPace, entries for values); a damaged one marks the node
// unhealthy exactly as a damaged entry met while running does
// (markLogDamaged), its reason saying the scrub found it.

// scrubRecord is what the scrubs of one store did so far.
type scrubRecord struct {
	mu sync.Mutex
	st fsm.ScrubStats
}

func (r *scrubRecord) stats() fsm.ScrubStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.st
}

func (r *scrubRecord) add(verified, mismatches uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.st.Values += verified
	r.st.Mismatches += mismatches
}

func (r *scrubRecord) passDone(verified uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.st.Passes++
	r.st.LastPassEnd = time.Now()
	r.st.LastPassValues = verified
}

// scrub verifies every entry the log holds when the pass starts, in steps
// of pace, until done or stop is closed (the pass then does not count). An
// entry compacted away meanwhile is skipped; a damaged one is reported to
// onCorrupt and counted, and the pass goes on. It returns the entries
// verified; an error is the store failing (closed, I/O).
func (s *checkedLogStore) scrub(stop <-chan struct{}, pace fsm.ScrubPace, rec *scrubRecord) (uint64, error) {
	first, err := s.FirstIndex()
	if err != nil {
		return 0, err
	}
	last, err := s.LastIndex()
	if err != nil {
		return 0, err
	}
	var verified uint64
	for i := first; i <= last && i != 0; {
		// Compacted since the last step: skip what raft dropped. The WAL
		// may still hand back entries below its first index (in its tail
		// segment), which raft never reads again; they are not the log.
		if first, err = s.FirstIndex(); err != nil {
			return verified, err
		}
		i = max(i, first)
		n, size, bad := 0, 0, 0
		for ; i <= last && n < pace.StepRecords() && size < pace.StepBytes(); i++ {
			var l raft.Log
			err := s.getLog(i, &l, fsm.FoundByScrub)
			var ce *LogCorruptError
			switch {
			case err == nil:
				n++
				size += len(l.Data) + len(l.Extensions)
			case errors.As(err, &ce):
				n++
				bad++
			case errors.Is(err, raft.ErrLogNotFound):
				// Compacted during this step, or a gap a snapshot install
				// left: nothing at rest to verify.
			default:
				return verified, err
			}
		}
		verified += uint64(n)
		rec.add(uint64(n), uint64(bad))
		if i > last {
			break
		}
		if !pace.Wait(stop) {
			return verified, nil
		}
	}
	rec.passDone(verified)
	return verified, nil
}
