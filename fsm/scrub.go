package fsm

import (
	"bytes"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ScrubPace bounds a scrub's work: each step verifies at most Records
// values or Bytes bytes in one read transaction, then waits Pause. Short
// transactions keep bbolt free to reuse pages; the pause leaves the disk
// and CPU to the write path.
type ScrubPace struct {
	Records int
	Bytes   int
	Pause   time.Duration
}

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
			f.check(e)
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
		select {
		case <-stop:
			return values, nil
		case <-time.After(pace.Pause):
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
				if n >= pace.Records || size >= pace.Bytes {
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
