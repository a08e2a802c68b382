package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
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

// abuser is one client whose watch streams never read, once they have
// read their CREATED (or refusal).
type abuser struct {
	conns   []*grpc.ClientConn
	streams []pb.Watch_WatchClient
	// ids holds the watch ids created on each stream.
	ids [][]uint64
	// refused counts the streams the node ended at once (a quota).
	refused int
}

// watchers returns how many watches the abuser holds.
func (a *abuser) watchers() int {
	n := 0
	for _, ids := range a.ids {
		n += len(ids)
	}
	return n
}

// close closes every connection of a.
func (a *abuser) close() {
	for _, cc := range a.conns {
		cc.Close()
	}
}

// openAbuser opens conns connections to p, streams watch streams on each,
// and creates watches watches on /slow/ per connection, spread over its
// streams; it reads each stream's answers to its creates, then nothing.
func openAbuser(t *testing.T, p *proc, conns, streams, watches int) *abuser {
	t.Helper()
	a := &abuser{}
	t.Cleanup(a.close)
	for c := 0; c < conns; c++ {
		cc, err := grpc.NewClient(p.clientAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		a.conns = append(a.conns, cc)
		var ss []pb.Watch_WatchClient
		for i := 0; i < streams; i++ {
			s, err := pb.NewWatchClient(cc).Watch(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			ss = append(ss, s)
		}
		for i := 0; i < watches; i++ {
			req := &pb.WatchRequest{Request: &pb.WatchRequest_Create{Create: &pb.WatchCreate{Key: []byte("/slow/"), Prefix: true}}}
			if err := ss[i%streams].Send(req); err != nil && err != io.EOF { // EOF: the node ended the stream
				t.Fatal(err)
			}
		}
		a.streams = append(a.streams, ss...)
	}
	perStream := func(i int) int { // creates sent on stream i of a connection
		return watches/streams + min(1, max(0, watches%streams-i))
	}
	for i, s := range a.streams {
		r := &rawWatch{s: s}
		var ids []uint64
		for len(ids) < perStream(i%streams) {
			ev, err := r.recv()
			if status.Code(err) == codes.ResourceExhausted {
				a.refused++
				break
			}
			if err != nil {
				t.Fatalf("abusive stream %d: %v", i, err)
			}
			if ev.Type == pb.EventType_CREATED {
				ids = append(ids, ev.WatchId)
			} else if ev.Type == pb.EventType_CANCELED {
				t.Fatalf("abusive stream %d: create refused: %s", i, ev.Reason)
			}
		}
		a.ids = append(a.ids, ids)
	}
	return a
}

// cancelAll cancels every watch of a, over its open streams.
func (a *abuser) cancelAll(t *testing.T) {
	t.Helper()
	for i, ids := range a.ids {
		for _, id := range ids {
			req := &pb.WatchRequest{Request: &pb.WatchRequest_Cancel{Cancel: &pb.WatchCancelRequest{WatchId: id}}}
			if err := a.streams[i].Send(req); err != nil {
				t.Fatalf("cancel watch %d on abusive stream %d: %v", id, i, err)
			}
		}
	}
}

// heapAfterGC returns the node's in-use heap right after a collection:
// the heap profile of its --pprof server collects first (gc=1), then
// go_memstats_heap_inuse_bytes is read from its --metrics-addr.
func heapAfterGC(t *testing.T, pprofAddr, metricsAddr string) int64 {
	t.Helper()
	resp, err := http.Get("http://" + pprofAddr + "/debug/pprof/heap?gc=1")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	v, ok := value(scrape(t, metricsAddr), "go_memstats_heap_inuse_bytes", nil)
	if !ok {
		t.Fatal("no go_memstats_heap_inuse_bytes in the node's metrics")
	}
	return int64(v)
}

// heapMargin is how far above its pre-abuse heap a node's heap may stay
// once every abusive watch was canceled on connections still open: the
// streams stay open, each of them still holding what gRPC had queued for
// it (up to its 64 KiB write quota and a message or two) since the
// client never read it; --max-watch-streams-per-client (256) bounds them.
const heapMargin = 48 << 20

// One client opens watches on /slow/ and never reads them while 100-byte
// values are put there at about 300/s: 1,000 watches on one stream, on
// 100 streams, on 1,000 streams of one connection, then 1,000 streams on
// each of two connections. The node's RSS stays under rssBound
// throughout; once the client cancels every watch on its still-open
// connections, the node's heap comes back within heapMargin of what it
// was before; once the client is gone, RSS does not grow. A well-behaved
// client watching /other/ on the same node meanwhile gets every event in
// order, with no gap and no resume.
func TestNeverReadingClientHasBoundedMemory(t *testing.T) {
	bin, err := plainBinary()
	if err != nil {
		t.Fatal(err)
	}
	ports := freePorts(t, 6)
	metricsOf := map[string]string{"n1": ports[0], "n2": ports[1], "n3": ports[2]}
	pprofOf := map[string]string{"n1": ports[3], "n2": ports[4], "n3": ports[5]}
	c := startClusterPerNode(t, bin, func(p *proc) []string {
		return []string{"--metrics-addr", metricsOf[p.id], "--pprof", pprofOf[p.id]}
	})
	f := c.followers()[0]
	pid := f.cmd.Process.Pid
	writer := c.client()

	// The well-behaved client is another client than the abuser (which
	// dials from 127.0.0.1): clients sharing an IP address, without
	// certificates, share one budget.
	goodClient, err := client.New(client.Config{Endpoints: []string{f.clientAddr}, DialOptions: []grpc.DialOption{fromIP("127.0.0.2")}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { goodClient.Close() })
	good, err := goodClient.Watch(ctxT(t, 3*time.Minute), []byte("/other/"), client.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	goodCh := collect(good)
	// The /other/ puts, one value each ("0", "1", ...), with the revision
	// of the acknowledged ones (0: failed, maybe applied: the cluster may
	// hold an election while the node is loaded).
	var otherRevs []uint64
	slowFailed := 0

	for _, v := range []struct{ conns, streams, watches int }{{1, 1, 1000}, {1, 100, 1000}, {1, 1000, 1000}, {2, 1000, 1000}} {
		t.Logf("%d connection(s), each with %d watches on %d streams, never read", v.conns, v.watches, v.streams)
		before := heapAfterGC(t, pprofOf[f.id], metricsOf[f.id])
		a := openAbuser(t, f, v.conns, v.streams, v.watches)
		t.Logf("%d watches created, %d streams refused; heap before: %d MB", a.watchers(), a.refused, before>>20)
		eventually(t, 20*time.Second, "the abusive watches registered", func() bool {
			st, err := c.status(f)
			return err == nil && st.Watchers == uint64(a.watchers())+1
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
			t.Fatalf("node RSS reached %d MB with one client's %d unread watches on %d streams of %d connection(s), want < %d MB",
				during>>20, a.watchers(), len(a.streams)-a.refused, v.conns, rssBound>>20)
		}

		// The client cancels every watch on its open connections: the
		// node gives the memory back.
		a.cancelAll(t)
		eventually(t, 20*time.Second, "the abusive watches canceled", func() bool {
			st, err := c.status(f)
			return err == nil && st.Watchers == 1
		})
		var heap int64
		deadline := time.Now().Add(30 * time.Second)
		for {
			if heap = heapAfterGC(t, pprofOf[f.id], metricsOf[f.id]); heap <= before+heapMargin || time.Now().After(deadline) {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		t.Logf("heap after the client canceled its watches: %d MB (before: %d MB)", heap>>20, before>>20)
		if heap > before+heapMargin {
			t.Fatalf("node heap %d MB 30 s after the client canceled every watch on its open connections, want within %d MB of the %d MB before",
				heap>>20, heapMargin>>20, before>>20)
		}

		// The abusive client goes: memory does not grow.
		a.close()
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

// fromIP makes a connection's local address ip (any of 127.0.0.0/8 is
// this machine), so the node sees another client than 127.0.0.1.
func fromIP(ip string) grpc.DialOption {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", addr)
	})
}

// dialFrom connects to p from the local address ip (fromIP).
func dialFrom(t *testing.T, p *proc, ip string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(p.clientAddr, grpc.WithTransportCredentials(insecure.NewCredentials()), fromIP(ip))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// createOn sends a create for prefix on s and returns the node's answer
// (skipping the heartbeats of earlier watches).
func createOn(t *testing.T, s pb.Watch_WatchClient, r *rawWatch, prefix string) *pb.WatchResponse {
	t.Helper()
	if err := s.Send(&pb.WatchRequest{Request: &pb.WatchRequest_Create{Create: &pb.WatchCreate{Key: []byte(prefix), Prefix: true}}}); err != nil {
		t.Fatal(err)
	}
	for {
		ev, err := r.recv()
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type != pb.EventType_PROGRESS {
			return ev
		}
	}
}

// One client cannot take every watcher slot of a node however many
// connections it opens: past --max-watchers-per-client its creates are
// refused with RESOURCE_EXHAUSTED, saying so, on every connection, while
// another client (from 127.0.0.2) still creates watches, up to the
// node's --max-watchers, and gets their events.
func TestWatcherQuotaPerClient(t *testing.T) {
	c := startCluster(t, "--max-watchers", "100", "--max-watchers-per-client", "60")
	f := c.followers()[0]
	// The first client: three connections, 20 watches on each.
	var streams []pb.Watch_WatchClient
	var readers []*rawWatch
	for i := 0; i < 3; i++ {
		s, err := pb.NewWatchClient(dialFrom(t, f, "127.0.0.1")).Watch(ctxT(t, time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		streams, readers = append(streams, s), append(readers, &rawWatch{s: s})
	}
	for i := 0; i < 60; i++ {
		if ev := createOn(t, streams[i%3], readers[i%3], "/a/"); ev.Type != pb.EventType_CREATED {
			t.Fatalf("watch %d of the first client: %v %q, want CREATED", i, ev.Type, ev.Reason)
		}
	}
	want := "client holds 60 watchers, the limit is 60"
	for i := 0; i < 3; i++ {
		ev := createOn(t, streams[i], readers[i], "/a/")
		if ev.Type != pb.EventType_CANCELED || codes.Code(ev.Code) != codes.ResourceExhausted || !strings.Contains(ev.Reason, want) {
			t.Fatalf("watch 61 of the first client (connection %d): %v code %v %q, want CANCELED RESOURCE_EXHAUSTED saying %q",
				i, ev.Type, codes.Code(ev.Code), ev.Reason, want)
		}
	}

	other, err := pb.NewWatchClient(dialFrom(t, f, "127.0.0.2")).Watch(ctxT(t, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	or := &rawWatch{s: other}
	for i := 0; i < 40; i++ {
		if ev := createOn(t, other, or, "/b/"); ev.Type != pb.EventType_CREATED {
			t.Fatalf("watch %d of the second client: %v %q, want CREATED", i, ev.Type, ev.Reason)
		}
	}
	if st, err := c.status(f); err != nil || st.Watchers != 100 {
		t.Fatalf("node reports %d watchers (%v), want 100", st.GetWatchers(), err)
	}
	// And the second client's watches work.
	r, err := c.client().Put(ctxT(t, 10*time.Second), []byte("/b/k"), []byte("v"))
	if err != nil {
		t.Fatal(err)
	}
	if ev := nextRawData(t, or); ev.Type != pb.EventType_PUT || ev.Revision != r.Revision {
		t.Fatalf("second client's watch got %v at %d, want the PUT at %d", ev.Type, ev.Revision, r.Revision)
	}
}

// One client has at most --max-watch-streams-per-client watch streams
// open over all its connections: a further one ends at once with
// RESOURCE_EXHAUSTED, saying so, while another client (from 127.0.0.2)
// opens streams as usual, and a closed stream gives its slot back.
func TestWatchStreamsPerClientAreBounded(t *testing.T) {
	c := startCluster(t, "--max-watch-streams-per-client", "3")
	f := c.followers()[0]
	open := func(ctx context.Context, cc *grpc.ClientConn) (*pb.WatchResponse, error) {
		s, err := pb.NewWatchClient(cc).Watch(ctx)
		if err != nil {
			return nil, err
		}
		r := &rawWatch{s: s}
		if err := s.Send(&pb.WatchRequest{Request: &pb.WatchRequest_Create{Create: &pb.WatchCreate{Key: []byte("/s/"), Prefix: true}}}); err != nil && err != io.EOF {
			return nil, err
		}
		return r.recv()
	}
	conns := []*grpc.ClientConn{dialFrom(t, f, "127.0.0.1"), dialFrom(t, f, "127.0.0.1")}
	cancels := make([]context.CancelFunc, 3)
	for i := range cancels {
		ctx, cancel := context.WithCancel(context.Background())
		cancels[i] = cancel
		t.Cleanup(cancel)
		if ev, err := open(ctx, conns[i%2]); err != nil || ev.Type != pb.EventType_CREATED {
			t.Fatalf("stream %d of the first client: %v, %v; want CREATED", i, ev, err)
		}
	}
	want := "this client has 3 watch streams open, the limit is 3"
	for i, cc := range conns {
		_, err := open(ctxT(t, 10*time.Second), cc)
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(status.Convert(err).Message(), want) {
			t.Fatalf("a 4th stream of the first client (connection %d): %v, want RESOURCE_EXHAUSTED saying %q", i, err, want)
		}
	}
	if ev, err := open(ctxT(t, 10*time.Second), dialFrom(t, f, "127.0.0.2")); err != nil || ev.Type != pb.EventType_CREATED {
		t.Fatalf("a stream of another client: %v, %v; want CREATED", ev, err)
	}
	cancels[0]()
	eventually(t, 10*time.Second, "a stream of the first client opened after one closed", func() bool {
		ev, err := open(ctxT(t, 10*time.Second), conns[1])
		return err == nil && ev.Type == pb.EventType_CREATED
	})
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
