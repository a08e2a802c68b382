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
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/raftwatch/raftwatch/testport"
	bolt "go.etcd.io/bbolt"
)

// freeAddr is a free loopback address for a node a test opens.
func freeAddr(t *testing.T) string {
	t.Helper()
	return testport.Addrs(t, 1)[0]
}

// openNode opens a one-node cluster in dir.
func openNode(t *testing.T, dir, raftAddr string) *Node {
	t.Helper()
	return openNodeWith(t, dir, raftAddr, DefaultLogStore)
}

// openNodeWith opens a one-node cluster in dir with a log store of kind.
func openNodeWith(t *testing.T, dir, raftAddr string, kind LogStore) *Node {
	t.Helper()
	n, err := Open(singleConfig(dir, raftAddr, kind))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func singleConfig(dir, raftAddr string, kind LogStore) Config {
	cfg := DefaultConfig()
	cfg.ID, cfg.DataDir, cfg.RaftAddr, cfg.ClientAddr = "n1", dir, raftAddr, "127.0.0.1:1"
	cfg.InitialCluster = map[string]string{"n1": raftAddr}
	cfg.LogStore = kind
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	return cfg
}

// openSingle opens a one-node cluster in dir and waits until it leads.
func openSingle(t *testing.T, dir, raftAddr string) *Node {
	t.Helper()
	return openSingleWith(t, dir, raftAddr, DefaultLogStore)
}

// openSingleWith is openSingle with a log store of kind.
func openSingleWith(t *testing.T, dir, raftAddr string, kind LogStore) *Node {
	t.Helper()
	n := openNodeWith(t, dir, raftAddr, kind)
	waitReady(t, n)
	return n
}

// waitReady waits until the single node n is a ready leader.
func waitReady(t *testing.T, n *Node) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for n.readyTerm.Load() == 0 || n.readyTerm.Load() != n.raft.CurrentTerm() {
		if time.Now().After(deadline) {
			t.Fatal("single node did not become a ready leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Close must return even while writes and reads are in flight: futures
// still queued inside raft at shutdown are never answered by raft.
func TestCloseUnderLoadReturns(t *testing.T) {
	for i := 0; i < 10; i++ {
		t.Run(fmt.Sprint("round ", i), func(t *testing.T) {
			n := openSingle(t, t.TempDir(), freeAddr(t))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var wg sync.WaitGroup
			for g := 0; g < 64; g++ {
				wg.Add(1)
				go func(g int) {
					defer wg.Done()
					for j := 0; ctx.Err() == nil && j < 10000; j++ {
						key := []byte(fmt.Sprintf("/k/%d", g))
						if _, err := n.Put(context.Background(), key, []byte("v"), WriteOptions{}); err != nil {
							return
						}
						if _, _, err := n.Get(context.Background(), key, Linearizable); err != nil {
							return
						}
					}
				}(g)
			}
			// Let load build up (a bounded number of applies), then close.
			deadline := time.Now().Add(5 * time.Second)
			for n.fsm.Applied() < 20 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			closed := make(chan error, 1)
			go func() { closed <- n.Close() }()
			select {
			case err := <-closed:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("Close did not return within 20 s under load")
			}
			cancel()
			wg.Wait() // every caller got an answer
		})
	}
}

// A node that crashed after raft stored a snapshot but before the state
// machine restored it must not apply later entries over older state.
func TestOpenRestoresSnapshotNewerThanState(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	n := openSingle(t, dir, addr)
	for i := 0; i < 20; i++ {
		if _, err := n.Put(context.Background(), []byte(fmt.Sprintf("/s/%d", i)), []byte("v"), WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	// Nor the last entry: raft reads that one at start too.
	if _, err := n.Put(context.Background(), []byte("/b"), []byte("b"), WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	// Simulate the crash: the state machine file is from before the data.
	if err := os.Remove(filepath.Join(dir, "state.db")); err != nil {
		t.Fatal(err)
	}
	n = openSingle(t, dir, addr)
	defer n.Close()
	r, err := n.List(context.Background(), []byte("/s/"), ListOptions{}, Linearizable)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.KVs) != 20 {
		t.Fatalf("after reopen %d keys, want 20 (state restored from the snapshot)", len(r.KVs))
	}
}

func TestFollowerStyleErrors(t *testing.T) {
	n := openSingle(t, t.TempDir(), freeAddr(t))
	defer n.Close()
	_, err := n.Put(context.Background(), nil, []byte("v"), WriteOptions{})
	if !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("empty key: %v, want ErrInvalidArgument", err)
	}
	_, err = n.Put(context.Background(), []byte("/k"), nil, WriteOptions{If: &Condition{ModRevision: 3, Absent: true}})
	if !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("contradictory condition: %v, want ErrInvalidArgument", err)
	}
}

// After a machine crash (a reboot while the node ran) the unsynced state
// machine file is not trusted: it is set aside and rebuilt from the newest
// snapshot plus the raft log.
func TestStateRebuiltAfterInterruptedBoot(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	n := openSingle(t, dir, addr)
	put := func(n *Node, i int) {
		if _, err := n.Put(context.Background(), []byte(fmt.Sprintf("/b/%02d", i)), []byte("v"), WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 30; i++ {
		put(n, i)
	}
	if err := n.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	for i := 30; i < 50; i++ { // only in the raft log
		put(n, i)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	// Pretend the machine lost power: the session was open under another
	// boot, and the state file is torn.
	if err := writeSession(filepath.Join(dir, sessionFile), "some-earlier-boot", sessionOpen); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "state.db"), []byte("torn page"), 0o600); err != nil {
		t.Fatal(err)
	}
	n = openSingle(t, dir, addr)
	defer n.Close()
	r, err := n.List(context.Background(), []byte("/b/"), ListOptions{}, Linearizable)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.KVs) != 50 {
		t.Fatalf("after rebuild %d keys, want 50", len(r.KVs))
	}
	for _, kv := range r.KVs {
		if kv.Version != 1 {
			t.Fatalf("%s version %d after rebuild, want 1", kv.Key, kv.Version)
		}
	}
	aside, _ := filepath.Glob(filepath.Join(dir, "state.db.untrusted-*"))
	if len(aside) != 1 {
		t.Fatalf("set-aside files: %v, want one", aside)
	}
}

// A process crash on the same boot keeps the state machine as it is.
func TestStateKeptAfterProcessCrashSameBoot(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	n := openSingle(t, dir, addr)
	if _, err := n.Put(context.Background(), []byte("/k"), []byte("v"), WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := writeSession(filepath.Join(dir, sessionFile), currentBootID(), sessionOpen); err != nil {
		t.Fatal(err)
	}
	n = openSingle(t, dir, addr)
	defer n.Close()
	if aside, _ := filepath.Glob(filepath.Join(dir, "state.db.untrusted-*")); len(aside) != 0 {
		t.Fatalf("state set aside after a same-boot crash: %v", aside)
	}
	kv, _, err := n.Get(context.Background(), []byte("/k"), Linearizable)
	if err != nil || kv == nil || kv.Version != 1 {
		t.Fatalf("/k after reopen: %+v %v", kv, err)
	}
}

// TestDamagedStateMachineIsNeverServedAndRebuilt flips one bit of a value
// in a closed node's state.db: reopened, the node refuses reads with
// ErrDataLoss and writes and watches as not applied, and says why in
// Status; reopened once more, it rebuilds the state from the raft log.
func TestDamagedStateMachineIsNeverServedAndRebuilt(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	n := openSingle(t, dir, addr)
	value := []byte("a-value-the-disk-damages-0123456789")
	if _, err := n.Put(context.Background(), []byte("/a"), value, WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	path := flipInStateDB(t, dir, value, 3, 0x20)

	cfg := singleConfig(dir, addr, DefaultLogStore)
	var logged syncBuffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logged, nil))
	n, err := Open(cfg) // it never becomes a ready leader now
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []Consistency{Serializable, Linearizable} {
		kv, _, err := n.Get(context.Background(), []byte("/a"), c)
		// A linearizable read on a node not (yet) leader gets the leader
		// hint, here "no leader", before the node looks at its data.
		notLeader := c == Linearizable && errors.Is(err, ErrNoLeader)
		if !errors.Is(err, ErrDataLoss) && !notLeader || kv != nil {
			t.Fatalf("get (%v) of a damaged value: %v, %v; want ErrDataLoss", c, kv, err)
		}
	}
	if _, err := n.List(context.Background(), []byte("/"), ListOptions{}, Serializable); !errors.Is(err, ErrDataLoss) {
		t.Fatalf("list on an unhealthy node: %v, want ErrDataLoss", err)
	}
	// Elected, though it never becomes ready.
	waitFor(t, "the single node is elected", 10*time.Second, func() bool { return n.raft.State() == raft.Leader })
	if _, err := n.Put(context.Background(), []byte("/b"), []byte("x"), WriteOptions{}); !errors.Is(err, ErrNotApplied) {
		t.Fatalf("put on an unhealthy node: %v, want ErrNotApplied", err)
	}
	s := n.NewWatchStream()
	if _, err := s.Watch([]byte("/a"), WatchOptions{}); !errors.Is(err, ErrNotApplied) {
		t.Fatalf("watch on an unhealthy node: %v, want ErrNotApplied", err)
	}
	s.Close()
	if st := n.Status(); st.Healthy || !strings.Contains(st.UnhealthyReason, `key "/a"`) {
		t.Fatalf("status healthy=%v reason=%q, want unhealthy naming /a", st.Healthy, st.UnhealthyReason)
	}
	// The log says it too: which value, in which file, and what happens next.
	waitFor(t, "the node logs that it is unhealthy", 10*time.Second, func() bool {
		return strings.Contains(logged.String(), "node unhealthy: refusing reads")
	})
	var mismatch string
	for _, line := range strings.Split(logged.String(), "\n") {
		if strings.Contains(line, "state machine damaged: a stored value failed its checksum") {
			mismatch = line
			break
		}
	}
	for _, want := range []string{`key \"/a\"`, "checksum", path, "rebuilt from the raft snapshot and log when the node is reopened"} {
		if !strings.Contains(mismatch, want) {
			t.Fatalf("the checksum mismatch's log line %q lacks %q; log:\n%s", mismatch, want, logged.String())
		}
	}
	select {
	case <-n.StateDamaged():
	default:
		t.Fatal("StateDamaged is not closed on a node that found a damaged value")
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	n = openSingle(t, dir, addr)
	defer n.Close()
	if err := n.fsm.WaitApplied(context.Background(), n.raft.CommitIndex()); err != nil {
		t.Fatal(err)
	}
	assertRebuilt(t, n, path, value)
	select {
	case <-n.StateDamaged():
		t.Fatal("StateDamaged is closed on the rebuilt node")
	default:
	}
}

// assertRebuilt checks a node whose state.db at path was set aside and
// rebuilt: /a holds value again, the node is healthy, and exactly one
// damaged file was set aside.
func assertRebuilt(t *testing.T, n *Node, path string, value []byte) {
	t.Helper()
	kv, _, err := n.Get(context.Background(), []byte("/a"), Linearizable)
	if err != nil || kv == nil || !bytes.Equal(kv.Value, value) {
		t.Fatalf("after the rebuild /a = %v, %v; want %q", kv, err, value)
	}
	if st := n.Status(); !st.Healthy {
		t.Fatalf("unhealthy after the rebuild: %s", st.UnhealthyReason)
	}
	if aside, _ := filepath.Glob(path + ".damaged-*"); len(aside) != 1 {
		t.Fatalf("damaged file set aside as %v, want one", aside)
	}
}

// TestDamageFoundWhileOpeningIsRebuilt damages the state machine's own
// bookkeeping (every value of its meta bucket: applied index, format,
// history counters), which opening reads: the node sets the file aside and
// rebuilds it from the raft log at once, instead of refusing to start.
func TestDamageFoundWhileOpeningIsRebuilt(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	n := openSingle(t, dir, addr)
	value := []byte("a-value-written-before-the-damage")
	if _, err := n.Put(context.Background(), []byte("/a"), value, WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "state.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket([]byte("meta"))
		if meta == nil {
			return errors.New("no meta bucket")
		}
		damaged := map[string][]byte{}
		meta.ForEach(func(k, v []byte) error {
			d := append([]byte(nil), v...)
			d[0] ^= 0x01
			damaged[string(k)] = d
			return nil
		})
		for k, v := range damaged {
			if err := meta.Put([]byte(k), v); err != nil {
				return err
			}
		}
		return nil
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}

	n = openSingle(t, dir, addr)
	assertRebuilt(t, n, path, value)
}

// TestDamagedLogEntryFoundWhileRunning damages an entry already in a
// snapshot, so the node starts; reading it (here through
// CommittedLog, as the Log RPC does; raft's replication reads the same way)
// makes the node unhealthy, stops its raft and leaves a marker that stops
// the next start, naming the entry.
func TestDamagedLogEntryFoundWhileRunning(t *testing.T) {
	forEachStore(t, testDamagedLogEntryFoundWhileRunning)
}

func testDamagedLogEntryFoundWhileRunning(t *testing.T, kind LogStore) {
	dir, addr := t.TempDir(), freeAddr(t)
	n := openSingleWith(t, dir, addr, kind)
	value := []byte("an-applied-entry-the-disk-damages")
	res, err := n.Put(context.Background(), []byte("/a"), value, WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// In a snapshot (the log keeps trailing entries for slow followers):
	// raft reads the entries after its newest snapshot at start.
	if err := n.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	// Nor the last entry: raft reads that one at start too.
	if _, err := n.Put(context.Background(), []byte("/b"), []byte("b"), WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	logPath := logStorePath(dir, kind)
	damaged := append([]byte(nil), value...)
	damaged[5] ^= 0x01
	if found := replaceInStore(t, logPath, value, damaged); found == 0 {
		t.Fatalf("the value is nowhere in %s", logPath)
	}

	// No scrub: it would find the entry first (TestScrubRunsAndFindsDamageAtRest).
	cfg := singleConfig(dir, addr, kind)
	cfg.ScrubInterval = 0
	n, err = Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	waitFor(t, "the node learns its commit index", 10*time.Second, func() bool { return n.raft.CommitIndex() >= res.Revision })
	_, err = n.CommittedLog(res.Revision, func(uint64, LogEntry) error { return nil })
	var ce *LogCorruptError
	if !errors.As(err, &ce) || ce.Index != res.Revision {
		t.Fatalf("reading the damaged entry: %v, want a *LogCorruptError for entry %d", err, res.Revision)
	}
	waitFor(t, "raft shuts down on a node with a damaged log", 10*time.Second, func() bool { return n.raft.State() == raft.Shutdown })
	if _, _, err := n.Get(context.Background(), []byte("/a"), Serializable); !errors.Is(err, ErrDataLoss) {
		t.Fatalf("read on a node with a damaged log: %v, want ErrDataLoss", err)
	}
	if st := n.Status(); st.Healthy || !strings.Contains(st.UnhealthyReason, fmt.Sprintf("raft log entry %d", res.Revision)) {
		t.Fatalf("status healthy=%v reason=%q", st.Healthy, st.UnhealthyReason)
	}
	select {
	case <-n.StateDamaged():
		t.Fatal("StateDamaged is closed for a damaged log entry: reopening cannot repair that")
	default:
	}
	n.Close()

	cfg.InitialCluster = nil
	if n2, err := Open(cfg); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("raft log entry %d in %s", res.Revision, logPath)) {
		if n2 != nil {
			n2.Close()
		}
		t.Fatalf("start after a damaged entry was found: %v, want a refusal naming the entry and file", err)
	}
}

// replaceInStore replaces old by new in every file of the log store at path
// (raft.db, or the wal directory's files) and returns how many it changed.
func replaceInStore(t *testing.T, path string, old, new []byte) int {
	t.Helper()
	files := []string{path}
	if entries, err := os.ReadDir(path); err == nil {
		files = files[:0]
		for _, e := range entries {
			files = append(files, filepath.Join(path, e.Name()))
		}
	}
	changed := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, old) {
			continue
		}
		if err := os.WriteFile(f, bytes.ReplaceAll(b, old, new), 0o600); err != nil {
			t.Fatal(err)
		}
		changed++
	}
	return changed
}

// flipInStateDB flips bits (mask) of byte i of value wherever value is
// stored in the closed node's state.db under dir, and returns the file's
// path.
func flipInStateDB(t *testing.T, dir string, value []byte, i int, mask byte) string {
	t.Helper()
	path := filepath.Join(dir, "state.db")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, value) {
		t.Fatal("value not found in state.db")
	}
	damaged := append([]byte(nil), value...)
	damaged[i] ^= mask
	if err := os.WriteFile(path, bytes.ReplaceAll(b, value, damaged), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
