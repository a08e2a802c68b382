package node

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// writeWAL stores batches in a new WAL in data directory dir, through the checksums, and
// closes it.
func writeWAL(t *testing.T, dir string, batches ...[]*raft.Log) {
	t.Helper()
	s, path, err := openRaftStore(dir, LogStoreWAL, 0, 0, newRaftLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	c, err := newCheckedLogStore(s, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range batches {
		if err := c.StoreLogs(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// tailSegment returns the path of the tail segment of the WAL in data
// directory dir and its bytes.
func tailSegment(t *testing.T, dir string) (string, []byte) {
	t.Helper()
	path, _, ok, err := walTailSegment(logStorePath(dir, LogStoreWAL))
	if err != nil || !ok {
		t.Fatalf("no tail segment in %s: %v", dir, err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, b
}

// patch writes b at off in the file at path.
func patch(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// commitEnd is the offset just past the last commit frame of a segment's
// bytes: after it the preallocated file holds only zeros.
func commitEnd(t *testing.T, seg []byte) int64 {
	t.Helper()
	end := int64(len(seg))
	for end > 0 && seg[end-1] == 0 {
		end--
	}
	end = (end + 7) &^ 7 // frames are 8-byte aligned
	if end < walFrameHeaderLen || seg[end-walFrameHeaderLen] != walFrameCommit {
		t.Fatalf("the segment's last frame (at %d) is not a commit frame", end-walFrameHeaderLen)
	}
	return end
}

// (a) A batch that was being written when the process died never reached
// its commit frame: it was never fsynced nor acknowledged. The WAL opens
// without it, with every entry before it, and appends after them.
func TestWALDropsATornLastWrite(t *testing.T) {
	dir := t.TempDir()
	writeWAL(t, dir, testEntries(1, 3), testEntries(4, 5))
	path, seg := tailSegment(t, dir)
	end := commitEnd(t, seg)
	// Entry 6's frame header (type 1, length 200) and part of its payload:
	// a short write, cut before the rest and the commit frame.
	torn := []byte{walFrameEntry, 0, 0, 0, 200, 0, 0, 0}
	torn = append(torn, bytes.Repeat([]byte{0xab}, 60)...)
	patch(t, path, end, torn)

	s, lpath, err := openRaftStore(dir, LogStoreWAL, 0, 0, newRaftLogger(discardLogger()))
	if err != nil {
		t.Fatalf("open after a torn write: %v", err)
	}
	defer s.Close()
	c, err := newCheckedLogStore(s, lpath, nil)
	if err != nil {
		t.Fatal(err)
	}
	if last, err := c.LastIndex(); err != nil || last != 5 {
		t.Fatalf("last index %d (%v) after a torn write of entry 6, want 5", last, err)
	}
	var l raft.Log
	for i := uint64(1); i <= 5; i++ {
		if err := c.GetLog(i, &l); err != nil || !bytes.Equal(l.Data, testEntries(i, i)[0].Data) {
			t.Fatalf("entry %d after a torn write: %q %v", i, l.Data, err)
		}
	}
	if err := c.StoreLogs(testEntries(6, 6)); err != nil {
		t.Fatal(err)
	}
	if err := c.GetLog(6, &l); err != nil || !bytes.Equal(l.Data, testEntries(6, 6)[0].Data) {
		t.Fatalf("entry 6 written over the torn one: %q %v", l.Data, err)
	}
}

// (b) The last batch, complete with its commit frame, fails its CRC: the
// disk damaged an fsynced batch, or the machine crashed with the commit
// frame on disk but not all of the batch. raft-wal would drop it; the
// store refuses to open, naming the batch's first entry, and leaves the
// file as it was. With a zeroed batch (the sectors never written) too.
func TestWALRefusesADamagedLastBatch(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(b []byte)
	}{
		{"flipped byte", func(b []byte) { b[len(b)/2] ^= 0x04 }},
		{"zeroed sectors", func(b []byte) { clear(b) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeWAL(t, dir, testEntries(1, 3), testEntries(4, 6))
			path, seg := tailSegment(t, dir)
			data := testEntries(5, 5)[0].Data
			at := bytes.Index(seg, data)
			if at < 0 {
				t.Fatal("entry 5's payload is not in the tail segment")
			}
			tc.damage(seg[at : at+len(data)])
			if err := os.WriteFile(path, seg, 0o600); err != nil {
				t.Fatal(err)
			}

			for range 2 { // the refusal changes nothing: it refuses again
				s, _, err := openRaftStore(dir, LogStoreWAL, 0, 0, newRaftLogger(discardLogger()))
				var ce *LogCorruptError
				if !errors.As(err, &ce) || ce.Index != 4 || ce.Path != path || !strings.Contains(err.Error(), "entries 4 to 6, fails its CRC") {
					if s != nil {
						s.Close()
					}
					t.Fatalf("open with a damaged last batch: %v, want a *LogCorruptError for entries 4 to 6 of %s", err, path)
				}
				if after, _ := os.ReadFile(path); !bytes.Equal(after, seg) {
					t.Fatal("the refused open changed the segment")
				}
			}
		})
	}
}

// (c) A flipped byte in an earlier batch's entry is not raft-wal's concern
// (it checks only the last batch's CRC); the entry's own checksum finds it
// when it is read.
func TestWALDamagedEarlierEntryFailsItsChecksum(t *testing.T) {
	dir := t.TempDir()
	writeWAL(t, dir, testEntries(1, 3), testEntries(4, 6))
	path, seg := tailSegment(t, dir)
	data := testEntries(2, 2)[0].Data
	at := bytes.Index(seg, data)
	if at < 0 {
		t.Fatal("entry 2's payload is not in the tail segment")
	}
	patch(t, path, int64(at+1), []byte{data[1] ^ 0x01})

	s, lpath, err := openRaftStore(dir, LogStoreWAL, 0, 0, newRaftLogger(discardLogger()))
	if err != nil {
		t.Fatalf("open with a damaged earlier batch: %v", err)
	}
	defer s.Close()
	c, err := newCheckedLogStore(s, lpath, nil)
	if err != nil {
		t.Fatal(err)
	}
	var l raft.Log
	var ce *LogCorruptError
	if err := c.GetLog(2, &l); !errors.As(err, &ce) || ce.Index != 2 {
		t.Fatalf("reading the damaged entry 2: %v, want a *LogCorruptError", err)
	}
	if err := c.GetLog(6, &l); err != nil {
		t.Fatalf("entry 6, undamaged: %v", err)
	}
}

// A node whose WAL's last batch was damaged refuses to start, says which
// entries and what to do, and keeps refusing (the damage marker), even if
// the batch were gone.
func TestNodeRefusesADamagedLastWALBatch(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	n := openSingleWith(t, dir, addr, LogStoreWAL)
	for i := range 3 {
		if _, err := n.Put(context.Background(), []byte("/a"), []byte(fmt.Sprint("v", i)), WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	path, seg := tailSegment(t, dir)
	end := commitEnd(t, seg)
	// The byte before the commit frame is the last batch's (its CRC covers
	// the padding too).
	patch(t, path, end-walFrameHeaderLen-1, []byte{seg[end-walFrameHeaderLen-1] ^ 0x80})

	cfg := singleConfig(dir, addr, LogStoreAuto)
	cfg.InitialCluster = nil
	for _, want := range []string{"fails its CRC", "recorded in"} {
		n2, err := Open(cfg)
		if err == nil {
			n2.Close()
			t.Fatal("a node started on a wal whose last batch fails its CRC")
		}
		for _, w := range []string{"refusing to start", "raftwatch member remove", want} {
			if !strings.Contains(err.Error(), w) {
				t.Fatalf("refusal %q does not say %q", err, w)
			}
		}
	}
}

// (c) with the damage in a frame header: raft-wal stops reading the tail
// segment there and drops every later entry, applied ones included,
// without a word. The node finds its log shorter than what its state
// machine applied and refuses to start.
func TestNodeRefusesALogShorterThanItsAppliedIndex(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	n := openSingleWith(t, dir, addr, LogStoreWAL)
	marker := []byte("value-whose-frame-header-the-disk-damages")
	res, err := n.Put(context.Background(), []byte("/a"), marker, WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := n.Put(context.Background(), []byte("/b"), []byte(fmt.Sprint("v", i)), WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	applied := n.fsm.Applied()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	path, seg := tailSegment(t, dir)
	frame := entryFrameHolding(t, seg, bytes.Index(seg, marker))
	patch(t, path, frame, []byte{0x7f}) // an unknown frame type

	cfg := singleConfig(dir, addr, LogStoreAuto)
	cfg.InitialCluster = nil
	n2, err := Open(cfg)
	want := fmt.Sprintf("the log ends at entry %d, but the state machine applied entries up to %d", res.Revision-1, applied)
	if err == nil || !strings.Contains(err.Error(), want) {
		if n2 != nil {
			n2.Close()
		}
		t.Fatalf("start with a log that lost applied entries: %v, want %q", err, want)
	}
}

// entryFrameHolding returns the offset of the entry frame of a segment
// that holds the byte at off, walking the frames from the file header.
func entryFrameHolding(t *testing.T, seg []byte, off int) int64 {
	t.Helper()
	if off < 0 {
		t.Fatal("the value is not in the tail segment")
	}
	for at := walFileHeaderLen; at+walFrameHeaderLen <= len(seg) && seg[at] != walFrameInvalid; {
		n := int(binary.LittleEndian.Uint32(seg[at+4:]))
		if seg[at] == walFrameCommit {
			n = 0
		}
		next := at + walFrameHeaderLen + (n+7)&^7
		if seg[at] == walFrameEntry && off < next {
			return int64(at)
		}
		at = next
	}
	t.Fatal("no entry frame holds the value")
	return 0
}

// No --log-store: a new data dir gets DefaultLogStore, one that holds
// either store keeps it.
func TestAutoLogStore(t *testing.T) {
	for _, tc := range []struct {
		created, want LogStore
	}{{LogStoreAuto, DefaultLogStore}, {LogStoreBoltDB, LogStoreBoltDB}, {LogStoreWAL, LogStoreWAL}} {
		t.Run(fmt.Sprint("created ", tc.created), func(t *testing.T) {
			dir, addr := t.TempDir(), freeAddr(t)
			n := openSingleWith(t, dir, addr, tc.created)
			if _, err := n.Put(context.Background(), []byte("/kept"), []byte("v"), WriteOptions{}); err != nil {
				t.Fatal(err)
			}
			if n.cfg.LogStore != tc.want {
				t.Fatalf("created with %q: opened %q, want %q", tc.created, n.cfg.LogStore, tc.want)
			}
			if err := n.Close(); err != nil {
				t.Fatal(err)
			}
			n = openSingleWith(t, dir, addr, LogStoreAuto)
			defer n.Close()
			if n.cfg.LogStore != tc.want {
				t.Fatalf("reopened with auto: %q, want %q", n.cfg.LogStore, tc.want)
			}
			if kv, _, err := n.Get(context.Background(), []byte("/kept"), Linearizable); err != nil || kv == nil || string(kv.Value) != "v" {
				t.Fatalf("after reopening with auto: %+v %v", kv, err)
			}
		})
	}
}

// TestDropDamagedWALTail: after a machine crash in the middle of writing
// the last batch (never acknowledged, never applied), the operator starts
// the node once with DropDamagedWALTail: the refusal's marker is cleared,
// the batch is dropped, and the node serves what it had applied. A damaged
// batch that the state machine had applied is refused even so.
func TestDropDamagedWALTail(t *testing.T) {
	damagedNode := func(t *testing.T, applied bool) Config {
		dir, addr := t.TempDir(), freeAddr(t)
		n := openSingleWith(t, dir, addr, LogStoreWAL)
		for i := range 2 {
			if _, err := n.Put(context.Background(), []byte("/a"), []byte(fmt.Sprint("v", i)), WriteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		// The state machine as it is before the last write.
		state := filepath.Join(dir, "state.db")
		n.Close()
		before, err := os.ReadFile(state)
		if err != nil {
			t.Fatal(err)
		}
		cfg := singleConfig(dir, addr, LogStoreAuto)
		cfg.InitialCluster = nil
		if n, err = Open(cfg); err != nil {
			t.Fatal(err)
		}
		waitReady(t, n)
		if _, err := n.Put(context.Background(), []byte("/a"), []byte("torn"), WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
		if !applied { // the crash came before the batch was applied (bbolt commits without fsync)
			if err := os.WriteFile(state, before, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		path, seg := tailSegment(t, dir)
		end := commitEnd(t, seg)
		patch(t, path, end-walFrameHeaderLen-1, []byte{seg[end-walFrameHeaderLen-1] ^ 0x80})
		n2, err := Open(cfg)
		if err == nil {
			n2.Close()
			t.Fatal("a node started on a wal whose last batch fails its CRC")
		}
		var ce *LogCorruptError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), fmt.Sprintf("--wal-drop-damaged-tail %d", ce.Index)) {
			t.Fatalf("refusal %q does not name --wal-drop-damaged-tail with the batch's first index", err)
		}
		// A flag naming another batch changes nothing.
		cfg.DropDamagedWALTail = ce.Index - 1
		if n2, err := Open(cfg); err == nil {
			n2.Close()
			t.Fatal("--wal-drop-damaged-tail naming another batch dropped this one")
		}
		cfg.DropDamagedWALTail = ce.Index
		return cfg
	}

	t.Run("never applied: dropped", func(t *testing.T) {
		cfg := damagedNode(t, false)
		n, err := Open(cfg)
		if err != nil {
			t.Fatalf("with DropDamagedWALTail: %v", err)
		}
		defer n.Close()
		waitReady(t, n)
		if _, err := os.Stat(logMarkerPath(cfg.DataDir)); !os.IsNotExist(err) {
			t.Fatalf("the damage marker is still there after the drop: %v", err)
		}
		waitFor(t, "the node to serve the value before the dropped batch", 10*time.Second, func() bool {
			kv, _, err := n.Get(context.Background(), []byte("/a"), Serializable)
			return err == nil && kv != nil && string(kv.Value) == "v1"
		})
		if _, err := n.Put(context.Background(), []byte("/a"), []byte("after"), WriteOptions{}); err != nil {
			t.Fatalf("a write after the drop: %v", err)
		}
	})
	t.Run("applied: refused", func(t *testing.T) {
		cfg := damagedNode(t, true)
		if n, err := Open(cfg); err == nil {
			n.Close()
			t.Fatal("dropping a batch the state machine had applied was accepted")
		}
	})
}

// TestWALSegmentSealedByTailTruncationIsUnreadableAfterReopen pins the
// raft-wal v0.4.0 defect that keeps the WAL from being the default
// (DefaultLogStore): truncating the log's tail seals the open segment
// without writing its index block (hashicorp/raft-wal#31), so once the
// store is reopened none of that segment's entries can be read. Raft
// truncates the tail when a follower drops entries a new leader did not
// keep; a 10-minute fault run had two nodes refuse to start on it. When
// this test fails, the raft-wal in use reads such segments: make the WAL
// the default again.
func TestWALSegmentSealedByTailTruncationIsUnreadableAfterReopen(t *testing.T) {
	dir := t.TempDir()
	open := func() raftStore {
		s, _, err := openRaftStore(dir, LogStoreWAL, 0, 0, newRaftLogger(discardLogger()))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	logs := func(from, to uint64) []*raft.Log {
		var ls []*raft.Log
		for i := from; i <= to; i++ {
			ls = append(ls, &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: []byte(fmt.Sprint("entry ", i))})
		}
		return ls
	}
	s := open()
	if err := s.StoreLogs(logs(1, 10)); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRange(8, 10); err != nil { // raft's tail truncation
		t.Fatal(err)
	}
	if err := s.StoreLogs(logs(8, 12)); err != nil {
		t.Fatal(err)
	}
	var l raft.Log
	if err := s.GetLog(1, &l); err != nil {
		t.Fatalf("before reopening: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open()
	defer s.Close()
	err := s.GetLog(1, &l)
	if err == nil {
		t.Fatal("raft-wal now reads a segment sealed by a tail truncation after reopening: make the WAL the default again (DefaultLogStore)")
	}
	if !strings.Contains(err.Error(), "sealed segment has no index block") {
		t.Fatalf("entry 1 after reopening: %v, want raft-wal's \"sealed segment has no index block\"", err)
	}
}
