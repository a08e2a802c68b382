package fsm

import (
	"bytes"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/raftwatch/raftwatch/watch"
)

// KVOverhead is what List counts for one key-value pair beyond its key and
// value bytes: the framing and the three revisions of its message on the
// wire, rounded up, so a page of MaxBytes encodes to about MaxBytes.
const KVOverhead = 32

// ListOptions select one page of a List.
type ListOptions struct {
	// Start is the first key to return (inclusive); keys before it are
	// skipped. Empty: from the prefix. The previous page's Next continues.
	Start []byte
	// Revision reads the keys as they were at this revision; 0 = now. A
	// revision not yet applied is an error (the caller waits for it first).
	Revision uint64
	// Limit bounds the number of pairs (0 = no bound).
	Limit int
	// MaxBytes bounds the sum of key, value and KVOverhead bytes of the
	// pairs (0 = no bound). A page always holds at least one pair, so a
	// pair larger than MaxBytes still comes, alone.
	MaxBytes int
}

// ListPage is one page of a List.
type ListPage struct {
	KVs []KeyValue
	// Revision is the revision the page was read at: ListOptions.Revision,
	// or the applied index when that was 0.
	Revision uint64
	// Next is the first key at Revision that the page left out: pass it as
	// Start (with Revision) for the next page. Nil when none is left.
	Next []byte
}

// RevisionUnavailableError says that a List asked for a revision whose state
// can no longer be rebuilt: history no longer holds every event after it.
// It wraps watch.ErrCompacted, as a watch that starts too early does.
type RevisionUnavailableError struct {
	Revision uint64 // asked for
	Oldest   uint64 // the oldest revision a List can still be read at
}

func (e *RevisionUnavailableError) Error() string {
	return fmt.Sprintf("revision %d is no longer available (history was compacted; the oldest revision a list can read is %d): restart the list", e.Revision, e.Oldest)
}

// Unwrap makes errors.Is(err, watch.ErrCompacted) hold.
func (e *RevisionUnavailableError) Unwrap() error { return watch.ErrCompacted }

// List returns one page of the keys starting with prefix, in key order,
// from one read transaction.
//
// At the current revision it reads the data. At an older revision R it
// reads the data and undoes, for each key of the page, the events after R:
// the key's first event after R says what it was at R (absent when that
// event's previous revision is 0; otherwise its previous value, from
// history or the history base, with the version and create revision the
// event's record implies). That needs every event after R, so R must be at
// least the oldest retained revision minus one; otherwise it returns a
// *RevisionUnavailableError. The read scans every event after R once, so a
// page at an old revision costs up to the history's length.
func (f *FSM) List(prefix []byte, o ListOptions) (ListPage, error) {
	var page ListPage
	err := f.view(func(tx *bolt.Tx) error {
		applied, err := readApplied(tx)
		if err != nil {
			return err
		}
		page.Revision = o.Revision
		if o.Revision == 0 {
			page.Revision = applied
		}
		if page.Revision > applied {
			return fmt.Errorf("revision %d is not applied yet (applied index %d)", page.Revision, applied)
		}
		start := o.Start
		if bytes.Compare(start, prefix) < 0 {
			start = prefix
		}
		l := lister{prefix: prefix, o: o, rev: page.Revision, kv: tx.Bucket(bucketKV).Cursor(), tx: tx}
		if page.Revision < applied {
			st, err := readHistStats(tx)
			if err != nil {
				return fmt.Errorf("list: %w", err)
			}
			if page.Revision+1 < st.oldest {
				return &RevisionUnavailableError{Revision: page.Revision, Oldest: st.oldest - 1}
			}
			l.r = &historyReader{
				hist: tx.Bucket(bucketHistory), hidx: tx.Bucket(bucketHIndex), hbase: tx.Bucket(bucketHBase),
				oldest: st.oldest, withPrev: true,
			}
			l.r.lookup, l.r.index = l.r.hist.Cursor(), l.r.hidx.Cursor()
			if err := l.collectUndo(page.Revision, start); err != nil {
				return fmt.Errorf("list at revision %d: %w", page.Revision, err)
			}
		}
		page.KVs, page.Next, err = l.page(start)
		return err
	})
	return page, f.check(err)
}

// undo is a key's first event after the revision a List reads at.
type undo struct {
	key []byte // aliases bbolt memory
	at  histPos
}

// lister is one List's state.
type lister struct {
	prefix []byte
	o      ListOptions
	rev    uint64 // the revision read at
	kv     *bolt.Cursor
	r      *historyReader // nil when reading the current revision
	undos  []undo         // in key order
	tx     *bolt.Tx
}

// collectUndo finds, for each key at or after start under the prefix, its
// first event after rev.
func (l *lister) collectUndo(rev uint64, start []byte) error {
	seen := map[string]bool{}
	c := l.r.hist.Cursor()
	from := histKey(rev+1, 0)
	for k, v := c.Seek(from[:]); k != nil; k, v = c.Next() {
		at, pos, err := splitHistKey(k)
		if err != nil {
			return err
		}
		rec, err := decodeHistRecord(k, v)
		if err != nil {
			return fmt.Errorf("record at revision %d position %d: %w", at, pos, err)
		}
		if !bytes.HasPrefix(rec.key, l.prefix) || bytes.Compare(rec.key, start) < 0 || seen[string(rec.key)] {
			continue
		}
		seen[string(rec.key)] = true
		l.undos = append(l.undos, undo{key: rec.key, at: histPos{at, pos}})
	}
	slices.SortFunc(l.undos, func(a, b undo) int { return bytes.Compare(a.key, b.key) })
	return nil
}

// before returns what u's key was before its event: ok false when absent.
func (l *lister) before(u undo) (kv KeyValue, ok bool, err error) {
	k := histKey(u.at.rev, u.at.pos)
	rec, err := decodeHistRecord(k[:], get(l.r.lookup, k[:]))
	if err != nil {
		return KeyValue{}, false, fmt.Errorf("record at revision %d position %d: %w", u.at.rev, u.at.pos, err)
	}
	if rec.prev == 0 {
		return KeyValue{}, false, nil
	}
	kv = KeyValue{Key: rec.key, ModRevision: rec.prev}
	switch {
	case rec.typ == histPut:
		kv.Version, kv.CreateRevision = rec.version-1, rec.create
		kv.Value, err = l.r.prevValue(u.at, rec)
	case rec.prev >= l.r.oldest:
		var p histRecord
		p, err = l.r.recordAt(rec.key, rec.prev, u.at)
		kv.Value, kv.Version, kv.CreateRevision = p.value, p.version, p.create
	case rec.version != 0:
		kv.Version, kv.CreateRevision = rec.version, rec.create
		kv.Value, err = l.r.prevValue(u.at, rec)
	default:
		// A DELETE recorded before DELETE records carried the version,
		// whose previous PUT is compacted: the version is lost.
		return KeyValue{}, false, &RevisionUnavailableError{Revision: l.rev, Oldest: u.at.rev}
	}
	return kv, err == nil, err
}

// page merges the current data with the undone keys from start on, and
// returns the pairs that fit and the first key that did not.
func (l *lister) page(start []byte) ([]KeyValue, []byte, error) {
	var out []KeyValue
	size := 0
	k, v := l.kv.Seek(start)
	undos := l.undos
	for {
		if k != nil && !bytes.HasPrefix(k, l.prefix) {
			k = nil
		}
		if k == nil && len(undos) == 0 {
			return out, nil, nil
		}
		var kv KeyValue
		var ok bool
		var err error
		switch c := compareNext(k, undos); {
		case c < 0: // a key no event after the revision touched
			kv, err = decodeRecord(k, v)
			if err == nil {
				// Only a put or a delete changes a key's lease, and each
				// is an event: the lease now is the lease at the revision.
				kv.Lease, err = leaseOf(l.tx, k)
			}
			ok = true
			k, v = l.kv.Next()
		default: // a key as it was before its first event after the revision
			if c == 0 {
				k, v = l.kv.Next()
			}
			kv, ok, err = l.before(undos[0])
			undos = undos[1:]
		}
		if err != nil {
			return nil, nil, err
		}
		if !ok {
			continue
		}
		n := len(kv.Key) + len(kv.Value) + KVOverhead
		if len(out) > 0 && (l.o.Limit > 0 && len(out) == l.o.Limit || l.o.MaxBytes > 0 && size+n > l.o.MaxBytes) {
			return out, bytes.Clone(kv.Key), nil
		}
		out = append(out, kv.clone())
		size += n
	}
}

// compareNext orders the next data key k (nil: none left) against the next
// undone key: negative when k comes first, 0 when they are the same key.
func compareNext(k []byte, undos []undo) int {
	switch {
	case len(undos) == 0:
		return -1
	case k == nil:
		return 1
	}
	return bytes.Compare(k, undos[0].key)
}
