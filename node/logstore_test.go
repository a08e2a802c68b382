package node

import (
	"bytes"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

func openBolt(t *testing.T) (*raftboltdb.BoltStore, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "raft.db")
	s, err := raftboltdb.New(raftboltdb.Options{Path: path, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func testEntries(from, to uint64) []*raft.Log {
	var out []*raft.Log
	for i := from; i <= to; i++ {
		out = append(out, &raft.Log{Index: i, Term: 2, Type: raft.LogCommand, Data: []byte("payload-" + string(rune('a'+i)))})
	}
	return out
}

func TestLogStoreHandsBackEntriesAsStored(t *testing.T) {
	bolt, path := openBolt(t)
	s, err := newCheckedLogStore(bolt, path, nil)
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
		if err := bolt.GetLog(want.Index, &raw); err != nil || !bytes.HasPrefix(raw.Extensions, logSumMagic) {
			t.Fatalf("entry %d is stored without its checksum: %q %v", want.Index, raw.Extensions, err)
		}
	}
}

func TestLogStoreRefusesADamagedEntry(t *testing.T) {
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
			bolt, path := openBolt(t)
			var told []*LogCorruptError
			s, err := newCheckedLogStore(bolt, path, func(e *LogCorruptError) { told = append(told, e) })
			if err != nil {
				t.Fatal(err)
			}
			if err := s.StoreLogs(testEntries(1, 3)); err != nil {
				t.Fatal(err)
			}
			var raw raft.Log
			if err := bolt.GetLog(2, &raw); err != nil {
				t.Fatal(err)
			}
			tc.damage(&raw)
			if err := bolt.StoreLog(&raw); err != nil { // behind the wrapper's back
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
	bolt, path := openBolt(t)
	if err := bolt.StoreLogs(testEntries(1, 2)); err != nil { // an old version's log
		t.Fatal(err)
	}
	s, err := newCheckedLogStore(bolt, path, nil)
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
	if err := bolt.StoreLogs(testEntries(3, 3)); err != nil {
		t.Fatal(err)
	}
	if err := s.GetLog(3, &got); !errors.Is(err, ErrLogCorrupt) {
		t.Fatalf("entry 3 without a checksum: %v, want ErrLogCorrupt", err)
	}
	// The boundary survives a reopen.
	s2, err := newCheckedLogStore(bolt, path, nil)
	if err != nil || s2.sumsFrom != 3 {
		t.Fatalf("reopened: checksums from %d (%v), want 3", s2.sumsFrom, err)
	}
}

// A store that cannot be read (here: closed, as at shutdown while a reader
// is still going) is not damage: GetLog returns the store's error and the
// node is not marked for good.
func TestLogStoreFailureIsNotDamage(t *testing.T) {
	bolt, path := openBolt(t)
	var corrupt []*LogCorruptError
	s, err := newCheckedLogStore(bolt, path, func(e *LogCorruptError) { corrupt = append(corrupt, e) })
	if err != nil {
		t.Fatal(err)
	}
	if err := s.StoreLogs(testEntries(1, 2)); err != nil {
		t.Fatal(err)
	}
	if err := bolt.Close(); err != nil {
		t.Fatal(err)
	}
	var l raft.Log
	err = s.GetLog(1, &l)
	var ce *LogCorruptError
	if err == nil || errors.As(err, &ce) || len(corrupt) != 0 {
		t.Fatalf("GetLog on a closed store: %v (damage reported %d times), want the store's error and no damage", err, len(corrupt))
	}
}
