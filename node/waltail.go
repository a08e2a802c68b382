package node

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"

	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/segment"
	"github.com/hashicorp/raft-wal/types"
)

// raft-wal v0.4.0, at open, trusts every batch of its tail segment but the
// last one that ends in a commit frame: it verifies that batch's CRC and,
// on a mismatch, drops the batch without a word, taking it for a torn write
// (segment/writer.go recoverTail). A batch that was fsynced, so possibly
// acknowledged to the leader, and that the disk damaged afterwards, goes
// the same way; raft would then vote with a log missing entries it
// promised to keep, and a committed write could be lost.
//
// A torn write from a killed process never ends in a commit frame: the
// writer puts a batch and its commit frame in one write, so a short write
// loses the commit frame first, and raft-wal's recovery then drops the
// batch without checking any CRC, rightly (it was never fsynced). A commit
// frame whose batch fails its CRC is either a machine crash that persisted
// the commit frame but not all of the batch before it (never fsynced,
// never acknowledged) or damage to an acknowledged batch; the two cannot
// be told apart from the file, so checkWALTail refuses both.

// walFrame* are raft-wal v0.4.0's segment format (segment/format.go).
const (
	walFileHeaderLen  = 32
	walFrameHeaderLen = 8
	walFrameInvalid   = 0
	walFrameEntry     = 1
	walFrameIndex     = 2
	walFrameCommit    = 3
)

var walCastagnoli = crc32.MakeTable(crc32.Castagnoli)

// walBatch is the last batch of a tail segment that ends in a commit
// frame.
type walBatch struct {
	first, last uint64 // the raft indexes of its entries; first > last: none
	start, end  int64  // the bytes its CRC covers: [start, end), end at its commit frame
	crc         uint32 // the CRC its commit frame holds
}

// checkWALTail refuses the WAL in dir when raft-wal, opening it, would
// drop its last committed batch (see above): a *LogCorruptError naming the
// first entry of that batch. It reads the segment metadata and the tail
// segment's frame headers, not the entries, and must run before the WAL
// is opened: the first append after an open overwrites a dropped batch.
// walTailDamage starts the detail of a damaged last batch; a damage marker
// holding it may be cleared by --wal-drop-damaged-tail.
const walTailDamage = "the last batch of the wal"

func checkWALTail(dir string) error {
	path, info, ok, err := walTailSegment(dir)
	if err != nil || !ok {
		return err
	}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil // created on the first append (raft-wal recreates it)
	} else if err != nil {
		return err
	}
	defer f.Close()
	b, ok, err := lastWALBatch(f, info.BaseIndex)
	if err != nil || !ok || b.first > b.last {
		return err
	}
	buf := make([]byte, b.end-b.start)
	if _, err := f.ReadAt(buf, b.start); err != nil {
		return fmt.Errorf("read the last batch of %s: %w", path, err)
	}
	if got := crc32.Checksum(buf, walCastagnoli); got != b.crc {
		return &LogCorruptError{Index: b.first, Path: path, Detail: fmt.Sprintf(
			walTailDamage+", entries %d to %d, fails its CRC (stored %08x, computed %08x): "+
				"either the disk damaged it after it was fsynced, and so possibly acknowledged, or the machine crashed "+
				"while writing it; raft-wal would drop it silently, and a node that lost an acknowledged entry can help elect "+
				"a leader without it. If this machine lost power (and its disk is sound), start it once with "+
				"--wal-drop-damaged-tail %d to drop the batch as a torn write", b.first, b.last, b.crc, got, b.first)}
	}
	return nil
}

// walTailSegment returns the file and metadata of the WAL's unsealed
// segment, as its metadata database records them; ok is false when there
// is none yet.
func walTailSegment(dir string) (string, types.SegmentInfo, bool, error) {
	if _, err := os.Stat(filepath.Join(dir, metadb.FileName)); errors.Is(err, os.ErrNotExist) {
		return "", types.SegmentInfo{}, false, nil // a new WAL
	}
	var meta metadb.BoltMetaDB
	state, err := meta.Load(dir)
	if cerr := meta.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", types.SegmentInfo{}, false, fmt.Errorf("read the wal's segment list: %w", err)
	}
	if len(state.Segments) == 0 {
		return "", types.SegmentInfo{}, false, nil
	}
	tail := state.Segments[len(state.Segments)-1]
	if !tail.SealTime.IsZero() {
		return "", types.SegmentInfo{}, false, nil // raft-wal creates a new tail
	}
	return filepath.Join(dir, segment.FileName(tail)), tail, true, nil
}

// lastWALBatch walks the frames of a tail segment as raft-wal's recovery
// does (until zeros, the end of the file or a header it cannot read) and
// returns the last batch that ends in a commit frame, when no entry was
// written after it; ok is false when there is no such batch.
func lastWALBatch(r io.ReaderAt, baseIndex uint64) (walBatch, bool, error) {
	var (
		last           walBatch
		found          bool
		entries        uint64 // entry frames so far
		batchStart     int64  // where the current batch's CRC starts: the first covers the file header
		batchFirstFrom uint64 // entries before the current batch
	)
	var hdr [walFrameHeaderLen]byte
	for off := int64(walFileHeaderLen); ; {
		n, err := r.ReadAt(hdr[:], off)
		if errors.Is(err, io.EOF) && n < walFrameHeaderLen {
			break
		} else if err != nil && !errors.Is(err, io.EOF) {
			return walBatch{}, false, fmt.Errorf("read wal frame at offset %d: %w", off, err)
		}
		typ, length := hdr[0], binary.LittleEndian.Uint32(hdr[4:])
		if typ == walFrameInvalid || typ > walFrameCommit {
			break // zeros, or a header raft-wal stops at as a torn write
		}
		switch typ {
		case walFrameEntry:
			entries++
		case walFrameCommit:
			last = walBatch{first: baseIndex + batchFirstFrom, last: baseIndex + entries - 1,
				start: batchStart, end: off, crc: length}
			if entries == batchFirstFrom {
				last.first, last.last = 1, 0 // no entries
			}
			found = true
			batchStart, batchFirstFrom = off+walFrameHeaderLen, entries
			length = 0 // a commit frame's header holds its CRC, not a length
		}
		off += walFrameHeaderLen + int64(length) + int64(-length&(walFrameHeaderLen-1))
	}
	if !found || entries > batchFirstFrom {
		// Entries after the last commit frame: a write that never completed,
		// so the batch before it did; raft-wal keeps it without a check.
		return walBatch{}, false, nil
	}
	return last, true, nil
}
