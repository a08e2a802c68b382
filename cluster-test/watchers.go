package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/raftwatch/raftwatch/cluster-test/checker"
	"github.com/raftwatch/raftwatch/cluster-test/history"
	pb "github.com/raftwatch/raftwatch/proto"
)

// Watcher timing and bounds.
const (
	// progressEvery: mean interval between progress requests on a stream.
	progressEvery = 2 * time.Second
	// reopenDelay: pause before reopening after a stream ended; it doubles
	// with each consecutive failed attempt, up to reopenDelayMax.
	reopenDelay    = 300 * time.Millisecond
	reopenDelayMax = 3 * time.Second
	// stallTimeout: a create or progress request that got no message at all
	// for this long abandons the stream. A paused (SIGSTOP) node keeps its
	// TCP connections open, so nothing else would ever break the stream.
	stallTimeout = 5 * time.Second
	// stallCheck: how often the stall watchdog looks.
	stallCheck = 250 * time.Millisecond
	// canceledGrace: after a CANCELED the server ends the stream; the
	// watcher ends it itself if that has not happened after this long.
	canceledGrace = time.Second
	// maxStreamsPerWatch: a safety bound on reopens. At reopenDelay that is
	// 25 minutes of back-to-back reopens, longer than any run.
	maxStreamsPerWatch = 5000
	// pastStartDelayMax: a watch with a past start begins at a random time
	// within this span, so history has something to replay by then.
	pastStartDelayMax = 20 * time.Second
	// maxStatusAttempts bounds the Status calls that pick a past start.
	maxStatusAttempts = 50
)

// Causes recorded in ERROR when the watcher itself ends a stream.
var (
	errStalled     = errors.New("stalled: no message for a create or progress request within the stall timeout")
	errCancelGrace = errors.New("the server did not end the stream after CANCELED")
)

// watchSpec is one logical watch: one watcher that keeps it for the whole
// run, reopening its stream after every failure.
type watchSpec struct {
	id            int
	home          string // node of its first stream
	key           string
	prefix        bool
	prevKV        bool
	requireLeader bool
	// roaming: every resume goes to the next node (round robin); otherwise
	// a resume goes to the same node, and to the next only after an attempt
	// there failed.
	roaming bool
	// pastStart: start at a random revision in [1, commit index] (from
	// Status) instead of from now.
	pastStart bool
}

// watchSpecsFor: per node, a sticky exact-key watch and a sticky prefix
// watch starting now, and a roaming watch, two of three starting in the
// past; prev_kv and require_leader vary so that each kind of watch carries
// them somewhere.
func watchSpecsFor(nodes []string, keys []string) []watchSpec {
	var out []watchSpec
	for i, n := range nodes {
		out = append(out,
			watchSpec{home: n, key: keys[i%len(keys)], prevKV: i%2 == 0, requireLeader: i == 1},
			watchSpec{home: n, key: keyPrefix, prefix: true, prevKV: i%2 == 1, requireLeader: i == 2},
			watchSpec{home: n, key: keyPrefix, prefix: i%2 == 0, prevKV: i != 1, requireLeader: i%2 == 0,
				roaming: true, pastStart: i != 2})
		if !out[len(out)-1].prefix {
			out[len(out)-1].key = keys[0]
		}
	}
	for i := range out {
		out[i].id = i
	}
	return out
}

// watchers runs every logical watch and lets the final phase ask them all
// for progress before stopping them.
type watchers struct {
	start time.Time
	specs []watchSpec
	nodes []string // resume order
	conns map[string]*grpc.ClientConn
	out   string
	seed  uint64
	// pastDelayMax: watches with a past start begin at a random time below
	// it (pastStartDelayMax in a run).
	pastDelayMax time.Duration

	writers  []*history.Writer
	progress []chan struct{} // one per watch: request progress now
	wg       sync.WaitGroup
	msgs     atomic.Int64
	resumes  atomic.Int64
}

func (ws *watchers) startAll(ctx context.Context) error {
	for _, s := range ws.specs {
		w, err := history.Create(filepath.Join(ws.out, fmt.Sprintf("watch-w%d.jsonl", s.id)))
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

// count is the number of server messages received so far.
func (ws *watchers) count() int64 { return ws.msgs.Load() }

func (ws *watchers) now() int64 { return time.Since(ws.start).Nanoseconds() }

// resumePoint is where a logical watch stands: what a resuming client keeps
// to continue after a stream ends with no gap and no duplicate. Revisions
// are whole only once known complete: a later event or a bookmark (the
// first CREATED, a PROGRESS) at or above them.
type resumePoint struct {
	started  bool   // the watch has a start: a past start_revision, or its first CREATED
	rev      uint64 // the last revision delivered
	complete bool   // every event at rev was delivered
	keys     map[string]bool
}

// startAt makes the point that of a watch that starts at rev: nothing is
// delivered yet and everything from rev on is needed.
func startAt(rev uint64) resumePoint {
	return resumePoint{started: true, rev: rev - 1, complete: true, keys: map[string]bool{}}
}

// next is the start_revision to resume with: the revision after rev, or rev
// itself while it may be incomplete (its events already delivered are then
// dropped by key).
func (p *resumePoint) next() uint64 {
	if p.complete {
		return p.rev + 1
	}
	return p.rev
}

// event reports whether an event is new (to deliver) or a duplicate of one
// delivered before a resume (to drop), and records it.
func (p *resumePoint) event(rev uint64, key string) bool {
	if p.keys == nil {
		p.keys = map[string]bool{}
	}
	if p.started && (rev < p.rev || rev == p.rev && (p.complete || p.keys[key])) {
		return false
	}
	if !p.started || rev > p.rev {
		p.started, p.rev, p.complete = true, rev, false
		clear(p.keys)
	}
	p.keys[key] = true
	return true
}

// bookmark records that every event at or below rev was delivered.
func (p *resumePoint) bookmark(rev uint64) {
	if p.started && rev < p.rev {
		return
	}
	p.started, p.rev, p.complete = true, rev, true
	clear(p.keys)
}

// logicalWatch is the state one watcher keeps across its streams.
type logicalWatch struct {
	spec     watchSpec
	w        *history.Writer
	point    resumePoint
	created  bool // the first CREATED was delivered
	streamNo int
}

// streamOutcome is how one stream ended.
type streamOutcome struct {
	err error
	// useful: CREATED came and then at least one event or PROGRESS.
	useful bool
	// compacted: a compaction CANCELED ended the logical watch.
	compacted bool
}

func (ws *watchers) run(ctx context.Context, s watchSpec, w *history.Writer, progressNow <-chan struct{}) {
	rng := rand.New(rand.NewPCG(ws.seed, uint64(s.id)+1))
	lw := &logicalWatch{spec: s, w: w}
	node := 0
	for i, n := range ws.nodes {
		if n == s.home {
			node = i
		}
	}
	if s.pastStart {
		if ws.pastDelayMax > 0 && !sleepCtx(ctx, time.Duration(rng.Int64N(int64(ws.pastDelayMax)))) {
			return
		}
		if rev, ok := ws.pastRevision(ctx, rng, node); ok {
			lw.point = startAt(rev)
		}
	}
	failures := 0
	for ; ctx.Err() == nil; lw.streamNo++ {
		base := history.WatchMsg{Node: ws.nodes[node], Watcher: s.id, Stream: lw.streamNo}
		if lw.streamNo == maxStreamsPerWatch {
			end := base
			end.Type, end.Time, end.Error = checker.MsgEnd, ws.now(), fmt.Sprintf("gave up after %d streams", maxStreamsPerWatch)
			w.Write(end)
			return
		}
		open := base
		open.Type, open.Time = checker.MsgOpen, ws.now()
		if lw.point.started {
			open.StartRevision = lw.point.next()
			if lw.streamNo > 0 {
				open.Type = checker.MsgResume
				ws.resumes.Add(1)
			}
		}
		open.Key, open.Prefix, open.PrevKV, open.RequireLeader, open.Roaming = s.key, s.prefix, s.prevKV, s.requireLeader, s.roaming
		w.Write(open)
		out := ws.stream(ctx, lw, base, open.StartRevision, progressNow)
		e := base
		e.Type, e.Time, e.Error = checker.MsgError, ws.now(), out.err.Error()
		w.Write(e)
		if out.compacted {
			end := base
			end.Type, end.Time, end.Error = checker.MsgEnd, ws.now(), checker.EndCompacted
			w.Write(end)
			return
		}
		if out.useful {
			failures = 0
		} else {
			failures++
		}
		if s.roaming || !out.useful {
			node = (node + 1) % len(ws.nodes)
		}
		if !sleepCtx(ctx, min(reopenDelay<<min(failures, 8), reopenDelayMax)) {
			return
		}
	}
}

// pastRevision picks a start revision in [1, commit index] from the Status
// of the first node that answers; false when none did (the watch then
// starts from now).
func (ws *watchers) pastRevision(ctx context.Context, rng *rand.Rand, node int) (uint64, bool) {
	for i := 0; i < maxStatusAttempts && ctx.Err() == nil; i++ {
		id := ws.nodes[(node+i)%len(ws.nodes)]
		sctx, cancel := context.WithTimeout(ctx, statusTimeout)
		st, err := pb.NewClusterClient(ws.conns[id]).Status(sctx, &pb.StatusRequest{})
		cancel()
		if err == nil && st.CommitIndex > 0 {
			return 1 + rng.Uint64N(st.CommitIndex), true
		}
		if !sleepCtx(ctx, reopenDelay) {
			break
		}
	}
	return 0, false
}

// stream runs one stream of lw from start until it ends, records every
// message with what the watcher delivered, and says how it ended.
func (ws *watchers) stream(ctx context.Context, lw *logicalWatch, base history.WatchMsg, start uint64, progressNow <-chan struct{}) streamOutcome {
	s := lw.spec
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	fail := func(err error) streamOutcome {
		if c := context.Cause(sctx); c != nil && !errors.Is(c, context.Canceled) {
			err = fmt.Errorf("%w (%v)", c, err)
		}
		return streamOutcome{err: err}
	}
	// pending: since when a request (the create, a progress request) has
	// waited without any message arriving; 0 when none waits.
	var pending atomic.Int64
	pending.Store(ws.now())
	st, err := pb.NewWatchClient(ws.conns[base.Node]).Watch(sctx)
	if err != nil {
		return fail(fmt.Errorf("open: %w", err))
	}
	create := &pb.WatchCreate{Key: []byte(s.key), Prefix: s.prefix, PrevKv: s.prevKV, RequestId: uint64(base.Stream) + 1,
		StartRevision: start, RequireLeader: s.requireLeader}
	if err := st.Send(&pb.WatchRequest{Request: &pb.WatchRequest_Create{Create: create}}); err != nil {
		return fail(fmt.Errorf("send create: %w", err))
	}
	// The only sender from here on: periodic and on-demand progress requests.
	go func() {
		rng := rand.New(rand.NewPCG(ws.seed^uint64(base.Stream), uint64(base.Watcher)))
		for {
			d := time.Duration(rng.Int64N(int64(2 * progressEvery)))
			select {
			case <-sctx.Done():
				return
			case <-progressNow:
			case <-time.After(d):
			}
			pending.CompareAndSwap(0, ws.now())
			if st.Send(&pb.WatchRequest{Request: &pb.WatchRequest_Progress{Progress: &pb.WatchProgressRequest{}}}) != nil {
				return
			}
		}
	}()
	go func() {
		t := time.NewTicker(stallCheck)
		defer t.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-t.C:
			}
			if p := pending.Load(); p != 0 && ws.now()-p > stallTimeout.Nanoseconds() {
				cancel(errStalled)
				return
			}
		}
	}()
	var out streamOutcome
	created, canceled := false, false
	var grace *time.Timer
	defer func() {
		if grace != nil {
			grace.Stop()
		}
	}()
	for {
		batch, err := st.Recv()
		if err != nil {
			o := fail(err)
			o.useful, o.compacted = out.useful, out.compacted
			return o
		}
		pending.Store(0)
		now := ws.now()
		for _, resp := range batch.Responses {
			m := base
			m.Time = now
			m.Type = resp.Type.String()
			m.Key, m.Value, m.Revision, m.Version = string(resp.Key), string(resp.Value), resp.Revision, resp.Version
			m.Reason, m.WatchID, m.RequestID, m.Code, m.CompactRevision = resp.Reason, resp.WatchId, resp.RequestId, resp.Code, resp.CompactRevision
			if resp.PrevValue != nil {
				m.HasPrev, m.PrevValue = true, string(resp.PrevValue)
			}
			// After a CANCELED nothing is delivered: the stream is over for
			// the watcher; what still arrives is recorded for the checker.
			if !canceled {
				switch resp.Type {
				case pb.EventType_CREATED:
					created = true
					if !lw.created {
						// Only the watch's first CREATED reaches the
						// application; a resumed stream's is hidden.
						lw.created, m.Delivered = true, true
						lw.point.bookmark(resp.Revision)
					}
				case pb.EventType_PROGRESS:
					m.Delivered = true
					lw.point.bookmark(resp.Revision)
					out.useful = out.useful || created
				case pb.EventType_PUT, pb.EventType_DELETE:
					m.Delivered = lw.point.event(resp.Revision, m.Key)
					out.useful = out.useful || created
				case pb.EventType_CANCELED:
					canceled = true
					if checker.IsCompaction(m) {
						m.Delivered, out.compacted = true, true
					}
					grace = time.AfterFunc(canceledGrace, func() { cancel(errCancelGrace) })
				}
			}
			lw.w.Write(m)
		}
		ws.msgs.Add(int64(len(batch.Responses)))
	}
}

// sleepCtx sleeps for d; false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
