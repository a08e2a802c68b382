package main

import (
	"image/color"
	"math"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/raftwatch/raftwatch/cluster-test/checker"
	"github.com/raftwatch/raftwatch/cluster-test/history"
)

// Plot colours: outcomes as in Jepsen's latency-raw plot, faults shaded.
var (
	colorOK    = color.RGBA{R: 0x1f, G: 0x9e, B: 0x3a, A: 0xff}
	colorFail  = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
	colorInfo  = color.RGBA{R: 0xff, G: 0xa5, B: 0x00, A: 0xff}
	colorFault = color.NRGBA{R: 0x99, G: 0x99, B: 0xcc, A: 0x50}
)

// minLatencyMs keeps points positive on the log axis.
const minLatencyMs = 0.01

// plotLatency writes a scatter of op latency (ms, log scale) over time (s),
// coloured by outcome, with fault windows shaded.
func plotLatency(path string, ops []history.Op, windows []checker.Window, end int64) error {
	p := plot.New()
	p.Title.Text = "raftwatch cluster-test: operation latency"
	p.X.Label.Text = "time since start (s)"
	p.Y.Label.Text = "latency (ms)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}

	pts := map[string]plotter.XYs{}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, o := range ops {
		out := o.Outcome()
		ret := end
		if o.Complete != nil {
			ret = o.Complete.Time
		}
		ms := math.Max(float64(ret-o.Invoke.Time)/1e6, minLatencyMs)
		lo, hi = math.Min(lo, ms), math.Max(hi, ms)
		pts[out] = append(pts[out], plotter.XY{X: float64(o.Invoke.Time) / 1e9, Y: ms})
	}
	if math.IsInf(lo, 1) {
		lo, hi = 1, 10
	}
	for _, w := range windows {
		if w.Kind == "healthy" {
			continue
		}
		x0, x1 := float64(w.Start)/1e9, float64(w.End)/1e9
		poly, err := plotter.NewPolygon(plotter.XYs{{X: x0, Y: lo}, {X: x1, Y: lo}, {X: x1, Y: hi}, {X: x0, Y: hi}})
		if err != nil {
			return err
		}
		poly.Color = colorFault
		poly.LineStyle.Width = 0
		p.Add(poly)
	}
	for _, s := range []struct {
		outcome string
		c       color.Color
	}{{history.OK, colorOK}, {history.Fail, colorFail}, {history.Info, colorInfo}} {
		if len(pts[s.outcome]) == 0 {
			continue
		}
		sc, err := plotter.NewScatter(pts[s.outcome])
		if err != nil {
			return err
		}
		sc.GlyphStyle = draw.GlyphStyle{Color: s.c, Radius: vg.Points(1.2), Shape: draw.CircleGlyph{}}
		p.Add(sc)
		p.Legend.Add(s.outcome, sc)
	}
	p.Legend.Top = true
	return p.Save(12*vg.Inch, 5*vg.Inch, path)
}

// availabilityBucket is the width of one point of the availability plot.
const availabilityBucket = time.Second

// plotAvailability writes the share of ops that succeeded per second (by
// invocation time) for each kind of client, with fault windows shaded and
// labelled with their class.
func plotAvailability(path string, ops []history.Op, windows []checker.Window, end int64) error {
	p := plot.New()
	p.Title.Text = "raftwatch cluster-test: availability (share of ops that succeeded, per second)"
	p.X.Label.Text = "time since start (s)"
	p.Y.Label.Text = "ok (%)"
	p.Y.Min, p.Y.Max = 0, 110
	n := int(end/availabilityBucket.Nanoseconds()) + 1
	counts := map[string][]checker.Counts{}
	for _, o := range ops {
		kind := o.Invoke.Client
		if kind == "" {
			kind = history.ClientPinned
		}
		if counts[kind] == nil {
			counts[kind] = make([]checker.Counts, n)
		}
		i := min(int(o.Invoke.Time/availabilityBucket.Nanoseconds()), n-1)
		switch o.Outcome() {
		case history.OK:
			counts[kind][i].OK++
		case history.Fail:
			counts[kind][i].Fail++
		default:
			counts[kind][i].Info++
		}
	}
	for _, w := range windows {
		if w.Kind == checker.ClassHealthy {
			continue
		}
		x0, x1 := float64(w.Start)/1e9, float64(w.End)/1e9
		poly, err := plotter.NewPolygon(plotter.XYs{{X: x0, Y: 0}, {X: x1, Y: 0}, {X: x1, Y: 100}, {X: x0, Y: 100}})
		if err != nil {
			return err
		}
		poly.Color = colorFault
		poly.LineStyle.Width = 0
		p.Add(poly)
		label, err := plotter.NewLabels(plotter.XYLabels{XYs: []plotter.XY{{X: x0, Y: 103}}, Labels: []string{w.Class}})
		if err != nil {
			return err
		}
		p.Add(label)
	}
	for _, s := range []struct {
		kind string
		c    color.Color
	}{{history.ClientPinned, colorInfo}, {history.ClientFailover, colorOK}} {
		var xys plotter.XYs
		for i, c := range counts[s.kind] {
			if c.Total() > 0 {
				xys = append(xys, plotter.XY{X: float64(i) + 0.5, Y: c.Pct()})
			}
		}
		if len(xys) == 0 {
			continue
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return err
		}
		l.Color = s.c
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(s.kind+" clients", l)
	}
	p.Legend.Left = true
	return p.Save(12*vg.Inch, 5*vg.Inch, path)
}
