//go:build !noraftwatch

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/raftwatch/raftwatch/proto"
)

// slow-watchers (issue 8): watchers that never read cost their node a
// bounded amount of memory (a watch that falls behind moves to catching up
// and holds only its next revision; one stream queues at most
// --watch-stream-bytes), and the watchers on the same node that do read
// get every event, in order, never canceled.

const (
	// slowPrefix is where the slow-watchers writer puts, and what every
	// watcher of the workload watches.
	slowPrefix = "/sw/"
	// slowWindow is the gRPC flow-control window, per stream and per
	// connection, of the slow watchers' connections: small, so the node's
	// sends block after 64 KiB and the node, not the sockets, holds the
	// backlog.
	slowWindow = 64 << 10
	// memSampleGap is how often the nodes' RSS is read during the writes.
	memSampleGap = time.Second
)

func init() { raftwatchWorkloads["slow-watchers"] = slowWatchersCmd }

type slowConfig struct {
	endpoints []string
	pids      []int
	node      string // follower, leader or an endpoint index
	watchers  int    // that never read
	conns     int    // connections (one stream each) they are spread over
	live      int    // watchers that read everything
	rate      float64
	duration  time.Duration
	drain     time.Duration
}

func slowWatchersCmd(fs *flag.FlagSet) func(context.Context, common) (Result, error) {
	var cfg slowConfig
	var pidList string
	fs.IntVar(&cfg.watchers, "watchers", 10000, "watchers that never read, on the prefix every put goes to")
	fs.IntVar(&cfg.conns, "conns", 10, "connections (one watch stream each, 64 KiB flow-control windows) the slow watchers are spread over")
	fs.IntVar(&cfg.live, "live", 10, "watchers on the same node that read everything, each on its own stream")
	fs.StringVar(&cfg.node, "node", "follower", "the node holding every watcher: follower, leader or an endpoint index")
	fs.Float64Var(&cfg.rate, "rate", 1000, "puts per second (256-byte values, each put to its own key)")
	fs.DurationVar(&cfg.duration, "duration", 60*time.Second, "how long to put")
	fs.DurationVar(&cfg.drain, "drain", 15*time.Second, "max wait for the live watchers after the last put")
	fs.StringVar(&pidList, "pids", "", "node PIDs in --endpoints order (required: RSS is read from /proc/PID/status)")
	return func(ctx context.Context, c common) (Result, error) {
		pids, err := parsePIDs(pidList)
		if err != nil {
			return Result{}, err
		}
		if cfg.watchers < cfg.conns || cfg.conns < 1 || cfg.live < 1 || cfg.rate <= 0 {
			return Result{}, fmt.Errorf("need 1 <= conns (%d) <= watchers (%d), live >= 1 (%d), rate > 0 (%v)",
				cfg.conns, cfg.watchers, cfg.live, cfg.rate)
		}
		cfg.endpoints, cfg.pids = c.endpoints, pids
		return runSlowWatchers(ctx, cfg)
	}
}

func runSlowWatchers(ctx context.Context, cfg slowConfig) (Result, error) {
	t, err := openPacedTarget(ctx, cfg.endpoints, cfg.pids, cfg.node)
	if err != nil {
		return Result{}, err
	}
	defer t.close()
	cl, roles, node, addr, writer := t.status, t.roles, t.node, t.addr, t.writer

	before, err := sampleProcMem(cfg.pids)
	if err != nil {
		return Result{}, err
	}
	streamCtx, closeStreams := context.WithCancel(ctx)
	defer closeStreams()
	live, err := openLiveWatchers(streamCtx, addr, cfg.live)
	if err != nil {
		return Result{}, err
	}
	defer live.stop(closeStreams)
	slow, err := openSlowWatchers(streamCtx, addr, cfg.watchers, cfg.conns)
	if err != nil {
		return Result{}, err
	}
	defer slow.close()
	held, err := sampleProcMem(cfg.pids)
	if err != nil {
		return Result{}, err
	}

	sampler := startMemSampler(cfg.pids, memSampleGap)
	pw := newPacedWriter(writer, slowPrefix, cfg.rate)
	start := time.Now()
	pw.run(ctx, cfg.duration)
	elapsed := time.Since(start)
	series, serr := sampler.stop()
	if serr != nil {
		return Result{}, serr
	}
	end := make([]procMem, len(cfg.pids))
	for i, pid := range cfg.pids {
		if end[i], err = readProcMem(pid); err != nil {
			return Result{}, err
		}
	}
	sctx, cancel := context.WithTimeout(ctx, opTimeout)
	st, err := cl.Status(sctx, addr)
	cancel()
	if err != nil {
		return Result{}, fmt.Errorf("status of the watched node %s at the end: %w", addr, err)
	}
	if ctx.Err() != nil {
		return Result{}, ctx.Err()
	}

	acks := pw.acknowledged()
	counts := make([]*atomic.Int64, len(live.watchers))
	for i, lw := range live.watchers {
		counts[i] = &lw.delivered
	}
	drainDelivered(ctx, counts, int64(len(acks)), cfg.drain)
	live.stop(closeStreams)

	s := &SlowWatchers{Node: node, Role: roles[node], Roles: roles, Live: cfg.live,
		WatchersAtEnd: st.GetWatchers(), CatchingUpAtEnd: st.GetWatchersCatchingUp()}
	for i := range cfg.pids {
		mx := end[i]
		for _, sample := range series {
			mx.RSS, mx.Anon = max(mx.RSS, sample[i].RSS), max(mx.Anon, sample[i].Anon)
		}
		s.RSSBefore, s.AnonBefore = append(s.RSSBefore, before[i].RSS), append(s.AnonBefore, before[i].Anon)
		s.RSSHeld, s.AnonHeld = append(s.RSSHeld, held[i].RSS), append(s.AnonHeld, held[i].Anon)
		s.RSSMax, s.AnonMax = append(s.RSSMax, mx.RSS), append(s.AnonMax, mx.Anon)
		s.RSSEnd, s.AnonEnd = append(s.RSSEnd, end[i].RSS), append(s.AnonEnd, end[i].Anon)
	}
	for _, sample := range series {
		s.RSSSeries = append(s.RSSSeries, sample[node].RSS)
	}
	var lat latencies
	var first firstError
	r := Result{
		Workload:   "slow-watchers",
		Case:       fmt.Sprintf("slow-watchers %d watchers/%d conns on a %s", cfg.watchers, cfg.conns, cfg.node),
		Target:     "raftwatch",
		Watchers:   cfg.watchers,
		Conns:      cfg.conns,
		DurationS:  elapsed.Seconds(),
		Ops:        int64(len(acks)),
		Errors:     pw.errs.Load(),
		FirstError: pw.first.msg,
		PutsPerS:   float64(len(acks)) / elapsed.Seconds(),
		Slow:       s,
	}
	for _, lw := range live.watchers {
		missing, wrong := lw.log.check(acks, 0)
		s.LiveMissing += missing + wrong
		s.LiveOutOfOrder += lw.log.outOfOrder
		s.LiveDuplicates += lw.log.duplicates
		s.LiveCanceled += lw.canceled
		r.Events += lw.log.events
		lat.add(lw.lat)
		if lw.err != nil {
			r.EndedStreams++
			first.set(lw.err)
		}
	}
	r.finishPaced(int64(len(acks))*int64(cfg.live), elapsed, &lat, &first, pw)
	return r, nil
}

// dialRaw opens a gRPC connection to one node, without the client's
// multiplexing and resumes.
func dialRaw(addr string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	return cc, nil
}

// openRawWatches opens one watch stream on cc carrying n watches on
// slowPrefix and returns once the node confirmed every one. Nothing reads
// the stream afterwards unless the caller does.
func openRawWatches(ctx context.Context, cc *grpc.ClientConn, n int) (pb.Watch_WatchClient, error) {
	st, err := pb.NewWatchClient(cc).Watch(ctx)
	if err != nil {
		return nil, err
	}
	sent := make(chan error, 1)
	go func() {
		for i := 1; i <= n; i++ {
			create := &pb.WatchCreate{Key: []byte(slowPrefix), Prefix: true, RequestId: uint64(i)}
			if err := st.Send(&pb.WatchRequest{Request: &pb.WatchRequest_Create{Create: create}}); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	for created := 0; created < n; {
		b, err := st.Recv()
		if err != nil {
			return nil, fmt.Errorf("%d of %d watches created, then: %w", created, n, err)
		}
		for _, r := range b.GetResponses() {
			switch r.GetType() {
			case pb.EventType_CREATED:
				created++
			case pb.EventType_CANCELED:
				return nil, fmt.Errorf("watch create refused: %s (code %d)", r.GetReason(), r.GetCode())
			}
		}
	}
	if err := <-sent; err != nil {
		return nil, err
	}
	return st, nil
}

// slowSet is the watchers that never read: after their CREATED, nothing
// reads their streams until close.
type slowSet struct{ conns []*grpc.ClientConn }

func openSlowWatchers(ctx context.Context, addr string, watchers, conns int) (*slowSet, error) {
	s := &slowSet{}
	errs := make([]error, conns)
	var wg sync.WaitGroup
	for i := 0; i < conns; i++ {
		cc, err := dialRaw(addr, grpc.WithInitialWindowSize(slowWindow), grpc.WithInitialConnWindowSize(slowWindow))
		if err != nil {
			s.close()
			return nil, err
		}
		s.conns = append(s.conns, cc)
		n := watchers / conns
		if i < watchers%conns {
			n++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = openRawWatches(ctx, cc, n)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		s.close()
		return nil, fmt.Errorf("open %d slow watchers on %s: %w", watchers, addr, err)
	}
	return s, nil
}

func (s *slowSet) close() {
	for _, cc := range s.conns {
		cc.Close()
	}
	s.conns = nil
}

// liveWatcher is a watch that reads everything, on a stream of its own.
type liveWatcher struct {
	stream    pb.Watch_WatchClient
	delivered atomic.Int64 // distinct puts delivered; the drain watches it
	// Owned by the reading goroutine until it ends.
	log      seqLog
	lat      []time.Duration
	canceled int64
	err      error // why the stream ended before stop, or the first CANCELED
}

type liveSet struct {
	cc       *grpc.ClientConn
	watchers []*liveWatcher
	closing  atomic.Bool
	wg       sync.WaitGroup
	once     sync.Once
}

func openLiveWatchers(ctx context.Context, addr string, n int) (*liveSet, error) {
	cc, err := dialRaw(addr)
	if err != nil {
		return nil, err
	}
	s := &liveSet{cc: cc}
	for i := 0; i < n; i++ {
		st, err := openRawWatches(ctx, cc, 1)
		if err != nil {
			cc.Close()
			return nil, fmt.Errorf("live watcher %d on %s: %w", i, addr, err)
		}
		lw := &liveWatcher{stream: st}
		s.watchers = append(s.watchers, lw)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			lw.read(&s.closing)
		}()
	}
	return s, nil
}

func (lw *liveWatcher) read(closing *atomic.Bool) {
	for {
		b, err := lw.stream.Recv()
		now := sinceEpoch()
		if err != nil {
			if lw.err == nil && !closing.Load() {
				lw.err = fmt.Errorf("live watch stream ended: %w", err)
			}
			return
		}
		for _, r := range b.GetResponses() {
			switch r.GetType() {
			case pb.EventType_PUT:
				sent, seq, err := parseSeqValue(r.GetValue())
				if err != nil {
					seq = -1
				} else {
					lw.lat = append(lw.lat, time.Duration(now-sent))
				}
				lw.log.add(seq, r.GetRevision())
				lw.delivered.Store(lw.log.events - lw.log.duplicates)
			case pb.EventType_CANCELED:
				lw.canceled++
				if lw.err == nil {
					lw.err = fmt.Errorf("live watch CANCELED: %s (code %d)", r.GetReason(), r.GetCode())
				}
			}
		}
	}
}

// stop ends the live streams (closeStreams cancels their context) and
// waits for the readers; after it their logs may be read.
func (s *liveSet) stop(closeStreams func()) {
	s.once.Do(func() {
		s.closing.Store(true)
		closeStreams()
		s.wg.Wait()
		s.cc.Close()
	})
}

// memSampler reads the nodes' memory every gap until stop.
type memSampler struct {
	series [][]procMem // one reading per node per gap
	err    error
	quit   chan struct{}
	done   chan struct{}
}

func startMemSampler(pids []int, gap time.Duration) *memSampler {
	m := &memSampler{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		tick := time.NewTicker(gap)
		defer tick.Stop()
		for {
			select {
			case <-m.quit:
				return
			case <-tick.C:
			}
			sample := make([]procMem, len(pids))
			for i, pid := range pids {
				var err error
				if sample[i], err = readProcMem(pid); err != nil {
					m.err = err
					return
				}
			}
			m.series = append(m.series, sample)
		}
	}()
	return m
}

func (m *memSampler) stop() ([][]procMem, error) {
	close(m.quit)
	<-m.done
	return m.series, m.err
}
