package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftwatch/raftwatch/client"
	pb "github.com/raftwatch/raftwatch/proto"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestPutThroughFollowerHint(t *testing.T) {
	c := startCluster(t)
	leader := c.waitLeader()
	f := c.followers()[0]

	// A follower refuses the write and names the leader's client address.
	_, err := pb.NewKVClient(c.conn(f)).Put(ctxT(t, 5*time.Second), &pb.PutRequest{Key: []byte("/k"), Value: []byte("v")})
	hint, ok := client.NotLeaderHint(err)
	if !ok || status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("put on follower: %v, want FAILED_PRECONDITION with a leader hint", err)
	}
	if hint.LeaderAddr != leader.clientAddr || hint.LeaderId != leader.id {
		t.Fatalf("hint = %+v, want %s at %s", hint, leader.id, leader.clientAddr)
	}
	// Nothing was written by the refused request.
	r, err := c.client(leader.clientAddr).Get(ctxT(t, 5*time.Second), []byte("/k"))
	if err != nil || r.Kv != nil {
		t.Fatalf("after refused put: %v %v, want key absent", r, err)
	}

	// The client pointed only at the follower follows the hint.
	cl := c.client(f.clientAddr)
	pr, err := cl.Put(ctxT(t, 5*time.Second), []byte("/k"), []byte("v"))
	if err != nil || !pr.Succeeded {
		t.Fatalf("put via follower endpoint: %v %v", pr, err)
	}
	g, err := cl.Get(ctxT(t, 5*time.Second), []byte("/k"))
	if err != nil || string(g.Kv.GetValue()) != "v" || g.Kv.ModRevision != pr.Revision || g.Revision < pr.Revision {
		t.Fatalf("linearizable get after put: %v %v (put revision %d)", g, err, pr.Revision)
	}
	// A linearizable read on a follower also answers with a hint.
	_, err = pb.NewKVClient(c.conn(f)).Get(ctxT(t, 5*time.Second), &pb.GetRequest{Key: []byte("/k")})
	if _, ok := client.NotLeaderHint(err); !ok {
		t.Fatalf("linearizable get on follower: %v, want leader hint", err)
	}
	// A serializable read on that follower eventually sees the write.
	eventually(t, 5*time.Second, "follower applies the put", func() bool {
		r, err := pb.NewKVClient(c.conn(f)).Get(ctxT(t, time.Second), &pb.GetRequest{Key: []byte("/k"), Consistency: pb.Consistency_SERIALIZABLE})
		return err == nil && string(r.Kv.GetValue()) == "v"
	})
}

type write struct {
	del        bool
	key, value string
	prev       string // expected prev value ("" = absent)
	revision   uint64
}

func TestFollowerWatchSeesEveryLeaderWriteInOrder(t *testing.T) {
	c := startCluster(t)
	leader := c.waitLeader()
	f := c.followers()[0]
	wcl := c.client(f.clientAddr)
	prefixW, err := wcl.Watch(ctxT(t, time.Minute), []byte("/cfg/"), client.WithPrefix(), client.WithPrevKV())
	if err != nil {
		t.Fatal(err)
	}
	defer prefixW.Close()
	exactW, err := wcl.Watch(ctxT(t, time.Minute), []byte("/cfg/a"))
	if err != nil {
		t.Fatal(err)
	}
	defer exactW.Close()
	pch, ech := collect(prefixW), collect(exactW)

	// Sequential writes through the leader on a few keys, including a key
	// outside the prefix and one that only shares its leading bytes.
	rng := rand.New(rand.NewPCG(1, 2))
	keys := []string{"/cfg/a", "/cfg/b", "/cfg/sub/c", "/cfgx", "/other"}
	state := map[string]string{}
	var writes []write
	cl := c.client(leader.clientAddr)
	for i := 0; i < 120; i++ {
		k := keys[rng.IntN(len(keys))]
		w := write{key: k, prev: state[k]}
		if rng.IntN(4) == 0 {
			w.del = true
			r, err := cl.Delete(ctxT(t, 5*time.Second), []byte(k))
			if err != nil {
				t.Fatal(err)
			}
			if !r.Deleted {
				continue // deleting an absent key emits no event
			}
			w.revision = r.Revision
			delete(state, k)
		} else {
			w.value = fmt.Sprintf("v%d", i)
			r, err := cl.Put(ctxT(t, 5*time.Second), []byte(k), []byte(w.value))
			if err != nil {
				t.Fatal(err)
			}
			w.revision = r.Revision
			state[k] = w.value
		}
		writes = append(writes, w)
	}

	check := func(name string, ch <-chan *pb.WatchResponse, match func(string) bool, prevKV bool) {
		for _, w := range writes {
			if !match(w.key) {
				continue
			}
			ev := nextData(t, ch, 10*time.Second)
			wantType := pb.EventType_PUT
			if w.del {
				wantType = pb.EventType_DELETE
			}
			if ev.Type != wantType || string(ev.Key) != w.key || string(ev.Value) != w.value || ev.Revision != w.revision {
				t.Fatalf("%s watcher: got %s %s=%q rev %d, want %s %s=%q rev %d",
					name, ev.Type, ev.Key, ev.Value, ev.Revision, wantType, w.key, w.value, w.revision)
			}
			switch {
			case !prevKV && ev.PrevValue != nil:
				t.Fatalf("%s watcher did not ask for prev values but got %q", name, ev.PrevValue)
			case prevKV && (ev.PrevValue == nil || string(ev.PrevValue) != w.prev):
				t.Fatalf("%s watcher: prev of %s at rev %d = %v, want %q", name, w.key, w.revision, ev.PrevValue, w.prev)
			}
		}
	}
	check("prefix", pch, func(k string) bool { return strings.HasPrefix(k, "/cfg/") }, true)
	check("exact", ech, func(k string) bool { return k == "/cfg/a" }, false)

	// Progress on demand reports at least the last write (every event at or
	// below it was already delivered, and we have consumed them all).
	last := writes[len(writes)-1].revision
	if err := prefixW.RequestProgress(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "a progress at or past the last write", func() bool {
		select {
		case ev := <-pch:
			if ev.Type != pb.EventType_PROGRESS {
				t.Fatalf("unexpected extra event %v", ev)
			}
			return ev.Revision >= last
		default:
			prefixW.RequestProgress()
			return false
		}
	})
}

func TestWatchersSurviveLeaderKill(t *testing.T) {
	c := startCluster(t)
	leader := c.waitLeader()
	followers := c.followers()
	var chans []<-chan *pb.WatchResponse
	for _, f := range followers {
		w, err := c.client(f.clientAddr).Watch(ctxT(t, time.Minute), []byte("/jobs/"), client.WithPrefix(), client.WithPrevKV())
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		chans = append(chans, collect(w))
	}

	// A writer streams puts through whichever node leads; the leader is
	// killed midway. Writes whose outcome is unknown are tolerated.
	cl := c.client()
	var acked []write
	var mu sync.Mutex
	killed := false
	for i := 0; i < 60; i++ {
		if i == 20 {
			c.kill(leader)
			killed = true
		}
		val := fmt.Sprintf("v%d", i)
		r, err := cl.Put(ctxT(t, 10*time.Second), []byte("/jobs/x"), []byte(val))
		if err != nil {
			if !killed {
				t.Fatalf("put %d before the kill: %v", i, err)
			}
			continue
		}
		mu.Lock()
		acked = append(acked, write{key: "/jobs/x", value: val, revision: r.Revision})
		mu.Unlock()
	}
	if len(acked) < 40 {
		t.Fatalf("only %d of 60 puts acknowledged across one failover", len(acked))
	}

	// Every surviving watcher sees every acknowledged put, in order, each
	// prev value equal to the value of the event before it.
	for i, ch := range chans {
		var prev string
		var lastRev uint64
		next := 0
		for next < len(acked) {
			ev := nextData(t, ch, 15*time.Second)
			if ev.Revision <= lastRev {
				t.Fatalf("watcher %d: revision went from %d to %d", i, lastRev, ev.Revision)
			}
			if lastRev != 0 && string(ev.PrevValue) != prev {
				t.Fatalf("watcher %d: prev at rev %d = %q, want %q", i, ev.Revision, ev.PrevValue, prev)
			}
			lastRev, prev = ev.Revision, string(ev.Value)
			if ev.Revision == acked[next].revision {
				if string(ev.Value) != acked[next].value {
					t.Fatalf("watcher %d: rev %d value %q, want %q", i, ev.Revision, ev.Value, acked[next].value)
				}
				next++
			} else if ev.Revision > acked[next].revision {
				t.Fatalf("watcher %d skipped acknowledged put at revision %d (got %d)", i, acked[next].revision, ev.Revision)
			}
		}
	}
}

func TestBadInputIsRejectedAndChangesNothing(t *testing.T) {
	c := startCluster(t)
	leader := c.waitLeader()
	kv := pb.NewKVClient(c.conn(leader))
	before, err := c.status(leader)
	if err != nil {
		t.Fatal(err)
	}
	big := func(n int) []byte { return make([]byte, n) }
	cases := []struct {
		name string
		call func(context.Context) error
		code codes.Code
		msg  string
	}{
		{"put with empty key", func(ctx context.Context) error {
			_, err := kv.Put(ctx, &pb.PutRequest{Value: []byte("v")})
			return err
		}, codes.InvalidArgument, `invalid key "": a key must not be empty and must start with '/'`},
		{"put with key over 4 KiB", func(ctx context.Context) error {
			_, err := kv.Put(ctx, &pb.PutRequest{Key: append([]byte("/"), big(4096)...), Value: []byte("v")})
			return err
		}, codes.InvalidArgument, "4097 bytes, a key is at most 4096"},
		{"put with value over 1 MiB", func(ctx context.Context) error {
			_, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("/k"), Value: big(1<<20 + 1)})
			return err
		}, codes.InvalidArgument, "exceeds the limit of 1048576"},
		{"put with zero mod_revision condition", func(ctx context.Context) error {
			_, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("/k"), Condition: &pb.Condition{Require: &pb.Condition_ModRevision{}}})
			return err
		}, codes.InvalidArgument, "mod_revision must be > 0"},
		{"delete with empty key", func(ctx context.Context) error {
			_, err := kv.Delete(ctx, &pb.DeleteRequest{})
			return err
		}, codes.InvalidArgument, `invalid key "": a key must not be empty and must start with '/'`},
		{"get with unknown consistency", func(ctx context.Context) error {
			_, err := kv.Get(ctx, &pb.GetRequest{Key: []byte("/k"), Consistency: 7})
			return err
		}, codes.InvalidArgument, "unknown consistency"},
		{"watch prefix without slashes", func(ctx context.Context) error {
			return watchErr(ctx, c, leader, &pb.WatchCreate{Key: []byte("config"), Prefix: true})
		}, codes.InvalidArgument, `try "/config/"`},
		{"watch prefix without trailing slash", func(ctx context.Context) error {
			return watchErr(ctx, c, leader, &pb.WatchCreate{Key: []byte("/config"), Prefix: true})
		}, codes.InvalidArgument, "must start and end with '/'"},
		{"watch empty key", func(ctx context.Context) error {
			return watchErr(ctx, c, leader, &pb.WatchCreate{})
		}, codes.InvalidArgument, "empty"},
		{"list prefix without trailing slash", func(ctx context.Context) error {
			_, err := kv.List(ctx, &pb.ListRequest{Prefix: []byte("/config")})
			return err
		}, codes.InvalidArgument, `try "/config/"`},
		{"list start key outside the prefix", func(ctx context.Context) error {
			_, err := kv.List(ctx, &pb.ListRequest{Prefix: []byte("/config/"), StartKey: []byte("/other")})
			return err
		}, codes.InvalidArgument, "is not a key under the prefix"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(ctxT(t, 5*time.Second))
			if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.msg) {
				t.Fatalf("got %v, want %s containing %q", err, tc.code, tc.msg)
			}
		})
	}
	after, err := c.status(leader)
	if err != nil {
		t.Fatal(err)
	}
	if after.FsmIndex != before.FsmIndex || after.Watchers != 0 {
		t.Fatalf("bad input changed state: fsm index %d -> %d, watchers %d", before.FsmIndex, after.FsmIndex, after.Watchers)
	}
}

func watchErr(ctx context.Context, c *testCluster, p *proc, create *pb.WatchCreate) error {
	s, err := pb.NewWatchClient(c.conn(p)).Watch(ctx)
	if err != nil {
		return err
	}
	if err := s.Send(&pb.WatchRequest{Request: &pb.WatchRequest_Create{Create: create}}); err != nil {
		return err
	}
	ev, err := (&rawWatch{s: s}).recv()
	switch {
	case err != nil:
		return err
	case ev.Type == pb.EventType_CANCELED && ev.WatchId == 0 && ev.RequestId == create.RequestId:
		return status.Error(codes.Code(ev.Code), ev.Reason) // refused in-band; the stream stays usable
	}
	return fmt.Errorf("watch created: %v", ev)
}

// Either log store loses no acknowledged write when every node is killed
// (SIGKILL: no clean shutdown) and restarted.
func TestAcknowledgedWritesSurviveKillOfAllNodes(t *testing.T) {
	for _, store := range []string{"boltdb", "wal"} {
		t.Run(store, func(t *testing.T) { testAcknowledgedWritesSurviveKillOfAllNodes(t, store) })
	}
}

func testAcknowledgedWritesSurviveKillOfAllNodes(t *testing.T, store string) {
	c := startCluster(t, "--log-store", store)
	cl := c.client()
	var mu sync.Mutex
	acked := map[string]string{}
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 40; i++ {
				k, v := fmt.Sprintf("/durable/%d/%d", w, i), fmt.Sprintf("value-%d-%d", w, i)
				if _, err := cl.Put(ctxT(t, 10*time.Second), []byte(k), []byte(v)); err == nil {
					mu.Lock()
					acked[k] = v
					mu.Unlock()
				}
			}
		}(w)
	}
	wg.Wait()
	if len(acked) != 320 {
		t.Fatalf("%d of 320 puts acknowledged on a healthy cluster", len(acked))
	}
	for _, p := range c.nodes {
		c.kill(p) // SIGKILL: no clean shutdown
	}
	log := map[string]string{"boltdb": "raft.db", "wal": "wal"}[store]
	for _, p := range c.nodes {
		if _, err := os.Stat(filepath.Join(p.dataDir, log)); err != nil {
			t.Fatalf("%s with --log-store %s has no %s: %v", p.id, store, log, err)
		}
	}
	for _, p := range c.nodes {
		c.start(p)
	}
	c.waitLeader()
	r, err := c.client().List(ctxT(t, 10*time.Second), []byte("/durable/"))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, kv := range r.Kvs {
		got[string(kv.Key)] = string(kv.Value)
		if kv.Version != 1 {
			t.Errorf("%s has version %d after restart, want 1 (no double apply)", kv.Key, kv.Version)
		}
	}
	for k, v := range acked {
		if got[k] != v {
			t.Fatalf("acknowledged %s=%s lost after kill -9 of all nodes (got %q)", k, v, got[k])
		}
	}
}

func TestSigtermCancelsWatchersWithShutdown(t *testing.T) {
	c := startCluster(t)
	f := c.followers()[0]
	// A raw stream: the Go client would resume on another node.
	w := createRaw(t, rawStream(t, f), &pb.WatchCreate{Key: []byte("/x")})
	// A stream left with no watch (its only create was refused) must not
	// hold up the shutdown either.
	if err := watchErr(ctxT(t, time.Minute), c, f, &pb.WatchCreate{Key: []byte("bad"), Prefix: true}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("refused create: %v", err)
	}
	start := time.Now()
	if err := c.stop(f); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("SIGTERM took %v; open watch streams held up the shutdown", d)
	}
	var last *pb.WatchResponse
	for {
		ev, err := w.recv()
		if err != nil {
			break
		}
		last = ev
	}
	// UNAVAILABLE tells a client to resume on another node.
	if last == nil || last.Type != pb.EventType_CANCELED || last.Reason != "shutdown" || codes.Code(last.Code) != codes.Unavailable {
		t.Fatalf("last message before the stream ended: %v, want CANCELED shutdown, UNAVAILABLE", last)
	}
	// The surviving pair still serves writes.
	if _, err := c.client(c.endpoints()...).Put(ctxT(t, 10*time.Second), []byte("/after"), []byte("1")); err != nil {
		t.Fatalf("put after one node stopped: %v", err)
	}
}

func TestLeaderStepsDownOnSigterm(t *testing.T) {
	c := startCluster(t)
	leader := c.waitLeader()
	if err := c.stop(leader); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(leader.logPath)
	if !strings.Contains(string(b), "leadership handed over") {
		t.Fatalf("leader log lacks the handover:\n%s", b)
	}
	next := c.waitLeader()
	if next == leader {
		t.Fatal("stopped node still leads")
	}
}

func TestLaggingFollowerCatchesUpFromSnapshot(t *testing.T) {
	// boltdb: raft-wal deletes only whole 64 MiB segments when raft
	// compacts, so with the WAL the leader still holds the entries and the
	// follower would catch up from the log, never installing a snapshot.
	c := startCluster(t, "--snapshot-threshold", "64", "--trailing-logs", "16", "--snapshot-interval", "100ms", "--log-store", "boltdb")
	f := c.followers()[0]
	if err := c.stop(f); err != nil {
		t.Fatal(err)
	}
	cl := c.client()
	for i := 0; i < 300; i++ {
		if _, err := cl.Put(ctxT(t, 10*time.Second), []byte(fmt.Sprintf("/snap/%03d", i)), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	leaderIdx := func() uint64 {
		st, err := c.status(c.waitLeader())
		if err != nil {
			t.Fatal(err)
		}
		return st.FsmIndex
	}()
	c.start(f)
	eventually(t, 20*time.Second, "the restarted follower to catch up", func() bool {
		st, err := c.status(f)
		return err == nil && st.FsmIndex >= leaderIdx
	})
	r, err := pb.NewKVClient(c.conn(f)).List(ctxT(t, 5*time.Second), &pb.ListRequest{Prefix: []byte("/snap/"), Consistency: pb.Consistency_SERIALIZABLE})
	if err != nil || len(r.Kvs) != 300 {
		t.Fatalf("follower after catch-up: %d keys, err %v; want 300", len(r.GetKvs()), err)
	}
	b, _ := os.ReadFile(f.logPath)
	if !strings.Contains(string(b), "state machine replaced by snapshot") {
		t.Fatal("follower caught up without installing a snapshot; the test did not exercise Restore")
	}
}

func TestOneStreamCarriesManyWatches(t *testing.T) {
	c := startCluster(t)
	f := c.followers()[0]
	stream, err := pb.NewWatchClient(c.conn(f)).Watch(ctxT(t, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	s := &rawWatch{s: stream}
	create := func(req uint64, key string, prefix bool) {
		if err := stream.Send(&pb.WatchRequest{Request: &pb.WatchRequest_Create{Create: &pb.WatchCreate{Key: []byte(key), Prefix: prefix, RequestId: req}}}); err != nil {
			t.Fatal(err)
		}
	}
	create(1, "/m/a", false)
	create(2, "/m/", true)
	create(3, "bad", true) // refused in-band; the stream stays open
	ids := map[uint64]uint64{}
	for len(ids) < 3 {
		ev, err := s.recv()
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case ev.Type == pb.EventType_CREATED:
			ids[ev.RequestId] = ev.WatchId
		case ev.Type == pb.EventType_CANCELED && ev.RequestId == 3:
			if codes.Code(ev.Code) != codes.InvalidArgument {
				t.Fatalf("refusal code %d, want INVALID_ARGUMENT", ev.Code)
			}
			ids[3] = 0
		default:
			t.Fatalf("unexpected %v before CREATED", ev)
		}
	}
	cl := c.client()
	put := func(k string) uint64 {
		r, err := cl.Put(ctxT(t, 5*time.Second), []byte(k), []byte("v"))
		if err != nil {
			t.Fatal(err)
		}
		return r.Revision
	}
	// recv returns the next data event or CANCELED, skipping PROGRESS.
	recv := func() *pb.WatchResponse {
		for {
			ev, err := s.recv()
			if err != nil {
				t.Fatal(err)
			}
			if ev.Type != pb.EventType_PROGRESS {
				return ev
			}
		}
	}
	rev := put("/m/a")
	got := map[uint64]bool{}
	for i := 0; i < 2; i++ {
		ev := recv()
		if ev.Type != pb.EventType_PUT || ev.Revision != rev {
			t.Fatalf("got %v, want PUT at %d", ev, rev)
		}
		got[ev.WatchId] = true
	}
	if !got[ids[1]] || !got[ids[2]] {
		t.Fatalf("PUT reached watches %v, want both %d and %d", got, ids[1], ids[2])
	}
	// Cancel the exact watch: CANCELED for it, then only the prefix watch.
	if err := stream.Send(&pb.WatchRequest{Request: &pb.WatchRequest_Cancel{Cancel: &pb.WatchCancelRequest{WatchId: ids[1]}}}); err != nil {
		t.Fatal(err)
	}
	if ev := recv(); ev.Type != pb.EventType_CANCELED || ev.WatchId != ids[1] {
		t.Fatalf("got %v, want CANCELED for watch %d", ev, ids[1])
	}
	rev = put("/m/a")
	if ev := recv(); ev.WatchId != ids[2] || ev.Revision != rev {
		t.Fatalf("after cancel got %v, want only the prefix watch's PUT at %d", ev, rev)
	}
	st, err := c.status(f)
	if err != nil || st.Watchers != 1 {
		t.Fatalf("node reports %d watchers (%v), want 1", st.GetWatchers(), err)
	}
}

// rawWatch reads a raw watch stream one response at a time.
type rawWatch struct {
	s       pb.Watch_WatchClient
	pending []*pb.WatchResponse
}

func (r *rawWatch) recv() (*pb.WatchResponse, error) {
	for len(r.pending) == 0 {
		b, err := r.s.Recv()
		if err != nil {
			return nil, err
		}
		r.pending = b.Responses
	}
	ev := r.pending[0]
	r.pending = r.pending[1:]
	return ev, nil
}
