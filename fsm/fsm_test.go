package fsm

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	pb "github.com/raftwatch/raftwatch/proto"
	"github.com/raftwatch/raftwatch/watch"
)

// recordingSink is a Sink that records every published batch.
type recordingSink struct {
	mu       sync.Mutex
	wantPrev bool
	batches  []watch.Batch
}

func (s *recordingSink) WantPrev() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.wantPrev
}

func (s *recordingSink) Publish(b watch.Batch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.batches = append(s.batches, b)
}

func (s *recordingSink) events() []watch.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []watch.Event
	for _, b := range s.batches {
		out = append(out, b.Events...)
	}
	return out
}

func openTest(t *testing.T, path string, sink Sink) *FSM {
	t.Helper()
	f, err := Open(path, sink, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func put(key, value string) *pb.Op {
	return &pb.Op{Kind: pb.Op_PUT, Key: []byte(key), Value: []byte(value)}
}

func del(key string) *pb.Op { return &pb.Op{Kind: pb.Op_DELETE, Key: []byte(key)} }

func entry(t *testing.T, index uint64, ops ...*pb.Op) *raft.Log {
	t.Helper()
	data, err := proto.Marshal(&pb.Chunk{Ops: ops})
	if err != nil {
		t.Fatal(err)
	}
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data}
}

func result(t *testing.T, r interface{}) *EntryResult {
	t.Helper()
	er, ok := r.(*EntryResult)
	if !ok {
		t.Fatalf("response is %T (%v), want *EntryResult", r, r)
	}
	return er
}

func mustGet(t *testing.T, f *FSM, key string) *KeyValue {
	t.Helper()
	kv, _, err := f.Get([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func txID(t *testing.T, f *FSM) int {
	t.Helper()
	var id int
	if err := f.db.View(func(tx *bolt.Tx) error { id = tx.ID(); return nil }); err != nil {
		t.Fatal(err)
	}
	return id
}

func TestBatchAppliesInOneTransaction(t *testing.T) {
	sink := &recordingSink{}
	f := openTest(t, filepath.Join(t.TempDir(), "state.db"), sink)
	before := txID(t, f)
	res := f.ApplyBatch([]*raft.Log{
		entry(t, 1, put("/a", "1"), put("/b", "1")),
		{Index: 2, Term: 1, Type: raft.LogConfiguration},
		entry(t, 3, put("/a", "2")),
	})
	if got := txID(t, f) - before; got != 1 {
		t.Fatalf("batch of 3 entries took %d write transactions, want 1", got)
	}
	if len(res) != 3 || res[1] != nil {
		t.Fatalf("responses = %v, want 3 with nil for the configuration entry", res)
	}
	if f.Applied() != 3 {
		t.Fatalf("applied = %d, want 3 (configuration entries count too)", f.Applied())
	}
	if len(sink.batches) != 1 || sink.batches[0].Index != 3 || len(sink.batches[0].Events) != 3 {
		t.Fatalf("published %+v, want one batch at index 3 with 3 events", sink.batches)
	}
	a := mustGet(t, f, "/a")
	if string(a.Value) != "2" || a.CreateRevision != 1 || a.ModRevision != 3 || a.Version != 2 {
		t.Fatalf("/a = %+v, want value 2, create 1, mod 3, version 2", a)
	}
	// Ops in one entry share its index as revision, in entry order.
	ev := sink.events()
	if ev[0].Revision != 1 || ev[1].Revision != 1 || string(ev[1].Key) != "/b" || ev[2].Revision != 3 {
		t.Fatalf("event revisions/order wrong: %+v", ev)
	}
}

func TestPrevValuesReadOnlyWhenWanted(t *testing.T) {
	sink := &recordingSink{}
	f := openTest(t, filepath.Join(t.TempDir(), "state.db"), sink)
	f.ApplyBatch([]*raft.Log{entry(t, 1, put("/k", "old"))})
	f.ApplyBatch([]*raft.Log{entry(t, 2, put("/k", "new"))})
	for _, e := range sink.events() {
		if e.HasPrev || e.PrevValue != nil {
			t.Fatalf("no prev-kv watcher, yet event carries a prev value: %+v", e)
		}
	}

	sink.mu.Lock()
	sink.wantPrev, sink.batches = true, nil
	sink.mu.Unlock()
	f.ApplyBatch([]*raft.Log{entry(t, 3, put("/k", "newer"), put("/fresh", "x"))})
	f.ApplyBatch([]*raft.Log{entry(t, 4, del("/k"))})
	ev := sink.events()
	if len(ev) != 3 {
		t.Fatalf("got %d events, want 3", len(ev))
	}
	if !ev[0].HasPrev || string(ev[0].PrevValue) != "new" {
		t.Errorf("put over existing key: prev = %q (has %v), want \"new\"", ev[0].PrevValue, ev[0].HasPrev)
	}
	if !ev[1].HasPrev || ev[1].PrevValue == nil || len(ev[1].PrevValue) != 0 {
		t.Errorf("put of fresh key: prev = %#v (has %v), want present and empty", ev[1].PrevValue, ev[1].HasPrev)
	}
	if ev[2].Type != watch.Delete || string(ev[2].PrevValue) != "newer" {
		t.Errorf("delete: %+v, want DELETE with prev \"newer\"", ev[2])
	}
}

func TestConditions(t *testing.T) {
	modRev := func(n uint64) *pb.Condition {
		return &pb.Condition{Require: &pb.Condition_ModRevision{ModRevision: n}}
	}
	absent := &pb.Condition{Require: &pb.Condition_Absent{Absent: true}}
	cases := []struct {
		name        string
		op          *pb.Op
		wantOK      bool
		wantVersion uint64 // of /k afterwards; 0 = absent
	}{
		{"put if mod_revision matches", &pb.Op{Kind: pb.Op_PUT, Key: []byte("/k"), Value: []byte("v2"), Condition: modRev(1)}, true, 2},
		{"put if mod_revision differs does nothing", &pb.Op{Kind: pb.Op_PUT, Key: []byte("/k"), Value: []byte("v2"), Condition: modRev(7)}, false, 1},
		{"put if absent on existing key does nothing", &pb.Op{Kind: pb.Op_PUT, Key: []byte("/k"), Value: []byte("v2"), Condition: absent}, false, 1},
		{"delete if mod_revision matches", &pb.Op{Kind: pb.Op_DELETE, Key: []byte("/k"), Condition: modRev(1)}, true, 0},
		{"delete if mod_revision differs does nothing", &pb.Op{Kind: pb.Op_DELETE, Key: []byte("/k"), Condition: modRev(2)}, false, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sink := &recordingSink{}
			f := openTest(t, filepath.Join(t.TempDir(), "state.db"), sink)
			f.ApplyBatch([]*raft.Log{entry(t, 1, put("/k", "v1"))})
			r := result(t, f.ApplyBatch([]*raft.Log{entry(t, 2, tc.op)})[0]).Ops[0]
			if r.Succeeded != tc.wantOK {
				t.Fatalf("succeeded = %v, want %v", r.Succeeded, tc.wantOK)
			}
			if r.Prev == nil || string(r.Prev.Value) != "v1" || r.Prev.ModRevision != 1 {
				t.Fatalf("a conditional op reports the current state; got %+v", r.Prev)
			}
			kv := mustGet(t, f, "/k")
			switch {
			case tc.wantVersion == 0 && kv != nil:
				t.Fatalf("/k = %+v, want deleted", kv)
			case tc.wantVersion != 0 && (kv == nil || kv.Version != tc.wantVersion):
				t.Fatalf("/k = %+v, want version %d", kv, tc.wantVersion)
			}
			wantEvents := 1
			if tc.wantOK {
				wantEvents = 2
			}
			if got := len(sink.events()); got != wantEvents {
				t.Fatalf("%d events, want %d (a failed condition emits nothing)", got, wantEvents)
			}
		})
	}
	t.Run("put if absent on missing key creates it", func(t *testing.T) {
		f := openTest(t, filepath.Join(t.TempDir(), "state.db"), &recordingSink{})
		op := &pb.Op{Kind: pb.Op_PUT, Key: []byte("/new"), Value: []byte("x"), Condition: absent}
		r := result(t, f.ApplyBatch([]*raft.Log{entry(t, 5, op)})[0]).Ops[0]
		if !r.Succeeded || r.Prev != nil || r.ModRevision != 5 {
			t.Fatalf("result %+v, want succeeded, no prev, mod revision 5", r)
		}
	})
	t.Run("delete of a missing key succeeds and emits nothing", func(t *testing.T) {
		sink := &recordingSink{}
		f := openTest(t, filepath.Join(t.TempDir(), "state.db"), sink)
		r := result(t, f.ApplyBatch([]*raft.Log{entry(t, 1, del("/nope"))})[0]).Ops[0]
		if !r.Succeeded || r.Deleted || len(sink.events()) != 0 {
			t.Fatalf("result %+v, events %v: want succeeded, not deleted, no event", r, sink.events())
		}
	})
}

func TestRestartSkipsAppliedEntries(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	f, err := Open(path, &recordingSink{}, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	log := []*raft.Log{entry(t, 1, put("/k", "a")), entry(t, 2, put("/k", "b")), entry(t, 3, put("/k", "c"))}
	f.ApplyBatch(log[:2])
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	// Raft replays the whole log after a restart; the FSM must skip 1 and 2.
	sink := &recordingSink{}
	f = openTest(t, path, sink)
	if f.Applied() != 2 {
		t.Fatalf("applied after reopen = %d, want 2", f.Applied())
	}
	res := f.ApplyBatch(log)
	if res[0] != nil || res[1] != nil || res[2] == nil {
		t.Fatalf("responses %v: want nil for replayed entries 1-2 and a result for 3", res)
	}
	kv := mustGet(t, f, "/k")
	if kv.Version != 3 || string(kv.Value) != "c" {
		t.Fatalf("/k = %+v, want version 3 (no double bump)", kv)
	}
	ev := sink.events()
	if len(ev) != 1 || ev[0].Revision != 3 {
		t.Fatalf("events after replay = %+v, want only revision 3", ev)
	}
	// A batch made only of applied entries publishes nothing.
	sink.batches = nil
	f.ApplyBatch(log[:1])
	if len(sink.batches) != 0 {
		t.Fatalf("replayed batch published %+v", sink.batches)
	}
}

// memSink is a raft.SnapshotSink writing to memory.
type memSink struct {
	bytes.Buffer
	canceled bool
}

func (s *memSink) ID() string    { return "test" }
func (s *memSink) Cancel() error { s.canceled = true; return nil }
func (s *memSink) Close() error  { return nil }

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }

func snapshotOf(t *testing.T, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	var sink memSink
	if err := snap.Persist(&sink); err != nil || sink.canceled {
		t.Fatalf("persist: %v (canceled %v)", err, sink.canceled)
	}
	return sink.Bytes()
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	src := openTest(t, filepath.Join(t.TempDir(), "state.db"), &recordingSink{})
	src.ApplyBatch([]*raft.Log{entry(t, 1, put("/a", "1"), put("/b", "2")), entry(t, 2, put("/a", "3"), del("/b"))})
	data := snapshotOf(t, src)
	// Writes after Snapshot() are not in the snapshot.
	src.ApplyBatch([]*raft.Log{entry(t, 3, put("/c", "late"))})

	sink := &recordingSink{}
	dst := openTest(t, filepath.Join(t.TempDir(), "state.db"), sink)
	if err := dst.Restore(readCloser{bytes.NewReader(data)}); err != nil {
		t.Fatal(err)
	}
	if dst.Applied() != 2 {
		t.Fatalf("applied after restore = %d, want 2", dst.Applied())
	}
	a := mustGet(t, dst, "/a")
	if a == nil || string(a.Value) != "3" || a.Version != 2 || a.ModRevision != 2 {
		t.Fatalf("/a = %+v after restore", a)
	}
	if mustGet(t, dst, "/b") != nil || mustGet(t, dst, "/c") != nil {
		t.Fatal("/b (deleted) or /c (written after the snapshot) present after restore")
	}
	if len(sink.batches) != 1 || !sink.batches[0].Reset || sink.batches[0].Index != 2 {
		t.Fatalf("published %+v, want one Reset batch at 2", sink.batches)
	}
	// The restored FSM keeps working and continues the revisions.
	dst.ApplyBatch([]*raft.Log{entry(t, 3, put("/a", "4"))})
	if a := mustGet(t, dst, "/a"); a.Version != 3 {
		t.Fatalf("/a version after restore+put = %d, want 3", a.Version)
	}
}

func TestRestoreSkipsSnapshotBehindState(t *testing.T) {
	old := openTest(t, filepath.Join(t.TempDir(), "state.db"), &recordingSink{})
	old.ApplyBatch([]*raft.Log{entry(t, 1, put("/a", "old"))})
	data := snapshotOf(t, old)

	sink := &recordingSink{}
	f := openTest(t, filepath.Join(t.TempDir(), "state.db"), sink)
	f.ApplyBatch([]*raft.Log{entry(t, 1, put("/a", "old")), entry(t, 2, put("/a", "new"))})
	sink.batches = nil
	if err := f.Restore(readCloser{bytes.NewReader(data)}); err != nil {
		t.Fatal(err)
	}
	if a := mustGet(t, f, "/a"); string(a.Value) != "new" || f.Applied() != 2 {
		t.Fatalf("state rewound by an older snapshot: /a=%q applied=%d", a.Value, f.Applied())
	}
	if len(sink.batches) != 0 {
		t.Fatalf("skipped restore published %+v", sink.batches)
	}
}

func TestRestoreRejectsGarbage(t *testing.T) {
	f := openTest(t, filepath.Join(t.TempDir(), "state.db"), &recordingSink{})
	f.ApplyBatch([]*raft.Log{entry(t, 1, put("/a", "1"))})
	if err := f.Restore(readCloser{bytes.NewReader([]byte("not a database"))}); err == nil {
		t.Fatal("restore of garbage succeeded")
	}
	if a := mustGet(t, f, "/a"); a == nil || f.Applied() != 1 {
		t.Fatal("failed restore damaged the state")
	}
}

func TestUndecodableEntryStopsApplying(t *testing.T) {
	f := openTest(t, filepath.Join(t.TempDir(), "state.db"), &recordingSink{})
	f.ApplyBatch([]*raft.Log{entry(t, 1, put("/a", "1"))})
	msg := panicOf(func() {
		f.ApplyBatch([]*raft.Log{{Index: 2, Type: raft.LogCommand, Data: []byte{0xff, 0xff}}, entry(t, 3, put("/b", "1"))})
	})
	if !strings.Contains(msg, "log entry 2 ") {
		t.Fatalf("an undecodable entry did not stop applying with a message naming it; panic: %q", msg)
	}
	if f.Applied() != 1 || mustGet(t, f, "/b") != nil {
		t.Fatalf("something after the undecodable entry was applied: applied %d, /b %v", f.Applied(), mustGet(t, f, "/b"))
	}
}

// panicOf runs fn and returns what it panicked with ("" if it did not).
func panicOf(fn func()) (msg string) {
	defer func() {
		if r := recover(); r != nil {
			msg = fmt.Sprint(r)
		}
	}()
	fn()
	return ""
}

func TestListAndGetReportRevision(t *testing.T) {
	f := openTest(t, filepath.Join(t.TempDir(), "state.db"), &recordingSink{})
	f.ApplyBatch([]*raft.Log{entry(t, 4, put("/p/a", "1"), put("/p/b", "2"), put("/p/c", "3"), put("/q", "4"))})
	p, err := f.List([]byte("/p/"), ListOptions{Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if p.Revision != 4 || string(p.Next) != "/p/c" || len(p.KVs) != 2 || string(p.KVs[0].Key) != "/p/a" || string(p.KVs[1].Key) != "/p/b" {
		t.Fatalf("List = %v rev %d next %q", p.KVs, p.Revision, p.Next)
	}
	p, _ = f.List([]byte("/p/"), ListOptions{})
	if len(p.KVs) != 3 || p.Next != nil {
		t.Fatalf("unlimited List = %d keys next=%q, want 3 and nil", len(p.KVs), p.Next)
	}
	if _, rev, _ := f.Get([]byte("/missing")); rev != 4 {
		t.Fatalf("Get of a missing key reports revision %d, want 4", rev)
	}
}

func TestWaitApplied(t *testing.T) {
	f := openTest(t, filepath.Join(t.TempDir(), "state.db"), &recordingSink{})
	done := make(chan error, 1)
	go func() { done <- f.WaitApplied(context.Background(), 2) }()
	f.ApplyBatch([]*raft.Log{entry(t, 1, put("/a", "1"))})
	select {
	case err := <-done:
		t.Fatalf("WaitApplied(2) returned %v at index 1", err)
	default:
	}
	f.ApplyBatch([]*raft.Log{entry(t, 2, put("/a", "2"))})
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitApplied(2) did not return after index 2 was applied")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.WaitApplied(ctx, 99); err == nil {
		t.Fatal("WaitApplied with a canceled context returned nil")
	}
}
