package fsm

import (
	"bytes"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ScrubPace bounds a scrub's work: each step verifies at most Records
// values or Bytes bytes in one read transaction, then waits Pause. Short
// transactions keep bbolt free to reuse pages; the pause leaves the disk
// and CPU to the write path. The node's scrub of the raft log at rest uses
// the same pace, with log entries for values.
type ScrubPace struct {
	Records int
	Bytes   int
	Pause   time.Duration
	// Sleep waits d, or until stop is closed, and reports whether it
	// waited d; nil is a timer. Tests set it to count the pauses.
	Sleep func(stop <-chan struct{}, d time.Duration) bool
}

// Wait waits one Pause between two steps, and reports false when stop was
// closed first: the pass then ends uncompleted.
func (p ScrubPace) Wait(stop <-chan struct{}) bool {
	if p.Sleep != nil {
		return p.Sleep(stop, p.Pause)
	}
	t := time.NewTimer(p.Pause)
	defer t.Stop()
	select {
	case <-stop:
		return false
	case <-t.C:
		return true
	}
}

// StepRecords is Records, at least 1: a step always makes progress.
func (p ScrubPace) StepRecords() int { return max(p.Records, 1) }

// StepBytes is Bytes, at least 1.
func (p ScrubPace) StepBytes() int { return max(p.Bytes, 1) }

// FoundByScrub prefixes the reason of damage a scrub found, so that the log
// and Status say it was found at rest rather than while serving.
const FoundByScrub = "found by the background scrub"

// DefaultScrubPace verifies at most about 100,000 values (or 400 MiB) a
// second, each step a read transaction of a millisecond or two.
var DefaultScrubPace = ScrubPace{Records: 1024, Bytes: 4 << 20, Pause: 10 * time.Millisecond}

// ScrubStats reports the scrubs of data at rest since the FSM was opened.
type ScrubStats struct {
	Passes         uint64    // passes completed
	LastPassEnd    time.Time // when the last completed pass ended; zero before the first
	LastPassValues uint64    // values the last completed pass verified
	Values         uint64    // values verified, all passes
	Mismatches     uint64    // values that failed verification, all passes
}

// ScrubStats returns what the scrubs have done so far.
func (f *FSM) ScrubStats() ScrubStats {
	f.scrubMu.Lock()
	defer f.scrubMu.Unlock()
	return f.scrub
}

// Scrub verifies every stored value once, in steps paced by pace, until it
// is done or stop is closed (the pass then does not count as completed). A
// value that fails marks the state machine damaged (see Damage); the pass
// goes on, so that ScrubStats counts every bad value. It returns the
// values verified. Run it from one goroutine at a time.
func (f *FSM) Scrub(stop <-chan struct{}, pace ScrubPace) (uint64, error) {
	var pos scrubPos
	var values uint64
	for {
		n, bad, done, err := f.scrubStep(&pos, pace)
		values += uint64(n)
		f.scrubMu.Lock()
		f.scrub.Values += uint64(n)
		f.scrub.Mismatches += uint64(len(bad))
		f.scrubMu.Unlock()
		for _, e := range bad {
			f.log.Error("scrub: stored value failed verification", "err", e)
			f.check(fmt.Errorf("%s: %w", FoundByScrub, e))
		}
		if err != nil {
			return values, err
		}
		if done {
			f.scrubMu.Lock()
			f.scrub.Passes++
			f.scrub.LastPassEnd = time.Now()
			f.scrub.LastPassValues = values
			f.scrubMu.Unlock()
			return values, nil
		}
		if !pace.Wait(stop) {
			return values, nil
		}
	}
}

// scrubPos is where a scrub goes on: the next key of allBuckets[bucket]
// (nil: its first).
type scrubPos struct {
	bucket int
	key    []byte
}

// scrubStep verifies values from pos on, within pace's budget, in one read
// transaction, and moves pos past them.
func (f *FSM) scrubStep(pos *scrubPos, pace ScrubPace) (n int, bad []error, done bool, err error) {
	size := 0
	err = f.view(func(tx *bolt.Tx) error {
		for ; pos.bucket < len(allBuckets); pos.bucket, pos.key = pos.bucket+1, nil {
			name := allBuckets[pos.bucket]
			b := tx.Bucket(name)
			if b == nil {
				continue
			}
			c := b.Cursor()
			k, v := c.First()
			if pos.key != nil {
				k, v = c.Seek(pos.key)
			}
			for ; k != nil; k, v = c.Next() {
				if n >= pace.StepRecords() || size >= pace.StepBytes() {
					pos.key = bytes.Clone(k)
					return nil
				}
				n++
				size += len(k) + len(v)
				if err := verifyValue(name, k, v); err != nil {
					bad = append(bad, err)
				}
			}
		}
		done = true
		return nil
	})
	return n, bad, done, err
}
