//go:build !noraftwatch

package main

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/raftwatch/raftwatch/client"
)

const (
	// pacedTick is how often the paced writer releases the puts that fell
	// due: 200 releases a second make 1,000 puts/s look steady and cost
	// nothing.
	pacedTick = 5 * time.Millisecond
	// pacedWorkers is how many puts a paced writer may have in flight. A
	// put takes a few ms (tens under load), so 64 hold 1,000/s through a
	// stall of one put without slowing the rate (open loop).
	pacedWorkers = 64
	// rolesWait bounds the wait for a cluster to name exactly one leader.
	rolesWait = 15 * time.Second
)

// pacedWriter puts at a fixed rate, each put to its own key under prefix
// and carrying its send time and seq (seqValue), and records the revision
// of each acknowledged put. A put that falls due while every worker is busy
// is skipped and counted, so the rate reported is the rate achieved.
type pacedWriter struct {
	c      *client.Client
	prefix string
	rate   float64

	mu      sync.Mutex
	acks    []ack
	errs    atomic.Int64
	skipped atomic.Int64
	first   firstError
	issued  atomic.Int64 // seqs handed out; the next seq
}

func newPacedWriter(c *client.Client, prefix string, rate float64) *pacedWriter {
	return &pacedWriter{c: c, prefix: prefix, rate: rate}
}

// key returns the key of put seq.
func (p *pacedWriter) key(seq int64) []byte { return fmt.Appendf(nil, "%s%08d", p.prefix, seq) }

// run puts for dur (or until ctx ends) and waits for the puts in flight.
// It may be called again to continue with the following seqs.
func (p *pacedWriter) run(ctx context.Context, dur time.Duration) {
	due := make(chan int64, pacedWorkers)
	var wg sync.WaitGroup
	for w := 0; w < pacedWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := range due {
				octx, cancel := context.WithTimeout(ctx, opTimeout)
				resp, err := p.c.Put(octx, p.key(seq), seqValue(seq))
				cancel()
				if err != nil {
					p.errs.Add(1)
					p.first.set(fmt.Errorf("put %d: %w", seq, err))
					continue
				}
				p.mu.Lock()
				p.acks = append(p.acks, ack{seq: seq, rev: resp.GetRevision()})
				p.mu.Unlock()
			}
		}()
	}
	start := time.Now()
	tick := time.NewTicker(pacedTick)
	var released int64
release:
	for {
		elapsed := time.Since(start)
		if elapsed > dur {
			elapsed = dur
		}
		for want := int64(elapsed.Seconds() * p.rate); released < want; released++ {
			select {
			case due <- p.issued.Add(1) - 1:
			default:
				p.skipped.Add(1)
			}
		}
		if elapsed >= dur {
			break
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			break release
		}
	}
	tick.Stop()
	close(due)
	wg.Wait()
}

// acknowledged returns the acknowledged puts so far, by revision.
func (p *pacedWriter) acknowledged() []ack {
	p.mu.Lock()
	out := slices.Clone(p.acks)
	p.mu.Unlock()
	slices.SortFunc(out, func(a, b ack) int {
		return cmp.Or(cmp.Compare(a.rev, b.rev), cmp.Compare(a.seq, b.seq))
	})
	return out
}

// drainDelivered waits until every counter has reached want, none moved
// for drainIdle, or max passed: the drain of workloads that count the puts
// each watcher delivered.
func drainDelivered(ctx context.Context, counts []*atomic.Int64, want int64, max time.Duration) {
	deadline := time.Now().Add(max)
	last, lastChange := int64(-1), time.Now()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		var total int64
		done := true
		for _, c := range counts {
			n := c.Load()
			total += n
			done = done && n >= want
		}
		if done {
			return
		}
		if total != last {
			last, lastChange = total, time.Now()
		} else if time.Since(lastChange) > drainIdle {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// clusterRoles returns each endpoint's role ("leader", "follower", ...) once
// exactly one endpoint says it leads.
func clusterRoles(ctx context.Context, c *client.Client, endpoints []string) ([]string, int, error) {
	deadline := time.Now().Add(rolesWait)
	var last error
	for {
		roles := make([]string, len(endpoints))
		leader, leaders := -1, 0
		last = nil
		for i, ep := range endpoints {
			sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			st, err := c.Status(sctx, ep)
			cancel()
			if err != nil {
				last = fmt.Errorf("status of %s: %w", ep, err)
				continue
			}
			roles[i] = st.GetRole()
			if roles[i] == "leader" {
				leader, leaders = i, leaders+1
			}
		}
		if last == nil && leaders == 1 {
			return roles, leader, nil
		}
		if last == nil {
			last = fmt.Errorf("roles %v: want exactly one leader", roles)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, -1, last
		}
		time.Sleep(readyPoll)
	}
}

// pickNode turns --node (follower, leader or an endpoint index) into an
// endpoint index: "follower" is the first follower.
func pickNode(spec string, roles []string, leader int) (int, error) {
	switch spec {
	case "leader":
		return leader, nil
	case "follower":
		for i, r := range roles {
			if i != leader && r == "follower" {
				return i, nil
			}
		}
		return -1, fmt.Errorf("no follower among %v", roles)
	}
	var i int
	if _, err := fmt.Sscan(spec, &i); err != nil || i < 0 || i >= len(roles) {
		return -1, fmt.Errorf("--node %q: want follower, leader or an endpoint index 0-%d", spec, len(roles)-1)
	}
	return i, nil
}

// checkNodePIDs makes sure pid i is the raftwatch node serving endpoint i,
// so a workload never measures, let alone kills, another process.
func checkNodePIDs(pids []int, endpoints []string) error {
	if len(pids) != len(endpoints) {
		return fmt.Errorf("--pids: want one PID per endpoint (%d), got %d", len(endpoints), len(pids))
	}
	for i, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			return fmt.Errorf("--pids: node of %s: %w", endpoints[i], err)
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if !slices.Contains(args, "serve") || !slices.Contains(args, endpoints[i]) {
			return fmt.Errorf("--pids: process %d (%s) is not the raftwatch node serving %s", pid, strings.Join(args, " "), endpoints[i])
		}
	}
	return nil
}

// finishPaced fills the totals of a workload whose watchers followed a
// paced writer: expected events, rate, latency percentiles, and the first
// error (a watcher's, else the writer falling behind its pace).
func (r *Result) finishPaced(expected int64, elapsed time.Duration, lat *latencies, first *firstError, pw *pacedWriter) {
	r.ExpectedEvents = expected
	r.EventsPerS = float64(r.Events) / elapsed.Seconds()
	r.P50Ms, r.P99Ms, r.MaxMs = lat.percentiles()
	if r.FirstError == "" {
		r.FirstError = first.msg
	}
	if n := pw.skipped.Load(); n > 0 && r.FirstError == "" {
		r.FirstError = fmt.Sprintf("writer fell behind: %d puts skipped", n)
	}
}

// pacedTarget is the raftwatch cluster a paced workload runs on: a client
// for status calls, a writer that tries the leader first, and the node the
// workload's watchers use.
type pacedTarget struct {
	status, writer *client.Client
	roles          []string
	leader, node   int
	addr           string // the node's endpoint
}

// openPacedTarget checks that pids are the nodes serving endpoints, finds
// their roles, and picks the node named by which (see pickNode).
func openPacedTarget(ctx context.Context, endpoints []string, pids []int, which string) (*pacedTarget, error) {
	if err := checkNodePIDs(pids, endpoints); err != nil {
		return nil, err
	}
	cl, err := client.New(client.Config{Endpoints: endpoints, DialTimeout: raftwatchDialTimeout})
	if err != nil {
		return nil, err
	}
	t := &pacedTarget{status: cl}
	if t.roles, t.leader, err = clusterRoles(ctx, cl, endpoints); err != nil {
		cl.Close()
		return nil, err
	}
	if t.node, err = pickNode(which, t.roles, t.leader); err != nil {
		cl.Close()
		return nil, err
	}
	t.addr = endpoints[t.node]
	if t.writer, err = client.New(client.Config{Endpoints: rotate(endpoints, t.leader), DialTimeout: raftwatchDialTimeout}); err != nil {
		cl.Close()
		return nil, err
	}
	return t, nil
}

func (t *pacedTarget) close() {
	t.writer.Close()
	t.status.Close()
}
