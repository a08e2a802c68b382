package node

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/segment"
)

// LogStore names the kind of store that keeps a node's raft log and raft's
// stable state (term, vote). A data directory holds one kind for its whole
// life: a node refuses to start on a directory holding the other kind, and
// nothing converts one into the other.
type LogStore string

const (
	// LogStoreBoltDB keeps both in one bbolt file, raft.db
	// (hashicorp/raft-boltdb): two fsyncs per append, as every bbolt
	// commit writes its pages, then its meta page.
	LogStoreBoltDB LogStore = "boltdb"
	// LogStoreWAL keeps the log in append-only segment files and the
	// stable state in a small bbolt file, both in the directory wal
	// (hashicorp/raft-wal): one fsync per append.
	LogStoreWAL LogStore = "wal"
)

// LogStoreAuto, the zero LogStore, is the store the data directory holds,
// or DefaultLogStore for one that holds none yet.
const LogStoreAuto LogStore = ""

// DefaultLogStore is the store a new data directory gets unless told
// otherwise: raft-boltdb. The WAL is faster (one fsync per append instead
// of two) but raft-wal v0.4.0, the only version available here, cannot
// read back a segment it sealed while truncating the log's tail (raft does
// that when a follower drops entries a new leader did not keep): after a
// restart every entry of such a segment fails with "sealed segment has no
// index block" (hashicorp/raft-wal#31, fixed in a later release), and the
// node refuses to start. A 10-minute fault run found it.
const DefaultLogStore = LogStoreBoltDB

const (
	boltLogFile = "raft.db"
	walLogDir   = "wal"
)

// walMaxOpBytes bounds, with the WAL, the client data one log entry may
// carry (a key and its value, or a Txn): raft-wal v0.4.0 writes larger
// records than it reads back (segment.MaxEntrySize, 64 MiB), so such an
// entry would be lost to its own node. A MiB is left for the chunk's other
// fields, the checksum and the record's framing.
const walMaxOpBytes = segment.MaxEntrySize - 1<<20

// raftStore is what a node keeps of raft on disk besides snapshots: its log
// and its stable store, in one store of either kind.
type raftStore interface {
	raft.LogStore
	raft.StableStore
	Close() error
}

// logStorePath is where a store of kind lives in dataDir: a file for
// boltdb, a directory for the WAL.
func logStorePath(dataDir string, kind LogStore) string {
	if kind == LogStoreWAL {
		return filepath.Join(dataDir, walLogDir)
	}
	return filepath.Join(dataDir, boltLogFile)
}

// logStoreIn returns the kind of raft log store dataDir holds, or "" when
// it holds none yet (a new directory, or one seeded from a backup, which
// holds only a snapshot). An empty wal directory holds nothing: the WAL
// creates its files in it only once it exists.
func logStoreIn(dataDir string) (LogStore, error) {
	bolt := true
	if _, err := os.Stat(logStorePath(dataDir, LogStoreBoltDB)); errors.Is(err, fs.ErrNotExist) {
		bolt = false
	} else if err != nil {
		return "", fmt.Errorf("look for the raft log: %w", err)
	}
	entries, err := os.ReadDir(logStorePath(dataDir, LogStoreWAL))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("look for the raft log: %w", err)
	}
	walFound := len(entries) > 0
	switch {
	case bolt && walFound:
		return "", fmt.Errorf("data directory %s holds two raft logs, %s (boltdb) and %s/ (wal): a node only ever creates one, so one was copied in; "+
			"keep the one this node ran with and move the other out of the directory",
			dataDir, boltLogFile, walLogDir)
	case bolt:
		return LogStoreBoltDB, nil
	case walFound:
		return LogStoreWAL, nil
	}
	return "", nil
}

// resolveLogStore returns the store a node of kind opens in dataDir: kind,
// unless it is LogStoreAuto: then the kind dataDir holds, or
// DefaultLogStore when it holds none.
func resolveLogStore(dataDir string, kind LogStore) (LogStore, error) {
	if kind != LogStoreAuto {
		return kind, checkLogStore(dataDir, kind)
	}
	found, err := logStoreIn(dataDir)
	if err != nil || found != "" {
		return found, err
	}
	return DefaultLogStore, nil
}

// checkLogStore refuses a data directory that holds a raft log of another
// kind than kind: the log is never converted. Open calls it before it
// opens anything.
func checkLogStore(dataDir string, kind LogStore) error {
	found, err := logStoreIn(dataDir)
	if err != nil || found == "" || found == kind {
		return err
	}
	return fmt.Errorf("data directory %s holds a %s raft log (%s), but --log-store is %s: "+
		"start this node with --log-store %s. A raft log is never converted; to move this member to %s, "+
		"remove it from the cluster (raftwatch member remove), empty its data directory, and add it back "+
		"(raftwatch member add, then serve with --log-store %s and no --initial-cluster): the leader sends it a snapshot",
		dataDir, found, filepath.Base(logStorePath(dataDir, found)), kind, found, kind, kind)
}

// openRaftStore opens the raft log store of kind in dataDir (WAL segments
// of segmentSize bytes, zero: the default), creating it when the directory
// holds none, and returns it with its path. dropDamagedTail, when not zero,
// lets a WAL whose last batch fails its CRC and starts at that index open,
// dropping that batch (see openWAL).
func openRaftStore(dataDir string, kind LogStore, segmentSize int, dropDamagedTail uint64, log hclog.Logger) (raftStore, string, error) {
	path := logStorePath(dataDir, kind)
	if kind == LogStoreWAL {
		s, err := openWAL(path, segmentSize, dropDamagedTail, log)
		if err != nil {
			return nil, "", fmt.Errorf("open raft log %s: %w", path, err)
		}
		return s, path, nil
	}
	// fsync on every append (NoSync=false): a write is acknowledged only
	// once it is on disk on a majority.
	s, err := raftboltdb.New(raftboltdb.Options{Path: path})
	if err != nil {
		return nil, "", fmt.Errorf("open raft log %s: %w", path, err)
	}
	return s, path, nil
}

// walStore is raft-wal's store as a node uses it: it refuses an entry too
// large to be read back, and closes the metadata database the WAL leaves
// open (raft-wal v0.4.0's Close does not; its bbolt lock would stop the
// next Open in the same process).
type walStore struct {
	*wal.WAL
	meta *metadb.BoltMetaDB
}

// openWAL opens (creating it if needed) the WAL in dir, with segment files
// of segmentSize bytes (zero: raft-wal's default). Every append is fsynced
// before it returns, and the stable store's bbolt file syncs every commit.
// A last batch that fails its CRC is refused (checkWALTail), unless it
// starts at dropDamagedTail: then raft-wal drops it as a torn write, which is what a
// machine crash in the middle of that batch's write leaves (the batch was
// never acknowledged); the operator's call, as the file cannot tell that
// from disk damage. The node still refuses to start if the drop loses an
// entry it had applied (checkLogHoldsApplied).
func openWAL(dir string, segmentSize int, dropDamagedTail uint64, log hclog.Logger) (*walStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := checkWALTail(dir); err != nil {
		var ce *LogCorruptError
		if !errors.As(err, &ce) || dropDamagedTail == 0 || ce.Index != dropDamagedTail {
			return nil, err
		}
		log.Warn("dropping the damaged last batch of the wal as a torn write (--wal-drop-damaged-tail)", "detail", ce.Detail, "first_index", ce.Index)
	}
	meta := &metadb.BoltMetaDB{}
	w, err := wal.Open(dir, wal.WithMetaStore(meta), wal.WithLogger(log.Named("wal")), wal.WithSegmentSize(segmentSize))
	if err != nil {
		meta.Close()
		return nil, err
	}
	return &walStore{WAL: w, meta: meta}, nil
}

func (s *walStore) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

// StoreLogs stores logs, or none of them if one is larger than the WAL
// reads back.
func (s *walStore) StoreLogs(logs []*raft.Log) error {
	for _, l := range logs {
		// The record also holds the index, term, type, lengths and
		// append time: well under the headroom walMaxOpBytes leaves.
		if n := len(l.Data) + len(l.Extensions); n > segment.MaxEntrySize-1024 {
			return fmt.Errorf("raft log entry %d carries %d bytes, more than the wal log store can read back in one entry (%d): "+
				"lower --max-value-size and --max-txn-bytes, or use --log-store boltdb", l.Index, n, segment.MaxEntrySize)
		}
	}
	return s.WAL.StoreLogs(logs)
}

// Close closes the WAL, then its metadata database. Raft, the only user
// of the stable store, must be shut down first.
func (s *walStore) Close() error {
	return errors.Join(s.WAL.Close(), s.meta.Close())
}

// logStoreBytes is the size on disk of the raft log store at path: raft.db,
// or the files of the wal directory (its segments are preallocated, 64 MiB
// each); -1 when it cannot be read.
func logStoreBytes(path string, kind LogStore) int64 {
	if kind != LogStoreWAL {
		return fileSize(path)
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return -1
	}
	var total int64
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // a segment deleted after a truncation, meanwhile
		} else if err != nil {
			return -1
		}
		total += fi.Size()
	}
	return total
}
