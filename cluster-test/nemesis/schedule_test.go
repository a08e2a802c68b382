package nemesis

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestScheduleIsAPureFunctionOfTheSeed(t *testing.T) {
	a := NewSchedule(7, 10*time.Minute, Families, 3)
	b := NewSchedule(7, 10*time.Minute, Families, 3)
	if !reflect.DeepEqual(a, b) || len(a) == 0 {
		t.Fatalf("schedules differ or empty: %d vs %d", len(a), len(b))
	}
	c := NewSchedule(8, 10*time.Minute, Families, 3)
	if reflect.DeepEqual(a, c) {
		t.Fatal("different seeds gave the same schedule")
	}
}

func TestScheduleHealsBeforeTheRecoveryMargin(t *testing.T) {
	for seed := uint64(0); seed < 50; seed++ {
		limit := 60 * time.Second
		var prev time.Duration
		for _, f := range NewSchedule(seed, limit, Families, 3) {
			if f.Start < prev+HealthyMin || f.End <= f.Start || f.End > limit-RecoveryMargin {
				t.Fatalf("seed %d: bad fault %+v after %v", seed, f, prev)
			}
			prev = f.End
		}
	}
}

func TestScheduleUsesOnlySelectedFamilies(t *testing.T) {
	for _, f := range NewSchedule(3, 10*time.Minute, []string{Pause}, 3) {
		if f.Family != Pause {
			t.Fatalf("got %s", f.Family)
		}
	}
	if s := NewSchedule(3, 10*time.Minute, nil, 3); len(s) != 0 {
		t.Fatalf("no families should give no faults, got %d", len(s))
	}
}

func TestPartitions(t *testing.T) {
	nodes := []string{"n1", "n2", "n3"}
	tests := []struct {
		name   string
		fault  Fault
		leader string
		want   map[string][]string
	}{
		{"leader isolation cuts the leader off from both followers",
			Fault{Variant: "leader", Perm: []int{0, 1, 2}}, "n2",
			map[string][]string{"n1": {"n2"}, "n2": {"n1", "n3"}, "n3": {"n2"}}},
		{"majority/minority split leaves one node alone",
			Fault{Variant: "majority", Perm: []int{2, 0, 1}}, "",
			map[string][]string{"n3": {"n1", "n2"}, "n1": {"n3"}, "n2": {"n3"}}},
		{"bridge: the middle node sees both halves that cannot see each other",
			Fault{Variant: "bridge", Perm: []int{0, 1, 2}}, "",
			map[string][]string{"n1": {"n3"}, "n3": {"n1"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := DropLists(nodes, tc.fault.Components(nodes, tc.leader))
			for _, n := range nodes {
				if !slices.Equal(got[n], tc.want[n]) {
					t.Fatalf("%s drops %v, want %v (all: %v)", n, got[n], tc.want[n], got)
				}
			}
		})
	}
}

func TestParseFamilies(t *testing.T) {
	if f, err := ParseFamilies("all"); err != nil || len(f) != 3 {
		t.Fatalf("all: %v %v", f, err)
	}
	if f, err := ParseFamilies("kill,pause"); err != nil || !slices.Equal(f, []string{Kill, Pause}) {
		t.Fatalf("kill,pause: %v %v", f, err)
	}
	if _, err := ParseFamilies("partition,flood"); err == nil {
		t.Fatal("unknown family accepted")
	}
}

// CI runs 75 s with every family; each must appear whatever the seed.
func TestShortScheduleCoversEveryFamily(t *testing.T) {
	for seed := uint64(0); seed < 500; seed++ {
		seen := map[string]bool{}
		for _, f := range NewSchedule(seed, 75*time.Second, Families, 3) {
			seen[f.Family] = true
		}
		for _, fam := range Families {
			if !seen[fam] {
				t.Fatalf("seed %d: a 75 s schedule has no %s fault", seed, fam)
			}
		}
	}
}

// Every schedule a failover run uses (CI: 75 s, all families; and each
// family alone) has a fault that hits exactly one follower whichever node
// leads when it starts, so the availability check always has a window to
// check; the rest of the schedule is the seed's.
func TestFailoverSchedulesHaveAFollowerFault(t *testing.T) {
	nodes := []string{"n1", "n2", "n3"}
	familyLists := [][]string{Families, {Kill}, {Pause}, {Partition}}
	for seed := uint64(0); seed < 40; seed++ {
		for _, families := range familyLists {
			base := NewSchedule(seed, 75*time.Second, families, len(nodes))
			s := WithFollowerFault(base, seed)
			if !reflect.DeepEqual(s, WithFollowerFault(base, seed)) {
				t.Fatalf("seed %d %v: two calls gave different schedules", seed, families)
			}
			changed, found := 0, false
			for i, f := range s {
				if !reflect.DeepEqual(f, base[i]) {
					changed++
				}
				if f.TargetFollower {
					found = true
					if !slices.Contains(families, f.Family) || f.Start != base[i].Start || f.End != base[i].End {
						t.Fatalf("seed %d: follower fault %+v replaced %+v: want the same family and times", seed, f, base[i])
					}
					for _, leader := range nodes {
						if class := classOf(f, nodes, leader); !strings.HasPrefix(class, "follower-") {
							t.Fatalf("seed %d: %s with leader %s hits %s, want one follower", seed, f.Kind(), leader, class)
						}
					}
				}
			}
			if !found || changed > 1 || len(s) != len(base) {
				t.Fatalf("seed %d %v: follower fault found %v, %d faults changed (want at most 1) of %d", seed, families, found, changed, len(s))
			}
		}
	}
	if s := WithFollowerFault(nil, 1); len(s) != 0 {
		t.Fatalf("a run too short for faults got %v", s)
	}
}

// classOf says whom f hits with leader leading, as the availability
// report classifies it: "follower-<what>", "leader-<what>" or "other".
func classOf(f Fault, nodes []string, leader string) string {
	var hit, what string
	switch f.Family {
	case Kill:
		if f.Variant != "one" {
			return "other"
		}
		hit, what = f.Target(nodes, leader), "killed"
	case Pause:
		hit, what = f.Target(nodes, leader), "paused"
	case Partition:
		drops := DropLists(nodes, f.Components(nodes, leader))
		for _, n := range nodes {
			if len(drops[n]) == len(nodes)-1 {
				if hit != "" {
					return "other" // two nodes cut off: not one
				}
				hit = n
			}
		}
		what = "isolated"
	}
	switch hit {
	case "":
		return "other"
	case leader:
		return "leader-" + what
	}
	return "follower-" + what
}
