package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/raftwatch/raftwatch/cluster-test/checker"
	"github.com/raftwatch/raftwatch/cluster-test/history"
	pb "github.com/raftwatch/raftwatch/proto"
)

// Watcher timing.
const (
	// progressEvery: mean interval between progress requests on a stream.
	progressEvery = 2 * time.Second
	// reopenDelay: pause before reopening a broken stream.
	reopenDelay = 300 * time.Millisecond
)

// watchSpec is one long-running watcher on one node.
type watchSpec struct {
	node   string
	index  int
	key    string
	prefix bool
	prevKV bool
}

// watchers runs every watcher and lets the final phase ask them all for
// progress before stopping them.
type watchers struct {
	start   time.Time
	specs   []watchSpec
	conns   map[string]*grpc.ClientConn
	out     string
	writers []*history.Writer

	mu       sync.Mutex
	progress []chan struct{} // one per watcher: request progress now
	wg       sync.WaitGroup
	msgs     int64
}

// watchSpecsFor: on every node one exact-key watcher and one prefix watcher;
// prev_kv alternates between nodes so both kinds of stream carry it somewhere.
func watchSpecsFor(nodes []string, keys []string) []watchSpec {
	var out []watchSpec
	for i, n := range nodes {
		out = append(out,
			watchSpec{node: n, index: 0, key: keys[0], prevKV: i%2 == 0},
			watchSpec{node: n, index: 1, key: keyPrefix, prefix: true, prevKV: i%2 == 1})
	}
	return out
}

func (ws *watchers) startAll(ctx context.Context) error {
	for _, s := range ws.specs {
		w, err := history.Create(filepath.Join(ws.out, fmt.Sprintf("watch-%s-%d.jsonl", s.node, s.index)))
		if err != nil {
			return err
		}
		ws.writers = append(ws.writers, w)
		ch := make(chan struct{}, 1)
		ws.progress = append(ws.progress, ch)
		ws.wg.Add(1)
		go func() {
			defer ws.wg.Done()
			ws.run(ctx, s, w, ch)
		}()
	}
	return nil
}

// requestProgress asks every open stream for a PROGRESS now.
func (ws *watchers) requestProgress() {
	for _, ch := range ws.progress {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// wait waits for the watchers to end (after ctx is canceled) and closes files.
func (ws *watchers) wait() error {
	ws.wg.Wait()
	var first error
	for _, w := range ws.writers {
		if err := w.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (ws *watchers) now() int64 { return time.Since(ws.start).Nanoseconds() }

func (ws *watchers) run(ctx context.Context, s watchSpec, w *history.Writer, progressNow <-chan struct{}) {
	for stream := 0; ctx.Err() == nil; stream++ {
		base := history.WatchMsg{Node: s.node, Watcher: s.index, Stream: stream}
		open := base
		open.Type, open.Time, open.Key, open.Prefix, open.PrevKV = checker.MsgOpen, ws.now(), s.key, s.prefix, s.prevKV
		w.Write(open)
		err := ws.stream(ctx, s, base, w, progressNow)
		e := base
		e.Type, e.Time, e.Error = checker.MsgError, ws.now(), err.Error()
		w.Write(e)
		select {
		case <-ctx.Done():
		case <-time.After(reopenDelay):
		}
	}
}

// stream runs one stream until it breaks; it always returns a non-nil error.
func (ws *watchers) stream(ctx context.Context, s watchSpec, base history.WatchMsg, w *history.Writer, progressNow <-chan struct{}) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := pb.NewWatchClient(ws.conns[s.node]).Watch(sctx)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	if err := st.Send(&pb.WatchRequest{Request: &pb.WatchRequest_Create{Create: &pb.WatchCreate{Key: []byte(s.key), Prefix: s.prefix, PrevKv: s.prevKV}}}); err != nil {
		return fmt.Errorf("send create: %w", err)
	}
	// The only sender from here on: periodic and on-demand progress requests.
	rng := rand.New(rand.NewPCG(uint64(base.Stream), uint64(base.Watcher)))
	go func() {
		for {
			d := time.Duration(rng.Int64N(int64(2 * progressEvery)))
			select {
			case <-sctx.Done():
				return
			case <-progressNow:
			case <-time.After(d):
			}
			if st.Send(&pb.WatchRequest{Request: &pb.WatchRequest_Progress{Progress: &pb.WatchProgressRequest{}}}) != nil {
				return
			}
		}
	}()
	for {
		batch, err := st.Recv()
		if err != nil {
			return err
		}
		now := ws.now()
		for _, resp := range batch.Responses {
			m := base
			m.Time = now
			m.Type = resp.Type.String()
			m.Key, m.Value, m.Revision, m.Version = string(resp.Key), string(resp.Value), resp.Revision, resp.Version
			m.Reason, m.WatchID = resp.Reason, resp.WatchId
			if resp.PrevValue != nil {
				m.HasPrev, m.PrevValue = true, string(resp.PrevValue)
			}
			w.Write(m)
		}
		ws.mu.Lock()
		ws.msgs += int64(len(batch.Responses))
		ws.mu.Unlock()
		// After CANCELED keep reading: anything else that arrives is recorded
		// and flagged by the checker.
	}
}
