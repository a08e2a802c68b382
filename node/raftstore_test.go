package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/segment"
)

func otherStore(kind LogStore) LogStore {
	if kind == LogStoreWAL {
		return LogStoreBoltDB
	}
	return LogStoreWAL
}

// A data directory keeps the log store it was created with: a start with
// the other kind is refused before anything is opened, and says which to
// use.
func TestDataDirKeepsItsLogStore(t *testing.T) {
	forEachStore(t, func(t *testing.T, kind LogStore) {
		dir, addr := t.TempDir(), freeAddr(t)
		n := openSingleWith(t, dir, addr, kind)
		if _, err := n.Put(context.Background(), []byte("/kept"), []byte("v"), WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
		before := dirNames(t, dir)

		other := otherStore(kind)
		n2, err := Open(singleConfig(dir, addr, other))
		if err == nil {
			n2.Close()
			t.Fatalf("a %s data dir opened with --log-store %s", kind, other)
		}
		for _, want := range []string{fmt.Sprintf("holds a %s raft log", kind), "--log-store " + string(kind), "never converted"} {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("refusal %q does not say %q", err, want)
			}
		}
		if after := dirNames(t, dir); after != before {
			t.Fatalf("the refused start changed the data dir's files: %s -> %s", before, after)
		}
		if b, err := os.ReadFile(filepath.Join(dir, sessionFile)); err != nil || string(b) == "" || !strings.Contains(string(b), sessionClean) {
			t.Fatalf("the refused start touched the session file: %q %v", b, err)
		}

		n = openSingleWith(t, dir, addr, kind)
		defer n.Close()
		if kv, _, err := n.Get(context.Background(), []byte("/kept"), Linearizable); err != nil || kv == nil || string(kv.Value) != "v" {
			t.Fatalf("after the refused start: %+v %v", kv, err)
		}
	})
}

// dirNames lists dir and, one level down, its directories' files.
func dirNames(t *testing.T, dir string) string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(dir, func(path string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		names = append(names, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(names, " ")
}

func TestLogStoreInADataDir(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files []string // created empty; a trailing / makes a directory
		want  LogStore
		err   string
	}{
		{"new", nil, "", ""},
		{"seeded from a backup", []string{"snapshots/", "state.db"}, "", ""},
		{"boltdb", []string{"raft.db", "state.db"}, LogStoreBoltDB, ""},
		{"wal", []string{"wal/", "wal/wal-meta.db", "state.db"}, LogStoreWAL, ""},
		{"an empty wal directory", []string{"wal/"}, "", ""},
		{"both", []string{"raft.db", "wal/", "wal/wal-meta.db"}, "", "holds two raft logs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, f := range tc.files {
				var err error
				if strings.HasSuffix(f, "/") {
					err = os.Mkdir(filepath.Join(dir, f), 0o700)
				} else {
					err = os.WriteFile(filepath.Join(dir, f), nil, 0o600)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			got, err := logStoreIn(dir)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %q, %v; want an error saying %q", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestLogStoreConfig(t *testing.T) {
	valid := func(c Config) Config {
		c.ID, c.DataDir, c.RaftAddr, c.ClientAddr = "n1", "d", "127.0.0.1:1", "127.0.0.1:2"
		return c
	}
	c := valid(DefaultConfig())
	for _, auto := range []LogStore{"", "auto"} {
		c.LogStore = auto
		if err := c.validate(); err != nil || c.LogStore != LogStoreAuto {
			t.Fatalf("log store %q: %v, %q; want auto (resolved at open)", auto, err, c.LogStore)
		}
	}
	c = valid(DefaultConfig())
	c.LogStore = "rocksdb"
	if err := c.validate(); err == nil || !strings.Contains(err.Error(), "use boltdb, wal, or auto") {
		t.Fatalf("unknown log store: %v", err)
	}
	// The WAL reads back entries of at most 64 MiB; boltdb has no such bound.
	for _, tc := range []struct {
		name string
		set  func(*Config)
	}{
		{"value", func(c *Config) { c.MaxValueSize = 64 << 20 }},
		{"txn", func(c *Config) { c.MaxTxnBytes = 64 << 20 }},
	} {
		c = valid(DefaultConfig())
		tc.set(&c)
		if err := c.validate(); err != nil {
			t.Fatalf("boltdb with a large %s: %v", tc.name, err)
		}
		c.LogStore = LogStoreWAL
		if err := c.validate(); err == nil || !strings.Contains(err.Error(), "--log-store wal reads back log entries of at most 64 MiB") {
			t.Fatalf("wal with a 64 MiB %s: %v", tc.name, err)
		}
	}
	c = valid(DefaultConfig())
	c.LogStore, c.MaxValueSize = LogStoreWAL, walMaxOpBytes-c.MaxKeySize
	if err := c.validate(); err != nil {
		t.Fatalf("wal with the largest value it holds: %v", err)
	}
}

// An entry the WAL would write but not read back is refused, and nothing
// of its batch is stored.
func TestWALRefusesEntriesItCannotReadBack(t *testing.T) {
	s, _ := openStore(t, LogStoreWAL)
	if err := s.StoreLogs(testEntries(1, 1)); err != nil {
		t.Fatal(err)
	}
	big := &raft.Log{Index: 3, Term: 2, Type: raft.LogCommand, Data: make([]byte, segment.MaxEntrySize)}
	err := s.StoreLogs([]*raft.Log{testEntries(2, 2)[0], big})
	if err == nil || !strings.Contains(err.Error(), "raft log entry 3") {
		t.Fatalf("storing a %d-byte entry: %v, want a refusal naming it", len(big.Data), err)
	}
	if last, err := s.LastIndex(); err != nil || last != 1 {
		t.Fatalf("after the refused batch the last index is %d (%v), want 1", last, err)
	}
}

// Raft empties a log that refuses gaps when it installs a snapshot; it must
// see through the checksum wrapper that the WAL does.
func TestCheckedLogStoreSaysWhetherItRefusesGaps(t *testing.T) {
	forEachStore(t, func(t *testing.T, kind LogStore) {
		inner, path := openStore(t, kind)
		s, err := newCheckedLogStore(inner, path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := s.IsMonotonic(), kind == LogStoreWAL; got != want {
			t.Fatalf("IsMonotonic = %v, want %v", got, want)
		}
	})
}

// A follower that missed entries compacted into the leader's snapshot
// catches up from that snapshot, then from the log, with either store (the
// WAL, which refuses gaps, is emptied by raft when the snapshot installs).
func TestFollowerCatchesUpFromASnapshot(t *testing.T) {
	forEachStore(t, func(t *testing.T, kind LogStore) {
		ms := openClusterWith(t, 3, func(c *Config) {
			c.LogStore = kind
			c.TrailingLogs = 4 // the snapshot below compacts nearly all the log
			// The WAL still reads compacted entries in a segment it keeps:
			// small segments make the compaction delete them.
			c.walSegmentSize = 16 << 10
		})
		var leader *testMember
		waitFor(t, "a leader", 10*time.Second, func() bool { leader = leaderOf(ms); return leader != nil })
		var lagging *testMember
		for _, m := range ms {
			if m != leader {
				lagging = m
				break
			}
		}
		lagging.close(t)
		put := func(key string) uint64 {
			t.Helper()
			res, err := leader.n.Put(ctxFor(t, 10*time.Second), []byte(key), []byte("v-"+key), WriteOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return res.Revision
		}
		for i := 0; i < 30; i++ {
			put(fmt.Sprintf("/missed/%02d", i))
		}
		// More entries than the leader's log cache holds, so that it
		// cannot send the follower the compacted ones from memory.
		// Barriers are entries that cost no apply, and proposed together
		// they share the disk writes.
		var barriers []raft.Future
		for i := 0; i < logCacheSize+64; i++ {
			barriers = append(barriers, leader.n.raft.Barrier(10*time.Second))
		}
		for _, f := range barriers {
			if err := f.Error(); err != nil {
				t.Fatal(err)
			}
		}
		if err := leader.n.raft.Snapshot().Error(); err != nil {
			t.Fatal(err)
		}
		before := lastLogIndex(t, lagging.dir, kind)
		if first, err := leader.n.logStore.FirstIndex(); err != nil || first <= before {
			t.Fatalf("leader's log starts at %d (%v): not compacted past the follower", first, err)
		}
		lagging.open(t, nil)
		last := put("/after")
		waitFor(t, "the follower applies the write after the snapshot", 20*time.Second, func() bool {
			return lagging.n.fsm.Applied() >= last
		})
		for _, key := range []string{"/missed/00", "/missed/29", "/after"} {
			kv, _, err := lagging.n.Get(context.Background(), []byte(key), Serializable)
			if err != nil || kv == nil || string(kv.Value) != "v-"+key {
				t.Fatalf("follower's %s: %+v %v", key, kv, err)
			}
		}
		if st := lagging.n.Status(); !st.Healthy {
			t.Fatalf("follower unhealthy after the snapshot: %s", st.UnhealthyReason)
		}
		if kind != LogStoreWAL {
			return // boltdb keeps the entries before the snapshot, with a gap
		}
		// The WAL was emptied: it holds what came after the snapshot,
		// without a gap.
		first, _ := lagging.n.logStore.FirstIndex()
		if first <= before {
			t.Fatalf("follower's log starts at %d, at or before its entries from before the snapshot (up to %d)", first, before)
		}
		var l raft.Log
		for i := first; i <= last; i++ {
			if err := lagging.n.logStore.GetLog(i, &l); err != nil {
				t.Fatalf("follower's entry %d (log from %d): %v", i, first, err)
			}
		}
	})
}

// lastLogIndex is the last entry of the raft log in the closed node's dir.
func lastLogIndex(t *testing.T, dir string, kind LogStore) uint64 {
	t.Helper()
	s, _, err := openRaftStore(dir, kind, 0, 0, newRaftLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	last, err := s.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	return last
}

// Status and metrics measure the log store of either kind.
func TestFiguresMeasureTheLogStore(t *testing.T) {
	forEachStore(t, func(t *testing.T, kind LogStore) {
		dir := t.TempDir()
		n := openSingleWith(t, dir, freeAddr(t), kind)
		defer n.Close()
		if _, err := n.Put(context.Background(), []byte("/k"), bytes.Repeat([]byte("v"), 4096), WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		got := n.Figures().RaftDBBytes
		switch kind {
		case LogStoreBoltDB:
			if want := fileSize(filepath.Join(dir, "raft.db")); got != want || got <= 0 {
				t.Fatalf("raft db bytes %d, want raft.db's size %d", got, want)
			}
		case LogStoreWAL:
			// wal-meta.db and at least one preallocated segment.
			if got < int64(wal.DefaultSegmentSize) {
				t.Fatalf("raft db bytes %d, want at least a segment (%d)", got, wal.DefaultSegmentSize)
			}
			if _, err := os.Stat(filepath.Join(dir, "raft.db")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a wal data dir has a raft.db: %v", err)
			}
		}
	})
}

// A data directory seeded from a backup holds no raft log: it starts with
// either store, at the backup's revision.
func TestSeededDataDirStartsWithEitherStore(t *testing.T) {
	src := openSingle(t, t.TempDir(), freeAddr(t))
	res, err := src.Put(context.Background(), []byte("/seeded"), []byte("v"), WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var db bytes.Buffer
	var info BackupInfo
	if err := src.Backup(&db, func(i BackupInfo) error { info = i; return nil }); err != nil {
		t.Fatal(err)
	}
	src.Close()
	if info.Index < res.Revision {
		t.Fatalf("backup at %d, before the put at %d", info.Index, res.Revision)
	}
	forEachStore(t, func(t *testing.T, kind LogStore) {
		dir, addr := filepath.Join(t.TempDir(), "n1"), freeAddr(t)
		cfg := SeedConfig{DataDir: dir, ID: "n1", InitialCluster: map[string]string{"n1": addr}, Logger: discardLogger()}
		if err := Seed(cfg, bytes.NewReader(db.Bytes()), info.Index); err != nil {
			t.Fatal(err)
		}
		n := openSingleWith(t, dir, addr, kind)
		defer n.Close()
		kv, _, err := n.Get(context.Background(), []byte("/seeded"), Linearizable)
		if err != nil || kv == nil || string(kv.Value) != "v" {
			t.Fatalf("seeded key: %+v %v", kv, err)
		}
		next, err := n.Put(context.Background(), []byte("/next"), []byte("v"), WriteOptions{})
		if err != nil || next.Revision <= info.Index {
			t.Fatalf("first write after the seed at revision %d (%v), want above %d", next.Revision, err, info.Index)
		}
		if got, err := logStoreIn(dir); err != nil || got != kind {
			t.Fatalf("the seeded dir now holds a %q log (%v), want %s", got, err, kind)
		}
	})
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// verifyLog reads, through the checksums, every entry a start would apply or
// scan, with either store: a damaged one stops the start, naming it.
func TestDamagedLogEntryRefusesTheStart(t *testing.T) {
	forEachStore(t, func(t *testing.T, kind LogStore) {
		dir, addr := t.TempDir(), freeAddr(t)
		n := openSingleWith(t, dir, addr, kind)
		value := []byte("an-entry-to-apply-again-that-the-disk-damages")
		res, err := n.Put(context.Background(), []byte("/a"), value, WriteOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// Not the last batch: the WAL takes a damaged last batch for a torn
		// write and drops it at open.
		if _, err := n.Put(context.Background(), []byte("/b"), []byte("b"), WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
		damaged := append([]byte(nil), value...)
		damaged[7] ^= 0x10
		if replaceInStore(t, logStorePath(dir, kind), value, damaged) == 0 {
			t.Fatal("the value is nowhere in the log store")
		}
		n2, err := Open(singleConfig(dir, addr, kind))
		want := fmt.Sprintf("refusing to start: raft log entry %d in %s is damaged", res.Revision, logStorePath(dir, kind))
		if err == nil || !strings.Contains(err.Error(), want) {
			if n2 != nil {
				n2.Close()
			}
			t.Fatalf("start with a damaged entry to apply: %v, want %q", err, want)
		}
	})
}
