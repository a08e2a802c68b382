package nemesis

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/raftwatch/raftwatch/cluster-test/history"
)

// Cluster is what the nemesis needs from the cluster under test. Every method
// acts only on the test's own namespaces and processes.
type Cluster interface {
	Nodes() []string
	// Leader returns the current leader's id, or "" when none is known.
	Leader(ctx context.Context) string
	// Drop makes node drop every packet from and to the given peers
	// (replacing any earlier rules on that node).
	Drop(node string, peers []string) error
	// HealNetwork removes every drop rule on every node.
	HealNetwork() error
	Kill(node string) error
	Restart(node string) error
	Pause(node string) error
	Resume(node string) error
}

// Runner executes a schedule and records the timeline.
type Runner struct {
	Cluster  Cluster
	Schedule []Fault
	Start    time.Time // the test's time origin
	Timeline *history.Writer

	mu      sync.Mutex
	current string
	healers []func() error
	Counts  map[string]int
}

// Current describes the fault in progress ("" when healthy).
func (r *Runner) Current() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.current
}

func (r *Runner) now() int64 { return time.Since(r.Start).Nanoseconds() }

func (r *Runner) record(phase, kind string, targets []string, leader, detail string, err error) {
	e := history.NemesisEvent{Time: r.now(), Phase: phase, Kind: kind, Targets: targets, Leader: leader, Detail: detail}
	if err != nil {
		e.Error = err.Error()
	}
	r.Timeline.Write(e)
}

// Run executes the schedule until it ends or ctx is done, and always leaves
// the cluster healed (network open, every node running and resumed).
func (r *Runner) Run(ctx context.Context) error {
	r.Counts = map[string]int{}
	var errs []error
	for _, f := range r.Schedule {
		if !sleepUntil(ctx, r.Start.Add(f.Start)) {
			break
		}
		leader := r.leader(ctx)
		targets, detail, err := r.inject(f, leader)
		r.mu.Lock()
		r.current = fmt.Sprintf("%s%v", f.Kind(), targets)
		r.Counts[f.Kind()]++
		r.mu.Unlock()
		r.record("start", f.Kind(), targets, leader, detail, err)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.Kind(), err))
		}
		sleepUntil(ctx, r.Start.Add(f.End))
		err = r.heal()
		r.record("stop", f.Kind(), targets, "", "", err)
		r.mu.Lock()
		r.current = ""
		r.mu.Unlock()
		if err != nil {
			errs = append(errs, fmt.Errorf("healing %s: %w", f.Kind(), err))
		}
	}
	return errors.Join(errs...)
}

// HealAll undoes every fault; safe to call at any time, also concurrently
// with nothing in progress.
func (r *Runner) HealAll() error {
	err := r.heal()
	if nerr := r.Cluster.HealNetwork(); nerr != nil {
		err = errors.Join(err, nerr)
	}
	return err
}

func (r *Runner) heal() error {
	r.mu.Lock()
	hs := r.healers
	r.healers = nil
	r.mu.Unlock()
	var errs []error
	for i := len(hs) - 1; i >= 0; i-- {
		if err := hs[i](); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (r *Runner) onHeal(f func() error) {
	r.mu.Lock()
	r.healers = append(r.healers, f)
	r.mu.Unlock()
}

// leaderTimeout bounds the Status calls that find the leader.
const leaderTimeout = 2 * time.Second

// leader asks the cluster for its leader before every fault, also one that
// does not aim at it: the timeline records it so the availability report can
// tell a fault of the leader from a fault of a follower.
func (r *Runner) leader(ctx context.Context) string {
	lctx, cancel := context.WithTimeout(ctx, leaderTimeout)
	defer cancel()
	return r.Cluster.Leader(lctx)
}

func (r *Runner) inject(f Fault, leader string) ([]string, string, error) {
	nodes := r.Cluster.Nodes()
	switch f.Family {
	case Partition:
		comps := f.Components(nodes, leader)
		drops := DropLists(nodes, comps)
		r.onHeal(r.Cluster.HealNetwork)
		for _, n := range nodes {
			if len(drops[n]) == 0 {
				continue
			}
			if err := r.Cluster.Drop(n, drops[n]); err != nil {
				return nil, "", err
			}
		}
		var targets []string
		for _, c := range comps {
			targets = append(targets, "{"+strings.Join(c, ",")+"}")
		}
		return targets, fmt.Sprintf("components %v (leader %q)", comps, leader), nil
	case Kill:
		targets := nodes
		if f.Variant == "one" {
			targets = []string{f.Target(nodes, leader)}
		}
		for _, n := range targets {
			r.onHeal(func() error { return r.Cluster.Restart(n) })
			if err := r.Cluster.Kill(n); err != nil {
				return targets, "", err
			}
		}
		return targets, fmt.Sprintf("kill -9 (leader %q)", leader), nil
	case Pause:
		n := f.Target(nodes, leader)
		r.onHeal(func() error { return r.Cluster.Resume(n) })
		return []string{n}, fmt.Sprintf("SIGSTOP (leader %q)", leader), r.Cluster.Pause(n)
	}
	return nil, "", fmt.Errorf("unknown fault family %q", f.Family)
}

func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}
