package node

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

var logStores = []LogStore{LogStoreBoltDB, LogStoreWAL}

// openStore opens a new raft log store of kind, closed when t ends.
func openStore(t *testing.T, kind LogStore) (raftStore, string) {
	t.Helper()
	s, path, err := openRaftStore(t.TempDir(), kind, 0, 0, newRaftLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

// forEachStore runs test once for each kind of log store.
func forEachStore(t *testing.T, test func(t *testing.T, kind LogStore)) {
	for _, kind := range logStores {
		t.Run(string(kind), func(t *testing.T) { test(t, kind) })
	}
}

func testEntries(from, to uint64) []*raft.Log {
	var out []*raft.Log
	for i := from; i <= to; i++ {
		out = append(out, &raft.Log{Index: i, Term: 2, Type: raft.LogCommand, Data: []byte("payload-" + string(rune('a'+i)))})
	}
	return out
}

func TestLogStoreHandsBackEntriesAsStored(t *testing.T) {
	forEachStore(t, testLogStoreHandsBackEntriesAsStored)
}

func testLogStoreHandsBackEntriesAsStored(t *testing.T, kind LogStore) {
	inner, path := openStore(t, kind)
	s, err := newCheckedLogStore(inner, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	in := append(testEntries(1, 3), &raft.Log{Index: 4, Term: 3, Type: raft.LogNoop, Extensions: []byte("ext")})
	if err := s.StoreLogs(in); err != nil {
		t.Fatal(err)
	}
	for _, want := range in {
		if want.Extensions != nil && !bytes.Equal(want.Extensions, []byte("ext")) {
			t.Fatalf("StoreLogs changed the caller's entry %d: %q", want.Index, want.Extensions)
		}
		var got raft.Log
		if err := s.GetLog(want.Index, &got); err != nil {
			t.Fatalf("entry %d: %v", want.Index, err)
		}
		got.AppendedAt = want.AppendedAt
		if !reflect.DeepEqual(&got, want) {
			t.Fatalf("entry %d read back as %+v, stored %+v", want.Index, got, *want)
		}
		var raw raft.Log
		if err := inner.GetLog(want.Index, &raw); err != nil || !bytes.HasPrefix(raw.Extensions, logSumMagic) {
			t.Fatalf("entry %d is stored without its checksum: %q %v", want.Index, raw.Extensions, err)
		}
	}
}

func TestLogStoreRefusesADamagedEntry(t *testing.T) {
	forEachStore(t, testLogStoreRefusesADamagedEntry)
}

func testLogStoreRefusesADamagedEntry(t *testing.T, kind LogStore) {
	for _, tc := range []struct {
		name   string
		damage func(l *raft.Log)
	}{
		{"a flipped data byte", func(l *raft.Log) { l.Data[3] ^= 0x04 }},
		{"another term", func(l *raft.Log) { l.Term++ }},
		{"another type", func(l *raft.Log) { l.Type = raft.LogNoop }},
		{"a flipped checksum byte", func(l *raft.Log) { l.Extensions[5] ^= 0x80 }},
		{"no checksum", func(l *raft.Log) { l.Extensions = nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inner, path := openStore(t, kind)
			var told []*LogCorruptError
			s, err := newCheckedLogStore(inner, path, func(e *LogCorruptError) { told = append(told, e) })
			if err != nil {
				t.Fatal(err)
			}
			if err := s.StoreLogs(testEntries(1, 3)); err != nil {
				t.Fatal(err)
			}
			var raw raft.Log
			if err := inner.GetLog(2, &raw); err != nil {
				t.Fatal(err)
			}
			var after raft.Log
			if err := inner.GetLog(3, &after); err != nil {
				t.Fatal(err)
			}
			tc.damage(&raw)
			// Behind the wrapper's back; rewritten from entry 2 on, as
			// the WAL only appends.
			if err := inner.DeleteRange(2, 3); err != nil {
				t.Fatal(err)
			}
			if err := inner.StoreLogs([]*raft.Log{&raw, &after}); err != nil {
				t.Fatal(err)
			}
			var got raft.Log
			err = s.GetLog(2, &got)
			var ce *LogCorruptError
			if !errors.As(err, &ce) || ce.Index != 2 || !strings.Contains(err.Error(), path) {
				t.Fatalf("GetLog of a damaged entry: %v, want a *LogCorruptError naming entry 2 and %s", err, path)
			}
			if len(told) != 1 || told[0].Index != 2 {
				t.Fatalf("onCorrupt was told %v, want entry 2 once", told)
			}
			if err := s.GetLog(3, &got); err != nil {
				t.Fatalf("a healthy entry after the damaged one: %v", err)
			}
		})
	}
}

func TestLogStoreReadsEntriesFromBeforeChecksums(t *testing.T) {
	forEachStore(t, testLogStoreReadsEntriesFromBeforeChecksums)
}

func testLogStoreReadsEntriesFromBeforeChecksums(t *testing.T, kind LogStore) {
	inner, path := openStore(t, kind)
	if err := inner.StoreLogs(testEntries(1, 2)); err != nil { // an old version's log
		t.Fatal(err)
	}
	s, err := newCheckedLogStore(inner, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.sumsFrom != 3 {
		t.Fatalf("checksums start at %d, want 3 (after the old entries)", s.sumsFrom)
	}
	var got raft.Log
	if err := s.GetLog(2, &got); err != nil || string(got.Data) != "payload-c" {
		t.Fatalf("old entry: %+v %v", got, err)
	}
	// An entry written after the upgrade without a checksum is damage.
	if err := inner.StoreLogs(testEntries(3, 3)); err != nil {
		t.Fatal(err)
	}
	if err := s.GetLog(3, &got); !errors.Is(err, ErrLogCorrupt) {
		t.Fatalf("entry 3 without a checksum: %v, want ErrLogCorrupt", err)
	}
	// The boundary survives a reopen.
	s2, err := newCheckedLogStore(inner, path, nil)
	if err != nil || s2.sumsFrom != 3 {
		t.Fatalf("reopened: checksums from %d (%v), want 3", s2.sumsFrom, err)
	}
}

// A store that cannot be read (here: closed, as at shutdown while a reader
// is still going) is not damage: GetLog returns the store's error and the
// node is not marked for good.
func TestLogStoreFailureIsNotDamage(t *testing.T) { forEachStore(t, testLogStoreFailureIsNotDamage) }

func testLogStoreFailureIsNotDamage(t *testing.T, kind LogStore) {
	inner, path := openStore(t, kind)
	var corrupt []*LogCorruptError
	s, err := newCheckedLogStore(inner, path, func(e *LogCorruptError) { corrupt = append(corrupt, e) })
	if err != nil {
		t.Fatal(err)
	}
	if err := s.StoreLogs(testEntries(1, 2)); err != nil {
		t.Fatal(err)
	}
	if err := inner.Close(); err != nil {
		t.Fatal(err)
	}
	var l raft.Log
	err = s.GetLog(1, &l)
	var ce *LogCorruptError
	if err == nil || errors.As(err, &ce) || len(corrupt) != 0 {
		t.Fatalf("GetLog on a closed store: %v (damage reported %d times), want the store's error and no damage", err, len(corrupt))
	}
}
