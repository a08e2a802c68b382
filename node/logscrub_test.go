package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/raftwatch/raftwatch/fsm"
)

// TestLogScrubVerifiesEveryEntryAtItsPace scrubs a log of 50 entries, one
// of them damaged behind the wrapper's back, 8 entries a step, counting the
// pauses through an injected sleeper: the pass verifies all 50, reports the
// damaged one (saying the scrub found it) and goes on, and waits
// ceil(50/8)-1 = 6 pauses. Entries compacted away during a pass are
// skipped, not damage.
func TestLogScrubVerifiesEveryEntryAtItsPace(t *testing.T) {
	forEachStore(t, testLogScrubVerifiesEveryEntryAtItsPace)
}

func testLogScrubVerifiesEveryEntryAtItsPace(t *testing.T, kind LogStore) {
	inner, path := openStore(t, kind)
	var told []*LogCorruptError
	s, err := newCheckedLogStore(inner, path, func(e *LogCorruptError) { told = append(told, e) })
	if err != nil {
		t.Fatal(err)
	}
	if err := s.StoreLogs(testEntries(1, 50)); err != nil {
		t.Fatal(err)
	}
	// Damage entry 20; the WAL only appends, so rewrite from 20 on.
	var rest []*raft.Log
	for i := uint64(20); i <= 50; i++ {
		var raw raft.Log
		if err := inner.GetLog(i, &raw); err != nil {
			t.Fatal(err)
		}
		rest = append(rest, &raw)
	}
	rest[0].Data[2] ^= 0x08
	if err := inner.DeleteRange(20, 50); err != nil {
		t.Fatal(err)
	}
	if err := inner.StoreLogs(rest); err != nil {
		t.Fatal(err)
	}

	var pauses []time.Duration
	pace := fsm.ScrubPace{Records: 8, Bytes: 1 << 20, Pause: 10 * time.Millisecond,
		Sleep: func(_ <-chan struct{}, d time.Duration) bool { pauses = append(pauses, d); return true }}
	var rec scrubRecord
	verified, err := s.scrub(nil, pace, &rec)
	if err != nil || verified != 50 {
		t.Fatalf("scrub verified %d entries (%v), want 50", verified, err)
	}
	if len(told) != 1 || told[0].Index != 20 || !strings.Contains(told[0].Error(), fsm.FoundByScrub) {
		t.Fatalf("damage reported: %v, want entry 20 once, found by the scrub", told)
	}
	var total time.Duration
	for _, d := range pauses {
		total += d
	}
	if len(pauses) != 6 || total < 6*pace.Pause {
		t.Fatalf("a pass over 50 entries at 8 a step paused %d times (%v), want 6 of %v", len(pauses), total, pace.Pause)
	}
	if st := rec.stats(); st.Passes != 1 || st.Mismatches != 1 || st.LastPassValues != 50 || st.Values != 50 || st.LastPassEnd.IsZero() {
		t.Fatalf("scrub stats %+v, want one pass of 50 entries with 1 mismatch", st)
	}

	// Compaction during a pass (raft deleting the head after a snapshot).
	pace.Sleep = func(<-chan struct{}, time.Duration) bool {
		if first, _ := inner.FirstIndex(); first == 1 {
			if err := inner.DeleteRange(1, 30); err != nil {
				t.Errorf("compact: %v", err)
			}
		}
		return true
	}
	told = nil
	verified, err = s.scrub(nil, pace, &rec)
	if err != nil || verified != 8+20 || len(told) != 0 {
		t.Fatalf("scrub across a compaction verified %d entries (%v, damage %v), want 8 before it and 20 after", verified, err, told)
	}
	if st := rec.stats(); st.Passes != 2 {
		t.Fatalf("passes %d after a pass across a compaction, want 2", st.Passes)
	}

	// A stop during a pause ends the pass uncompleted.
	pace.Sleep = func(<-chan struct{}, time.Duration) bool { return false }
	if _, err := s.scrub(nil, pace, &rec); err != nil || rec.stats().Passes != 2 {
		t.Fatalf("a stopped pass: %v, passes %d, want still 2", err, rec.stats().Passes)
	}
}

// TestScrubRunsAndFindsDamageAtRest runs a node with a short scrub
// interval: Status counts passes over the state machine and the raft log.
// Then a byte of an entry kept only for slow followers (in a snapshot, so
// no start reads it) is flipped while the node is down: the scrub finds it,
// and the node is unhealthy exactly as when raft meets a damaged entry,
// its reason naming the scrub and the entry.
func TestScrubRunsAndFindsDamageAtRest(t *testing.T) {
	forEachStore(t, func(t *testing.T, kind LogStore) {
		dir, addr := t.TempDir(), freeAddr(t)
		cfg := singleConfig(dir, addr, kind)
		cfg.ScrubInterval = 50 * time.Millisecond
		n := openScrubbing(t, cfg, true)
		value := []byte("an-entry-at-rest-that-the-disk-damages")
		res, err := n.Put(context.Background(), []byte("/a"), value, WriteOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := n.raft.Snapshot().Error(); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Put(context.Background(), []byte("/b"), []byte("b"), WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		// Two more passes: the second began after both puts.
		before := n.Status()
		waitFor(t, "two more scrub passes of each store", 10*time.Second, func() bool {
			st := n.Status()
			return st.Scrub.Passes >= before.Scrub.Passes+2 && st.LogScrub.Passes >= before.LogScrub.Passes+2
		})
		if st := n.Status(); !st.Healthy || st.LogScrub.Mismatches != 0 || st.LogScrub.LastPassValues < 3 || st.Scrub.LastPassValues == 0 {
			t.Fatalf("after clean passes: healthy=%v log scrub %+v state scrub %+v", st.Healthy, st.LogScrub, st.Scrub)
		}
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
		damaged := append([]byte(nil), value...)
		damaged[4] ^= 0x02
		if replaceInStore(t, logStorePath(dir, kind), value, damaged) == 0 {
			t.Fatal("the value is nowhere in the log store")
		}

		cfg.InitialCluster = nil
		n = openScrubbing(t, cfg, false)
		defer n.Close()
		waitFor(t, "the scrub finds the damaged entry", 10*time.Second, func() bool { return !n.Status().Healthy })
		st := n.Status()
		want := fmt.Sprintf("raft log entry %d in %s is damaged", res.Revision, logStorePath(dir, kind))
		if !strings.Contains(st.UnhealthyReason, want) || !strings.Contains(st.UnhealthyReason, fsm.FoundByScrub) {
			t.Fatalf("unhealthy reason %q, want %q and %q", st.UnhealthyReason, want, fsm.FoundByScrub)
		}
		waitFor(t, "the mismatch is counted", 10*time.Second, func() bool { return n.Status().LogScrub.Mismatches == 1 })
		waitFor(t, "raft shuts down on a node with a damaged log", 10*time.Second, func() bool { return n.raft.State() == raft.Shutdown })
		if _, _, err := n.Get(context.Background(), []byte("/b"), Serializable); !errors.Is(err, ErrDataLoss) {
			t.Fatalf("read after the scrub found damage: %v, want ErrDataLoss", err)
		}
		if _, err := os.Stat(logMarkerPath(dir)); err != nil {
			t.Fatalf("no damage marker after the scrub found damage: %v", err)
		}
	})
}

// TestScrubFindsADamagedValueAtRest flips a byte of a value in a stopped
// node's state.db: at its next start the scrub finds it, and Status says
// the scrub found it and names the key.
func TestScrubFindsADamagedValueAtRest(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	cfg := singleConfig(dir, addr, DefaultLogStore)
	cfg.ScrubInterval = 50 * time.Millisecond
	n := openScrubbing(t, cfg, true)
	value := []byte("a-value-at-rest-that-the-disk-damages")
	if _, err := n.Put(context.Background(), []byte("/v"), value, WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	flipInStateDB(t, dir, value, 6, 0x01)

	cfg.InitialCluster = nil
	n = openScrubbing(t, cfg, false)
	defer n.Close()
	waitFor(t, "the scrub finds the damaged value", 10*time.Second, func() bool { return n.Status().Scrub.Mismatches > 0 })
	if st := n.Status(); st.Healthy || !strings.Contains(st.UnhealthyReason, fsm.FoundByScrub) || !strings.Contains(st.UnhealthyReason, `key "/v"`) {
		t.Fatalf("status healthy=%v reason=%q, want unhealthy, found by the scrub, naming /v", st.Healthy, st.UnhealthyReason)
	}
}

// openScrubbing opens a node with cfg; ready waits until it is a ready
// leader (a node that finds damage never is).
func openScrubbing(t *testing.T, cfg Config, ready bool) *Node {
	t.Helper()
	n, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if ready {
		waitFor(t, "the single node is a ready leader", 10*time.Second, func() bool {
			return n.readyTerm.Load() != 0 && n.readyTerm.Load() == n.raft.CurrentTerm()
		})
	}
	return n
}
