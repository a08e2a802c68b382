package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/raftwatch/raftwatch/client"
	pb "github.com/raftwatch/raftwatch/proto"
)

// These tests check issue 12's promise end to end: one client that opens
// many watches and never reads costs a node a bounded amount of memory,
// and cannot take every watcher slot.

// rssBound is the documented bound (README, serve --help) on a node's RSS
// while one client abuses it as below, with the default flags.
const rssBound = 200 << 20

// plainBinary returns a raftwatch built without the race detector, whose
// memory use is the one users get (the race detector multiplies it).
var plainBinary = sync.OnceValues(func() (string, error) {
	if !raceEnabled {
		return binary, nil
	}
	bin := filepath.Join(filepath.Dir(binary), "raftwatch-norace")
	if err := buildRaftwatch(bin); err != nil {
		return "", err
	}
	return bin, nil
})

// rssOf returns the resident set size of process pid, from /proc.
func rssOf(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// abuser is one client connection whose watch streams never read.
type abuser struct {
	cc      *grpc.ClientConn
	streams []pb.Watch_WatchClient
}

// openAbuser opens streams watch streams on one connection to p and
// creates watches watches on /slow/ spread over them, reading nothing.
func openAbuser(t *testing.T, p *proc, streams, watches int) *abuser {
	t.Helper()
	cc, err := grpc.NewClient(p.clientAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	a := &abuser{cc: cc}
	for i := 0; i < streams; i++ {
		s, err := pb.NewWatchClient(cc).Watch(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		a.streams = append(a.streams, s)
	}
	for i := 0; i < watches; i++ {
		req := &pb.WatchRequest{Request: &pb.WatchRequest_Create{Create: &pb.WatchCreate{Key: []byte("/slow/"), Prefix: true}}}
		if err := a.streams[i%streams].Send(req); err != nil {
			t.Fatal(err)
		}
	}
	return a
}

// One client opens 1,000 watches on /slow/ and never reads them while 100-
// byte values are put there at about 300/s: first on one stream, then
// spread over 100 streams of one connection. The node's RSS stays under
// rssBound throughout and does not grow once the client is gone, and a
// well-behaved client watching /other/ on the same node meanwhile gets
// every event in order, with no gap and no resume.
func TestNeverReadingClientHasBoundedMemory(t *testing.T) {
	bin, err := plainBinary()
	if err != nil {
		t.Fatal(err)
	}
	c := startClusterOf(t, bin)
	f := c.followers()[0]
	pid := f.cmd.Process.Pid
	writer := c.client()

	good, err := c.client(f.clientAddr).Watch(ctxT(t, 2*time.Minute), []byte("/other/"), client.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	goodCh := collect(good)
	// The /other/ puts, one value each ("0", "1", ...), with the revision
	// of the acknowledged ones (0: failed, maybe applied: the cluster may
	// hold an election while the node is loaded).
	var otherRevs []uint64
	slowFailed := 0

	for _, v := range []struct{ streams, watches int }{{1, 1000}, {100, 1000}} {
		t.Logf("%d watches on %d streams of one connection, never read", v.watches, v.streams)
		a := openAbuser(t, f, v.streams, v.watches)
		eventually(t, 20*time.Second, "the abusive watches registered", func() bool {
			st, err := c.status(f)
			return err == nil && st.Watchers == uint64(v.watches)+1
		})

		// Write for 8 s: /slow/ at ~300/s (concurrently, bounded), /other/
		// in order at ~20/s; sample the node's RSS every 100 ms.
		var peak atomic.Int64
		var slowErrs atomic.Int64
		stop := make(chan struct{})
		var writers, sampler sync.WaitGroup
		writers.Add(2)
		go func() {
			defer writers.Done()
			value := []byte(strings.Repeat("v", 100))
			sem := make(chan struct{}, 32)
			tick := time.NewTicker(time.Second / 300)
			defer tick.Stop()
			for i := 0; i < 300*8; i++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				sem <- struct{}{}
				go func() {
					defer func() { <-sem }()
					if _, err := writer.Put(ctxT(t, 10*time.Second), []byte(fmt.Sprintf("/slow/k%d", i%100)), value); err != nil {
						slowErrs.Add(1)
					}
				}()
			}
			for i := 0; i < cap(sem); i++ {
				sem <- struct{}{}
			}
		}()
		go func() {
			defer writers.Done()
			for i := 0; i < 20*8; i++ {
				r, err := writer.Put(ctxT(t, 10*time.Second), []byte(fmt.Sprintf("/other/k%d", i%7)), []byte(fmt.Sprint(len(otherRevs))))
				if err != nil {
					t.Logf("put /other/: %v", err)
					otherRevs = append(otherRevs, 0)
				} else {
					otherRevs = append(otherRevs, r.Revision)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
		sampler.Add(1)
		go func() {
			defer sampler.Done()
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					peak.Store(max(peak.Load(), rssOf(t, pid)))
				}
			}
		}()
		writers.Wait() // each writes a fixed count at its pace: about 8 s
		close(stop)
		sampler.Wait()
		slowFailed += int(slowErrs.Load())
		during := peak.Load()
		t.Logf("peak RSS while abused: %d MB", during>>20)
		if during > rssBound {
			t.Fatalf("node RSS reached %d MB with one client's %d unread watches on %d streams, want < %d MB",
				during>>20, v.watches, v.streams, rssBound>>20)
		}

		// The abusive client goes: its watchers go, and memory does not grow.
		a.cc.Close()
		eventually(t, 20*time.Second, "the abusive watches gone", func() bool {
			st, err := c.status(f)
			return err == nil && st.Watchers == 1
		})
		var after int64
		for i := 0; i < 20; i++ {
			after = max(after, rssOf(t, pid))
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("RSS after the client left: %d MB", after>>20)
		if after > rssBound || after > during+(16<<20) {
			t.Fatalf("node RSS %d MB after the abusive client left (%d MB while it was there), want it not to grow and < %d MB",
				after>>20, during>>20, rssBound>>20)
		}
	}

	// The well-behaved watch got every acknowledged /other/ put, in
	// order, and nothing else (a failed put may or may not show).
	t.Logf("%d /slow/ puts failed (load only)", slowFailed)
	last := len(otherRevs) - 1
	for last >= 0 && otherRevs[last] == 0 {
		last--
	}
	var ev *pb.WatchResponse
	for i := 0; i <= last; i++ {
		if ev == nil {
			ev = nextData(t, goodCh, 20*time.Second)
		}
		if otherRevs[i] == 0 && string(ev.Value) != fmt.Sprint(i) {
			continue // put i failed and was not applied: ev is a later one
		}
		if ev.Type != pb.EventType_PUT || string(ev.Value) != fmt.Sprint(i) || (otherRevs[i] != 0 && ev.Revision != otherRevs[i]) {
			t.Fatalf("well-behaved watch: event %v %s=%q at %d, want put %d (at %d)", ev.Type, ev.Key, ev.Value, ev.Revision, i, otherRevs[i])
		}
		ev = nil
	}
	if n := good.Resumes(); n != 0 {
		t.Fatalf("the well-behaved watch had to resume %d times", n)
	}
}

// One connection cannot take every watcher slot of a node: past
// --max-watchers-per-connection its creates are refused with
// RESOURCE_EXHAUSTED, saying so, and another connection still creates
// watches (up to the node's --max-watchers).
func TestWatcherQuotaPerConnection(t *testing.T) {
	c := startCluster(t, "--max-watchers", "100", "--max-watchers-per-connection", "60")
	f := c.followers()[0]
	create := func(s pb.Watch_WatchClient, r *rawWatch, key string) *pb.WatchResponse {
		t.Helper()
		if err := s.Send(&pb.WatchRequest{Request: &pb.WatchRequest_Create{Create: &pb.WatchCreate{Key: []byte(key), Prefix: true}}}); err != nil {
			t.Fatal(err)
		}
		for {
			ev, err := r.recv()
			if err != nil {
				t.Fatal(err)
			}
			if ev.Type != pb.EventType_PROGRESS { // heartbeats of the earlier watches
				return ev
			}
		}
	}
	// The first connection: 30 watches on each of two streams.
	cc, err := grpc.NewClient(f.clientAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	var streams []pb.Watch_WatchClient
	var readers []*rawWatch
	for i := 0; i < 2; i++ {
		s, err := pb.NewWatchClient(cc).Watch(ctxT(t, time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		streams, readers = append(streams, s), append(readers, &rawWatch{s: s})
	}
	for i := 0; i < 60; i++ {
		if ev := create(streams[i%2], readers[i%2], "/a/"); ev.Type != pb.EventType_CREATED {
			t.Fatalf("watch %d of the first connection: %v %q, want CREATED", i, ev.Type, ev.Reason)
		}
	}
	want := "connection holds 60 watchers, the limit is 60"
	for i := 0; i < 2; i++ {
		ev := create(streams[i], readers[i], "/a/")
		if ev.Type != pb.EventType_CANCELED || codes.Code(ev.Code) != codes.ResourceExhausted || !strings.Contains(ev.Reason, want) {
			t.Fatalf("watch 61 of the first connection (stream %d): %v code %v %q, want CANCELED RESOURCE_EXHAUSTED saying %q",
				i, ev.Type, codes.Code(ev.Code), ev.Reason, want)
		}
	}

	other := rawStream(t, f) // its own connection
	or := &rawWatch{s: other}
	for i := 0; i < 40; i++ {
		if ev := create(other, or, "/b/"); ev.Type != pb.EventType_CREATED {
			t.Fatalf("watch %d of the second connection: %v %q, want CREATED", i, ev.Type, ev.Reason)
		}
	}
	if st, err := c.status(f); err != nil || st.Watchers != 100 {
		t.Fatalf("node reports %d watchers (%v), want 100", st.GetWatchers(), err)
	}
	// And the second connection's watches work.
	r, err := c.client().Put(ctxT(t, 10*time.Second), []byte("/b/k"), []byte("v"))
	if err != nil {
		t.Fatal(err)
	}
	if ev := nextRawData(t, or); ev.Type != pb.EventType_PUT || ev.Revision != r.Revision {
		t.Fatalf("second connection's watch got %v at %d, want the PUT at %d", ev.Type, ev.Revision, r.Revision)
	}
}

// One connection has at most --max-streams-per-connection streams open
// (gRPC's MAX_CONCURRENT_STREAMS), each holding gRPC's per-stream buffers:
// its next stream waits for a slot, which a closed stream frees, while
// another connection opens streams as usual.
func TestStreamsPerConnectionAreBounded(t *testing.T) {
	c := startCluster(t, "--max-streams-per-connection", "3")
	f := c.followers()[0]
	cc, err := grpc.NewClient(f.clientAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	open := func(ctx context.Context) (pb.Watch_WatchClient, error) {
		s, err := pb.NewWatchClient(cc).Watch(ctx)
		if err != nil {
			return nil, err
		}
		if err := s.Send(&pb.WatchRequest{Request: &pb.WatchRequest_Create{Create: &pb.WatchCreate{Key: []byte("/s/"), Prefix: true}}}); err != nil {
			return nil, err
		}
		r := &rawWatch{s: s}
		ev, err := r.recv()
		if err != nil {
			return nil, err
		}
		if ev.Type != pb.EventType_CREATED {
			return nil, fmt.Errorf("got %v %q, want CREATED", ev.Type, ev.Reason)
		}
		return s, nil
	}
	cancels := make([]context.CancelFunc, 3)
	for i := range cancels {
		ctx, cancel := context.WithCancel(context.Background())
		cancels[i] = cancel
		t.Cleanup(cancel)
		if _, err := open(ctx); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_, err = open(ctx)
	cancel()
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a 4th stream on the connection: %v, want it to wait for a slot (DEADLINE_EXCEEDED after 1 s)", err)
	}
	if _, err := open(ctx); err == nil {
		t.Fatal("unreachable: a canceled context opened a stream")
	}
	other := rawStream(t, f) // another connection is not held back
	if err := other.Send(&pb.WatchRequest{Request: &pb.WatchRequest_Create{Create: &pb.WatchCreate{Key: []byte("/s/"), Prefix: true}}}); err != nil {
		t.Fatal(err)
	}
	if ev, err := (&rawWatch{s: other}).recv(); err != nil || ev.Type != pb.EventType_CREATED {
		t.Fatalf("a stream on another connection: %v, %v; want CREATED", ev, err)
	}
	cancels[0]() // frees a slot
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := open(ctx); err != nil {
		t.Fatalf("a stream after one was closed: %v", err)
	}
}
