//go:build !noraftwatch

package main

import (
	"context"
	"flag"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/raftwatch/raftwatch/client"
	pb "github.com/raftwatch/raftwatch/proto"
)

// watch-resume (issue 8): the Go client's watches move by themselves to
// another node when theirs dies. Watchers attached to one follower, a
// writer putting through the leader, kill -9 of the follower: how long
// until each watcher delivers a put written after the kill, and whether
// any watcher lost or repeated an event across the move.

// resumePrefix is where the watch-resume writer puts and what its watchers
// watch.
const resumePrefix = "/wr/"

// watchersPerResumeClient is how many watchers share one client (so one
// connection and one watch stream) when --conns is 0: a broken stream
// moves ten watches at once, as it would in a service with a few clients.
const watchersPerResumeClient = 10

func init() { raftwatchWorkloads["watch-resume"] = watchResumeCmd }

type resumeConfig struct {
	endpoints []string
	pids      []int
	watchers  int
	conns     int // clients the watchers share
	rate      float64
	before    time.Duration // writing before the kill
	after     time.Duration // writing after it
	drain     time.Duration
}

func watchResumeCmd(fs *flag.FlagSet) func(context.Context, common) (Result, error) {
	var cfg resumeConfig
	var pidList string
	fs.IntVar(&cfg.watchers, "watchers", 100, "watchers (Go client) on one follower, on the prefix every put goes to")
	fs.IntVar(&cfg.conns, "conns", 0, fmt.Sprintf("clients the watchers share (0: one per %d watchers)", watchersPerResumeClient))
	fs.Float64Var(&cfg.rate, "rate", 200, "puts per second through the leader")
	fs.DurationVar(&cfg.before, "before", 3*time.Second, "how long to put before the kill")
	fs.DurationVar(&cfg.after, "after", 10*time.Second, "how long to put after the kill")
	fs.DurationVar(&cfg.drain, "drain", 15*time.Second, "max wait for the watchers after the last put")
	fs.StringVar(&pidList, "pids", "", "node PIDs in --endpoints order (required: the follower's is killed with SIGKILL)")
	return func(ctx context.Context, c common) (Result, error) {
		pids, err := parsePIDs(pidList)
		if err != nil {
			return Result{}, err
		}
		if cfg.conns == 0 {
			cfg.conns = max(1, cfg.watchers/watchersPerResumeClient)
		}
		if cfg.watchers < cfg.conns || cfg.conns < 1 || cfg.rate <= 0 {
			return Result{}, fmt.Errorf("need 1 <= conns (%d) <= watchers (%d), rate > 0 (%v)", cfg.conns, cfg.watchers, cfg.rate)
		}
		cfg.endpoints, cfg.pids = c.endpoints, pids
		return runWatchResume(ctx, cfg)
	}
}

// resumeWatcher is one watch and what it delivered.
type resumeWatcher struct {
	w         *client.Watcher
	delivered atomic.Int64 // distinct puts delivered; the drain watches it
	// Owned by the reading goroutine until it ends.
	log seqLog
	// firstAfterKill is when (nanos since epoch) it first delivered a put
	// sent after the kill; 0: none yet.
	firstAfterKill int64
	err            error // why the watch ended before the workload closed it
}

func runWatchResume(ctx context.Context, cfg resumeConfig) (Result, error) {
	t, err := openPacedTarget(ctx, cfg.endpoints, cfg.pids, "follower")
	if err != nil {
		return Result{}, err
	}
	defer t.close()
	cl, victim, addr, writer := t.status, t.node, t.addr, t.writer

	// Every client lists the follower first, then the other nodes.
	clients := make([]*client.Client, cfg.conns)
	for i := range clients {
		if clients[i], err = client.New(client.Config{Endpoints: rotate(cfg.endpoints, victim), DialTimeout: raftwatchDialTimeout}); err != nil {
			return Result{}, err
		}
		defer clients[i].Close()
	}
	wctx, closeWatches := context.WithCancel(ctx)
	defer closeWatches()
	watchers := make([]*resumeWatcher, cfg.watchers)
	for i := range watchers {
		w, err := clients[i%cfg.conns].Watch(wctx, []byte(resumePrefix), client.WithPrefix())
		if err != nil {
			return Result{}, fmt.Errorf("watcher %d: %w", i, err)
		}
		watchers[i] = &resumeWatcher{w: w}
	}
	sctx, cancel := context.WithTimeout(ctx, opTimeout)
	st, err := cl.Status(sctx, addr)
	cancel()
	if err != nil {
		return Result{}, err
	}
	if st.GetWatchers() < uint64(cfg.watchers) {
		return Result{}, fmt.Errorf("the follower %s serves %d watchers, want the %d opened there", addr, st.GetWatchers(), cfg.watchers)
	}

	var killAt atomic.Int64 // nanos since epoch; 0 until the kill
	var closing atomic.Bool
	var wg sync.WaitGroup
	for _, rw := range watchers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rw.read(&killAt, &closing)
		}()
	}
	stopReaders := func() {
		closing.Store(true)
		closeWatches()
		wg.Wait()
	}
	defer func() {
		if !closing.Load() {
			stopReaders()
		}
	}()

	pw := newPacedWriter(writer, resumePrefix, cfg.rate)
	start := time.Now()
	pw.run(ctx, cfg.before)
	if ctx.Err() != nil {
		return Result{}, ctx.Err()
	}
	var killRev uint64 // the last acknowledged revision before the kill
	for _, a := range pw.acknowledged() {
		killRev = max(killRev, a.rev)
	}
	// Check the PID again right before the kill: it must still be that node.
	if err := checkNodePIDs([]int{cfg.pids[victim]}, []string{addr}); err != nil {
		return Result{}, err
	}
	killAt.Store(sinceEpoch())
	if err := syscall.Kill(cfg.pids[victim], syscall.SIGKILL); err != nil {
		return Result{}, fmt.Errorf("kill -9 %d (%s): %w", cfg.pids[victim], addr, err)
	}
	pw.run(ctx, cfg.after)
	elapsed := time.Since(start)
	acks := pw.acknowledged()
	counts := make([]*atomic.Int64, len(watchers))
	for i, rw := range watchers {
		counts[i] = &rw.delivered
	}
	drainDelivered(ctx, counts, int64(len(acks)), cfg.drain)
	stopReaders()

	rs := &WatchResume{KilledNode: victim, KillRevision: killRev}
	r := Result{
		Workload:   "watch-resume",
		Case:       fmt.Sprintf("watch-resume %d watchers, kill -9 of their follower", cfg.watchers),
		Target:     "raftwatch",
		Watchers:   cfg.watchers,
		Conns:      cfg.conns,
		DurationS:  elapsed.Seconds(),
		Ops:        int64(len(acks)),
		Errors:     pw.errs.Load(),
		FirstError: pw.first.msg,
		PutsPerS:   float64(len(acks)) / elapsed.Seconds(),
		Resume:     rs,
	}
	var lat latencies
	var first firstError
	kill := killAt.Load()
	for _, rw := range watchers {
		n := rw.w.Resumes()
		rs.Resumes += int64(n)
		if n > 0 {
			rs.WatchersResumed++
		}
		if rw.firstAfterKill == 0 {
			rs.NeverAfterKill++
		} else {
			lat.add([]time.Duration{time.Duration(rw.firstAfterKill - kill)})
		}
		missing, wrong := rw.log.check(acks, rw.w.Created())
		rs.Missing += missing + wrong
		rs.OutOfOrder += rw.log.outOfOrder
		rs.Duplicates += rw.log.duplicates
		r.Events += rw.log.events
		if rw.err != nil {
			r.EndedStreams++
			first.set(rw.err)
		}
	}
	r.finishPaced(int64(len(acks))*int64(cfg.watchers), elapsed, &lat, &first, pw)
	return r, nil
}

func (rw *resumeWatcher) read(killAt *atomic.Int64, closing *atomic.Bool) {
	for {
		resp, err := rw.w.Recv()
		now := sinceEpoch()
		if err != nil {
			if !closing.Load() {
				rw.err = fmt.Errorf("watch ended: %w", err)
			}
			return
		}
		switch resp.GetType() {
		case pb.EventType_PUT:
			sent, seq, err := parseSeqValue(resp.GetValue())
			if err != nil {
				seq = -1
			}
			rw.log.add(seq, resp.GetRevision())
			rw.delivered.Store(rw.log.events - rw.log.duplicates)
			if k := killAt.Load(); rw.firstAfterKill == 0 && k != 0 && err == nil && sent > k {
				rw.firstAfterKill = now
			}
		case pb.EventType_CANCELED:
			if !closing.Load() {
				rw.err = fmt.Errorf("watch CANCELED: %s (code %d)", resp.GetReason(), resp.GetCode())
			}
		}
	}
}
