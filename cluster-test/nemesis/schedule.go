// Package nemesis decides which faults a cluster test injects and when (a
// schedule that is a pure function of the seed), and runs that schedule
// against a Cluster.
package nemesis

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// Fault families selectable with --nemesis.
const (
	Partition = "partition"
	Kill      = "kill"
	Pause     = "pause"
)

// Families lists every fault family; "all" selects them all.
var Families = []string{Partition, Kill, Pause}

// Schedule shape: healthy gaps and fault lengths are drawn uniformly from
// these ranges; the last fault ends RecoveryMargin before the time limit so
// the cluster can recover while the workload still runs.
const (
	HealthyMin     = 5 * time.Second
	HealthyMax     = 10 * time.Second
	FaultMin       = 5 * time.Second
	FaultMax       = 15 * time.Second
	RecoveryMargin = 10 * time.Second
	// minFault: a fault cut shorter than this by the margin is dropped.
	minFault = 3 * time.Second
	// leaderBias: probability that pause (and kill-one) targets the leader.
	leaderBias = 0.7
	// killAllChance: probability that a kill takes down every node.
	killAllChance = 0.25
)

// Fault is one scheduled fault. Targets are resolved when it starts (the
// leader is only known then); Perm is a seeded permutation of node indices
// used for random choices.
type Fault struct {
	Start  time.Duration `json:"start"`
	End    time.Duration `json:"end"`
	Family string        `json:"family"`
	// Variant: partition: "leader", "majority", "bridge" or "follower"
	// (isolates one follower); kill: "one" or "all"; pause: "leader",
	// "random" or "follower".
	Variant string `json:"variant"`
	// TargetLeader: the one-node target is the leader (when one is known).
	TargetLeader bool `json:"target_leader"`
	// TargetFollower: the one-node target is a follower (when the leader is
	// known); see WithFollowerFault.
	TargetFollower bool  `json:"target_follower,omitempty"`
	Perm           []int `json:"perm"`
}

// Kind is the name used in the timeline, e.g. "partition-bridge".
func (f Fault) Kind() string { return f.Family + "-" + f.Variant }

// ParseFamilies parses a --nemesis value: a comma list of families, "all", or
// "none".
func ParseFamilies(s string) ([]string, error) {
	switch s {
	case "all":
		return slices.Clone(Families), nil
	case "none", "":
		return nil, nil
	}
	var out []string
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if !slices.Contains(Families, f) {
			return nil, fmt.Errorf("unknown nemesis %q: use a comma list of %s, or all, or none", f, strings.Join(Families, ","))
		}
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out, nil
}

// NewSchedule draws the faults of a test of length limit on n nodes from seed.
// The same arguments always give the same schedule.
func NewSchedule(seed uint64, limit time.Duration, families []string, n int) []Fault {
	if len(families) == 0 {
		return nil
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	between := func(lo, hi time.Duration) time.Duration {
		return lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
	}
	// The first faults go through the families in a seeded order, so a
	// short run still exercises each one it was asked for.
	order := rng.Perm(len(families))
	var out []Fault
	t := time.Duration(0)
	last := limit - RecoveryMargin
	for {
		t += between(HealthyMin, HealthyMax)
		end := t + between(FaultMin, FaultMax)
		if end > last {
			end = last
		}
		if end-t < minFault {
			return out
		}
		family := families[rng.IntN(len(families))]
		if len(out) < len(order) {
			family = families[order[len(out)]]
		}
		f := Fault{Start: t, End: end, Family: family, Perm: rng.Perm(n)}
		switch f.Family {
		case Partition:
			f.Variant = []string{"leader", "majority", "bridge"}[rng.IntN(3)]
			f.TargetLeader = f.Variant == "leader"
		case Kill:
			f.Variant = "one"
			if rng.Float64() < killAllChance {
				f.Variant = "all"
			}
			f.TargetLeader = f.Variant == "one" && rng.Float64() < leaderBias
		case Pause:
			f.TargetLeader = rng.Float64() < leaderBias
			f.Variant = "random"
			if f.TargetLeader {
				f.Variant = "leader"
			}
		}
		out = append(out, f)
		t = end
	}
}

// WithFollowerFault returns schedule with at least one fault aimed at a
// single follower (kill-one, pause-follower or partition-follower), so a
// run whose failover clients are checked for availability while a
// follower is down always has such a window: if none of its faults is one,
// a seeded choice among them is turned into one of its own family. The
// same arguments give the same schedule; an empty schedule (a run too
// short for any fault) stays empty. Whether the window counts as a
// follower fault is still decided at run time: the target is a follower
// only when a leader answers at the fault's start.
func WithFollowerFault(schedule []Fault, seed uint64) []Fault {
	if len(schedule) == 0 || slices.ContainsFunc(schedule, func(f Fault) bool { return f.TargetFollower }) {
		return schedule
	}
	rng := rand.New(rand.NewPCG(seed^0x5f0c_a11e_d0f0_110e, seed))
	out := slices.Clone(schedule)
	f := &out[rng.IntN(len(out))]
	f.TargetLeader, f.TargetFollower = false, true
	switch f.Family {
	case Kill:
		f.Variant = "one"
	default: // Pause, Partition
		f.Variant = "follower"
	}
	return out
}

// Components returns the network components of a partition fault over nodes
// (in order), given the leader (may be ""). A node can talk only to nodes it
// shares a component with.
func (f Fault) Components(nodes []string, leader string) [][]string {
	p := make([]string, len(f.Perm))
	for i, j := range f.Perm {
		p[i] = nodes[j]
	}
	switch f.Variant {
	case "leader", "follower":
		one := p[0]
		if f.Variant == "leader" && leader != "" {
			one = leader
		} else if f.Variant == "follower" {
			one = f.Target(nodes, leader)
		}
		var rest []string
		for _, n := range nodes {
			if n != one {
				rest = append(rest, n)
			}
		}
		return [][]string{{one}, rest}
	case "bridge":
		// p[1] is the bridge: it sees both halves, which cannot see each other.
		mid := len(p) / 2
		return [][]string{p[:mid+1], p[mid:]}
	default: // majority/minority
		mid := len(p) / 2
		return [][]string{p[:mid], p[mid:]}
	}
}

// DropLists turns components into, for each node, the peers whose packets it
// must drop: everyone it shares no component with.
func DropLists(nodes []string, components [][]string) map[string][]string {
	reach := map[string]map[string]bool{}
	for _, c := range components {
		for _, a := range c {
			if reach[a] == nil {
				reach[a] = map[string]bool{}
			}
			for _, b := range c {
				reach[a][b] = true
			}
		}
	}
	out := map[string][]string{}
	for _, a := range nodes {
		for _, b := range nodes {
			if a != b && !reach[a][b] {
				out[a] = append(out[a], b)
			}
		}
	}
	return out
}

// Target picks the single node a kill-one, a pause or a follower
// partition hits.
func (f Fault) Target(nodes []string, leader string) string {
	if f.TargetLeader && leader != "" {
		return leader
	}
	if f.TargetFollower {
		for _, i := range f.Perm {
			if nodes[i] != leader {
				return nodes[i]
			}
		}
	}
	return nodes[f.Perm[0]]
}
