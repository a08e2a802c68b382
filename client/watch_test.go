package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/raftwatch/raftwatch/proto"
)

// script is what a fake node plays for one create: server messages, each
// a list of responses. The node stamps the create's request_id on CREATED
// and on a refusal (a CANCELED before any CREATED), and its watch id on
// everything else.
type script func(c *pb.WatchCreate) [][]*pb.WatchResponse

// fakeNode serves the Watch service alone, over real TCP, from a script.
// It records every create and cancel it receives, answers a cancel with
// CANCELED, and keeps the stream open until the client ends it or the
// node is killed.
type fakeNode struct {
	pb.UnimplementedWatchServer
	t      *testing.T
	addr   string
	srv    *grpc.Server
	script script

	mu      sync.Mutex
	streams int
	creates []*pb.WatchCreate
	cancels []uint64
	nextID  uint64
	// onProgress, if set, answers a progress request for watch id.
	onProgress func(id uint64) *pb.WatchResponse
}

func startNode(t *testing.T, s script) *fakeNode {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeNode{t: t, addr: lis.Addr().String(), srv: grpc.NewServer(), script: s}
	pb.RegisterWatchServer(f.srv, f)
	go f.srv.Serve(lis)
	t.Cleanup(f.kill)
	return f
}

// kill stops the node abruptly: listener and connections closed, as when
// the process dies.
func (f *fakeNode) kill() { f.srv.Stop() }

func (f *fakeNode) Watch(stream pb.Watch_WatchServer) error {
	f.mu.Lock()
	f.streams++
	f.mu.Unlock()
	for {
		req, err := stream.Recv()
		if err != nil {
			return nil
		}
		switch r := req.Request.(type) {
		case *pb.WatchRequest_Create:
			f.mu.Lock()
			f.creates = append(f.creates, proto.Clone(r.Create).(*pb.WatchCreate))
			f.nextID++
			id := f.nextID
			f.mu.Unlock()
			answered := false
			for _, msg := range f.script(r.Create) {
				b := &pb.WatchBatch{}
				for _, resp := range msg {
					resp = proto.Clone(resp).(*pb.WatchResponse)
					switch {
					case resp.Type == pb.EventType_CREATED:
						resp.RequestId, resp.WatchId, answered = r.Create.RequestId, id, true
					case resp.Type == pb.EventType_CANCELED && !answered:
						resp.RequestId, answered = r.Create.RequestId, true
					case resp.Type == pb.EventType_PROGRESS && resp.WatchId == streamWide:
						resp.WatchId = 0 // a stream PROGRESS
					default:
						resp.WatchId = id
					}
					b.Responses = append(b.Responses, resp)
				}
				if err := stream.Send(b); err != nil {
					return nil
				}
			}
		case *pb.WatchRequest_Progress:
			f.mu.Lock()
			answer := f.onProgress
			f.mu.Unlock()
			if answer == nil {
				continue
			}
			if err := stream.Send(&pb.WatchBatch{Responses: []*pb.WatchResponse{answer(r.Progress.WatchId)}}); err != nil {
				return nil
			}
		case *pb.WatchRequest_Cancel:
			f.mu.Lock()
			f.cancels = append(f.cancels, r.Cancel.WatchId)
			f.mu.Unlock()
			err := stream.Send(&pb.WatchBatch{Responses: []*pb.WatchResponse{
				{Type: pb.EventType_CANCELED, WatchId: r.Cancel.WatchId, Reason: "canceled by the client"}}})
			if err != nil {
				return nil
			}
		}
	}
}

func (f *fakeNode) streamCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.streams
}

func (f *fakeNode) received() (creates []*pb.WatchCreate, cancels []uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*pb.WatchCreate(nil), f.creates...), append([]uint64(nil), f.cancels...)
}

// plays is a script that expects a create at start revision start and
// plays msgs for it.
func plays(t *testing.T, start uint64, msgs ...[]*pb.WatchResponse) script {
	return func(c *pb.WatchCreate) [][]*pb.WatchResponse {
		if c.StartRevision != start {
			t.Errorf("create with start_revision %d, want %d", c.StartRevision, start)
			return nil
		}
		return msgs
	}
}

func msg(rs ...*pb.WatchResponse) []*pb.WatchResponse { return rs }

func created(rev uint64) *pb.WatchResponse {
	return &pb.WatchResponse{Type: pb.EventType_CREATED, Revision: rev}
}

func put(rev uint64, key string) *pb.WatchResponse {
	return &pb.WatchResponse{Type: pb.EventType_PUT, Key: []byte(key), Value: []byte(fmt.Sprint(rev)), Revision: rev}
}

func progress(rev uint64) *pb.WatchResponse {
	return &pb.WatchResponse{Type: pb.EventType_PROGRESS, Revision: rev}
}

func canceled(reason string, code codes.Code, oldest uint64) *pb.WatchResponse {
	return &pb.WatchResponse{Type: pb.EventType_CANCELED, Reason: reason, Code: int32(code), CompactRevision: oldest}
}

// show is how the tests write an event: "PUT 6 /k/b", "PROGRESS 9",
// "CANCELED shutdown".
func show(r *pb.WatchResponse) string {
	switch r.Type {
	case pb.EventType_PUT, pb.EventType_DELETE:
		return fmt.Sprintf("%v %d %s", r.Type, r.Revision, r.Key)
	case pb.EventType_CANCELED:
		return "CANCELED " + r.Reason
	}
	return fmt.Sprintf("%v %d", r.Type, r.Revision)
}

func newClient(t *testing.T, nodes ...*fakeNode) *Client {
	t.Helper()
	var eps []string
	for _, n := range nodes {
		eps = append(eps, n.addr)
	}
	c, err := New(Config{Endpoints: eps, DialTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// testTimeout bounds every wait: a watch whose context ends makes Recv
// return io.EOF, so a test that would hang fails instead.
const testTimeout = 20 * time.Second

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func recvN(t *testing.T, w *Watcher, n int) []string {
	t.Helper()
	var got []string
	for len(got) < n {
		r, err := w.Recv()
		if err != nil {
			t.Fatalf("after %q: Recv: %v", got, err)
		}
		got = append(got, show(r))
	}
	return got
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWatchResumesGapFreeAndDuplicateFree(t *testing.T) {
	tests := []struct {
		name string
		// The watch opens on node A from now; node B is the next endpoint.
		a, b func(t *testing.T) script
		// killAfter: events read before A is killed (-1: A is not killed,
		// its script moves the watch).
		killAfter int
		want      []string
		wantStart uint64 // the start_revision B is asked for
	}{{
		name: "a revision split across messages resumes at that revision and drops the keys delivered at it",
		a: func(t *testing.T) script {
			return plays(t, 0, msg(created(4)), msg(put(5, "/k/a")), msg(put(6, "/k/a")))
		},
		b: func(t *testing.T) script {
			return plays(t, 6, msg(created(5)), msg(put(6, "/k/a")), msg(put(6, "/k/b"), put(7, "/k/a")), msg(progress(7)))
		},
		killAfter: 2,
		want:      []string{"PUT 5 /k/a", "PUT 6 /k/a", "PUT 6 /k/b", "PUT 7 /k/a", "PROGRESS 7"},
		wantStart: 6,
	}, {
		name: "after PROGRESS 9 the watch resumes at 10",
		a: func(t *testing.T) script {
			return plays(t, 0, msg(created(4)), msg(put(5, "/k/a")), msg(progress(9)))
		},
		b: func(t *testing.T) script {
			return plays(t, 10, msg(created(9)), msg(put(10, "/k/a"), progress(10)))
		},
		killAfter: 2,
		want:      []string{"PUT 5 /k/a", "PROGRESS 9", "PUT 10 /k/a", "PROGRESS 10"},
		wantStart: 10,
	}, {
		name: "an event above a revision closes it: resume after it",
		a: func(t *testing.T) script {
			return plays(t, 0, msg(created(4)), msg(put(5, "/k/a"), put(5, "/k/b")), msg(put(8, "/k/a")))
		},
		b: func(t *testing.T) script {
			return plays(t, 8, msg(created(7)), msg(put(8, "/k/a"), put(9, "/k/a"), progress(9)))
		},
		killAfter: 3,
		want:      []string{"PUT 5 /k/a", "PUT 5 /k/b", "PUT 8 /k/a", "PUT 9 /k/a", "PROGRESS 9"},
		wantStart: 8,
	}, {
		name: "a PROGRESS below what was delivered is dropped after resume",
		a: func(t *testing.T) script {
			return plays(t, 0, msg(created(4)), msg(put(5, "/k/a"), put(6, "/k/a")))
		},
		b: func(t *testing.T) script {
			return plays(t, 6, msg(created(5)), msg(progress(4)), msg(put(6, "/k/a"), progress(6)), msg(put(7, "/k/a")))
		},
		killAfter: 2,
		want:      []string{"PUT 5 /k/a", "PUT 6 /k/a", "PROGRESS 6", "PUT 7 /k/a"},
		wantStart: 6,
	}, {
		name: "events a node repeats from before the position are dropped",
		a: func(t *testing.T) script {
			return plays(t, 0, msg(created(4)), msg(put(5, "/k/a")), msg(put(6, "/k/a"), progress(6)))
		},
		b: func(t *testing.T) script {
			return plays(t, 7, msg(created(6)), msg(put(4, "/k/z"), put(5, "/k/a"), put(6, "/k/a"), put(7, "/k/a")))
		},
		killAfter: 3,
		want:      []string{"PUT 5 /k/a", "PUT 6 /k/a", "PROGRESS 6", "PUT 7 /k/a"},
		wantStart: 7,
	}, {
		name: "CANCELED shutdown moves the watch to the next node",
		a: func(t *testing.T) script {
			return plays(t, 0, msg(created(4)), msg(put(5, "/k/a"), canceled("shutdown", codes.Unavailable, 0)))
		},
		b: func(t *testing.T) script {
			return plays(t, 5, msg(created(4)), msg(put(5, "/k/a"), put(6, "/k/a")))
		},
		killAfter: -1,
		want:      []string{"PUT 5 /k/a", "PUT 6 /k/a"},
		wantStart: 5,
	}, {
		name: "CANCELED no leader (UNAVAILABLE) moves the watch to the next node",
		a: func(t *testing.T) script {
			return plays(t, 0, msg(created(4)), msg(progress(5), canceled("no leader", codes.Unavailable, 0)))
		},
		b: func(t *testing.T) script {
			return plays(t, 6, msg(created(5)), msg(put(6, "/k/a")))
		},
		killAfter: -1,
		want:      []string{"PROGRESS 5", "PUT 6 /k/a"},
		wantStart: 6,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := startNode(t, tc.a(t)), startNode(t, tc.b(t))
			w, err := newClient(t, a, b).Watch(ctxT(t), []byte("/k/"), WithPrefix())
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			if tc.killAfter >= 0 {
				got = recvN(t, w, tc.killAfter)
				a.kill()
			}
			got = append(got, recvN(t, w, len(tc.want)-len(got))...)
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Fatalf("consumer saw\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			if creates, _ := b.received(); len(creates) != 1 || creates[0].StartRevision != tc.wantStart || !creates[0].Prefix {
				t.Fatalf("node B got creates %v, want one for the prefix at start_revision %d", creates, tc.wantStart)
			}
			if n := w.Resumes(); n != 1 {
				t.Fatalf("Resumes() = %d, want 1", n)
			}
			if w.Created() != 4 {
				t.Fatalf("Created() = %d after resume, want the first CREATED's 4", w.Created())
			}
		})
	}
}

func TestWatchesOfABrokenStreamShareOneNewStream(t *testing.T) {
	const watches = 50
	a := startNode(t, plays(t, 0, msg(created(4))))
	b := startNode(t, plays(t, 5, msg(created(4)), msg(put(5, "/k"))))
	c := newClient(t, a, b)
	var ws []*Watcher
	for range watches {
		w, err := c.Watch(ctxT(t), []byte("/k"))
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	if n := a.streamCount(); n != 1 {
		t.Fatalf("%d watches opened %d streams, want 1", watches, n)
	}
	a.kill()
	for i, w := range ws {
		if got := recvN(t, w, 1); got[0] != "PUT 5 /k" {
			t.Fatalf("watch %d saw %q", i, got)
		}
	}
	if n := b.streamCount(); n != 1 {
		t.Fatalf("%d resumed watches opened %d streams, want 1", watches, n)
	}
}

func TestCompactionEndsTheWatch(t *testing.T) {
	tests := []struct {
		name      string
		a, b      func(t *testing.T) script
		killAfter int
		want      []string // the events, the CANCELED last
	}{{
		name: "CANCELED with compact_revision on a live watch",
		a: func(t *testing.T) script {
			return plays(t, 0, msg(created(4)), msg(put(5, "/k"), canceled("compacted", codes.OutOfRange, 50)))
		},
		b:         func(t *testing.T) script { return plays(t, 0) },
		killAfter: -1,
		want:      []string{"PUT 5 /k", "CANCELED compacted"},
	}, {
		name: "the resumed create refused with OUT_OF_RANGE",
		a: func(t *testing.T) script {
			return plays(t, 0, msg(created(4)), msg(put(5, "/k")))
		},
		b: func(t *testing.T) script {
			return plays(t, 5, msg(canceled("revision 5 has been compacted", codes.OutOfRange, 50)))
		},
		killAfter: 1,
		want:      []string{"PUT 5 /k", "CANCELED revision 5 has been compacted"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := startNode(t, tc.a(t)), startNode(t, tc.b(t))
			w, err := newClient(t, a, b).Watch(ctxT(t), []byte("/k"))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			if tc.killAfter >= 0 {
				got = recvN(t, w, tc.killAfter)
				a.kill()
			}
			got = append(got, recvN(t, w, len(tc.want)-len(got))...)
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Fatalf("consumer saw %q, want %q", got, tc.want)
			}
			_, err = w.Recv()
			var ce *CompactedError
			if !errors.As(err, &ce) || ce.Oldest != 50 || !errors.Is(err, ErrCompacted) {
				t.Fatalf("Recv after the CANCELED: %v, want *CompactedError{Oldest: 50}", err)
			}
			if _, err := w.Recv(); !errors.As(err, &ce) {
				t.Fatalf("Recv again: %v, want the same *CompactedError", err)
			}
		})
	}

	t.Run("a first create refused with OUT_OF_RANGE fails Watch", func(t *testing.T) {
		a := startNode(t, plays(t, 3, msg(canceled("revision 3 has been compacted", codes.OutOfRange, 50))))
		_, err := newClient(t, a).Watch(ctxT(t), []byte("/k"), WithStartRevision(3))
		var ce *CompactedError
		if !errors.As(err, &ce) || ce.Oldest != 50 {
			t.Fatalf("Watch: %v, want *CompactedError{Oldest: 50}", err)
		}
	})
}

func TestWatchOptionsReachTheServer(t *testing.T) {
	a := startNode(t, func(c *pb.WatchCreate) [][]*pb.WatchResponse {
		if c.StartRevision == 0 {
			return [][]*pb.WatchResponse{msg(created(100))}
		}
		// A node may send events from before the start; the client drops them.
		return [][]*pb.WatchResponse{msg(created(41)), msg(put(40, "/cfg/x"), put(42, "/cfg/x"), progress(42))}
	})
	c := newClient(t, a)
	w, err := c.Watch(ctxT(t), []byte("/cfg/"), WithPrefix(), WithPrevKV(), WithStartRevision(42), WithRequireLeader())
	if err != nil {
		t.Fatal(err)
	}
	if got := recvN(t, w, 2); strings.Join(got, ",") != "PUT 42 /cfg/x,PROGRESS 42" {
		t.Fatalf("consumer saw %q, want the events from revision 42 on", got)
	}
	if _, err := c.Watch(ctxT(t), []byte("/now")); err != nil {
		t.Fatal(err)
	}
	creates, _ := a.received()
	if len(creates) != 2 {
		t.Fatalf("node got %d creates, want 2", len(creates))
	}
	if got := creates[0]; string(got.Key) != "/cfg/" || !got.Prefix || !got.PrevKv || got.StartRevision != 42 || !got.RequireLeader {
		t.Fatalf("create with options = %v, want prefix, prev_kv, start_revision 42, require_leader", got)
	}
	if got := creates[1]; got.StartRevision != 0 || got.RequireLeader || got.Prefix || got.PrevKv {
		t.Fatalf("create without options = %v, want a plain watch from now", got)
	}
}

// The slow watch's history: 500 revisions of two keys each, played 49
// responses a message, so revisions split across messages.
const (
	slowRevisions = 500
	slowPerMsg    = 49
	slowBound     = 100
)

func slowHistory(c *pb.WatchCreate) [][]*pb.WatchResponse {
	start := max(c.StartRevision, 1)
	out := [][]*pb.WatchResponse{msg(created(start - 1))}
	var cur []*pb.WatchResponse
	for rev := start; rev <= slowRevisions; rev++ {
		for _, k := range []string{"/slow/a", "/slow/b"} {
			if cur = append(cur, put(rev, k)); len(cur) == slowPerMsg {
				out, cur = append(out, cur), nil
			}
		}
	}
	return append(out, cur)
}

func TestSlowConsumerParksItsWatchOnlyAndLosesNothing(t *testing.T) {
	a := startNode(t, func(c *pb.WatchCreate) [][]*pb.WatchResponse {
		if string(c.Key) == "/other" {
			return [][]*pb.WatchResponse{msg(created(0)), msg(put(1, "/other"))}
		}
		return slowHistory(c)
	})
	c := newClient(t, a)
	slow, err := c.Watch(ctxT(t), []byte("/slow/"), WithPrefix(), WithWatchBufferSize(slowBound))
	if err != nil {
		t.Fatal(err)
	}
	// The consumer does not read: the queue fills to its bound, then the
	// watch is parked and its server watch canceled.
	eventually(t, "the slow watch to be parked", func() bool {
		_, cancels := a.received()
		return len(cancels) == 1
	})
	if n := slow.queued(); n != slowBound {
		t.Fatalf("%d responses queued, want the bound %d", n, slowBound)
	}
	// The stream still serves the other watches on it.
	other, err := c.Watch(ctxT(t), []byte("/other"))
	if err != nil {
		t.Fatal(err)
	}
	if got := recvN(t, other, 1); got[0] != "PUT 1 /other" {
		t.Fatalf("other watch saw %q", got)
	}
	if n := slow.queued(); n != slowBound {
		t.Fatalf("%d responses queued while parked, want %d", n, slowBound)
	}
	// Reading again brings every event, in order, once.
	for i := 0; i < 2*slowRevisions; i++ {
		r, err := slow.Recv()
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		want := fmt.Sprintf("PUT %d /slow/%c", i/2+1, "ab"[i%2])
		if got := show(r); got != want {
			t.Fatalf("event %d is %q, want %q", i, got, want)
		}
		if n := slow.queued(); n > slowBound {
			t.Fatalf("%d responses queued, over the bound %d", n, slowBound)
		}
	}
	creates, _ := a.received()
	if slow.Resumes() == 0 || creates[len(creates)-1].StartRevision == 0 {
		t.Fatalf("Resumes() = %d, last create %v: want the slow watch resumed from its position", slow.Resumes(), creates[len(creates)-1])
	}
}

// goroutines counts the goroutines whose stack holds fn.
func goroutines(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			count++
		}
	}
	return count
}

const (
	resumeLoop = "client.(*Watcher).resume("
	muxReader  = "client.(*watchMux).read("
)

func TestEndingAWatchStopsItsResumeLoop(t *testing.T) {
	base := runtime.NumGoroutine()
	ends := []struct {
		name string
		end  func(w *Watcher, cancel context.CancelFunc)
	}{
		{"context canceled", func(_ *Watcher, cancel context.CancelFunc) { cancel() }},
		{"Close", func(w *Watcher, _ context.CancelFunc) { w.Close() }},
	}
	for _, e := range ends {
		t.Run(e.name+" while every node is down", func(t *testing.T) {
			a := startNode(t, plays(t, 0, msg(created(4)), msg(put(5, "/k"))))
			b := startNode(t, plays(t, 5))
			c := newClient(t, a, b)
			ctx, cancel := context.WithCancel(ctxT(t))
			w, err := c.Watch(ctx, []byte("/k"))
			if err != nil {
				t.Fatal(err)
			}
			recvN(t, w, 1)
			b.kill()
			a.kill()
			eventually(t, "the watch to look for a node", func() bool { return goroutines(resumeLoop) == 1 })
			e.end(w, cancel)
			if _, err := w.Recv(); err != io.EOF {
				t.Fatalf("Recv after the end: %v, want io.EOF", err)
			}
			eventually(t, "the resume loop to return", func() bool { return goroutines(resumeLoop) == 0 })
			c.Close()
		})
	}
	t.Run("Close while attached cancels the server watch", func(t *testing.T) {
		a := startNode(t, plays(t, 0, msg(created(4))))
		c := newClient(t, a)
		w, err := c.Watch(ctxT(t), []byte("/k"))
		if err != nil {
			t.Fatal(err)
		}
		w.Close()
		if _, err := w.Recv(); err != io.EOF {
			t.Fatalf("Recv after Close: %v, want io.EOF", err)
		}
		eventually(t, "the node to get the cancel", func() bool {
			_, cancels := a.received()
			return len(cancels) == 1
		})
		c.Close()
		a.kill()
	})
	t.Run("Client.Close ends its watches and streams", func(t *testing.T) {
		a := startNode(t, plays(t, 0, msg(created(4))))
		c := newClient(t, a)
		w, err := c.Watch(ctxT(t), []byte("/k"))
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		if _, err := w.Recv(); status.Code(err) != codes.Canceled {
			t.Fatalf("Recv after Client.Close: %v, want Canceled", err)
		}
		eventually(t, "the stream reader to return", func() bool { return goroutines(muxReader) == 0 })
		a.kill()
	})
	eventually(t, fmt.Sprintf("goroutines back to %d", base), func() bool { return runtime.NumGoroutine() <= base })
}

func TestPosition(t *testing.T) {
	tests := []struct {
		name       string
		delivered  []*pb.WatchResponse // after a watch starting after revision 4
		next       *pb.WatchResponse
		fresh      bool
		wantResume uint64
	}{
		{"a new watch resumes after its start", nil, put(4, "/a"), false, 5},
		{"an open revision resumes at itself", []*pb.WatchResponse{put(6, "/a")}, put(6, "/b"), true, 6},
		{"a key delivered at the open revision is a repeat", []*pb.WatchResponse{put(6, "/a")}, put(6, "/a"), false, 6},
		{"a PROGRESS closes the revision", []*pb.WatchResponse{put(6, "/a"), progress(6)}, put(6, "/b"), false, 7},
		{"a later event closes the revision", []*pb.WatchResponse{put(6, "/a"), put(7, "/a")}, put(6, "/b"), false, 7},
		{"a PROGRESS below the position is stale", []*pb.WatchResponse{progress(9)}, progress(8), false, 10},
		{"a PROGRESS at the position is news", []*pb.WatchResponse{put(9, "/a")}, progress(9), true, 9},
		{"every key of an open revision is remembered", []*pb.WatchResponse{put(6, "/a"), put(6, "/b"), put(6, "/c")}, put(6, "/b"), false, 6},
		{"the first key of an open revision is remembered", []*pb.WatchResponse{put(6, "/a"), put(6, "/b"), put(6, "/c")}, put(6, "/a"), false, 6},
		{"an unseen key of an open revision is news", []*pb.WatchResponse{put(6, "/a"), put(6, "/b")}, put(6, "/d"), true, 6},
		{"a new revision forgets the keys of the last", []*pb.WatchResponse{put(6, "/a"), put(6, "/b"), put(7, "/c")}, put(7, "/a"), true, 7},
		{"a new revision remembers its own keys", []*pb.WatchResponse{put(6, "/a"), put(6, "/b"), put(7, "/c"), put(7, "/b")}, put(7, "/c"), false, 7},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := startingAfter(4)
			for _, r := range tc.delivered {
				if !p.fresh(r) {
					t.Fatalf("%s not fresh", show(r))
				}
				p.record(r)
			}
			if got := p.fresh(tc.next); got != tc.fresh {
				t.Fatalf("fresh(%s) = %v, want %v", show(tc.next), got, tc.fresh)
			}
			if got := p.resumeAt(); got != tc.wantResume {
				t.Fatalf("resumeAt() = %d, want %d", got, tc.wantResume)
			}
		})
	}
}

// A node that stops answering without closing the connection (paused,
// or cut off without a reset) is left: the watch asks for progress, gets
// none, and resumes on the next endpoint within watchSilence.
func TestSilentStreamResumesElsewhere(t *testing.T) {
	a := startNode(t, plays(t, 0, msg(created(4)), msg(put(5, "/k/a"), progress(5))))
	b := startNode(t, plays(t, 6, msg(created(5)), msg(put(6, "/k/a"))))
	c := newClient(t, a, b)
	w, err := c.Watch(ctxT(t), []byte("/k/"), WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	start := time.Now()
	got := recvN(t, w, 3)
	if want := []string{"PUT 5 /k/a", "PROGRESS 5", "PUT 6 /k/a"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("got %q, want %q", got, want)
	}
	if d := time.Since(start); d < watchQuiet || d > watchSilence+3*time.Second {
		t.Fatalf("resumed after %v, want between %v and about %v", d, watchQuiet, watchSilence)
	}
	if w.Resumes() != 1 {
		t.Fatalf("Resumes() = %d, want 1", w.Resumes())
	}
}

// A node that starts a watch elsewhere than the start_revision asked (a
// version that ignores the field starts from now) is not trusted: the
// watch goes to the next node, and nothing is skipped.
func TestCreatedAtTheWrongRevisionIsRefused(t *testing.T) {
	a := startNode(t, func(c *pb.WatchCreate) [][]*pb.WatchResponse {
		return [][]*pb.WatchResponse{msg(created(9)), msg(put(10, "/k"))}
	})
	b := startNode(t, plays(t, 6, msg(created(5)), msg(put(6, "/k"), put(10, "/k"))))
	c := newClient(t, a, b)
	w, err := c.Watch(ctxT(t), []byte("/k"), WithStartRevision(6))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if got := recvN(t, w, 2); strings.Join(got, ",") != "PUT 6 /k,PUT 10 /k" {
		t.Fatalf("got %q, want PUT 6 then PUT 10 from the node that honoured the start", got)
	}
	eventually(t, "the orphan watch on the first node to be canceled", func() bool {
		_, cancels := a.received()
		return len(cancels) == 1
	})
}

// With no endpoint reachable, opening a watch fails within the dial
// timeout and names every endpoint tried, as the other calls do.
func TestWatchWithNoReachableEndpointFailsFast(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	c, err := New(Config{Endpoints: []string{dead, dead}, DialTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_, err = c.Watch(context.Background(), []byte("/k"))
	var ue *UnreachableError
	if !errors.As(err, &ue) || len(ue.Tried) != 2 {
		t.Fatalf("Watch: %v, want an UnreachableError naming both endpoints", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Watch failed after %v, want about the dial timeout", d)
	}
}
