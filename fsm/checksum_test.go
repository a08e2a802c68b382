package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"

	pb "github.com/raftwatch/raftwatch/proto"
	"github.com/raftwatch/raftwatch/watch"
)

// flipStored flips one bit in the middle of the value stored under key in
// bucket, the way a bad disk sector would, behind the FSM's back.
func flipStored(t *testing.T, f *FSM, bucket, key []byte) {
	t.Helper()
	err := f.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		v := b.Get(key)
		if v == nil {
			t.Fatalf("nothing stored under %q in bucket %s", key, bucket)
		}
		v = bytes.Clone(v)
		v[len(v)/2] ^= 0x10
		return b.Put(key, v)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func histKeyOf(rev uint64, pos uint32) []byte { k := histKey(rev, pos); return k[:] }

// TestEveryReadPathRefusesADamagedValue damages one stored value per case
// and reads it through one read path: the read must fail with ErrCorrupt
// (never return the damaged bytes), and the state machine must mark itself
// damaged and leave the marker for the next start.
func TestEveryReadPathRefusesADamagedValue(t *testing.T) {
	three := func(t *testing.T, f *FSM) {
		f.ApplyBatch([]*raft.Log{entry(t, 1, put("/a", "v1")), entry(t, 2, put("/a", "v2")), entry(t, 3, put("/a", "v3"))})
	}
	readAll := func(f *FSM, from uint64, withPrev bool) error {
		return f.ReadHistory(from, 100, withPrev, func(*watch.Event) bool { return true })
	}
	for _, tc := range []struct {
		name        string
		opts        Options
		bucket, key []byte
		read        func(t *testing.T, f *FSM) error
	}{
		{"Get of a damaged value", Options{}, bucketKV, []byte("/a"), func(t *testing.T, f *FSM) error {
			_, _, err := f.Get([]byte("/a"))
			return err
		}},
		{"List over a damaged value", Options{}, bucketKV, []byte("/a"), func(t *testing.T, f *FSM) error {
			_, err := f.List([]byte("/"), ListOptions{})
			return err
		}},
		{"Get with a damaged applied index", Options{}, bucketMeta, keyApplied, func(t *testing.T, f *FSM) error {
			_, _, err := f.Get([]byte("/a"))
			return err
		}},
		{"history read of a damaged event", Options{}, bucketHistory, histKeyOf(2, 0), func(t *testing.T, f *FSM) error {
			return readAll(f, 0, false)
		}},
		{"previous value through a damaged history index", Options{}, bucketHIndex, histKeyOf(2, 0)[:8], func(t *testing.T, f *FSM) error {
			return readAll(f, 3, true)
		}},
		{"previous value from a damaged history record", Options{}, bucketHistory, histKeyOf(1, 0), func(t *testing.T, f *FSM) error {
			return f.ReadHistory(2, 2, true, func(*watch.Event) bool { return true })
		}},
		// One event retained: the previous value of /a at 3 is in hbase.
		{"previous value from a damaged history base", Options{HistoryMaxEvents: 1}, bucketHBase, []byte("/a"), func(t *testing.T, f *FSM) error {
			return readAll(f, 3, true)
		}},
		{"members", Options{}, bucketMembers, []byte("n1"), func(t *testing.T, f *FSM) error {
			_, err := f.Members()
			return err
		}},
		{"snapshot", Options{}, bucketKV, []byte("/a"), func(t *testing.T, f *FSM) error {
			snap, err := f.Snapshot()
			if err != nil {
				return err
			}
			defer snap.Release()
			var sink memSink
			err = snap.Persist(&sink)
			if err != nil && !sink.canceled {
				t.Error("a snapshot that failed verification was not canceled")
			}
			return err
		}},
		{"apply over a damaged value", Options{}, bucketKV, []byte("/a"), func(t *testing.T, f *FSM) error {
			before := f.Applied()
			msg := panicOf(func() { f.ApplyBatch([]*raft.Log{entry(t, 10, put("/a", "v10"))}) })
			if f.Applied() != before {
				t.Errorf("applied index moved to %d over a damaged value", f.Applied())
			}
			if msg == "" {
				return nil
			}
			if !strings.Contains(msg, "marked damaged") {
				t.Errorf("panic does not say the state machine is damaged: %s", msg)
			}
			return f.Damage()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			f := openWith(t, path, nil, tc.opts)
			three(t, f)
			f.ApplyBatch([]*raft.Log{entry(t, 4, &pb.Op{Kind: pb.Op_SET_MEMBER, Key: []byte("n1"), Value: []byte("127.0.0.1:1")})})
			if tc.name != "apply over a damaged value" {
				if err := tc.read(t, f); err != nil {
					t.Fatalf("read before any damage: %v", err)
				}
			}
			flipStored(t, f, tc.bucket, tc.key)
			err := tc.read(t, f)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("read of a damaged value returned %v, want ErrCorrupt", err)
			}
			if f.Damage() == nil {
				t.Fatal("the state machine did not mark itself damaged")
			}
			select {
			case <-f.Damaged():
			default:
				t.Fatal("Damaged() was not closed")
			}
			reason, ok, err := ReadMarker(path)
			if err != nil || !ok || !strings.Contains(reason, string(tc.bucket)) {
				t.Fatalf("damage marker: %q %v %v, want the reason naming bucket %s", reason, ok, err, tc.bucket)
			}
		})
	}
}

func TestRestoreRefusesADamagedSnapshot(t *testing.T) {
	src := openWith(t, filepath.Join(t.TempDir(), "state.db"), nil, Options{})
	src.ApplyBatch([]*raft.Log{entry(t, 5, put("/a", "snapshot-value-to-damage"))})
	snap := snapshotOf(t, src)
	i := bytes.Index(snap, []byte("snapshot-value-to-damage"))
	if i < 0 {
		t.Fatal("value not found in the snapshot")
	}
	for ; i >= 0; i = bytes.Index(snap, []byte("snapshot-value-to-damage")) {
		snap[i] ^= 0x01 // 's' -> 'r' everywhere: the kv record and its history record
	}
	dst := openWith(t, filepath.Join(t.TempDir(), "state.db"), nil, Options{})
	dst.ApplyBatch([]*raft.Log{entry(t, 1, put("/a", "old"))})
	err := dst.Restore(readCloser{bytes.NewReader(snap)})
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("restore of a damaged snapshot: %v, want ErrCorrupt", err)
	}
	if a := mustGet(t, dst, "/a"); string(a.Value) != "old" || dst.Applied() != 1 {
		t.Fatalf("a refused snapshot changed the state: /a=%q applied=%d", a.Value, dst.Applied())
	}
}

func TestScrubFindsAPlantedMismatch(t *testing.T) {
	f := openWith(t, filepath.Join(t.TempDir(), "state.db"), nil, Options{})
	for i := uint64(1); i <= 50; i++ {
		f.ApplyBatch([]*raft.Log{entry(t, i, put("/k/"+string(rune('a'+i%26)), strings.Repeat("x", int(i))))})
	}
	// Small steps: the pass must resume correctly across transactions.
	pace := ScrubPace{Records: 7, Bytes: 1 << 20, Pause: time.Microsecond}
	clean, err := f.Scrub(nil, pace)
	if err != nil || clean == 0 {
		t.Fatalf("clean scrub: %d values, %v", clean, err)
	}
	if st := f.ScrubStats(); st.Passes != 1 || st.Mismatches != 0 || st.LastPassValues != clean || f.Damage() != nil {
		t.Fatalf("clean scrub stats %+v, damage %v", st, f.Damage())
	}
	flipStored(t, f, bucketHistory, histKeyOf(30, 0))
	again, err := f.Scrub(nil, pace)
	if err != nil || again != clean {
		t.Fatalf("second scrub verified %d values (%v), want all %d", again, err, clean)
	}
	st := f.ScrubStats()
	if st.Passes != 2 || st.Mismatches != 1 || st.Values != 2*clean || st.LastPassEnd.IsZero() {
		t.Fatalf("scrub stats %+v, want 2 passes and 1 mismatch", st)
	}
	if d := f.Damage(); !errors.Is(d, ErrCorrupt) || !strings.Contains(d.Error(), FoundByScrub) {
		t.Fatalf("the scrub's mismatch did not mark the state machine damaged, saying the scrub found it: %v", d)
	}
}

// TestScrubHonoursItsPace counts the pauses of a pass through an injected
// sleeper: a pass over N values at Records per step waits ceil(N/Records)-1
// times Pause, and one bounded by Bytes waits at least once per Bytes read.
func TestScrubHonoursItsPace(t *testing.T) {
	f := openWith(t, filepath.Join(t.TempDir(), "state.db"), nil, Options{})
	for i := uint64(1); i <= 60; i++ {
		f.ApplyBatch([]*raft.Log{entry(t, i, put(fmt.Sprintf("/k/%02d", i), strings.Repeat("v", 100)))})
	}
	var pauses []time.Duration
	sleep := func(_ <-chan struct{}, d time.Duration) bool { pauses = append(pauses, d); return true }

	pace := ScrubPace{Records: 8, Bytes: 1 << 30, Pause: 25 * time.Millisecond, Sleep: sleep}
	n, err := f.Scrub(nil, pace)
	if err != nil || n < 120 { // every value and its history record, at least
		t.Fatalf("scrub verified %d values (%v)", n, err)
	}
	steps := (int(n) + pace.Records - 1) / pace.Records
	var total time.Duration
	for _, d := range pauses {
		total += d
	}
	if len(pauses) != steps-1 || total < time.Duration(steps-1)*pace.Pause {
		t.Fatalf("a pass over %d values at %d per step paused %d times (%v), want %d pauses of %v",
			n, pace.Records, len(pauses), total, steps-1, pace.Pause)
	}

	// Bound by bytes: each value is more than 100 bytes, so a 1,000-byte
	// step holds at most 10 of them.
	pauses = nil
	pace = ScrubPace{Records: 1 << 20, Bytes: 1000, Pause: time.Millisecond, Sleep: sleep}
	if n2, err := f.Scrub(nil, pace); err != nil || n2 != n {
		t.Fatalf("second scrub: %d values (%v), want %d", n2, err, n)
	}
	if min := 60 / 10; len(pauses) < min {
		t.Fatalf("a pass bounded to 1,000 bytes a step paused %d times, want at least %d", len(pauses), min)
	}

	// A stop during a pause ends the pass uncompleted.
	passes := f.ScrubStats().Passes
	pace.Sleep = func(<-chan struct{}, time.Duration) bool { return false }
	if _, err := f.Scrub(nil, pace); err != nil || f.ScrubStats().Passes != passes {
		t.Fatalf("a stopped pass: %v, passes %d, want %d", err, f.ScrubStats().Passes, passes)
	}
}

func TestOpenAddsChecksumsToAnOldFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	writeOldDatabase(t, path, 7, map[string]KeyValue{
		"/a": {CreateRevision: 2, ModRevision: 5, Version: 3, Value: []byte("a@5")},
	})
	f := openWith(t, path, nil, Options{})
	if a := mustGet(t, f, "/a"); string(a.Value) != "a@5" || a.Version != 3 || f.Applied() != 7 {
		t.Fatalf("after the upgrade /a = %+v, applied %d", a, f.Applied())
	}
	err := f.db.View(func(tx *bolt.Tx) error {
		if v, _, err := getMeta(tx.Bucket(bucketMeta), keyFormat); err != nil || v != formatChecksummed {
			t.Errorf("format after the upgrade: %d %v", v, err)
		}
		n, err := verifyAll(tx)
		if n == 0 {
			t.Error("nothing verified")
		}
		return err
	})
	if err != nil {
		t.Fatalf("an upgraded file does not verify: %v", err)
	}
}

func TestOpenRefusesAnUnknownFormat(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	f := openWith(t, path, nil, Options{})
	if err := f.db.Update(func(tx *bolt.Tx) error { return putMeta(tx.Bucket(bucketMeta), keyFormat, 9) }); err != nil {
		t.Fatal(err)
	}
	f.Close()
	_, err := Open(path, nil, slog.New(slog.DiscardHandler), Options{})
	if err == nil || !strings.Contains(err.Error(), "data format 9") {
		t.Fatalf("open of format 9: %v, want a refusal naming the format", err)
	}
}

func TestMarkerIsWrittenBesideTheFile(t *testing.T) {
	dir := t.TempDir()
	if _, ok, err := ReadMarker(filepath.Join(dir, "state.db")); ok || err != nil {
		t.Fatalf("marker of a new directory: %v %v", ok, err)
	}
	if err := writeMarker(filepath.Join(dir, "state.db"), "why"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "state.db.damaged")); err != nil {
		t.Fatal(err)
	}
}
