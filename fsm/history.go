package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// On-disk layout of the history (all integers big endian):
//
//	history: revision (8) | position (4)  ->  type (1) | version (8) | create revision (8) |
//	                                          prev revision (8) | key length (uvarint) | key | value (PUT only)
//	hidx:    revision (8)                 ->  per record of the revision, in position order:
//	                                          FNV-1a 32 of its key (4) | position (4)
//	hbase:   key                          ->  revision (8) | value
//	meta:    history_oldest, history_events, history_bytes  ->  uint64 (8)
//
// and every value ends with its checksum (checksum.go).
//
// The position is the mutation's place among its entry's events (a Txn or
// a lease expiry makes several), so (revision, position) orders all
// mutations. (Records written before Txn existed used the op's index in
// Chunk.Ops, which orders them the same way.) A DELETE record carries the deleted key's
// version and create revision (records written before List read at a past
// revision carry 0 there), so that a List at a revision before the delete
// can restore the key whole even when its previous PUT is compacted (see
// list.go). The prev revision is the key's mod revision before the op, 0 when
// it was absent; hidx finds the key's record at that revision without
// scanning the revision's records (up to an entry's ops, a cache miss each),
// so reading a prev value costs two lookups.
var (
	bucketHistory = []byte("history") // revision|position -> history record
	bucketHIndex  = []byte("hidx")    // revision -> key hash|position of each of its records
	bucketHBase   = []byte("hbase")   // key -> revision|value of its newest PUT at or below the compaction point

	keyHistOldest = []byte("history_oldest") // every event at or above this revision is in history
	keyHistEvents = []byte("history_events") // records in history
	keyHistBytes  = []byte("history_bytes")  // sum of key+value lengths of those records
	// keyHistApplied is the applied index as of the last transaction that
	// kept history. It differs from the applied index when a version that
	// keeps no history applied entries to this file since (a downgrade, or
	// an old follower that installed a newer node's snapshot): the history
	// then has a silent gap and is rebuilt from scratch.
	keyHistApplied = []byte("history_applied")
)

const (
	// DefaultHistoryMaxEvents keeps about an hour of history at 300 writes
	// per second (90 s at the put benchmark's 11,000): time for a watcher
	// to reconnect, or a slow one to catch up, without re-listing.
	DefaultHistoryMaxEvents = 1_000_000
	// DefaultHistoryMaxBytes bounds the history's key and value bytes so a
	// workload of large values cannot grow the state machine file without
	// limit. Record keys, headers, hidx and bbolt's per-element overhead add
	// about 65 bytes per event on top, bounded by DefaultHistoryMaxEvents.
	DefaultHistoryMaxBytes = 256 << 20

	// compactMinPerBatch is the least compaction may remove in one batch
	// when history is over a limit, so a lowered limit is reached in a
	// bounded number of batches even at a low write rate.
	compactMinPerBatch = 1024
	// compactPerAdded is how many records compaction may remove per record
	// the batch added: above 1, so history shrinks back under its limits at
	// any steady write rate; small, so no batch stalls on compaction.
	compactPerAdded = 2
	// historyFillPercent packs history and hidx pages: records are appended
	// in key order and removed from the front, never inserted in the middle,
	// so bbolt's default half-full split only wastes space.
	historyFillPercent = 0.9
	// txBufKeepMax is the largest txBuf kept between batches; a batch of
	// huge values allocates its own, which is then dropped.
	txBufKeepMax = 4 << 20
)

const (
	histKeyLen   = 12 // revision (8) | position (4)
	histHeader   = 25 // type (1) | version (8) | create (8) | prev (8)
	hidxEntryLen = 8  // key hash (4) | position (4)

	histPut    byte = 1
	histDelete byte = 2
)

// histRecord is one decoded history record. key and value alias the bytes it
// was decoded from.
type histRecord struct {
	typ                   byte
	version, create, prev uint64
	key, value            []byte
}

// histStats is what meta says about the history; the FSM caches it.
type histStats struct {
	oldest, events, bytes uint64
}

func histKey(rev uint64, pos uint32) [histKeyLen]byte {
	var k [histKeyLen]byte
	binary.BigEndian.PutUint64(k[:8], rev)
	binary.BigEndian.PutUint32(k[8:], pos)
	return k
}

func splitHistKey(k []byte) (rev uint64, pos uint32, err error) {
	if len(k) != histKeyLen {
		return 0, 0, fmt.Errorf("history key of %d bytes, want %d", len(k), histKeyLen)
	}
	return binary.BigEndian.Uint64(k[:8]), binary.BigEndian.Uint32(k[8:]), nil
}

// appendHistRecord appends the encoding of a history record to dst.
func appendHistRecord(dst []byte, typ byte, version, create, prev uint64, key, value []byte) []byte {
	dst = append(dst, typ)
	dst = binary.BigEndian.AppendUint64(dst, version)
	dst = binary.BigEndian.AppendUint64(dst, create)
	dst = binary.BigEndian.AppendUint64(dst, prev)
	dst = binary.AppendUvarint(dst, uint64(len(key)))
	dst = append(dst, key...)
	return append(dst, value...)
}

// decodeHistRecord verifies and decodes the history record stored under
// hkey (revision|position). key and value alias stored.
func decodeHistRecord(hkey, stored []byte) (histRecord, error) {
	b, err := openValue(bucketHistory, hkey, stored)
	if err != nil {
		return histRecord{}, err
	}
	if len(b) < histHeader+1 {
		return histRecord{}, errors.New("history record shorter than its header")
	}
	r := histRecord{
		typ:     b[0],
		version: binary.BigEndian.Uint64(b[1:]),
		create:  binary.BigEndian.Uint64(b[9:]),
		prev:    binary.BigEndian.Uint64(b[17:]),
	}
	if r.typ != histPut && r.typ != histDelete {
		return histRecord{}, fmt.Errorf("history record of unknown type %d", r.typ)
	}
	n, w := binary.Uvarint(b[histHeader:])
	rest := b[histHeader+max(w, 0):]
	if w <= 0 || n == 0 || n > uint64(len(rest)) {
		return histRecord{}, errors.New("history record with a bad key length")
	}
	r.key, r.value = rest[:n], rest[n:]
	if r.typ == histDelete && len(r.value) != 0 {
		return histRecord{}, errors.New("history DELETE record with a value")
	}
	return r, nil
}

// keyHash is the 32-bit FNV-1a hash of key, as hidx stores it. It is part
// of the file format: every node, and every later version, must compute it
// the same way.
func keyHash(key []byte) uint32 {
	h := uint32(2166136261)
	for _, c := range key {
		h ^= uint32(c)
		h *= 16777619
	}
	return h
}

// decodeHBase verifies and reads key's hbase record: the revision and
// value of the key's newest PUT at or below the compaction point.
func decodeHBase(key, stored []byte) (rev uint64, value []byte, err error) {
	b, err := openValue(bucketHBase, key, stored)
	if err != nil {
		return 0, nil, err
	}
	if len(b) < 8 {
		return 0, nil, errors.New("history base record shorter than its revision")
	}
	return binary.BigEndian.Uint64(b), b[8:], nil
}

// openHIndex verifies the hidx value stored under a revision key and
// returns its entries.
func openHIndex(revKey, stored []byte) ([]byte, error) {
	idx, err := openValue(bucketHIndex, revKey, stored)
	if err != nil {
		return nil, err
	}
	if len(idx)%hidxEntryLen != 0 {
		return nil, fmt.Errorf("history index of revision %x is %d bytes, not a multiple of %d", revKey, len(idx), hidxEntryLen)
	}
	return idx, nil
}

func readHistStats(tx *bolt.Tx) (histStats, error) {
	meta := tx.Bucket(bucketMeta)
	var st histStats
	for _, f := range []struct {
		key []byte
		dst *uint64
	}{{keyHistOldest, &st.oldest}, {keyHistEvents, &st.events}, {keyHistBytes, &st.bytes}} {
		v, found, err := getMeta(meta, f.key)
		if err != nil {
			return histStats{}, err
		}
		if !found {
			return histStats{}, fmt.Errorf("meta %s is missing", f.key)
		}
		*f.dst = v
	}
	return st, nil
}

func writeHistStats(tx *bolt.Tx, st histStats) error {
	meta := tx.Bucket(bucketMeta)
	return errors.Join(
		putMeta(meta, keyHistOldest, st.oldest),
		putMeta(meta, keyHistEvents, st.events),
		putMeta(meta, keyHistBytes, st.bytes),
	)
}

// initHistory makes sure the history buckets and meta exist and returns the
// stats. A database without a history bucket (new, or written by a version
// that kept none) gets empty history starting after the applied index, and
// an hbase holding every live key at its mod revision, so the previous
// values of every later event are servable. upgraded reports the latter.
func initHistory(tx *bolt.Tx, applied uint64) (st histStats, filled int, upgraded bool, err error) {
	meta := tx.Bucket(bucketMeta)
	if tx.Bucket(bucketHistory) != nil {
		if tx.Bucket(bucketHBase) == nil || tx.Bucket(bucketHIndex) == nil {
			return histStats{}, 0, false, errors.New("history bucket without its hbase or hidx bucket")
		}
		v, found, err := getMeta(meta, keyHistApplied)
		if err != nil {
			return histStats{}, 0, false, err
		}
		if found && v == applied {
			st, err = readHistStats(tx)
			if err != nil {
				return histStats{}, 0, false, fmt.Errorf("history: %w", err)
			}
			return st, 0, false, nil
		}
		// Entries were applied without history since it was last kept:
		// it has a gap. Start it afresh, as for a database without one.
	}
	// Leftover history buckets cannot be trusted: rebuild.
	for _, b := range [][]byte{bucketHistory, bucketHIndex, bucketHBase} {
		if tx.Bucket(b) != nil {
			if err := tx.DeleteBucket(b); err != nil {
				return histStats{}, 0, false, err
			}
		}
	}
	for _, b := range [][]byte{bucketHistory, bucketHIndex} {
		if _, err := tx.CreateBucket(b); err != nil {
			return histStats{}, 0, false, err
		}
	}
	hbase, err := tx.CreateBucket(bucketHBase)
	if err != nil {
		return histStats{}, 0, false, err
	}
	err = tx.Bucket(bucketKV).ForEach(func(k, v []byte) error {
		kv, err := decodeRecord(k, v)
		if err != nil {
			return fmt.Errorf("key %q: %w", k, err)
		}
		rec := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(kv.Value)+sumLen), kv.ModRevision)
		filled++
		return hbase.Put(k, sealValue(append(rec, kv.Value...), 0, k))
	})
	if err != nil {
		return histStats{}, 0, false, fmt.Errorf("fill history base: %w", err)
	}
	st = histStats{oldest: applied + 1}
	return st, filled, applied > 0 || filled > 0, errors.Join(writeHistStats(tx, st), putMeta(meta, keyHistApplied, applied))
}

// historyLimits are the retention bounds, defaults applied.
type historyLimits struct {
	maxEvents, maxBytes uint64
}

func (l historyLimits) exceeded(st histStats) bool {
	return st.events > l.maxEvents || st.bytes > l.maxBytes
}

// historyWriter appends the history records of one batch, inside its write
// transaction, and compacts the oldest records when a limit is exceeded.
type historyWriter struct {
	hist, hidx, hbase *bolt.Bucket
	st                histStats
	added             int
	// buf holds the encoded records passed to Put (txBuf).
	buf *txBuf
	// idxRev is the revision whose hidx value idx is building.
	idxRev uint64
	idx    []byte
	// compacted and compactedRevs are compaction's scratch lists.
	compacted     []compactedRecord
	compactedRevs []uint64
}

// record adds the history record of one event. prev is the key's mod
// revision before the op (0 = absent).
func (h *historyWriter) record(rev uint64, pos int, typ byte, version, create, prev uint64, key, value []byte) error {
	if rev != h.idxRev {
		if err := h.flushIndex(); err != nil {
			return err
		}
		h.idxRev = rev
	}
	h.idx = binary.BigEndian.AppendUint32(h.idx, keyHash(key))
	h.idx = binary.BigEndian.AppendUint32(h.idx, uint32(pos))
	// The key goes in buf too: bbolt copies it, but a local array
	// passed to Put escapes to the heap, an allocation per record.
	k := histKey(rev, uint32(pos))
	h.buf.b = append(h.buf.b, k[:]...)
	start := len(h.buf.b)
	h.buf.b = appendHistRecord(h.buf.b, typ, version, create, prev, key, value)
	h.buf.b = sealValue(h.buf.b, start, h.buf.b[start-histKeyLen:start])
	end := len(h.buf.b)
	if err := h.hist.Put(h.buf.b[start-histKeyLen:start], h.buf.b[start:end:end]); err != nil {
		return fmt.Errorf("history record at revision %d position %d: %w", rev, pos, err)
	}
	h.added++
	h.st.events++
	h.st.bytes += uint64(len(key) + len(value))
	return nil
}

// flushIndex stores the hidx value of the revision whose records were
// just written.
func (h *historyWriter) flushIndex() error {
	if len(h.idx) == 0 {
		return nil
	}
	k := len(h.buf.b)
	h.buf.b = binary.BigEndian.AppendUint64(h.buf.b, h.idxRev)
	start := len(h.buf.b)
	h.buf.b = append(h.buf.b, h.idx...)
	h.buf.b = sealValue(h.buf.b, start, h.buf.b[k:start])
	end := len(h.buf.b)
	h.idx = h.idx[:0]
	if err := h.hidx.Put(h.buf.b[k:start], h.buf.b[start:end:end]); err != nil {
		return fmt.Errorf("history index of revision %d: %w", h.idxRev, err)
	}
	return nil
}

// compactedRecord is one record compaction removes.
type compactedRecord struct {
	hkey, key, value []byte
	rev              uint64
	del              bool
}

// compact removes whole revisions from the front of history while a limit
// is exceeded, stopping at the first revision boundary after budget
// records, and moves each compacted key's newest state into hbase. It
// returns the number of records removed.
func (h *historyWriter) compact(limits historyLimits) (int, error) {
	if !limits.exceeded(h.st) {
		return 0, nil
	}
	budget := max(compactPerAdded*h.added, compactMinPerBatch)
	list, revs := h.compacted[:0], h.compactedRevs[:0]
	defer func() {
		clear(list) // drop references into this transaction's memory
		h.compacted, h.compactedRevs = list[:0], revs[:0]
	}()
	var last uint64
	c := h.hist.Cursor()
	k, v := c.First()
	if k == nil {
		return 0, fmt.Errorf("history meta out of step with its records: %d events, %d bytes in an empty history", h.st.events, h.st.bytes)
	}
	for k != nil && len(list) < budget && limits.exceeded(h.st) {
		first, _, err := splitHistKey(k)
		if err != nil {
			return 0, err
		}
		for ; k != nil; k, v = c.Next() {
			rev, _, err := splitHistKey(k)
			if err != nil {
				return 0, err
			}
			if rev != first {
				break
			}
			r, err := decodeHistRecord(k, v)
			if err != nil {
				return 0, fmt.Errorf("history record at revision %d: %w", rev, err)
			}
			size := uint64(len(r.key) + len(r.value))
			if h.st.events == 0 || h.st.bytes < size {
				return 0, fmt.Errorf("history meta out of step with its records at revision %d (events %d, bytes %d)", rev, h.st.events, h.st.bytes)
			}
			h.st.events--
			h.st.bytes -= size
			list = append(list, compactedRecord{hkey: k, key: r.key, value: r.value, rev: rev, del: r.typ == histDelete})
		}
		last = first
		revs = append(revs, first)
	}
	// The newest compacted state of each key goes to hbase: sort by key,
	// keeping revision order among equal keys, and take the last of each.
	// Deleting the records afterwards in key order changes nothing.
	slices.SortStableFunc(list, func(a, b compactedRecord) int { return bytes.Compare(a.key, b.key) })
	for i, r := range list {
		if i+1 < len(list) && bytes.Equal(list[i+1].key, r.key) {
			continue
		}
		var err error
		if r.del {
			err = h.hbase.Delete(r.key)
		} else {
			start := len(h.buf.b)
			h.buf.b = binary.BigEndian.AppendUint64(h.buf.b, r.rev)
			h.buf.b = append(h.buf.b, r.value...)
			h.buf.b = sealValue(h.buf.b, start, r.key)
			end := len(h.buf.b)
			err = h.hbase.Put(r.key, h.buf.b[start:end:end])
		}
		if err != nil {
			return 0, fmt.Errorf("history base of key %q: %w", r.key, err)
		}
	}
	for _, r := range list {
		if err := h.hist.Delete(r.hkey); err != nil {
			return 0, fmt.Errorf("compact history: %w", err)
		}
	}
	for _, rev := range revs {
		k := histKey(rev, 0)
		if err := h.hidx.Delete(k[:8]); err != nil {
			return 0, fmt.Errorf("compact history index: %w", err)
		}
	}
	h.st.oldest = last + 1
	return len(list), nil
}

// historyWriter starts the history writer of a batch's transaction, which
// encodes its records in buf.
func (f *FSM) historyWriter(tx *bolt.Tx, buf *txBuf) (*historyWriter, error) {
	st, err := readHistStats(tx)
	if err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	hist, hidx := tx.Bucket(bucketHistory), tx.Bucket(bucketHIndex)
	hist.FillPercent, hidx.FillPercent = historyFillPercent, historyFillPercent
	return &historyWriter{
		hist: hist, hidx: hidx, hbase: tx.Bucket(bucketHBase), st: st,
		buf: buf, idx: f.histIdx[:0], compacted: f.compacted, compactedRevs: f.compactedRevs,
	}, nil
}

// finishHistory compacts the history if it is over a limit and stores its
// stats, in meta and (the transaction being about to commit) in f.hist.
func (f *FSM) finishHistory(tx *bolt.Tx, h *historyWriter) error {
	if err := h.flushIndex(); err != nil {
		return err
	}
	removed, err := h.compact(f.limits)
	if err != nil {
		return err
	}
	if h.added > 0 || removed > 0 {
		if err := writeHistStats(tx, h.st); err != nil {
			return err
		}
	}
	f.histIdx, f.compacted, f.compactedRevs = h.idx[:0], h.compacted, h.compactedRevs
	st := h.st
	f.hist.Store(&st)
	return nil
}
