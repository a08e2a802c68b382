package checker

import (
	"fmt"
	"sort"
	"strings"

	"github.com/raftwatch/raftwatch/cluster-test/history"
)

// Window is a span of the test: a fault (Kind != "healthy") or the healthy
// time between faults.
type Window struct {
	Kind    string   `json:"kind"`
	Targets []string `json:"targets,omitempty"`
	Start   int64    `json:"start_ns"`
	End     int64    `json:"end_ns"`
	OK      int      `json:"ok"`
	Fail    int      `json:"fail"`
	Info    int      `json:"info"`
}

// Windows turns the nemesis timeline into consecutive windows covering
// [0, end]: healthy gaps and fault windows (start to matching stop).
func Windows(events []history.NemesisEvent, end int64) []Window {
	var faults []Window
	open := map[string]int{}
	for _, e := range events {
		switch e.Phase {
		case "start":
			open[e.Kind] = len(faults)
			faults = append(faults, Window{Kind: e.Kind, Targets: e.Targets, Start: e.Time, End: -1})
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
			out = append(out, Window{Kind: "healthy", Start: t, End: f.Start})
		}
		out = append(out, f)
		t = max(t, f.End)
	}
	if t < end {
		out = append(out, Window{Kind: "healthy", Start: t, End: end})
	}
	return out
}

// Availability counts op outcomes per window, by invocation time. It is a
// report, not a check.
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
		switch o.Outcome() {
		case history.OK:
			ws[i].OK++
		case history.Fail:
			ws[i].Fail++
		default:
			ws[i].Info++
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-22s %-14s %9s %9s %6s %6s %6s %7s\n", "window", "targets", "start_s", "end_s", "ok", "fail", "info", "ok%")
	for _, w := range ws {
		total := w.OK + w.Fail + w.Info
		pct := 0.0
		if total > 0 {
			pct = 100 * float64(w.OK) / float64(total)
		}
		fmt.Fprintf(&b, "%-22s %-14s %9.1f %9.1f %6d %6d %6d %6.1f%%\n", w.Kind, strings.Join(w.Targets, " "),
			float64(w.Start)/1e9, float64(w.End)/1e9, w.OK, w.Fail, w.Info, pct)
	}
	return ws, b.String()
}
