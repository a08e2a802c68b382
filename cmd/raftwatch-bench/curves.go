package main

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// curve is one scaling curve of issue 11: a metric of the results tagged
// --curve name, against a parameter of the run, per target; the report
// prints it as a table (median and min–max over rounds per point) and
// plots it, x on a log scale.
type curve struct {
	name  string // the --curve tag of its results
	title string
	xName string
	x     func(Result) float64
	// point labels an x value in the table from one of its results
	// (e.g. with the connections the clients shared).
	point func(Result) string
	yName string
	unit  string
	y     func(Result) float64 // NaN: the run has no value (it failed)
	logY  bool
	file  string // the PNG, in the output directory
}

var curves = []curve{
	{name: "put-clients", title: "put throughput vs clients", xName: "clients",
		x: func(r Result) float64 { return float64(r.Clients) }, point: putPoint,
		yName: "throughput", unit: "ops/s", y: func(r Result) float64 { return r.Throughput },
		file: "curve-put-throughput.png"},
	{name: "put-clients", title: "put p99 latency vs clients", xName: "clients",
		x: func(r Result) float64 { return float64(r.Clients) }, point: putPoint,
		yName: "p99", unit: "ms", y: func(r Result) float64 { return r.P99Ms }, logY: true,
		file: "curve-put-p99.png"},
	{name: "watch-watchers", title: "watch delivery p99 vs watchers", xName: "watchers",
		x: func(r Result) float64 { return float64(r.Watchers) }, point: watcherPoint,
		yName: "delivery p99", unit: "ms", y: func(r Result) float64 { return r.P99Ms }, logY: true,
		file: "curve-watch-p99.png"},
	{name: "node-rss", title: "node RSS vs watchers held on it", xName: "watchers",
		x: func(r Result) float64 { return float64(r.Watchers) }, point: watcherPoint,
		yName: "node VmRSS", unit: "MiB", y: func(r Result) float64 {
			if r.Mass == nil || !r.Mass.Survived() {
				return math.NaN()
			}
			return float64(r.Mass.HeldRSS) / mib
		},
		file: "curve-node-rss.png"},
}

func putPoint(r Result) string     { return fmt.Sprintf("%d (%d conns)", r.Clients, r.Conns) }
func watcherPoint(r Result) string { return fmt.Sprintf("%d", r.Watchers) }

// curveNames lists the --curve tags.
func curveNames() string {
	var names []string
	for _, c := range curves {
		if !slices.Contains(names, c.name) {
			names = append(names, c.name)
		}
	}
	return strings.Join(names, ", ")
}

func isCurve(name string) bool {
	return slices.ContainsFunc(curves, func(c curve) bool { return c.name == name })
}

// curvePoint is one x of a curve: the per-round values of each target.
type curvePoint struct {
	x     float64
	label string
	vals  map[string][]float64 // target -> values over rounds
}

// points gathers c's results into points, by ascending x.
func (c curve) points(results []Result) []curvePoint {
	byX := map[float64]*curvePoint{}
	for _, r := range results {
		if r.Curve != c.name {
			continue
		}
		x := c.x(r)
		p, ok := byX[x]
		if !ok {
			p = &curvePoint{x: x, label: c.point(r), vals: map[string][]float64{}}
			byX[x] = p
		}
		p.vals[r.Target] = appendValue(p.vals[r.Target], c.y(r))
	}
	out := make([]curvePoint, 0, len(byX))
	for _, p := range byX {
		out = append(out, *p)
	}
	slices.SortFunc(out, func(a, b curvePoint) int {
		switch {
		case a.x < b.x:
			return -1
		case a.x > b.x:
			return 1
		}
		return 0
	})
	return out
}

// writeCurves prints a table per curve that has results, plots each into
// dir and links the plot; a plot that cannot be drawn is said so in place.
func writeCurves(w io.Writer, results []Result, dir string) {
	first := true
	for _, c := range curves {
		pts := c.points(results)
		if len(pts) == 0 {
			continue
		}
		if first {
			fmt.Fprintf(w, "\n## Scaling curves (medians over rounds, min–max in the table and as error bars; x on a log scale)\n")
			first = false
		}
		fmt.Fprintf(w, "\n### %s\n\n", c.title)
		writeCurveTable(w, c, pts)
		writeCurveNotes(w, c, results)
		if err := plotCurve(filepath.Join(dir, c.file), c, pts); err != nil {
			fmt.Fprintf(w, "\n(plot not written: %v)\n", err)
		} else {
			fmt.Fprintf(w, "\n![%s](%s)\n", c.title, c.file)
		}
	}
}

func writeCurveTable(w io.Writer, c curve, pts []curvePoint) {
	y := c.yName
	if c.unit != "" {
		y += " (" + c.unit + ")"
	}
	fmt.Fprintf(w, "| %s | %s: %s median | %s min–max | %s median | %s min–max | ratio %s / %s |\n",
		c.xName, y, targetA, targetA, targetB, targetB, targetA, targetB)
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|")
	for _, p := range pts {
		a, b := p.vals[targetA], p.vals[targetB]
		ratio := math.NaN()
		if len(a) > 0 && len(b) > 0 && median(b) != 0 {
			ratio = median(a) / median(b)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", p.label, fmtNum(median(a)), spread(a),
			fmtNum(median(b)), spread(b), fmtNum(ratio))
	}
}

// writeCurveNotes lists under a curve's table the runs that failed or
// fell short: a target that did not survive a watcher count, errors, and
// events not delivered.
func writeCurveNotes(w io.Writer, c curve, results []Result) {
	for _, r := range results {
		if r.Curve != c.name {
			continue
		}
		var notes []string
		if r.Mass != nil && !r.Mass.Survived() {
			notes = append(notes, fmt.Sprintf("did not survive / timed out at %d watchers: %s", r.Watchers, r.Mass.Failure))
		}
		if r.Errors > 0 {
			notes = append(notes, fmt.Sprintf("%d errors (first: %s)", r.Errors, r.FirstError))
		}
		if r.EndedStreams > 0 {
			notes = append(notes, fmt.Sprintf("%d watch streams ended early", r.EndedStreams))
		}
		if r.ExpectedEvents > 0 && r.Events < r.ExpectedEvents {
			notes = append(notes, fmt.Sprintf("delivered %d of %d events", r.Events, r.ExpectedEvents))
		}
		if len(notes) > 0 {
			fmt.Fprintf(w, "\n- %s, %s, round %d: %s", c.point(r), r.Target, r.Round, strings.Join(notes, "; "))
		}
	}
	fmt.Fprintln(w)
}

// curveColors are the line colors per target; other targets get grey.
var curveColors = map[string]color.Color{
	targetA: color.RGBA{G: 140, B: 60, A: 255},
	targetB: color.RGBA{R: 40, G: 80, B: 200, A: 255},
}

// errPoints are medians with min–max error bars.
type errPoints struct {
	plotter.XYs
	plotter.YErrors
}

// plotCurve draws one line per target through the medians, with min–max
// error bars, x (and y where c.logY) on a log scale.
func plotCurve(path string, c curve, pts []curvePoint) error {
	p := plot.New()
	p.Title.Text = c.title + " (medians, min–max bars)"
	p.X.Label.Text = c.xName + " (log scale)"
	p.Y.Label.Text = c.yName
	if c.unit != "" {
		p.Y.Label.Text += " (" + c.unit + ")"
	}
	p.X.Scale = plot.LogScale{}
	var xTicks []plot.Tick // the curve's own x values: 1, 4, 16 ... are not powers of ten
	for _, pt := range pts {
		if pt.x > 0 {
			xTicks = append(xTicks, plot.Tick{Value: pt.x, Label: tickLabel(pt.x)})
		}
	}
	p.X.Tick.Marker = plot.ConstantTicks(xTicks)
	if c.logY {
		p.Y.Label.Text += ", log scale"
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = oneTwoFiveTicks{}
	}
	var targets []string
	for _, pt := range pts {
		for t := range pt.vals {
			if !slices.Contains(targets, t) {
				targets = append(targets, t)
			}
		}
	}
	slices.Sort(targets)
	lines := 0
	for _, t := range targets {
		var ep errPoints
		for _, pt := range pts {
			v := pt.vals[t]
			m := median(v)
			if len(v) == 0 || pt.x <= 0 || (c.logY && slices.Min(v) <= 0) {
				continue // nothing to draw, or not drawable on a log scale
			}
			ep.XYs = append(ep.XYs, plotter.XY{X: pt.x, Y: m})
			ep.YErrors = append(ep.YErrors, struct{ Low, High float64 }{m - slices.Min(v), slices.Max(v) - m})
		}
		if len(ep.XYs) == 0 {
			continue
		}
		col, ok := curveColors[t]
		if !ok {
			col = color.Gray{Y: 120}
		}
		line, points, err := plotter.NewLinePoints(ep.XYs)
		if err != nil {
			return err
		}
		line.Color, points.Color = col, col
		points.Shape = draw.CircleGlyph{}
		bars, err := plotter.NewYErrorBars(ep)
		if err != nil {
			return err
		}
		bars.Color = col
		p.Add(line, points, bars)
		p.Legend.Add(t, line, points)
		lines++
	}
	if lines == 0 {
		return fmt.Errorf("no point of %q has a value", c.title)
	}
	// Room around the points: half a step of x on each side, and space
	// above them for the legend.
	p.X.Min, p.X.Max = p.X.Min/1.5, p.X.Max*1.5
	if c.logY {
		p.Y.Min, p.Y.Max = p.Y.Min/1.5, p.Y.Max*3
	} else {
		p.Y.Min, p.Y.Max = 0, p.Y.Max*1.25
	}
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())
	return p.Save(7*vg.Inch, 4.5*vg.Inch, path)
}

// massRSSGoal is issue 11's memory target: 1,000,000 watchers on one node
// (one key, or as many distinct keys, over 100 streams) under 600 MiB of
// that node's RSS; massHeldGoal: put throughput while they are held at
// least 0.8 of before they were opened.
const (
	massRSSGoalWatchers = 1_000_000
	massRSSGoalMiB      = 600
	massHeldGoal        = 0.8
)

// massRows are the rows of the watch-mass runs that had a put load (the
// watchers-1m workload; the node-rss curve's other points have none), per
// case and target: memory, opening, and the put load idle and held.
func massRows(results []Result) []soloRow {
	var rows []soloRow
	for _, c := range casesOf(results, "watch-mass") {
		for _, target := range []string{targetA, targetB} {
			runs := runsOf(results, c, func(r Result) bool {
				return r.Target == target && r.Mass != nil && r.Mass.PutIdle != nil
			})
			if len(runs) == 0 {
				continue
			}
			// Only the runs that held every watcher have memory and held
			// numbers; a failed one is a note under the table.
			per := func(name string, f func(r Result, m *MassWatchers) float64) soloRow {
				row := soloRow{caseName: c + ", " + target, name: name}
				for _, r := range runs {
					row.vals = appendValue(row.vals, f(r, r.Mass))
				}
				return row
			}
			survived := func(f func(r Result, m *MassWatchers) float64) func(r Result, m *MassWatchers) float64 {
				return func(r Result, m *MassWatchers) float64 {
					if !m.Survived() {
						return math.NaN()
					}
					return f(r, m)
				}
			}
			rss := per("node VmRSS held (MiB)", survived(func(_ Result, m *MassWatchers) float64 { return float64(m.HeldRSS) / mib }))
			if target == targetA && runs[0].Watchers >= massRSSGoalWatchers {
				rss.target = fmt.Sprintf("< %d", massRSSGoalMiB)
				rss.ok = func(v float64) bool { return v < massRSSGoalMiB }
			}
			ratio := per("put throughput held / idle", survived(func(_ Result, m *MassWatchers) float64 { return m.HeldRatio() }))
			if target == targetA {
				ratio.target = fmt.Sprintf("≥ %.1f", massHeldGoal)
				ratio.ok = func(v float64) bool { return v >= massHeldGoal }
			}
			rows = append(rows,
				counted(per("watchers opened", func(_ Result, m *MassWatchers) float64 { return float64(m.Opened) })),
				counted(per("opening rate (watchers/s)", survived(func(_ Result, m *MassWatchers) float64 { return m.OpenPerS }))),
				per("node VmRSS before the watchers (MiB)", func(_ Result, m *MassWatchers) float64 { return float64(m.IdleRSS) / mib }),
				rss,
				per("node RssAnon held (MiB)", survived(func(_ Result, m *MassWatchers) float64 { return float64(m.HeldAnon) / mib })),
				counted(per("VmRSS growth per watcher (B)", func(r Result, m *MassWatchers) float64 { return m.BytesPerWatcher(r.Watchers) })),
				counted(per("RssAnon growth per watcher (B)", func(r Result, m *MassWatchers) float64 { return m.AnonPerWatcher(r.Watchers) })),
				counted(per("put throughput idle (ops/s)", func(_ Result, m *MassWatchers) float64 { return m.PutIdle.Throughput })),
				counted(per("put throughput held (ops/s)", survived(func(_ Result, m *MassWatchers) float64 { return m.PutHeld.Throughput }))),
				ratio,
				per("put p99 idle (ms)", func(_ Result, m *MassWatchers) float64 { return m.PutIdle.P99Ms }),
				per("put p99 held (ms)", survived(func(_ Result, m *MassWatchers) float64 { return m.PutHeld.P99Ms })),
			)
		}
	}
	return rows
}

// writeMassTable prints the watchers-1m table and under it the runs that
// did not survive and the put loads that had errors.
func writeMassTable(w io.Writer, results []Result) {
	rows := massRows(results)
	if len(rows) == 0 {
		return
	}
	writeSoloTable(w, "many watchers on one node (watchers-1m)",
		"Watchers held on one node over client objects of one connection and one watch stream each; node memory from /proc/PID/status (medians of 5 readings) before the first watcher and once all are open; then the put load on keys no watcher watches, compared with the same load on the same cluster before the watchers were opened.",
		rows, nil, "")
	for _, r := range results {
		m := r.Mass
		if r.Workload != "watch-mass" || m == nil || m.PutIdle == nil {
			continue
		}
		var notes []string
		if !m.Survived() {
			notes = append(notes, fmt.Sprintf("did not survive / timed out at %d watchers: %s", r.Watchers, m.Failure))
		}
		for _, p := range []struct {
			name string
			s    *PutSummary
		}{{"idle", m.PutIdle}, {"held", m.PutHeld}} {
			if p.s != nil && p.s.Errors > 0 {
				notes = append(notes, fmt.Sprintf("put load %s: %d errors (first: %s)", p.name, p.s.Errors, p.s.FirstError))
			}
		}
		if len(notes) > 0 {
			fmt.Fprintf(w, "\n- %s, %s, round %d: %s", r.Case, r.Target, r.Round, strings.Join(notes, "; "))
		}
	}
	fmt.Fprintln(w)
}

// oneTwoFiveTicks labels a log axis at 1, 2 and 5 times each power of ten
// in range (plot.LogTicks labels only the powers, none on a narrow range).
type oneTwoFiveTicks struct{}

func (oneTwoFiveTicks) Ticks(min, max float64) []plot.Tick {
	if min <= 0 || max <= min {
		return nil
	}
	var ticks []plot.Tick
	for e := math.Floor(math.Log10(min)); math.Pow(10, e) <= max; e++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, e)
			if v >= min && v <= max {
				ticks = append(ticks, plot.Tick{Value: v, Label: tickLabel(v)})
			}
		}
	}
	return ticks
}

// tickLabel prints a tick value without trailing zeros: 4, 64, 0.5.
func tickLabel(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
