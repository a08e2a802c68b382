package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"

	pb "github.com/raftwatch/raftwatch/proto"
	"github.com/raftwatch/raftwatch/watch"
)

func openWith(t *testing.T, path string, sink Sink, opts Options) *FSM {
	t.Helper()
	f, err := Open(path, sink, slog.New(slog.DiscardHandler), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func putIf(key, value string, modRev uint64) *pb.Op {
	op := put(key, value)
	op.Condition = &pb.Condition{Require: &pb.Condition_ModRevision{ModRevision: modRev}}
	return op
}

func putIfAbsent(key, value string) *pb.Op {
	op := put(key, value)
	op.Condition = &pb.Condition{Require: &pb.Condition_Absent{Absent: true}}
	return op
}

func delIf(key string, modRev uint64) *pb.Op {
	op := del(key)
	op.Condition = &pb.Condition{Require: &pb.Condition_ModRevision{ModRevision: modRev}}
	return op
}

// hev is an event in a form tests compare and print well.
type hev struct {
	Type     watch.EventType
	Key      string
	Value    string
	Revision uint64
	Version  uint64
	HasPrev  bool
	Prev     string
}

func (e hev) String() string {
	s := fmt.Sprintf("%d %s %s=%q v%d", e.Revision, e.Type, e.Key, e.Value, e.Version)
	if e.HasPrev {
		s += fmt.Sprintf(" prev=%q", e.Prev)
	}
	return s
}

func toHev(t *testing.T, e *watch.Event) hev {
	t.Helper()
	if e.HasPrev && e.PrevValue == nil {
		t.Fatalf("event %d %s has HasPrev but a nil PrevValue (absent must be empty, not nil)", e.Revision, e.Key)
	}
	return hev{e.Type, string(e.Key), string(e.Value), e.Revision, e.Version, e.HasPrev, string(e.PrevValue)}
}

// readHistory returns every event ReadHistory(from, to, withPrev) yields.
func readHistory(t *testing.T, f *FSM, from, to uint64, withPrev bool) []hev {
	t.Helper()
	evs, err := tryReadHistory(t, f, from, to, withPrev)
	if err != nil {
		t.Fatalf("ReadHistory(%d, %d, %v): %v", from, to, withPrev, err)
	}
	return evs
}

func tryReadHistory(t *testing.T, f *FSM, from, to uint64, withPrev bool) ([]hev, error) {
	t.Helper()
	var out []hev
	err := f.ReadHistory(from, to, withPrev, func(e *watch.Event) bool {
		out = append(out, toHev(t, e))
		return true
	})
	return out, err
}

func sameEvents(t *testing.T, what string, got, want []hev) {
	t.Helper()
	if reflect.DeepEqual(got, want) || (len(got) == 0 && len(want) == 0) {
		return
	}
	var b strings.Builder
	for i := 0; i < max(len(got), len(want)); i++ {
		var g, w string
		if i < len(got) {
			g = got[i].String()
		}
		if i < len(want) {
			w = want[i].String()
		}
		mark := "  "
		if g != w {
			mark = "! "
		}
		fmt.Fprintf(&b, "%s%-50s | %s\n", mark, g, w)
	}
	t.Fatalf("%s: got (left) != want (right):\n%s", what, b.String())
}

// historyRecords scans the history bucket directly: how many records, their
// key+value bytes and the lowest revision.
func historyRecords(t *testing.T, f *FSM) (count, size, lowest uint64) {
	t.Helper()
	err := f.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketHistory).ForEach(func(k, v []byte) error {
			rev, _, err := splitHistKey(k)
			if err != nil {
				return err
			}
			r, err := decodeHistRecord(k, v)
			if err != nil {
				return err
			}
			if count == 0 {
				lowest = rev
			}
			count++
			size += uint64(len(r.key) + len(r.value))
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return count, size, lowest
}

// indexedRevisions returns how many revisions hidx holds and the first.
func indexedRevisions(t *testing.T, f *FSM) (count, first uint64) {
	t.Helper()
	err := f.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketHIndex).ForEach(func(k, _ []byte) error {
			if count == 0 {
				first = bytesU64(k)
			}
			count++
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return count, first
}

func hbaseOf(t *testing.T, f *FSM, key string) (rev uint64, value string, ok bool) {
	t.Helper()
	err := f.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketHBase).Get([]byte(key))
		if v == nil {
			return nil
		}
		r, val, err := decodeHBase([]byte(key), v)
		rev, value, ok = r, string(val), true
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return rev, value, ok
}

func TestReadHistoryReturnsAppliedEvents(t *testing.T) {
	sink := &recordingSink{wantPrev: true}
	f := openWith(t, filepath.Join(t.TempDir(), "state.db"), sink, Options{})
	f.ApplyBatch([]*raft.Log{
		entry(t, 1, put("/a", "a1"), put("/b", "b1")), // created together
		{Index: 2, Term: 1, Type: raft.LogConfiguration},
	})
	f.ApplyBatch([]*raft.Log{
		entry(t, 3,
			put("/a", "a2"),
			del("/absent"),          // deleting an absent key: no event
			putIf("/b", "no", 99),   // failed condition: no event
			del("/b"),               // position 3
			putIfAbsent("/c", "c1"), // position 4
			&pb.Op{Kind: pb.Op_SET_MEMBER, Key: []byte("n1"), Value: []byte("addr")},
			putIfAbsent("/a", "no")), // failed condition: no event
	})
	f.ApplyBatch([]*raft.Log{
		entry(t, 4, put("/b", "b2"), delIf("/a", 3)), // put after delete; conditional delete that holds
		entry(t, 5, put("/a", "a3"), putIf("/c", "c2", 3)),
	})
	want := []hev{
		{watch.Put, "/a", "a1", 1, 1, true, ""},
		{watch.Put, "/b", "b1", 1, 1, true, ""},
		{watch.Put, "/a", "a2", 3, 2, true, "a1"},
		{watch.Delete, "/b", "", 3, 0, true, "b1"},
		{watch.Put, "/c", "c1", 3, 1, true, ""},
		{watch.Put, "/b", "b2", 4, 1, true, ""},
		{watch.Delete, "/a", "", 4, 0, true, "a2"},
		{watch.Put, "/a", "a3", 5, 1, true, ""},
		{watch.Put, "/c", "c2", 5, 2, true, "c1"},
	}
	sameEvents(t, "ReadHistory(0, max, prev)", readHistory(t, f, 0, math.MaxUint64, true), want)

	var live []hev
	for _, e := range sink.events() {
		live = append(live, toHev(t, &e))
	}
	sameEvents(t, "history vs. the events published live", readHistory(t, f, 1, 5, true), live)

	noPrev := make([]hev, len(want))
	for i, e := range want {
		e.HasPrev, e.Prev = false, ""
		noPrev[i] = e
	}
	sameEvents(t, "without prev values", readHistory(t, f, 0, 5, false), noPrev)

	cases := []struct {
		name     string
		from, to uint64
		want     []hev
	}{
		{"one revision", 3, 3, want[2:5]},
		{"a revision without events", 2, 2, nil},
		{"from a revision without events", 2, 3, want[2:5]},
		{"to past the applied index", 4, 1000, want[5:]},
		{"to below from", 4, 3, nil},
		{"from past the applied index", 6, 10, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sameEvents(t, tc.name, readHistory(t, f, tc.from, tc.to, true), tc.want)
		})
	}

	t.Run("stops when fn returns false", func(t *testing.T) {
		n := 0
		err := f.ReadHistory(0, 5, true, func(*watch.Event) bool { n++; return n < 3 })
		if err != nil || n != 3 {
			t.Fatalf("fn called %d times (err %v), want 3", n, err)
		}
	})
	oldest, events, size := f.HistoryStats()
	if oldest != 1 || events != 9 || size != 32 || f.OldestRevision() != 1 {
		t.Fatalf("HistoryStats = %d, %d, %d, want oldest 1 (nothing compacted), 9 events, 32 bytes", oldest, events, size)
	}
}

func TestEventBytesOutliveTheDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	f, err := Open(path, nil, slog.New(slog.DiscardHandler), Options{})
	if err != nil {
		t.Fatal(err)
	}
	f.ApplyBatch([]*raft.Log{entry(t, 1, put("/k", "v1"))})
	f.ApplyBatch([]*raft.Log{entry(t, 2, put("/k", "v2"))})
	var got []*watch.Event
	if err := f.ReadHistory(0, 2, true, func(e *watch.Event) bool { got = append(got, e); return true }); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil { // unmaps the file: aliased bytes would fault
		t.Fatal(err)
	}
	if len(got) != 2 || string(got[0].Key) != "/k" || string(got[1].Value) != "v2" || string(got[1].PrevValue) != "v1" {
		t.Fatalf("events after close: %+v", got)
	}
}

func TestReadHistoryBelowOldestIsCompacted(t *testing.T) {
	f := openWith(t, filepath.Join(t.TempDir(), "state.db"), nil, Options{HistoryMaxEvents: 2})
	for i := uint64(1); i <= 5; i++ {
		f.ApplyBatch([]*raft.Log{entry(t, i, put("/k", fmt.Sprint(i)))})
	}
	oldest := f.OldestRevision()
	if oldest != 4 {
		t.Fatalf("oldest = %d after 5 single-event revisions with room for 2, want 4", oldest)
	}
	called := false
	err := f.ReadHistory(oldest-1, 10, false, func(*watch.Event) bool { called = true; return true })
	var ce *watch.CompactedError
	if !errors.As(err, &ce) || ce.Requested != oldest-1 || ce.Oldest != oldest || !errors.Is(err, watch.ErrCompacted) {
		t.Fatalf("ReadHistory(%d) = %v, want CompactedError{Requested: %d, Oldest: %d}", oldest-1, err, oldest-1, oldest)
	}
	if called {
		t.Fatal("a compacted read called fn")
	}
	sameEvents(t, "from 0 reads from the oldest", readHistory(t, f, 0, 10, true), []hev{
		{watch.Put, "/k", "4", 4, 4, true, "3"}, // prev from hbase
		{watch.Put, "/k", "5", 5, 5, true, "4"},
	})
}

func TestPrevValuesOfCompactedVersionsComeFromHistoryBase(t *testing.T) {
	f := openWith(t, filepath.Join(t.TempDir(), "state.db"), nil, Options{HistoryMaxEvents: 3})
	f.ApplyBatch([]*raft.Log{entry(t, 1, put("/k", "k1"), put("/gone", "g1"), put("/back", "b1"))})
	f.ApplyBatch([]*raft.Log{entry(t, 2, put("/k", "k2"), del("/gone"), del("/back"))})
	f.ApplyBatch([]*raft.Log{entry(t, 3, put("/back", "b2"))})
	// Revisions 1 and 2 are compacted (3 events each, room for 3).
	if oldest := f.OldestRevision(); oldest != 3 {
		t.Fatalf("oldest = %d, want 3", oldest)
	}
	if rev, v, ok := hbaseOf(t, f, "/k"); !ok || rev != 2 || v != "k2" {
		t.Fatalf("hbase[/k] = %d %q %v, want the newest compacted PUT, revision 2 \"k2\"", rev, v, ok)
	}
	for _, key := range []string{"/gone", "/back"} {
		if _, _, ok := hbaseOf(t, f, key); ok {
			t.Fatalf("hbase[%s] present, but its newest compacted change is a DELETE", key)
		}
	}
	f.ApplyBatch([]*raft.Log{entry(t, 4, put("/k", "k3"), put("/gone", "g2"))})
	sameEvents(t, "prev values across the compaction point", readHistory(t, f, 0, 10, true), []hev{
		{watch.Put, "/back", "b2", 3, 1, true, ""},
		{watch.Put, "/k", "k3", 4, 3, true, "k2"}, // previous version compacted: from hbase
		{watch.Put, "/gone", "g2", 4, 1, true, ""},
	})
}

func TestCompactionRemovesWholeRevisions(t *testing.T) {
	f := openWith(t, filepath.Join(t.TempDir(), "state.db"), nil, Options{HistoryMaxEvents: 15})
	tenPuts := func(rev uint64) *raft.Log {
		ops := make([]*pb.Op, 10)
		for i := range ops {
			ops[i] = put(fmt.Sprintf("/%d", i), fmt.Sprint(rev))
		}
		return entry(t, rev, ops...)
	}
	f.ApplyBatch([]*raft.Log{tenPuts(1)})
	f.ApplyBatch([]*raft.Log{tenPuts(2)})
	oldest, events, _ := f.HistoryStats()
	if oldest != 2 || events != 10 {
		t.Fatalf("after 2 revisions of 10 events with room for 15: oldest %d, %d events; want all of revision 1 removed (oldest 2, 10 events)", oldest, events)
	}
	if n, _, lowest := historyRecords(t, f); n != 10 || lowest != 2 {
		t.Fatalf("history holds %d records from revision %d, want 10 from 2", n, lowest)
	}
}

func TestCompactionBoundsHistory(t *testing.T) {
	cases := []struct {
		name string
		opts Options
	}{
		{"by events", Options{HistoryMaxEvents: 40}},
		{"by bytes", Options{HistoryMaxBytes: 1000}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := openWith(t, filepath.Join(t.TempDir(), "state.db"), nil, tc.opts)
			limits := tc.opts.historyLimits()
			rng := rand.New(rand.NewPCG(7, 7))
			for rev := uint64(1); rev <= 200; rev++ {
				ops := make([]*pb.Op, 1+rng.IntN(8))
				for i := range ops {
					ops[i] = put(fmt.Sprintf("/k%d", i), strings.Repeat("v", rng.IntN(60)))
				}
				f.ApplyBatch([]*raft.Log{entry(t, rev, ops...)})
				oldest, events, size := f.HistoryStats()
				if events > limits.maxEvents || size > limits.maxBytes {
					t.Fatalf("revision %d: %d events, %d bytes, over the limits %+v", rev, events, size, limits)
				}
				n, sz, lowest := historyRecords(t, f)
				if n != events || sz != size || (n > 0 && lowest < oldest) {
					t.Fatalf("revision %d: stats say %d events, %d bytes from %d; the bucket holds %d, %d bytes from %d", rev, events, size, oldest, n, sz, lowest)
				}
				if n > 0 && lowest != oldest {
					t.Fatalf("revision %d: oldest %d, but the first retained event is at %d (every revision below it had events)", rev, oldest, lowest)
				}
				if revs, first := indexedRevisions(t, f); revs != rev-oldest+1 || (revs > 0 && first != oldest) {
					t.Fatalf("revision %d: hidx holds %d revisions from %d, want one per retained revision (%d from %d)", rev, revs, first, rev-oldest+1, oldest)
				}
			}
		})
	}
}

func TestCompactionIsIncremental(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	f, err := Open(path, nil, slog.New(slog.DiscardHandler), Options{})
	if err != nil {
		t.Fatal(err)
	}
	const entries, perEntry = 500, 10
	for rev := uint64(1); rev <= entries; rev++ {
		ops := make([]*pb.Op, perEntry)
		for i := range ops {
			ops[i] = put(fmt.Sprintf("/k%d", i), "v")
		}
		f.ApplyBatch([]*raft.Log{entry(t, rev, ops...)})
	}
	f.Close()

	// The limit drops from the default to 100: no single batch may remove
	// more than compactMinPerBatch (plus the rest of its last revision).
	f = openWith(t, path, nil, Options{HistoryMaxEvents: 100})
	_, events, _ := f.HistoryStats()
	for rev := uint64(entries + 1); events > 100; rev++ {
		f.ApplyBatch([]*raft.Log{entry(t, rev, put("/x", "v"))})
		_, after, _ := f.HistoryStats()
		removed := events + 1 - after
		if removed > compactMinPerBatch+perEntry-1 || (after > 100 && removed < compactMinPerBatch) {
			t.Fatalf("batch at %d removed %d events (left %d), want between %d and %d until under the limit", rev, removed, after, compactMinPerBatch, compactMinPerBatch+perEntry-1)
		}
		if rev > entries+10 {
			t.Fatalf("still %d events after 10 batches", after)
		}
		events = after
	}
}

func TestHistorySurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	f, err := Open(path, nil, slog.New(slog.DiscardHandler), Options{HistoryMaxEvents: 4})
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 6; i++ {
		f.ApplyBatch([]*raft.Log{entry(t, i, put("/k", fmt.Sprint(i)), put(fmt.Sprintf("/n%d", i), "x"))})
	}
	before := readHistory(t, f, 0, 100, true)
	o, e, b := f.HistoryStats()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	f = openWith(t, path, nil, Options{HistoryMaxEvents: 4})
	sameEvents(t, "after reopen", readHistory(t, f, 0, 100, true), before)
	if o2, e2, b2 := f.HistoryStats(); o2 != o || e2 != e || b2 != b {
		t.Fatalf("stats after reopen %d/%d/%d, before %d/%d/%d", o2, e2, b2, o, e, b)
	}
}

func TestSnapshotRestoreCarriesHistory(t *testing.T) {
	opts := Options{HistoryMaxEvents: 5}
	src := openWith(t, filepath.Join(t.TempDir(), "state.db"), nil, opts)
	for i := uint64(1); i <= 8; i++ {
		src.ApplyBatch([]*raft.Log{entry(t, i, put("/k", fmt.Sprint(i)), put(fmt.Sprintf("/n%d", i%3), fmt.Sprint(i)))})
	}
	data := snapshotOf(t, src)
	want := readHistory(t, src, 0, 100, true)
	so, se, sb := src.HistoryStats()

	dst := openWith(t, filepath.Join(t.TempDir(), "state.db"), &recordingSink{}, opts)
	dst.ApplyBatch([]*raft.Log{entry(t, 1, put("/other", "x"))})
	if err := dst.Restore(readCloser{bytes.NewReader(data)}); err != nil {
		t.Fatal(err)
	}
	sameEvents(t, "restored history", readHistory(t, dst, 0, 100, true), want)
	if o, e, b := dst.HistoryStats(); o != so || e != se || b != sb || dst.OldestRevision() != so {
		t.Fatalf("restored stats %d/%d/%d, source %d/%d/%d", o, e, b, so, se, sb)
	}
	// Both continue alike.
	next := []*raft.Log{entry(t, 9, put("/k", "9"), del("/n0"))}
	src.ApplyBatch(next)
	dst.ApplyBatch(next)
	sameEvents(t, "after one more entry", readHistory(t, dst, 0, 100, true), readHistory(t, src, 0, 100, true))
}

// writeOldDatabase writes a state machine file the way the version without
// history did: kv, meta and members buckets only, no checksums (format 1).
func writeOldDatabase(t *testing.T, path string, applied uint64, kvs map[string]KeyValue) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		kv, err := tx.CreateBucket(bucketKV)
		if err != nil {
			return err
		}
		for k, r := range kvs {
			if err := kv.Put([]byte(k), encodeRecordV1(r.CreateRevision, r.ModRevision, r.Version, r.Value)); err != nil {
				return err
			}
		}
		if _, err := tx.CreateBucket(bucketMembers); err != nil {
			return err
		}
		meta, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		return meta.Put(keyApplied, u64(applied))
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestUpgradeFromDatabaseWithoutHistory(t *testing.T) {
	oldKVs := map[string]KeyValue{
		"/a": {CreateRevision: 2, ModRevision: 5, Version: 3, Value: []byte("a@5")},
		"/b": {CreateRevision: 7, ModRevision: 7, Version: 1, Value: []byte("b@7")},
	}
	checkUpgraded := func(t *testing.T, f *FSM) {
		t.Helper()
		if o, e, b := f.HistoryStats(); o != 8 || e != 0 || b != 0 {
			t.Fatalf("upgraded stats %d/%d/%d, want oldest 8 (applied+1), empty", o, e, b)
		}
		if _, err := tryReadHistory(t, f, 7, 100, false); !errors.Is(err, watch.ErrCompacted) {
			t.Fatalf("reading revision 7, before the history began: %v, want compacted", err)
		}
		f.ApplyBatch([]*raft.Log{entry(t, 8, put("/a", "a@8"), del("/b"), put("/c", "c@8"))})
		sameEvents(t, "first events after the upgrade", readHistory(t, f, 0, 100, true), []hev{
			{watch.Put, "/a", "a@8", 8, 4, true, "a@5"},
			{watch.Delete, "/b", "", 8, 0, true, "b@7"},
			{watch.Put, "/c", "c@8", 8, 1, true, ""},
		})
	}

	t.Run("open", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "state.db")
		writeOldDatabase(t, path, 7, oldKVs)
		var logs bytes.Buffer
		f, err := Open(path, nil, slog.New(slog.NewTextHandler(&logs, nil)), Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		if !strings.Contains(logs.String(), "level=INFO msg=\"state machine had no history") {
			t.Errorf("the upgrade was not logged at Info:\n%s", logs.String())
		}
		checkUpgraded(t, f)
	})
	t.Run("restore of a snapshot from an older node", func(t *testing.T) {
		old := filepath.Join(t.TempDir(), "old.db")
		writeOldDatabase(t, old, 7, oldKVs)
		var snap bytes.Buffer
		db, err := bolt.Open(old, 0o600, &bolt.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		err = db.View(func(tx *bolt.Tx) error { _, err := tx.WriteTo(&snap); return err })
		db.Close()
		if err != nil {
			t.Fatal(err)
		}
		f := openWith(t, filepath.Join(t.TempDir(), "state.db"), &recordingSink{}, Options{})
		if err := f.Restore(readCloser{bytes.NewReader(snap.Bytes())}); err != nil {
			t.Fatal(err)
		}
		checkUpgraded(t, f)
	})
	t.Run("a new database starts at revision 1", func(t *testing.T) {
		var logs bytes.Buffer
		f, err := Open(filepath.Join(t.TempDir(), "state.db"), nil, slog.New(slog.NewTextHandler(&logs, nil)), Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if o := f.OldestRevision(); o != 1 {
			t.Fatalf("oldest of a new database = %d, want 1", o)
		}
		if strings.Contains(logs.String(), "had no history") {
			t.Fatal("a new database was logged as upgraded")
		}
	})
}

// model is the state machine's state and history, kept the simple way.
type model struct {
	keys   map[string]KeyValue
	events []hev
}

// apply applies one entry's ops and returns whether each succeeded.
func (m *model) apply(rev uint64, ops []*pb.Op) []bool {
	ok := make([]bool, len(ops))
	for i, op := range ops {
		key := string(op.Key)
		cur, found := m.keys[key]
		switch c := op.Condition.GetRequire().(type) {
		case *pb.Condition_ModRevision:
			if !found || cur.ModRevision != c.ModRevision {
				continue
			}
		case *pb.Condition_Absent:
			if found {
				continue
			}
		}
		ok[i] = true
		switch op.Kind {
		case pb.Op_PUT:
			next := KeyValue{CreateRevision: rev, ModRevision: rev, Version: 1, Value: op.Value}
			if found {
				next.CreateRevision, next.Version = cur.CreateRevision, cur.Version+1
			}
			m.keys[key] = next
			m.events = append(m.events, hev{watch.Put, key, string(op.Value), rev, next.Version, true, string(cur.Value)})
		case pb.Op_DELETE:
			if found {
				delete(m.keys, key)
				m.events = append(m.events, hev{watch.Delete, key, "", rev, 0, true, string(cur.Value)})
			}
		}
	}
	return ok
}

// retained returns the model's events with revision >= from, and their
// count and key+value bytes.
func (m *model) retained(from uint64) (evs []hev, size uint64) {
	for _, e := range m.events {
		if e.Revision >= from {
			evs = append(evs, e)
			size += uint64(len(e.Key) + len(e.Value))
		}
	}
	return evs, size
}

// randomOp returns a put, delete or conditional op on key, its condition
// holding about half the time.
func (m *model) randomOp(rng *rand.Rand, key string, rev uint64) *pb.Op {
	value := fmt.Sprintf("%d%s", rev, strings.Repeat("v", rng.IntN(24)))
	if rng.IntN(8) == 0 {
		value = ""
	}
	cur, found := m.keys[key]
	modRev := cur.ModRevision
	if !found || rng.IntN(2) == 0 {
		modRev = 1 + rng.Uint64N(rev)
	}
	switch rng.IntN(6) {
	case 0, 1:
		return put(key, value)
	case 2:
		return del(key)
	case 3:
		return putIf(key, value, modRev)
	case 4:
		return putIfAbsent(key, value)
	default:
		return delIf(key, modRev)
	}
}

// TestHistoryMatchesModel applies random puts, deletes and conditional ops on
// a few keys over many batches with little room for history, and checks after
// every batch that history holds exactly the model's events from the oldest
// revision on, prev values included, whether they come from history or from
// the history base, and whatever revision a read starts at.
func TestHistoryMatchesModel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	opts := Options{HistoryMaxEvents: 30, HistoryMaxBytes: 500}
	limits := opts.historyLimits()
	f, err := Open(path, nil, slog.New(slog.DiscardHandler), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { f.Close() }()
	rng := rand.New(rand.NewPCG(1, 2))
	keys := []string{"/a", "/b", "/c", "/d", "/e", "/f"}
	m := &model{keys: map[string]KeyValue{}}
	var index uint64
	for batch := 1; batch <= 400; batch++ {
		var logs []*raft.Log
		var want [][]bool
		for range 1 + rng.IntN(3) {
			index++
			if rng.IntN(10) == 0 {
				logs = append(logs, &raft.Log{Index: index, Type: raft.LogConfiguration})
				want = append(want, nil)
				continue
			}
			var ops []*pb.Op
			picks := rng.Perm(len(keys))[:1+rng.IntN(4)] // distinct keys, as the batcher ensures...
			if rng.IntN(10) == 0 {
				picks = append(picks, picks[0]) // ...though the FSM must not rely on it
			}
			for _, k := range picks {
				ops = append(ops, m.randomOp(rng, keys[k], index))
			}
			logs = append(logs, entry(t, index, ops...))
			want = append(want, m.apply(index, ops))
		}
		for i, r := range f.ApplyBatch(logs) {
			if want[i] == nil {
				continue
			}
			for j, op := range result(t, r).Ops {
				if op.Succeeded != want[i][j] {
					t.Fatalf("batch %d entry %d op %d: succeeded %v, the model says %v", batch, logs[i].Index, j, op.Succeeded, want[i][j])
				}
			}
		}

		oldest, events, size := f.HistoryStats()
		retained, retainedSize := m.retained(oldest)
		what := fmt.Sprintf("batch %d (oldest %d)", batch, oldest)
		if events > limits.maxEvents || size > limits.maxBytes {
			t.Fatalf("%s: %d events, %d bytes, over the limits", what, events, size)
		}
		if oldest > index+1 || events != uint64(len(retained)) || size != retainedSize {
			t.Fatalf("%s: stats %d events %d bytes, the model retains %d events %d bytes from there", what, events, size, len(retained), retainedSize)
		}
		sameEvents(t, what, readHistory(t, f, 0, math.MaxUint64, true), retained)
		from := oldest + rng.Uint64N(index+2-oldest)
		mid, _ := m.retained(from)
		sameEvents(t, fmt.Sprintf("%s from %d", what, from), readHistory(t, f, from, math.MaxUint64, true), mid)
		if oldest > 1 {
			if _, err := tryReadHistory(t, f, oldest-1, index, true); !errors.Is(err, watch.ErrCompacted) {
				t.Fatalf("%s: read from %d: %v, want compacted", what, oldest-1, err)
			}
		}
		if batch%50 == 0 {
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			if f, err = Open(path, nil, slog.New(slog.DiscardHandler), opts); err != nil {
				t.Fatal(err)
			}
		}
	}
	if oldest := f.OldestRevision(); oldest < index/2 {
		t.Fatalf("oldest is %d after %d revisions: compaction hardly ran, the test proves little", oldest, index)
	}
}

func TestInconsistentHistoryIsAnError(t *testing.T) {
	f := openWith(t, filepath.Join(t.TempDir(), "state.db"), nil, Options{HistoryMaxEvents: 1})
	f.ApplyBatch([]*raft.Log{entry(t, 1, put("/k", "v1"))})
	f.ApplyBatch([]*raft.Log{entry(t, 2, put("/k", "v2"))})
	f.ApplyBatch([]*raft.Log{entry(t, 3, put("/k", "v3"))})
	// Revision 3's prev value (revision 2) is compacted: it lives in hbase.
	err := f.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketHBase).Delete([]byte("/k")) })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tryReadHistory(t, f, 0, 10, false); err != nil {
		t.Fatalf("a read without prev values needs no history base: %v", err)
	}
	if evs, err := tryReadHistory(t, f, 0, 10, true); err == nil || !strings.Contains(err.Error(), "history inconsistent") {
		t.Fatalf("read with prev values of a lost history base: %v, %v; want a history inconsistent error", evs, err)
	}
}

func TestRestoreRejectsSnapshotWithBrokenHistory(t *testing.T) {
	src := openWith(t, filepath.Join(t.TempDir(), "state.db"), nil, Options{})
	src.ApplyBatch([]*raft.Log{entry(t, 1, put("/a", "1"))})
	err := src.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(keyHistOldest) })
	if err != nil {
		t.Fatal(err)
	}
	dst := openWith(t, filepath.Join(t.TempDir(), "state.db"), &recordingSink{}, Options{})
	if err := dst.Restore(readCloser{bytes.NewReader(snapshotOf(t, src))}); err == nil {
		t.Fatal("restore of a snapshot whose history has no oldest revision succeeded")
	}
	dst.ApplyBatch([]*raft.Log{entry(t, 1, put("/b", "1"))})
	sameEvents(t, "after the rejected restore", readHistory(t, dst, 0, 10, false), []hev{{watch.Put, "/b", "1", 1, 1, false, ""}})
}

func TestPrevValueOfKeysSharingAHash(t *testing.T) {
	a, b := "/c710959", "/c1127602" // found by hashing "/c0", "/c1", ... until two met
	if keyHash([]byte(a)) != keyHash([]byte(b)) {
		t.Fatalf("%q and %q no longer share a hash: the hidx hash changed, and with it the file format", a, b)
	}
	f := openWith(t, filepath.Join(t.TempDir(), "state.db"), nil, Options{})
	f.ApplyBatch([]*raft.Log{entry(t, 1, put("/x", "x"), put(b, "b1"), put(a, "a1"))})
	f.ApplyBatch([]*raft.Log{entry(t, 2, put(a, "a2"), put(b, "b2"))})
	// Reading from 2, both previous versions are found through the index,
	// where a's hash also names b's record.
	sameEvents(t, "keys sharing a hash", readHistory(t, f, 2, 2, true), []hev{
		{watch.Put, a, "a2", 2, 2, true, "a1"},
		{watch.Put, b, "b2", 2, 2, true, "b1"},
	})
}

func TestTwoOpsOnOneKeyInAnEntry(t *testing.T) {
	// The batcher never does this, but the FSM applies what it is given,
	// and history must then read back what the live events said.
	sink := &recordingSink{wantPrev: true}
	f := openWith(t, filepath.Join(t.TempDir(), "state.db"), sink, Options{HistoryMaxEvents: 5})
	f.ApplyBatch([]*raft.Log{entry(t, 1, put("/k", "a"), put("/k", "b"))})
	f.ApplyBatch([]*raft.Log{entry(t, 2, put("/k", "c"), del("/k"), put("/k", "d"))})
	var live []hev
	for _, e := range sink.events() {
		live = append(live, toHev(t, &e))
	}
	// Nothing is compacted yet: read from each event's revision, so the
	// previous version is found through hidx.
	sameEvents(t, "from 1", readHistory(t, f, 1, 2, true), live)
	sameEvents(t, "from 2", readHistory(t, f, 2, 2, true), live[2:])

	// Revision 1 compacted: hbase holds its last PUT.
	f.ApplyBatch([]*raft.Log{entry(t, 3, put("/k", "e"))})
	if rev, v, ok := hbaseOf(t, f, "/k"); !ok || rev != 1 || v != "b" {
		t.Fatalf("hbase[/k] = %d %q %v, want revision 1 \"b\", the last op of the entry", rev, v, ok)
	}
	want := append(live[2:], hev{watch.Put, "/k", "e", 3, 2, true, "d"})
	sameEvents(t, "after compaction", readHistory(t, f, 2, 3, true), want)
	sameEvents(t, "from 3", readHistory(t, f, 3, 3, true), want[3:])
}

// A version that keeps no history may apply entries to a file whose history
// a newer version wrote (a downgrade, or an old follower restoring a newer
// node's snapshot). That history has a gap: it is rebuilt on open, never
// served with the gap.
func TestHistoryWithAGapIsRebuilt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	f, err := Open(path, nil, slog.New(slog.DiscardHandler), Options{})
	if err != nil {
		t.Fatal(err)
	}
	f.ApplyBatch([]*raft.Log{entry(t, 1, put("/k", "v1")), entry(t, 2, put("/k", "v2"))})
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	// The old version applies 3 and 4: kv and applied index only.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketKV).Put([]byte("/k"), appendRecord(nil, []byte("/k"), 1, 4, 4, []byte("v4"))); err != nil {
			return err
		}
		return putMeta(tx.Bucket(bucketMeta), keyApplied, 4)
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	f = openWith(t, path, nil, Options{})
	if o := f.OldestRevision(); o != 5 {
		t.Fatalf("oldest revision %d after the gap, want 5 (applied+1)", o)
	}
	if _, err := tryReadHistory(t, f, 3, 10, false); !errors.Is(err, watch.ErrCompacted) {
		t.Fatalf("reading the gap: %v, want compacted", err)
	}
	f.ApplyBatch([]*raft.Log{entry(t, 5, put("/k", "v5"))})
	sameEvents(t, "after the rebuild", readHistory(t, f, 0, 10, true), []hev{
		{watch.Put, "/k", "v5", 5, 5, true, "v4"},
	})
}

// encodeRecordV1 is a kv record as format 1 stored it: no checksum.
func encodeRecordV1(create, mod, version uint64, value []byte) []byte {
	return append(append(append(u64(create), u64(mod)...), u64(version)...), value...)
}
