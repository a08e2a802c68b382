package fsm

import (
	"bytes"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/raftwatch/raftwatch/watch"
)

var _ watch.History = (*FSM)(nil)

// eventSlab is how many Events ReadHistory allocates at a time: one
// allocation per event would double the allocations of a read.
const eventSlab = 32

// OldestRevision implements watch.History: every event with a revision at
// or above it is in the history. It reads no transaction; ReadHistory, which
// reads the bound again in its own, is the authority.
func (f *FSM) OldestRevision() uint64 { return f.hist.Load().oldest }

// HistoryStats returns the oldest revision history can be read from, the
// number of events it holds and the sum of their key and value lengths.
func (f *FSM) HistoryStats() (oldest, events, bytes uint64) {
	st := f.hist.Load()
	return st.oldest, st.events, st.bytes
}

// ReadHistory implements watch.History: it calls fn for every event with
// from <= revision <= to, in (revision, position in entry) order, from one
// bbolt read transaction, until fn returns false. from 0 means the oldest
// retained revision; to may be past the applied index. With withPrev every
// event carries the key's previous value, taken from history (or, for a
// previous version already compacted, from the history base), never from
// the current data. When from is below the oldest retained revision it reads
// nothing and returns a *watch.CompactedError.
//
// fn runs inside the read transaction with the FSM's read lock held: it must
// not block or call the FSM, and a long read keeps bbolt from reusing the
// pages freed meanwhile. The events and their byte slices belong to the
// caller.
func (f *FSM) ReadHistory(from, to uint64, withPrev bool, fn func(*watch.Event) bool) error {
	return f.check(f.view(func(tx *bolt.Tx) error {
		st, err := readHistStats(tx)
		if err != nil {
			return fmt.Errorf("read history: %w", err)
		}
		if from == 0 {
			from = st.oldest
		}
		if from < st.oldest {
			return &watch.CompactedError{Requested: from, Oldest: st.oldest}
		}
		r := historyReader{
			hist: tx.Bucket(bucketHistory), hidx: tx.Bucket(bucketHIndex), hbase: tx.Bucket(bucketHBase),
			oldest: st.oldest, withPrev: withPrev,
		}
		if err := r.read(from, to, fn); err != nil {
			return fmt.Errorf("read history: %w", err)
		}
		return nil
	}))
}

// histPos is where a history record is.
type histPos struct {
	rev uint64
	pos uint32
}

// historyReader is one ReadHistory's state.
type historyReader struct {
	hist, hidx, hbase *bolt.Bucket
	oldest            uint64
	withPrev          bool
	// lookup, index and base are the cursors of point reads in history,
	// hidx and hbase; bbolt's Get allocates a new cursor per call.
	lookup, index, base *bolt.Cursor
	slab                []watch.Event
}

func (r *historyReader) read(from, to uint64, fn func(*watch.Event) bool) error {
	if to < from {
		return nil
	}
	if r.withPrev {
		r.lookup, r.index = r.hist.Cursor(), r.hidx.Cursor()
	}
	start := histKey(from, 0)
	c := r.hist.Cursor()
	for k, v := c.Seek(start[:]); k != nil; k, v = c.Next() {
		rev, pos, err := splitHistKey(k)
		if err != nil {
			return err
		}
		if rev > to {
			return nil
		}
		rec, err := decodeHistRecord(k, v)
		if err != nil {
			return fmt.Errorf("record at revision %d position %d: %w", rev, pos, err)
		}
		var prev []byte
		if r.withPrev {
			if prev, err = r.prevValue(histPos{rev, pos}, rec); err != nil {
				return err
			}
		}
		if !fn(r.event(rev, rec, prev)) {
			return nil
		}
	}
	return nil
}

// prevValue returns the value rec's key had before the event at rev: empty
// (not nil) when the key was absent. The slice aliases bbolt memory.
func (r *historyReader) prevValue(at histPos, rec histRecord) ([]byte, error) {
	p, rev := rec.prev, at.rev
	switch {
	case p == 0:
		return []byte{}, nil
	case p > rev:
		return nil, fmt.Errorf("history inconsistent: key %q at revision %d has previous revision %d", rec.key, rev, p)
	case p >= r.oldest:
		return r.valueAt(rec.key, p, at)
	}
	if r.base == nil {
		r.base = r.hbase.Cursor()
	}
	v := get(r.base, rec.key)
	if v == nil {
		return nil, fmt.Errorf("history inconsistent: key %q at revision %d has compacted previous revision %d and no history base", rec.key, rev, p)
	}
	baseRev, value, err := decodeHBase(rec.key, v)
	if err != nil {
		return nil, fmt.Errorf("history base of key %q: %w", rec.key, err)
	}
	if baseRev != p {
		return nil, fmt.Errorf("history inconsistent: key %q at revision %d has previous revision %d, its history base is at %d", rec.key, rev, p, baseRev)
	}
	return value, nil
}

// valueAt returns the value key was given at revision rev, which history
// retains, as the event at `at` saw it: its last record in rev before at
// (the batcher never puts two ops on one key in an entry, but an entry that
// did is still read right). That record must be a PUT.
func (r *historyReader) valueAt(key []byte, rev uint64, at histPos) ([]byte, error) {
	rec, err := r.recordAt(key, rev, at)
	return rec.value, err
}

// recordAt returns key's last record in revision rev before at, which must
// be a PUT; valueAt says why.
func (r *historyReader) recordAt(key []byte, rev uint64, at histPos) (histRecord, error) {
	k := histKey(rev, 0)
	var idx []byte
	if raw := get(r.index, k[:8]); raw != nil {
		var err error
		if idx, err = openHIndex(k[:8], raw); err != nil {
			return histRecord{}, err
		}
	}
	h := keyHash(key)
	for i := len(idx) - hidxEntryLen; i >= 0; i -= hidxEntryLen {
		if binary.BigEndian.Uint32(idx[i:]) != h {
			continue
		}
		p := histPos{rev, binary.BigEndian.Uint32(idx[i+4:])}
		if p.rev == at.rev && p.pos >= at.pos {
			continue // at itself, or after it
		}
		k := histKey(p.rev, p.pos)
		raw := get(r.lookup, k[:])
		if raw == nil {
			return histRecord{}, fmt.Errorf("history inconsistent: the index of revision %d names position %d, which holds no record", rev, p.pos)
		}
		rec, err := decodeHistRecord(k[:], raw)
		if err != nil {
			return histRecord{}, fmt.Errorf("record at revision %d position %d: %w", p.rev, p.pos, err)
		}
		if !bytes.Equal(rec.key, key) {
			continue // another key with the same hash
		}
		if rec.typ != histPut {
			return histRecord{}, fmt.Errorf("history inconsistent: the previous version of key %q at revision %d is not a PUT", key, rev)
		}
		return rec, nil
	}
	return histRecord{}, fmt.Errorf("history inconsistent: no record of key %q at its previous revision %d", key, rev)
}

// get returns key's value in c's bucket, nil if absent.
func get(c *bolt.Cursor, key []byte) []byte {
	k, v := c.Seek(key)
	if !bytes.Equal(k, key) {
		return nil
	}
	return v
}

// event builds the Event of rec, copying its bytes (and prev's) out of
// bbolt memory into one allocation.
func (r *historyReader) event(rev uint64, rec histRecord, prev []byte) *watch.Event {
	if len(r.slab) == 0 {
		r.slab = make([]watch.Event, eventSlab)
	}
	ev := &r.slab[0]
	r.slab = r.slab[1:]
	kl, vl, pl := len(rec.key), len(rec.value), len(prev)
	buf := make([]byte, kl+vl+pl)
	copy(buf, rec.key)
	copy(buf[kl:], rec.value)
	copy(buf[kl+vl:], prev)
	ev.Key = buf[:kl:kl]
	ev.Revision = rev
	if rec.typ == histPut {
		ev.Type, ev.Value, ev.Version = watch.Put, buf[kl:kl+vl:kl+vl], rec.version
	} else {
		ev.Type = watch.Delete
	}
	if r.withPrev {
		ev.HasPrev, ev.PrevValue = true, buf[kl+vl:]
	}
	return ev
}
