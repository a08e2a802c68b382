package node

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"syscall"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	wal "github.com/hashicorp/raft-wal"
	berrors "go.etcd.io/bbolt/errors"
)

// Every raft log entry this node stores carries a CRC-32C over its index,
// term, type, data and extensions, kept in the stored entry's Extensions
// field in front of the caller's own extensions:
//
//	stored Extensions = "rwc1" | crc32c (4, big endian) | original Extensions
//	crc32c over index (8) | term (8) | type (1) | len(data) (8) | data | original Extensions
//
// checkedLogStore adds it on store and verifies and strips it on read, so
// the entries raft holds in memory, applies and sends to followers are the
// caller's, checksum-free; each node checks what it wrote itself. Keeping
// the sum beside Data rather than appended to it spares a copy of every
// entry's payload on the write path.
var logSumMagic = []byte("rwc1")

const logSumLen = 8 // magic and CRC

// keyLogSumsFrom, in raft's stable store, is the first index stored with a
// checksum: entries below it were written before checksums and are read
// unverified when they carry none; entries at or above it must carry one.
var keyLogSumsFrom = []byte("raftwatch_log_checksums_from")

var logCastagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrLogCorrupt is wrapped by every *LogCorruptError.
var ErrLogCorrupt = errors.New("raft log entry is damaged")

// LogCorruptError is a stored raft log entry that fails its checksum or
// cannot be decoded.
type LogCorruptError struct {
	Index  uint64
	Path   string // the raft log store: raft.db, or the wal directory
	Detail string
	// FoundBy says what found it when not a read by raft or a client:
	// fsm.FoundByScrub.
	FoundBy string
}

func (e *LogCorruptError) Error() string {
	detail := e.Detail
	if e.FoundBy != "" {
		detail += "; " + e.FoundBy
	}
	return fmt.Sprintf("raft log entry %d in %s is damaged (%s); this node must not apply or send it. "+
		"To repair: remove this node from the cluster (raftwatch member remove), delete its data directory, "+
		"and add it back (raftwatch member add, then serve with no --initial-cluster): the leader sends it a snapshot",
		e.Index, e.Path, detail)
}

func (e *LogCorruptError) Unwrap() error { return ErrLogCorrupt }

// logSum is the checksum of l with ext as its extensions.
func logSum(l *raft.Log, ext []byte) uint32 {
	var hdr [25]byte
	binary.BigEndian.PutUint64(hdr[0:], l.Index)
	binary.BigEndian.PutUint64(hdr[8:], l.Term)
	hdr[16] = byte(l.Type)
	binary.BigEndian.PutUint64(hdr[17:], uint64(len(l.Data)))
	sum := crc32.Update(crc32.Checksum(hdr[:], logCastagnoli), logCastagnoli, l.Data)
	return crc32.Update(sum, logCastagnoli, ext)
}

// sealLog returns a shallow copy of l whose Extensions carry its checksum.
func sealLog(l *raft.Log) raft.Log {
	c := *l
	ext := make([]byte, 0, logSumLen+len(l.Extensions))
	ext = append(ext, logSumMagic...)
	ext = binary.BigEndian.AppendUint32(ext, logSum(l, l.Extensions))
	c.Extensions = append(ext, l.Extensions...)
	return c
}

// openLog verifies an entry read from the store as index, and strips its
// checksum. An entry below sumsFrom may have none (written before sums).
func openLog(l *raft.Log, index, sumsFrom uint64) error {
	if l.Index != index {
		return fmt.Errorf("stored under index %d but says it is entry %d", index, l.Index)
	}
	ext := l.Extensions
	if len(ext) < logSumLen || !bytes.Equal(ext[:len(logSumMagic)], logSumMagic) {
		if index < sumsFrom {
			return nil
		}
		return errors.New("it carries no checksum")
	}
	want := binary.BigEndian.Uint32(ext[len(logSumMagic):])
	orig := ext[logSumLen:]
	if got := logSum(l, orig); got != want {
		return fmt.Errorf("checksum mismatch: stored %08x, computed %08x", want, got)
	}
	if len(orig) == 0 {
		orig = nil
	}
	l.Extensions = orig
	return nil
}

// checkedLogStore is raft's log store, of either kind, with a checksum on
// every entry.
type checkedLogStore struct {
	store    raftStore
	path     string
	sumsFrom uint64
	// onCorrupt is told of every damaged entry GetLog finds, before raft
	// is (raft panics when it cannot read an entry it must apply).
	onCorrupt func(*LogCorruptError)
}

var (
	_ raft.LogStore          = (*checkedLogStore)(nil)
	_ raft.MonotonicLogStore = (*checkedLogStore)(nil)
)

// newCheckedLogStore wraps store; a log that has none yet records the
// index from which entries carry checksums.
func newCheckedLogStore(store raftStore, path string, onCorrupt func(*LogCorruptError)) (*checkedLogStore, error) {
	from, err := store.GetUint64(keyLogSumsFrom)
	// Unset: boltdb says so, the WAL reads 0 (never stored: it is at least 1).
	if errors.Is(err, raftboltdb.ErrKeyNotFound) || err == nil && from == 0 {
		last, lerr := store.LastIndex()
		if lerr != nil {
			return nil, lerr
		}
		from = last + 1
		err = store.SetUint64(keyLogSumsFrom, from)
	}
	if err != nil {
		return nil, fmt.Errorf("raft log checksums: %w", err)
	}
	return &checkedLogStore{store: store, path: path, sumsFrom: from, onCorrupt: onCorrupt}, nil
}

// IsMonotonic passes on whether the store refuses gaps (the WAL does): raft
// then empties the log when it installs a snapshot, instead of leaving the
// entries before it.
func (s *checkedLogStore) IsMonotonic() bool {
	m, ok := s.store.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}

func (s *checkedLogStore) FirstIndex() (uint64, error) { return s.store.FirstIndex() }
func (s *checkedLogStore) LastIndex() (uint64, error)  { return s.store.LastIndex() }

// GetLog reads, verifies and strips entry index. A damaged entry is a
// *LogCorruptError.
func (s *checkedLogStore) GetLog(index uint64, l *raft.Log) error {
	return s.getLog(index, l, "")
}

// getLog is GetLog, naming what found a damaged entry (foundBy, see
// LogCorruptError).
func (s *checkedLogStore) getLog(index uint64, l *raft.Log, foundBy string) error {
	err := s.store.GetLog(index, l)
	if errors.Is(err, raft.ErrLogNotFound) || storeFailure(err) {
		return err // not this entry's bytes: the store could not be read
	}
	if err == nil {
		err = openLog(l, index, s.sumsFrom)
	} else {
		err = fmt.Errorf("it cannot be decoded: %w", err)
	}
	if err == nil {
		return nil
	}
	ce := &LogCorruptError{Index: index, Path: s.path, Detail: err.Error(), FoundBy: foundBy}
	if s.onCorrupt != nil {
		s.onCorrupt(ce)
	}
	return ce
}

// storeFailure reports whether err is the store failing (closed, or an I/O
// error) rather than an entry that does not decode: only the latter is
// damage, which marks the node for good.
func storeFailure(err error) bool {
	var errno syscall.Errno
	var pathErr *fs.PathError
	return errors.Is(err, berrors.ErrDatabaseNotOpen) || errors.Is(err, berrors.ErrTxClosed) ||
		errors.Is(err, wal.ErrClosed) || errors.As(err, &errno) || errors.As(err, &pathErr)
}

func (s *checkedLogStore) StoreLog(l *raft.Log) error {
	return s.StoreLogs([]*raft.Log{l})
}

// StoreLogs stores sealed copies of logs; the caller's entries are left
// as they are.
func (s *checkedLogStore) StoreLogs(logs []*raft.Log) error {
	sealed := make([]raft.Log, len(logs))
	ptrs := make([]*raft.Log, len(logs))
	for i, l := range logs {
		sealed[i] = sealLog(l)
		ptrs[i] = &sealed[i]
	}
	return s.store.StoreLogs(ptrs)
}

func (s *checkedLogStore) DeleteRange(min, max uint64) error { return s.store.DeleteRange(min, max) }
