package checker

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/raftwatch/raftwatch/cluster-test/history"
)

// Window is a span of the test: a fault (Kind != "healthy") or the healthy
// time between faults.
type Window struct {
	Kind    string   `json:"kind"`
	Targets []string `json:"targets,omitempty"`
	// Leader is the leader when the fault started, as the harness saw it.
	Leader string `json:"leader,omitempty"`
	// Class says whom the fault hit (see Classify).
	Class string `json:"class"`
	Start int64  `json:"start_ns"`
	End   int64  `json:"end_ns"`
	// OK, Fail, Info count the pinned clients' ops invoked in the window.
	OK   int `json:"ok"`
	Fail int `json:"fail"`
	Info int `json:"info"`
	// Failover counts the failover clients' ops invoked in the window.
	Failover Counts `json:"failover"`
	// Recovery: for a fault of the leader, the time from the fault's start
	// to the return of the first failover-client write invoked after it
	// that succeeded; -1 when none did before the run ended.
	Recovery int64 `json:"recovery_ns,omitempty"`
}

// Counts are op outcomes.
type Counts struct {
	OK   int `json:"ok"`
	Fail int `json:"fail"`
	Info int `json:"info"`
}

// Total is the number of ops counted.
func (c Counts) Total() int { return c.OK + c.Fail + c.Info }

// Pct is the share of ops that succeeded, in percent (0 with no op).
func (c Counts) Pct() float64 {
	if c.Total() == 0 {
		return 0
	}
	return 100 * float64(c.OK) / float64(c.Total())
}

func (c *Counts) add(outcome string) {
	switch outcome {
	case history.OK:
		c.OK++
	case history.Fail:
		c.Fail++
	default:
		c.Info++
	}
}

// Window classes: whom a fault hit, by its kind, its targets and the leader
// when it started.
const (
	ClassHealthy          = "healthy"
	ClassFollowerKilled   = "follower-killed"
	ClassFollowerPaused   = "follower-paused"
	ClassFollowerIsolated = "follower-isolated"
	ClassLeaderKilled     = "leader-killed"
	ClassLeaderPaused     = "leader-paused"
	ClassLeaderIsolated   = "leader-isolated"
	ClassAllKilled        = "all-killed"
	// ClassBridge: a partition in which no node is cut off from all others.
	ClassBridge = "bridge-partition"
	// ClassUnknown: a one-node fault when no leader was known at its start.
	ClassUnknown = "leader-unknown"
)

// Availability targets of the failover clients (the Go client with every
// endpoint, as users run it).
const (
	// FollowerMinPct: in every window where one follower is killed, paused
	// or isolated, at least this share of ops must succeed: the leader is up
	// and a client that knows every endpoint has no reason to fail.
	FollowerMinPct = 95.0
	// LeaderRecoveryTarget: the p99 of the time from a fault of the leader
	// to the first successful write; a few election timeouts (750 ms each by
	// default) plus the op timeout that a write sent to a stopped leader
	// waits out. A target reported against, not a check.
	LeaderRecoveryTarget = 2 * time.Second
)

// IsFollowerFault reports a class that the FollowerMinPct check covers.
func IsFollowerFault(class string) bool {
	return class == ClassFollowerKilled || class == ClassFollowerPaused || class == ClassFollowerIsolated
}

// IsLeaderFault reports a class whose recovery time is measured.
func IsLeaderFault(class string) bool {
	return class == ClassLeaderKilled || class == ClassLeaderPaused || class == ClassLeaderIsolated
}

// Classify says whom the fault of w hit. Kinds are those of the nemesis
// ("kill-one", "pause-leader", "partition-majority", ...); partition targets
// are its components as "{n1,n2}".
func Classify(w Window) string {
	role := func(node string) string {
		switch {
		case w.Leader == "":
			return ""
		case node == w.Leader:
			return "leader"
		default:
			return "follower"
		}
	}
	one := func(node, what string) string {
		if r := role(node); r != "" {
			return r + "-" + what
		}
		return ClassUnknown
	}
	family, _, _ := strings.Cut(w.Kind, "-")
	switch {
	case w.Kind == ClassHealthy:
		return ClassHealthy
	case w.Kind == "kill-all":
		return ClassAllKilled
	case family == "kill" && len(w.Targets) == 1:
		return one(w.Targets[0], "killed")
	case family == "pause" && len(w.Targets) == 1:
		return one(w.Targets[0], "paused")
	case family == "partition":
		if n := isolated(w.Targets); n != "" {
			return one(n, "isolated")
		}
		return ClassBridge
	}
	return w.Kind
}

// isolated returns the one node that partition components cut off from
// every other node, or "".
func isolated(components []string) string {
	count := map[string]int{}
	var singles []string
	for _, c := range components {
		nodes := strings.Split(strings.Trim(c, "{}"), ",")
		for _, n := range nodes {
			count[n]++
		}
		if len(nodes) == 1 {
			singles = append(singles, nodes[0])
		}
	}
	var out []string
	for _, n := range singles {
		if count[n] == 1 {
			out = append(out, n)
		}
	}
	if len(out) == 1 {
		return out[0]
	}
	return ""
}

// Windows turns the nemesis timeline into consecutive windows covering
// [0, end]: healthy gaps and fault windows (start to matching stop), each
// classified.
func Windows(events []history.NemesisEvent, end int64) []Window {
	var faults []Window
	open := map[string]int{}
	for _, e := range events {
		switch e.Phase {
		case "start":
			open[e.Kind] = len(faults)
			faults = append(faults, Window{Kind: e.Kind, Targets: e.Targets, Leader: e.Leader, Start: e.Time, End: -1})
		case "stop":
			if i, ok := open[e.Kind]; ok {
				faults[i].End = e.Time
				delete(open, e.Kind)
			}
		}
	}
	sort.Slice(faults, func(i, j int) bool { return faults[i].Start < faults[j].Start })
	var out []Window
	var t int64
	for _, f := range faults {
		if f.End < 0 {
			f.End = end
		}
		if f.Start > t {
			out = append(out, Window{Kind: ClassHealthy, Class: ClassHealthy, Start: t, End: f.Start})
		}
		f.Class = Classify(f)
		out = append(out, f)
		t = max(t, f.End)
	}
	if t < end {
		out = append(out, Window{Kind: ClassHealthy, Class: ClassHealthy, Start: t, End: end})
	}
	return out
}

// Availability counts op outcomes per window and client kind, by invocation
// time, and measures the recovery of each fault of the leader. It returns
// the counted windows and the pinned clients' table (a report, not a
// check); FailoverAvailability reports and checks the failover clients.
func Availability(ops []history.Op, windows []Window) ([]Window, string) {
	ws := append([]Window(nil), windows...)
	for _, o := range ops {
		t := o.Invoke.Time
		i := sort.Search(len(ws), func(i int) bool { return ws[i].End >= t })
		if i == len(ws) {
			i = len(ws) - 1
		}
		if i < 0 {
			continue
		}
		if o.Invoke.Client == history.ClientFailover {
			ws[i].Failover.add(o.Outcome())
			continue
		}
		switch o.Outcome() {
		case history.OK:
			ws[i].OK++
		case history.Fail:
			ws[i].Fail++
		default:
			ws[i].Info++
		}
	}
	for i := range ws {
		if IsLeaderFault(ws[i].Class) {
			ws[i].Recovery = firstWrite(ops, ws[i].Start)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-22s %-14s %9s %9s %6s %6s %6s %7s\n", "window", "targets", "start_s", "end_s", "ok", "fail", "info", "ok%")
	for _, w := range ws {
		c := Counts{OK: w.OK, Fail: w.Fail, Info: w.Info}
		fmt.Fprintf(&b, "%-22s %-14s %9.1f %9.1f %6d %6d %6d %6.1f%%\n", w.Kind, strings.Join(w.Targets, " "),
			float64(w.Start)/1e9, float64(w.End)/1e9, w.OK, w.Fail, w.Info, c.Pct())
	}
	return ws, b.String()
}

// firstWrite is the time from start to the return of the first failover
// write invoked at or after start that succeeded, or -1.
func firstWrite(ops []history.Op, start int64) int64 {
	best := int64(-1)
	for _, o := range ops {
		inv := o.Invoke
		if inv.Client != history.ClientFailover || inv.Op == history.OpGet || inv.Time < start || o.Outcome() != history.OK {
			continue
		}
		if d := o.Complete.Time - start; best < 0 || d < best {
			best = d
		}
	}
	return best
}

// ClassSummary is the failover clients' availability over every window of
// one class.
type ClassSummary struct {
	Class   string  `json:"class"`
	Windows int     `json:"windows"`
	Counts  Counts  `json:"counts"`
	Pct     float64 `json:"ok_pct"`
	// MinPct: the lowest share of any one window of the class.
	MinPct float64 `json:"min_window_ok_pct"`
}

// RecoveryStats summarise the recovery times of the faults of the leader.
type RecoveryStats struct {
	// Faults: how many faults of the leader; Recovered: how many saw a
	// successful write before the run ended (the rest count as the
	// longest).
	Faults    int   `json:"faults"`
	Recovered int   `json:"recovered"`
	P50       int64 `json:"p50_ns"`
	P99       int64 `json:"p99_ns"`
	Max       int64 `json:"max_ns"`
	// TargetMet: P99 <= LeaderRecoveryTarget and every fault recovered.
	TargetMet bool `json:"target_met"`
}

// FailoverResult is the availability report of the failover clients and
// its check: every follower-fault window at or above FollowerMinPct.
type FailoverResult struct {
	Valid    bool           `json:"valid"`
	Detail   string         `json:"detail"`
	Classes  []ClassSummary `json:"classes"`
	Recovery RecoveryStats  `json:"leader_recovery"`
	// Below lists the follower-fault windows under FollowerMinPct.
	Below []string `json:"below,omitempty"`
	Table string   `json:"-"`
}

// FailoverAvailability reports the failover clients' share of successful
// ops per window and per class, the recovery of the leader's faults, and
// checks the follower windows. ws are Availability's counted windows.
func FailoverAvailability(ws []Window) FailoverResult {
	res := FailoverResult{Valid: true}
	var b strings.Builder
	fmt.Fprintf(&b, "%-22s %-18s %-6s %-14s %9s %9s %6s %6s %6s %7s %10s\n",
		"window", "class", "leader", "targets", "start_s", "end_s", "ok", "fail", "info", "ok%", "recovery_s")
	byClass := map[string]*ClassSummary{}
	var order []string
	var recoveries []int64
	for _, w := range ws {
		c := w.Failover
		rec := ""
		if IsLeaderFault(w.Class) {
			res.Recovery.Faults++
			if w.Recovery >= 0 {
				res.Recovery.Recovered++
				recoveries = append(recoveries, w.Recovery)
				rec = fmt.Sprintf("%.2f", float64(w.Recovery)/1e9)
			} else {
				rec = "none"
			}
		}
		fmt.Fprintf(&b, "%-22s %-18s %-6s %-14s %9.1f %9.1f %6d %6d %6d %6.1f%% %10s\n", w.Kind, w.Class, w.Leader,
			strings.Join(w.Targets, " "), float64(w.Start)/1e9, float64(w.End)/1e9, c.OK, c.Fail, c.Info, c.Pct(), rec)
		s := byClass[w.Class]
		if s == nil {
			s = &ClassSummary{Class: w.Class, MinPct: math.Inf(1)}
			byClass[w.Class] = s
			order = append(order, w.Class)
		}
		s.Windows++
		s.Counts.OK += c.OK
		s.Counts.Fail += c.Fail
		s.Counts.Info += c.Info
		s.MinPct = math.Min(s.MinPct, c.Pct())
		if IsFollowerFault(w.Class) && (c.Total() == 0 || c.Pct() < FollowerMinPct) {
			res.Valid = false
			why := fmt.Sprintf("%.1f%% < %.0f%%", c.Pct(), FollowerMinPct)
			if c.Total() == 0 {
				why = "no failover op was invoked in it"
			}
			res.Below = append(res.Below, fmt.Sprintf("%s %s at %.1fs-%.1fs: %s", w.Class, strings.Join(w.Targets, " "),
				float64(w.Start)/1e9, float64(w.End)/1e9, why))
		}
	}
	sort.Strings(order)
	for _, k := range order {
		s := byClass[k]
		s.Pct = s.Counts.Pct()
		res.Classes = append(res.Classes, *s)
	}
	fmt.Fprintf(&b, "by class:\n")
	for _, s := range res.Classes {
		fmt.Fprintf(&b, "  %-18s %2d window(s) %7d ops %6.1f%% ok (lowest window %.1f%%)\n", s.Class, s.Windows, s.Counts.Total(), s.Pct, s.MinPct)
	}
	res.Recovery = recoveryStats(res.Recovery, recoveries)
	b.WriteString(res.Recovery.String() + "\n")
	res.Table = b.String()
	if res.Valid {
		n := 0
		for _, s := range res.Classes {
			if IsFollowerFault(s.Class) {
				n += s.Windows
			}
		}
		res.Detail = fmt.Sprintf("every follower-fault window (%d) >= %.0f%% ok", n, FollowerMinPct)
		if n == 0 {
			res.Detail = "no follower-fault window in this run (nothing to check)"
		}
	} else {
		res.Detail = fmt.Sprintf("%d follower-fault window(s) below %.0f%%: %s", len(res.Below), FollowerMinPct, strings.Join(res.Below, "; "))
	}
	return res
}

// recoveryStats fills in the percentiles (nearest rank) of the recovered
// faults; a fault that never recovered ranks above every one that did.
func recoveryStats(r RecoveryStats, recovered []int64) RecoveryStats {
	sort.Slice(recovered, func(i, j int) bool { return recovered[i] < recovered[j] })
	if r.Faults == 0 {
		r.TargetMet = true
		return r
	}
	rank := func(p float64) int64 {
		i := int(math.Ceil(p*float64(r.Faults))) - 1
		if i >= len(recovered) {
			return -1 // a fault that never recovered
		}
		return recovered[max(i, 0)]
	}
	r.P50, r.P99 = rank(0.50), rank(0.99)
	r.Max = -1
	if r.Recovered == r.Faults {
		r.Max = recovered[len(recovered)-1]
	}
	r.TargetMet = r.P99 >= 0 && r.P99 <= LeaderRecoveryTarget.Nanoseconds()
	return r
}

// String is the report line of the recovery times.
func (r RecoveryStats) String() string {
	if r.Faults == 0 {
		return "leader faults: none in this run"
	}
	d := func(ns int64) string {
		if ns < 0 {
			return "never"
		}
		return fmt.Sprintf("%.2fs", float64(ns)/1e9)
	}
	met := "met"
	if !r.TargetMet {
		met = "MISSED"
	}
	return fmt.Sprintf("leader faults: %d (%d recovered); fault start to first successful write: p50 %s p99 %s max %s (target p99 <= %v: %s)",
		r.Faults, r.Recovered, d(r.P50), d(r.P99), d(r.Max), LeaderRecoveryTarget, met)
}
