package main

import (
	"image/color"
	"math"

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
