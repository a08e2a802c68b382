package client

import (
	"runtime"
	"strings"
	"testing"
	"time"

	pb "github.com/raftwatch/raftwatch/proto"
)

// streamWide marks a PROGRESS in a fake node's script as a stream PROGRESS:
// the node sends it with watch_id 0.
const streamWide = ^uint64(0)

func streamProgress(rev uint64) *pb.WatchResponse {
	return &pb.WatchResponse{Type: pb.EventType_PROGRESS, Revision: rev, WatchId: streamWide}
}

// byKey is a script playing, for each key's create, its own messages.
func byKey(t *testing.T, start uint64, plays map[string][][]*pb.WatchResponse) script {
	return func(c *pb.WatchCreate) [][]*pb.WatchResponse {
		if c.StartRevision != start {
			t.Errorf("create of %s with start_revision %d, want %d", c.Key, c.StartRevision, start)
			return nil
		}
		return plays[string(c.Key)]
	}
}

// A stream PROGRESS (watch_id 0) is the PROGRESS of every watch on the
// stream: each consumer sees it, and each watch resumes after it.
func TestStreamProgressAdvancesEveryWatch(t *testing.T) {
	a := startNode(t, byKey(t, 0, map[string][][]*pb.WatchResponse{
		"/a": {msg(created(4))},
		"/b": {msg(created(4)), msg(put(5, "/b"), streamProgress(7))},
	}))
	b := startNode(t, byKey(t, 8, map[string][][]*pb.WatchResponse{
		"/a": {msg(created(7)), msg(put(8, "/a"))},
		"/b": {msg(created(7)), msg(put(8, "/b"))},
	}))
	c := newClient(t, a, b)
	wa, err := c.Watch(ctxT(t), []byte("/a"))
	if err != nil {
		t.Fatal(err)
	}
	wb, err := c.Watch(ctxT(t), []byte("/b"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(recvN(t, wa, 1), ","); got != "PROGRESS 7" {
		t.Fatalf("watch /a saw %q, want the stream PROGRESS 7", got)
	}
	if got := strings.Join(recvN(t, wb, 2), ","); got != "PUT 5 /b,PROGRESS 7" {
		t.Fatalf("watch /b saw %q, want PUT 5 then the stream PROGRESS 7", got)
	}
	creates, _ := a.received()
	for _, cr := range creates {
		if !cr.StreamProgress {
			t.Fatalf("create %v does not ask for stream progress", cr)
		}
	}
	a.kill() // both resume after the stream PROGRESS: at 8 (byKey checks)
	if got := recvN(t, wa, 1); got[0] != "PUT 8 /a" {
		t.Fatalf("watch /a after resume saw %q", got)
	}
	if got := recvN(t, wb, 1); got[0] != "PUT 8 /b" {
		t.Fatalf("watch /b after resume saw %q", got)
	}
}

// A stream PROGRESS that arrives before a watch's CREATED is not that
// watch's: it covers only the watches created before it.
func TestStreamProgressSkipsAWatchStillCreating(t *testing.T) {
	a := startNode(t, byKey(t, 0, map[string][][]*pb.WatchResponse{
		"/a": {msg(created(4))},
		"/c": {msg(streamProgress(6)), msg(created(4)), msg(put(5, "/c"), progress(5))},
	}))
	c := newClient(t, a)
	wa, err := c.Watch(ctxT(t), []byte("/a"))
	if err != nil {
		t.Fatal(err)
	}
	wc, err := c.Watch(ctxT(t), []byte("/c"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(recvN(t, wa, 1), ","); got != "PROGRESS 6" {
		t.Fatalf("watch /a saw %q, want the stream PROGRESS 6", got)
	}
	if got := strings.Join(recvN(t, wc, 2), ","); got != "PUT 5 /c,PROGRESS 5" {
		t.Fatalf("watch /c saw %q, want PUT 5 and its own PROGRESS 5 (not the stream PROGRESS sent before its CREATED)", got)
	}
}

// PROGRESS responses the consumer has not taken are coalesced: the newest
// replaces an older one queued last, so a watch nobody reads holds one
// PROGRESS, not one per heartbeat; events are never replaced.
func TestUnreadProgressIsCoalesced(t *testing.T) {
	a := startNode(t, byKey(t, 0, map[string][][]*pb.WatchResponse{
		"/a": {msg(created(4)), msg(streamProgress(5)), msg(streamProgress(6), streamProgress(7)), msg(put(8, "/a")),
			msg(progress(8)), msg(streamProgress(9))},
	}))
	c := newClient(t, a)
	w, err := c.Watch(ctxT(t), []byte("/a"))
	if err != nil {
		t.Fatal(err)
	}
	// The CREATED is not queued; wait for the last PROGRESS to arrive.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.HasSuffix(strings.Join(peekQueue(w), ","), "PROGRESS 9") {
		if time.Now().After(deadline) {
			t.Fatalf("queue is %v, want it to end with PROGRESS 9", peekQueue(w))
		}
		time.Sleep(time.Millisecond)
	}
	if got := strings.Join(peekQueue(w), ","); got != "PROGRESS 7,PUT 8 /a,PROGRESS 9" {
		t.Fatalf("queued %q, want PROGRESS 7, PUT 8 /a, PROGRESS 9 (5 and 6 replaced by 7, 8 by 9)", got)
	}
	if got := strings.Join(recvN(t, w, 3), ","); got != "PROGRESS 7,PUT 8 /a,PROGRESS 9" {
		t.Fatalf("consumer saw %q, want PROGRESS 7, PUT 8 /a, PROGRESS 9", got)
	}
}

// A consumer already blocked in Recv gets a stream PROGRESS that arrives
// afterwards: the reading goroutine queues nothing for it, so the new
// PROGRESS itself must wake it.
func TestStreamProgressWakesABlockedRecv(t *testing.T) {
	a := startNode(t, plays(t, 0, msg(created(4))))
	a.mu.Lock()
	a.onProgress = func(uint64) *pb.WatchResponse {
		return &pb.WatchResponse{Type: pb.EventType_PROGRESS, Revision: 9} // watch_id 0
	}
	a.mu.Unlock()
	w, err := newClient(t, a).Watch(ctxT(t), []byte("/k"))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	go func() {
		r, err := w.Recv()
		if err != nil {
			got <- err.Error()
			return
		}
		got <- show(r)
	}()
	eventually(t, "the consumer blocked in Recv", func() bool {
		buf := make([]byte, 1<<20)
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if strings.Contains(g, "[select") && strings.Contains(g, "(*Watcher).Recv") {
				return true
			}
		}
		return false
	})
	if err := w.RequestProgress(); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != "PROGRESS 9" {
			t.Fatalf("Recv returned %q, want the stream PROGRESS 9", s)
		}
		// Woken by the PROGRESS itself, not by the watch leaving its
		// stream (the watchdog's silence check, or the context's end).
		w.mu.Lock()
		state, resumes := w.state, w.resumes
		w.mu.Unlock()
		if state != attached || resumes != 0 {
			t.Fatalf("Recv returned only once the watch left its stream (state %d, %d resumes)", state, resumes)
		}
	case <-time.After(testTimeout):
		t.Fatal("a consumer blocked in Recv was not woken by a stream PROGRESS")
	}
}

// peekQueue shows what w has queued for its consumer, without taking it.
func peekQueue(w *Watcher) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.streamProgressLocked()
	var out []string
	for _, r := range w.queue.all() {
		out = append(out, show(r))
	}
	return out
}

// RequestProgress is answered whether the server answers for the watch or
// for the whole stream.
func TestRequestProgressAnsweredByEitherForm(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer func(id uint64) *pb.WatchResponse
	}{
		{"per watch", func(id uint64) *pb.WatchResponse {
			return &pb.WatchResponse{Type: pb.EventType_PROGRESS, Revision: 11, WatchId: id}
		}},
		{"stream", func(uint64) *pb.WatchResponse {
			return &pb.WatchResponse{Type: pb.EventType_PROGRESS, Revision: 11}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := startNode(t, plays(t, 0, msg(created(4))))
			a.mu.Lock()
			a.onProgress = tc.answer
			a.mu.Unlock()
			w, err := newClient(t, a).Watch(ctxT(t), []byte("/k"))
			if err != nil {
				t.Fatal(err)
			}
			if err := w.RequestProgress(); err != nil {
				t.Fatal(err)
			}
			if got := recvN(t, w, 1); got[0] != "PROGRESS 11" {
				t.Fatalf("after RequestProgress the watch saw %q, want PROGRESS 11", got)
			}
			w.mu.Lock()
			wanted := w.progressWanted
			w.mu.Unlock()
			if wanted {
				t.Fatal("the answer left the request owed")
			}
		})
	}
}
