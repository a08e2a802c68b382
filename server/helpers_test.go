package server_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/raftwatch/raftwatch/client"
	pb "github.com/raftwatch/raftwatch/proto"
)

// These in-process helpers have twins in e2e (a test package cannot
// import another's): keep both the same.

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func freePorts(t *testing.T, n int) []string {
	t.Helper()
	var ls []net.Listener
	var out []string
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	for _, l := range ls {
		l.Close()
	}
	return out
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// collect forwards w's events to a channel until the watch ends.
func collect(w *client.Watcher) <-chan *pb.WatchResponse {
	out := make(chan *pb.WatchResponse, 10000)
	go func() {
		defer close(out)
		for {
			ev, err := w.Recv()
			if err != nil {
				return
			}
			out <- ev
		}
	}()
	return out
}

// nextData returns the next PUT/DELETE (skipping PROGRESS) or fails.
func nextData(t *testing.T, ch <-chan *pb.WatchResponse, timeout time.Duration) *pb.WatchResponse {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatal("watch stream ended")
			}
			if ev.Type == pb.EventType_PROGRESS {
				continue
			}
			return ev
		case <-deadline:
			t.Fatalf("no event within %v", timeout)
		}
	}
}
