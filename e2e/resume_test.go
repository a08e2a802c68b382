package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/raftwatch/raftwatch/client"
	pb "github.com/raftwatch/raftwatch/proto"
)

// These tests check issue 8's promises end to end, on three real
// processes: a watch survives the death of its node, a snapshot install
// and a consumer that stops reading, and can start in the past.

// cliWatch runs `raftwatch watch ... --json` and streams its events.
func cliWatch(t *testing.T, args ...string) (<-chan cliEvent, *exec.Cmd) {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"watch", "--json"}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("watch stderr:\n%s", stderr.String())
		}
	})
	events := make(chan cliEvent, 10000)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 4<<20)
		for sc.Scan() {
			var ev cliEvent
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				events <- ev
			}
		}
	}()
	return events, cmd
}

// nextCLIData returns the next PUT/DELETE/CANCELED the CLI printed.
func nextCLIData(t *testing.T, events <-chan cliEvent, timeout time.Duration) cliEvent {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("watch output ended")
			}
			if ev.Type == "PROGRESS" || ev.Type == "CREATED" {
				continue
			}
			return ev
		case <-deadline:
			t.Fatalf("no watch event within %v", timeout)
		}
	}
}

// kill -9 the node `raftwatch watch --prefix` is attached to: the CLI keeps
// running and prints every later event exactly once, in order.
func TestCLIWatchSurvivesKillOfItsNode(t *testing.T) {
	c := startCluster(t)
	f := c.followers()[0]
	// f first: the CLI attaches to the first endpoint that answers.
	eps := []string{f.clientAddr}
	for _, p := range c.nodes {
		if p != f {
			eps = append(eps, p.clientAddr)
		}
	}
	events, _ := cliWatch(t, "--prefix", "/r/", "--prev-kv", "--endpoints", strings.Join(eps, ","))
	select {
	case ev := <-events:
		if ev.Type != "CREATED" {
			t.Fatalf("first line %+v, want CREATED", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no CREATED within 10 s")
	}
	st, err := c.status(f)
	if err != nil || st.Watchers != 1 {
		t.Fatalf("the watch is not attached to %s: %d watchers, %v", f.id, st.GetWatchers(), err)
	}

	cl := c.client()
	var revs []uint64
	put := func(i int) {
		r, err := cl.Put(ctxT(t, 10*time.Second), []byte("/r/k"), []byte(fmt.Sprintf("v%d", i)))
		if err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
		revs = append(revs, r.Revision)
	}
	for i := 0; i < 10; i++ {
		put(i)
	}
	for i := 0; i < 10; i++ {
		if ev := nextCLIData(t, events, 10*time.Second); ev.Revision != revs[i] {
			t.Fatalf("before the kill: event %d at %d, want %d", i, ev.Revision, revs[i])
		}
	}
	c.kill(f)
	for i := 10; i < 30; i++ {
		put(i)
	}
	for i := 10; i < 30; i++ {
		ev := nextCLIData(t, events, 20*time.Second)
		if ev.Type != "PUT" || ev.Revision != revs[i] || string(ev.Value) != fmt.Sprintf("v%d", i) {
			t.Fatalf("after the kill: event %d = %+v, want PUT v%d at %d", i, ev, i, revs[i])
		}
		if ev.PrevValue == nil || string(*ev.PrevValue) != fmt.Sprintf("v%d", i-1) {
			t.Fatalf("after the kill: event %d prev_value %v, want v%d", i, ev.PrevValue, i-1)
		}
	}
	// Nothing more: no duplicate arrives after the last event.
	if r, err := cl.Put(ctxT(t, 10*time.Second), []byte("/r/end"), []byte("x")); err != nil {
		t.Fatal(err)
	} else if ev := nextCLIData(t, events, 10*time.Second); ev.Revision != r.Revision {
		t.Fatalf("after the last event got %+v, want the marker at %d", ev, r.Revision)
	}
}

// rawStream opens a watch stream on p with small flow-control windows (no
// BDP growth), so a client that stops reading pushes back on the server.
func rawStream(t *testing.T, p *proc) pb.Watch_WatchClient {
	t.Helper()
	cc, err := grpc.NewClient(p.clientAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	s, err := pb.NewWatchClient(cc).Watch(ctxT(t, 2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func createRaw(t *testing.T, s pb.Watch_WatchClient, create *pb.WatchCreate) *rawWatch {
	t.Helper()
	if err := s.Send(&pb.WatchRequest{Request: &pb.WatchRequest_Create{Create: create}}); err != nil {
		t.Fatal(err)
	}
	r := &rawWatch{s: s}
	ev, err := r.recv()
	if err != nil || ev.Type != pb.EventType_CREATED {
		t.Fatalf("create: %v %v", ev, err)
	}
	return r
}

// nextRawData returns the next PUT/DELETE/CANCELED of a raw stream.
func nextRawData(t *testing.T, r *rawWatch) *pb.WatchResponse {
	t.Helper()
	for {
		ev, err := r.recv()
		if err != nil {
			t.Fatalf("watch stream: %v", err)
		}
		if ev.Type != pb.EventType_PROGRESS {
			return ev
		}
	}
}

// A consumer that stops reading while hundreds of events flow is not
// canceled: its watcher falls behind, catches up from history, and the
// consumer gets every event exactly once when it reads again.
func TestNeverReadingWatcherCatchesUp(t *testing.T) {
	c := startCluster(t, "--watch-buffer", "16")
	f := c.followers()[0]
	s := rawStream(t, f)
	w := createRaw(t, s, &pb.WatchCreate{Key: []byte("/slow/"), Prefix: true, PrevKv: true})

	cl := c.client()
	value := strings.Repeat("x", 1024)
	const n = 600
	revs := make([]uint64, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += 8 {
				r, err := cl.Put(ctxT(t, 10*time.Second), []byte(fmt.Sprintf("/slow/%03d", i)), []byte(value))
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				if err == nil {
					revs[i] = r.Revision
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	eventually(t, 10*time.Second, "the unread watcher to fall behind", func() bool {
		st, err := c.status(f)
		return err == nil && st.WatchersCatchingUp == 1
	})
	// Concurrent puts may share a revision (one log entry); (revision,
	// key) names each exactly once.
	want := map[string]bool{}
	for i, r := range revs {
		want[fmt.Sprintf("%d %s", r, fmt.Sprintf("/slow/%03d", i))] = true
	}
	var last uint64
	for got := 0; got < n; got++ {
		ev := nextRawData(t, w)
		id := fmt.Sprintf("%d %s", ev.Revision, ev.Key)
		if ev.Type != pb.EventType_PUT || ev.Revision < last || !want[id] {
			t.Fatalf("event %d: %v %s at %d (last %d): not an acknowledged put not yet seen, or out of order", got, ev.Type, ev.Key, ev.Revision, last)
		}
		delete(want, id)
		if ev.PrevValue == nil || len(ev.PrevValue) != 0 {
			t.Fatalf("event %d: prev_value %q, want empty (new key)", got, ev.PrevValue)
		}
		last = ev.Revision
	}
	eventually(t, 10*time.Second, "the watcher to be live again", func() bool {
		st, err := c.status(f)
		return err == nil && st.Watchers == 1 && st.WatchersCatchingUp == 0
	})
}

// A follower that installs a snapshot keeps its watchers: they continue
// from the history the snapshot carries, with no gap, on the same stream.
func TestSnapshotInstallKeepsWatchers(t *testing.T) {
	// boltdb: raft-wal deletes only whole 64 MiB segments when raft
	// compacts, so with the WAL the leader still holds the entries and the
	// follower would catch up from the log, never installing a snapshot.
	c := startCluster(t, "--snapshot-threshold", "64", "--trailing-logs", "16", "--snapshot-interval", "100ms", "--log-store", "boltdb")
	f := c.followers()[0]
	s := rawStream(t, f)
	w := createRaw(t, s, &pb.WatchCreate{Key: []byte("/snap/"), Prefix: true, PrevKv: true})

	// Pause the follower (its process, watchers and TCP connections stay)
	// while the leader writes, snapshots and truncates its log.
	if err := f.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	cont := func() { f.cmd.Process.Signal(syscall.SIGCONT) }
	defer cont()
	cl := c.client(c.waitLeader().clientAddr)
	const n = 300
	revs := make([]uint64, n)
	for i := 0; i < n; i++ {
		r, err := cl.Put(ctxT(t, 10*time.Second), []byte(fmt.Sprintf("/snap/%03d", i%50)), []byte(fmt.Sprint(i)))
		if err != nil {
			t.Fatal(err)
		}
		revs[i] = r.Revision
	}
	cont()
	prev := map[string]string{}
	for i := 0; i < n; i++ {
		ev := nextRawData(t, w)
		key := fmt.Sprintf("/snap/%03d", i%50)
		if ev.Type != pb.EventType_PUT || ev.Revision != revs[i] || string(ev.Key) != key || string(ev.Value) != fmt.Sprint(i) {
			t.Fatalf("event %d: %v %s=%s at %d (%s), want PUT %s=%d at %d", i, ev.Type, ev.Key, ev.Value, ev.Revision, ev.Reason, key, i, revs[i])
		}
		if ev.PrevValue == nil || string(ev.PrevValue) != prev[key] {
			t.Fatalf("event %d: prev %q, want %q", i, ev.PrevValue, prev[key])
		}
		prev[key] = string(ev.Value)
	}
	b, err := exec.Command("grep", "-c", "state machine replaced by snapshot", f.logPath).Output()
	if err != nil || strings.TrimSpace(string(b)) == "0" {
		t.Fatal("the follower caught up without installing a snapshot; the test did not exercise Restore")
	}
}

// A watch can start at a past revision (CLI --rev) and gets exactly the
// events from there; one older than history is refused with the oldest
// retained revision.
func TestWatchFromPastRevision(t *testing.T) {
	c := startCluster(t, "--history-max-events", "40")
	cl := c.client()
	var revs []uint64
	for i := 0; i < 30; i++ {
		r, err := cl.Put(ctxT(t, 10*time.Second), []byte("/past/k"), []byte(fmt.Sprint(i)))
		if err != nil {
			t.Fatal(err)
		}
		revs = append(revs, r.Revision)
	}
	events, _ := cliWatch(t, "/past/k", "--rev", fmt.Sprint(revs[10]), "--endpoints", c.followers()[1].clientAddr)
	for i := 10; i < 30; i++ {
		if ev := nextCLIData(t, events, 10*time.Second); ev.Revision != revs[i] || string(ev.Value) != fmt.Sprint(i) {
			t.Fatalf("event %d: %+v, want %d at %d", i, ev, i, revs[i])
		}
	}
	// Push the first writes out of the 40-event history.
	for i := 30; i < 80; i++ {
		if _, err := cl.Put(ctxT(t, 10*time.Second), []byte("/past/k"), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	f := c.followers()[0]
	eventually(t, 10*time.Second, "history to be compacted past the first writes", func() bool {
		st, err := c.status(f)
		return err == nil && st.HistoryOldestRevision > revs[0]
	})
	s := rawStream(t, f)
	if err := s.Send(&pb.WatchRequest{Request: &pb.WatchRequest_Create{Create: &pb.WatchCreate{Key: []byte("/past/k"), StartRevision: revs[0], RequestId: 7}}}); err != nil {
		t.Fatal(err)
	}
	r := &rawWatch{s: s}
	ev, err := r.recv()
	if err != nil || ev.Type != pb.EventType_CANCELED || ev.Code != 11 || ev.CompactRevision <= revs[0] || ev.RequestId != 7 {
		t.Fatalf("start below history: %v %v, want CANCELED OUT_OF_RANGE with compact_revision > %d", ev, err, revs[0])
	}
	_, errOut, code := cli(t, "watch", "/past/k", "--rev", fmt.Sprint(revs[0]), "--endpoints", f.clientAddr)
	if code != 3 || !strings.Contains(errOut, "compacted") || !strings.Contains(errOut, fmt.Sprint(ev.CompactRevision)) {
		t.Fatalf("CLI watch below history exited %d with %q, want 3 and the oldest retained revision", code, errOut)
	}
}

// An event whose value and previous value are both of the maximum size is
// delivered (it once exceeded the message limit and looped forever).
func TestLargestEventWithPrevValueIsDelivered(t *testing.T) {
	c := startCluster(t)
	f := c.followers()[0]
	w, err := c.client(f.clientAddr).Watch(ctxT(t, time.Minute), []byte("/big"), client.WithPrevKV())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ch := collect(w)
	cl := c.client()
	a, b := bytes.Repeat([]byte("a"), 1<<20), bytes.Repeat([]byte("b"), 1<<20)
	for _, v := range [][]byte{a, b} {
		if _, err := cl.Put(ctxT(t, 10*time.Second), []byte("/big"), v); err != nil {
			t.Fatal(err)
		}
	}
	nextData(t, ch, 10*time.Second)
	ev := nextData(t, ch, 10*time.Second)
	if !bytes.Equal(ev.Value, b) || !bytes.Equal(ev.PrevValue, a) {
		t.Fatalf("second event: %d-byte value, %d-byte prev; want 1 MiB each", len(ev.Value), len(ev.PrevValue))
	}
	if w.Resumes() != 0 {
		t.Fatalf("the watch resumed %d times", w.Resumes())
	}
}
