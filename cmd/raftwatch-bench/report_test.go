package main

import (
	"fmt"
	"testing"
)

// The history-cost rows compare raftwatch with the baseline build, never
// with etcd, and hold only 64+ client throughput to the 0.90 target.
func TestBaselineRowsHoldThroughputToNinetyPercent(t *testing.T) {
	put := func(target string, clients int, tput float64) Result {
		return Result{Workload: "put", Case: fmt.Sprintf("put %d clients", clients), Target: target, Clients: clients, Throughput: tput}
	}
	results := []Result{
		put("raftwatch", 64, 880), put("baseline", 64, 1000), put("etcd", 64, 100),
		put("raftwatch", 256, 950), put("baseline", 256, 1000), put("etcd", 256, 5000),
		put("raftwatch", 1, 100), put("baseline", 1, 200),
	}
	// 880/1000 misses 0.90, 950/1000 meets it, 1 client has no target.
	want := map[string]string{"put 64 clients": "**no**", "put 256 clients": "yes", "put 1 clients": ""}
	seen := 0
	for _, r := range buildBaselineRows(results) {
		if r.m.name != "throughput" {
			if r.goal != nil {
				t.Errorf("%s %s has a target; only throughput does", r.caseName, r.m.name)
			}
			continue
		}
		seen++
		if got := r.met(); got != want[r.caseName] {
			t.Errorf("%s: met = %q (ratio %.2f), want %q", r.caseName, got, r.ratio(), want[r.caseName])
		}
	}
	if seen != 3 {
		t.Errorf("%d throughput rows, want 3 (one per case the baseline ran)", seen)
	}
}

// A check row of the raftwatch-only workloads fails when any round shows
// an anomaly, not only the median.
func TestSoloCheckFailsOnAnyRound(t *testing.T) {
	slow := func(round int, missing int64) Result {
		return Result{Workload: "slow-watchers", Case: "slow", Round: round,
			Slow: &SlowWatchers{Node: 0, Roles: []string{"follower", "follower", "leader"},
				RSSBefore: []int64{1, 1, 1}, RSSMax: []int64{2, 2, 2}, LiveMissing: missing}}
	}
	resume := func(round int, dups int64) Result {
		return Result{Workload: "watch-resume", Case: "resume", Round: round, Resume: &WatchResume{Duplicates: dups}}
	}
	tests := []struct {
		name string
		rows []soloRow
		want string
	}{
		{"slow watchers, all rounds clean", slowRows([]Result{slow(1, 0), slow(2, 0), slow(3, 0)}), "yes"},
		{"slow watchers, one round lost a put", slowRows([]Result{slow(1, 0), slow(2, 1), slow(3, 0)}), "**no**"},
		{"watch resume, all rounds clean", resumeRows([]Result{resume(1, 0), resume(2, 0)}), "yes"},
		{"watch resume, one round repeated a put", resumeRows([]Result{resume(1, 0), resume(2, 0), resume(3, 2)}), "**no**"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checks := 0
			for _, r := range tc.rows {
				if r.ok == nil {
					continue
				}
				checks++
				if got := r.met(); got != tc.want {
					t.Errorf("%s: met = %q, want %q (values %v)", r.name, got, tc.want, r.vals)
				}
			}
			if checks != 1 {
				t.Errorf("%d check rows, want 1", checks)
			}
		})
	}
}
