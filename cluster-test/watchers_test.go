package main

import (
	"context"
	"net"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftwatch/raftwatch/cluster-test/checker"
	"github.com/raftwatch/raftwatch/cluster-test/history"
	pb "github.com/raftwatch/raftwatch/proto"
)

func TestResumePointDropsOnlyWhatWasDelivered(t *testing.T) {
	type step struct {
		kind string // "ev" or "bm"
		rev  uint64
		key  string
		want bool   // ev: delivered
		next uint64 // next() after the step
	}
	tests := []struct {
		name  string
		start uint64 // 0: from now
		steps []step
	}{
		{"from now: the first bookmark starts the watch", 0, []step{
			{"bm", 4, "", false, 5}, {"ev", 5, "a", true, 5}, {"ev", 5, "b", true, 5}, {"ev", 6, "a", true, 6}, {"bm", 6, "", false, 7}}},
		{"mid-revision resume: keys already delivered at that revision are dropped, the others kept", 3, []step{
			{"ev", 3, "a", true, 3}, {"ev", 3, "a", false, 3}, {"ev", 3, "b", true, 3}, {"ev", 4, "a", true, 4}}},
		{"anything below the point is a duplicate", 3, []step{
			{"ev", 5, "a", true, 5}, {"ev", 4, "z", false, 5}, {"ev", 2, "a", false, 5}}},
		{"a revision a bookmark completed is not reopened", 3, []step{
			{"ev", 5, "a", true, 5}, {"bm", 5, "", false, 6}, {"ev", 5, "b", false, 6}}},
		{"a bookmark below the point does not move it back", 3, []step{
			{"ev", 5, "a", true, 5}, {"bm", 4, "", false, 5}, {"ev", 5, "b", true, 5}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var p resumePoint
			if tc.start > 0 {
				p = startAt(tc.start)
				if p.next() != tc.start {
					t.Fatalf("next %d after startAt(%d)", p.next(), tc.start)
				}
			}
			for i, s := range tc.steps {
				if s.kind == "bm" {
					p.bookmark(s.rev)
				} else if got := p.event(s.rev, s.key); got != s.want {
					t.Fatalf("step %d: event(%d, %s) delivered=%v, want %v", i, s.rev, s.key, got, s.want)
				}
				if p.next() != s.next {
					t.Fatalf("step %d: next %d, want %d", i, p.next(), s.next)
				}
			}
		})
	}
}

// fakeEvent is one event of fakeLog.
type fakeEvent struct {
	rev         uint64
	key         string
	del         bool
	value, prev string
}

// fakeLog: k0=a at 2; k0=b and k1=x share 3; k0 deleted at 4; k1=y at 5;
// k0=c and k1=z share 6.
var fakeLog = []fakeEvent{
	{2, "/jepsen/k0", false, "a", ""},
	{3, "/jepsen/k0", false, "b", "a"}, {3, "/jepsen/k1", false, "x", ""},
	{4, "/jepsen/k0", true, "", "b"},
	{5, "/jepsen/k1", false, "y", "x"},
	{6, "/jepsen/k0", false, "c", ""}, {6, "/jepsen/k1", false, "z", "y"},
}

func fakeReplay(t *testing.T) *checker.Replay {
	t.Helper()
	log := &checker.Log{FirstIndex: 1, Entries: []checker.LogEntry{{Index: 1, Type: "noop"}}}
	for _, e := range fakeLog {
		if n := len(log.Entries); log.Entries[n-1].Index != e.rev {
			log.Entries = append(log.Entries, checker.LogEntry{Index: e.rev, Type: "command"})
		}
		op := checker.LogOp{Kind: checker.LogPut, Key: e.key, Value: e.value}
		if e.del {
			op = checker.LogOp{Kind: checker.LogDelete, Key: e.key}
		}
		last := &log.Entries[len(log.Entries)-1]
		last.Ops = append(last.Ops, op)
	}
	rp, err := checker.NewReplay(log)
	if err != nil {
		t.Fatal(err)
	}
	return rp
}

// fakeNode serves Watch and Cluster.Status over fakeLog, all of it committed
// already, one event per message, and misbehaves as configured.
type fakeNode struct {
	pb.UnimplementedWatchServer
	pb.UnimplementedClusterServer
	breakAfter int    // end every stream with UNAVAILABLE after this many events (0: never)
	refuse     bool   // end every stream with UNAVAILABLE before CREATED
	oldest     uint64 // refuse a start_revision below it with a compaction CANCELED

	mu       sync.Mutex
	creates  []*pb.WatchCreate
	progress atomic.Int64 // PROGRESS messages sent
}

// Status: a commit index of 1, so a past start is always revision 1.
func (f *fakeNode) Status(context.Context, *pb.StatusRequest) (*pb.StatusResponse, error) {
	return &pb.StatusResponse{CommitIndex: 1}, nil
}

func (f *fakeNode) startRevisions() []uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []uint64
	for _, c := range f.creates {
		out = append(out, c.StartRevision)
	}
	return out
}

func (f *fakeNode) Watch(st pb.Watch_WatchServer) error {
	req, err := st.Recv()
	if err != nil {
		return err
	}
	c := req.GetCreate()
	f.mu.Lock()
	f.creates = append(f.creates, c)
	f.mu.Unlock()
	if f.refuse {
		return status.Error(codes.Unavailable, "refused")
	}
	send := func(r *pb.WatchResponse) error { return st.Send(&pb.WatchBatch{Responses: []*pb.WatchResponse{r}}) }
	last := fakeLog[len(fakeLog)-1].rev
	start := c.StartRevision
	if start == 0 {
		start = last + 1
	}
	if start < f.oldest {
		if err := send(&pb.WatchResponse{Type: pb.EventType_CANCELED, RequestId: c.RequestId, Reason: "compacted",
			Code: int32(codes.OutOfRange), CompactRevision: f.oldest}); err != nil {
			return err
		}
		for { // a refused create leaves the stream open
			if _, err := st.Recv(); err != nil {
				return nil
			}
		}
	}
	if err := send(&pb.WatchResponse{Type: pb.EventType_CREATED, Revision: start - 1, WatchId: 1, RequestId: c.RequestId}); err != nil {
		return err
	}
	sent := 0
	for _, e := range fakeLog {
		if e.rev < start || !(e.key == string(c.Key) || c.Prefix && strings.HasPrefix(e.key, string(c.Key))) {
			continue
		}
		r := &pb.WatchResponse{Type: pb.EventType_PUT, Key: []byte(e.key), Value: []byte(e.value), Revision: e.rev, WatchId: 1}
		if e.del {
			r.Type, r.Value = pb.EventType_DELETE, nil
		}
		if c.PrevKv {
			r.PrevValue = []byte(e.prev)
		}
		if err := send(r); err != nil {
			return err
		}
		if sent++; sent == f.breakAfter {
			return status.Error(codes.Unavailable, "injected break")
		}
	}
	for {
		req, err := st.Recv()
		if err != nil {
			return nil
		}
		if req.GetProgress() != nil {
			if err := send(&pb.WatchResponse{Type: pb.EventType_PROGRESS, Revision: max(last, start-1), WatchId: 1}); err != nil {
				return err
			}
			f.progress.Add(1)
		}
	}
}

// serveFakes starts each fake node on loopback and returns connections to
// them.
func serveFakes(t *testing.T, nodes map[string]*fakeNode) map[string]*grpc.ClientConn {
	t.Helper()
	conns := map[string]*grpc.ClientConn{}
	for id, f := range nodes {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s := grpc.NewServer()
		pb.RegisterWatchServer(s, f)
		pb.RegisterClusterServer(s, f)
		go s.Serve(lis)
		t.Cleanup(s.Stop)
		cc, err := grpc.NewClient(lis.Addr().String(), dialOptions()...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		conns[id] = cc
	}
	return conns
}

// runWatchers runs specs against the fakes until done reports true (asking
// for progress meanwhile) or the run ends by itself, and returns the
// recorded watches.
func runWatchers(t *testing.T, nodes map[string]*fakeNode, specs []watchSpec, done func() bool) []checker.Watch {
	t.Helper()
	var ids []string
	for id := range nodes {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	out := t.TempDir()
	ws := &watchers{start: time.Now(), specs: specs, nodes: ids, conns: serveFakes(t, nodes), out: out, seed: 1}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := ws.startAll(ctx); err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() { ended <- ws.wait() }()
	deadline := time.After(20 * time.Second)
	for stop := false; !stop; {
		select {
		case err := <-ended:
			if err != nil {
				t.Fatal(err)
			}
			ended <- nil
			stop = true
		case <-deadline:
			t.Fatal("the watchers did not get there within 20s")
		case <-time.After(100 * time.Millisecond):
			ws.requestProgress()
			stop = done != nil && done()
		}
	}
	cancel()
	if err := <-ended; err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(out, "watch-*.jsonl"))
	sort.Strings(files)
	var msgs []history.WatchMsg
	for _, f := range files {
		ms, err := history.ReadFile[history.WatchMsg](f)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, ms...)
	}
	return checker.GroupWatches(msgs)
}

func equalRevs(a []uint64, b ...uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestWatchersResumeMidRevisionWithoutGapOrDuplicate(t *testing.T) {
	nodes := map[string]*fakeNode{"n1": {breakAfter: 2}, "n2": {breakAfter: 3}, "n3": {}}
	specs := []watchSpec{
		{id: 0, home: "n1", key: "/jepsen/", prefix: true, prevKV: true, roaming: true, pastStart: true},
		{id: 1, home: "n1", key: "/jepsen/k0", prevKV: true, pastStart: true},
	}
	watches := runWatchers(t, nodes, specs, func() bool {
		return nodes["n3"].progress.Load() > 0 && nodes["n1"].progress.Load() > 0
	})
	res := checker.CheckWatch(watches, fakeReplay(t), nil)
	if !res.Valid {
		t.Fatalf("checker: %s %+v", res.Detail, res.Violations)
	}
	// Roaming: n1 from 1 breaks after k0@2, k0@3 (3 incomplete); n2 from 3
	// (k0@3 dropped) breaks after k1@3, k0@4; n3 from 4 (k0@4 dropped).
	// Sticky exact key: n1 from 1, 3, 4, 6, dropping k0 at 3, 4 and 6.
	got := map[string][]uint64{}
	for id, f := range nodes {
		got[id] = f.startRevisions()
	}
	sort.Slice(got["n1"], func(i, j int) bool { return got["n1"][i] < got["n1"][j] })
	if !equalRevs(got["n1"], 1, 1, 3, 4, 6) || !equalRevs(got["n2"], 3) || !equalRevs(got["n3"], 4) {
		t.Fatalf("start revisions per node %v", got)
	}
	w0, w1 := res.PerWatch[0], res.PerWatch[1]
	if w0.Resumes != 2 || w0.Dropped != 2 || w0.Events != 7 || w0.PerNode["n3"] != 1 {
		t.Errorf("roaming watch %+v", w0)
	}
	if w1.Resumes != 3 || w1.Dropped != 3 || w1.Events != 4 || w1.PerNode["n1"] != 4 {
		t.Errorf("sticky watch %+v", w1)
	}
}

func TestWatchersMoveOnAfterAFailedAttempt(t *testing.T) {
	nodes := map[string]*fakeNode{"n1": {refuse: true}, "n2": {}}
	specs := []watchSpec{{id: 0, home: "n1", key: "/jepsen/k0", pastStart: true}}
	watches := runWatchers(t, nodes, specs, func() bool { return nodes["n2"].progress.Load() > 0 })
	res := checker.CheckWatch(watches, fakeReplay(t), nil)
	if !res.Valid {
		t.Fatalf("checker: %s %+v", res.Detail, res.Violations)
	}
	if got := nodes["n2"].startRevisions(); len(got) != 1 || got[0] != 1 || len(nodes["n1"].startRevisions()) != 1 {
		t.Fatalf("n1 tried %v, n2 %v: want one refused attempt on n1, then n2 from revision 1", nodes["n1"].startRevisions(), got)
	}
}

func TestWatchersEndTheWatchAtCompaction(t *testing.T) {
	nodes := map[string]*fakeNode{"n1": {oldest: 5}}
	specs := []watchSpec{{id: 0, home: "n1", key: "/jepsen/", prefix: true, pastStart: true}}
	watches := runWatchers(t, nodes, specs, nil) // ends by itself
	res := checker.CheckWatch(watches, fakeReplay(t), nil)
	if !res.Valid || res.Compacted != 1 || res.PerWatch[0].Ended != checker.EndCompacted {
		t.Fatalf("valid=%v compacted=%d: %s %+v", res.Valid, res.Compacted, res.Detail, res.PerWatch)
	}
	if got := nodes["n1"].startRevisions(); len(got) != 1 {
		t.Fatalf("creates after the compaction: %v", got)
	}
}

func TestWatchResumesLineGivesTotalsByFaultAndPerWatch(t *testing.T) {
	r := checker.WatchResult{Resumes: 3, Dropped: 2, Compacted: 1,
		ResumesByFault: map[string]int{"pause-leader": 1, "kill-one": 2},
		PerWatch:       []checker.WatchSummary{{ID: 0, Resumes: 3}, {ID: 4, Ended: checker.EndCompacted}}}
	want := "resumes: 3 (by fault: kill-one=2 pause-leader=1; per watch: w0=3 w4=0(ended: compacted)), raw duplicates dropped: 2, ended by compaction: 1"
	if got := watchResumes(r); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}
