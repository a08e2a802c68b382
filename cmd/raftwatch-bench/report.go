package main

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"flag"
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// The report compares raftwatch (A) with etcd (B); ratio = A median / B median.
const (
	targetA = "raftwatch"
	targetB = "etcd"
)

// targetBaseline is raftwatch built from an older commit (bench.sh
// --baseline): run only in the put workloads the history-cost goal is
// about, and compared with raftwatch, never with etcd.
const targetBaseline = "baseline"

// historyCostGoal is issue 8's price of the event history: put throughput
// at 64 clients and more stays at least 0.90 of the code before it, both
// measured in the same run.
var historyCostGoal = goal{workload: "put", metric: "throughput", minClients: 64, atLeast: true, ratio: 0.90}

// metric is one number of a result and which direction is better.
type metric struct {
	name         string
	unit         string
	higherBetter bool
	get          func(Result) float64
}

var (
	mThroughput = metric{"throughput", "ops/s", true, func(r Result) float64 { return r.Throughput }}
	mP50        = metric{"p50", "ms", false, func(r Result) float64 { return r.P50Ms }}
	mP99        = metric{"p99", "ms", false, func(r Result) float64 { return r.P99Ms }}
	mEvents     = metric{"events/s", "", true, func(r Result) float64 { return r.EventsPerS }}
	mPuts       = metric{"puts/s", "", true, func(r Result) float64 { return r.PutsPerS }}
	mBytes      = metric{"bytes/watcher", "B", false, func(r Result) float64 { return r.BytesPerWatcher }}
	// mSuccess is a check more than a measure: the txn workload's
	// concurrent transactions touch distinct keys (pairOf), so compares
	// fail only after a stall or a lost answer left a revision stale.
	mSuccess = metric{"compares held", "%", true, func(r Result) float64 { return r.SuccessRate() }}
	// mCPU and mCPUEvent are the nodes' user+system CPU over the measured
	// window per completed op, and per delivered watch event (the unit of
	// a watch workload's work); NaN where the run did not measure it.
	mCPU = metric{"server CPU/op", "µs", false, func(r Result) float64 {
		if r.NodeCPUS == nil || r.Ops == 0 {
			return math.NaN()
		}
		return r.CPUPerOpUs
	}}
	mCPUEvent = metric{"server CPU/event", "µs", false, func(r Result) float64 {
		if r.NodeCPUS == nil || r.Events == 0 {
			return math.NaN()
		}
		return r.CPUPerEventUs
	}}
)

// workloads lists the tables in print order with the metrics of each.
var workloads = []struct {
	name    string
	metrics []metric
}{
	{"put", []metric{mThroughput, mP50, mP99, mCPU}},
	{"get", []metric{mThroughput, mP50, mP99, mCPU}},
	{"txn", []metric{mThroughput, mP50, mP99, mSuccess, mCPU}},
	{"keepalive", []metric{mThroughput, mP50, mP99, mCPU}},
	{"watch-latency", []metric{mP50, mP99, mEvents, mCPUEvent}},
	{"watch-throughput", []metric{mEvents, mPuts, mCPUEvent}},
	{"memory", []metric{mBytes}},
}

// goal is a target on the ratio raftwatch/etcd of one metric: issue 11's
// (performance round 2, against the newest etcd), which replaced issue 4's.
type goal struct {
	workload   string
	metric     string
	minClients int    // applies to cases with at least this many clients (0: any)
	maxClients int    // and at most this many (0: any)
	caseHas    string // and whose case name contains this ("": any)
	atLeast    bool
	ratio      float64
}

var goals = []goal{
	{"put", "throughput", 64, 0, "", true, 2.0},
	{"put", "p99", 64, 0, "", false, 0.5},
	{"put", "p50", 0, 1, "", false, 0.8},
	{"put", "server CPU/op", 256, 0, "", false, 0.4},
	{"get", "throughput", 0, 0, "", true, 2.5},
	{"get", "server CPU/op", 0, 0, "linearizable", false, 0.35},
	{"watch-latency", "p99", 0, 0, "", false, 0.5},
	{"watch-throughput", "events/s", 0, 0, "", true, 1.5},
	{"memory", "bytes/watcher", 0, 0, "", false, 0.5},
}

func goalFor(workload, metric, caseName string, clients int) *goal {
	for i, g := range goals {
		if g.workload != workload || g.metric != metric || !strings.Contains(caseName, g.caseHas) {
			continue
		}
		if (g.minClients > 0 && clients < g.minClients) || (g.maxClients > 0 && clients > g.maxClients) {
			continue
		}
		return &goals[i]
	}
	return nil
}

func (g goal) String() string {
	if g.atLeast {
		return fmt.Sprintf("≥ %.1f", g.ratio)
	}
	return fmt.Sprintf("≤ %.1f", g.ratio)
}

// row is one (case, metric) line of a table.
type row struct {
	workload, caseName string
	m                  metric
	a, b               []float64 // per-round values of raftwatch and etcd
	goal               *goal
}

func (r row) ratio() float64 {
	if len(r.a) == 0 || len(r.b) == 0 || median(r.b) == 0 {
		return math.NaN()
	}
	return median(r.a) / median(r.b)
}

// advantage is how many times better raftwatch is (> 1: raftwatch better).
func (r row) advantage() float64 {
	if r.m.higherBetter {
		return r.ratio()
	}
	return 1 / r.ratio()
}

func (r row) met() string {
	x := r.ratio()
	switch {
	case r.goal == nil:
		return ""
	case math.IsNaN(x):
		return "n/a"
	case r.goal.atLeast && x >= r.goal.ratio, !r.goal.atLeast && x <= r.goal.ratio:
		return "yes"
	}
	return "**no**"
}

// appendValue adds a round's value of a metric, unless the round has
// none (NaN): medians and min–max are over the rounds that measured it.
func appendValue(vals []float64, v float64) []float64 {
	if math.IsNaN(v) {
		return vals
	}
	return append(vals, v)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	c := slices.Clone(v)
	slices.Sort(c)
	if len(c)%2 == 1 {
		return c[len(c)/2]
	}
	return (c[len(c)/2-1] + c[len(c)/2]) / 2
}

func runReportCmd(args []string) error {
	fs := flag.NewFlagSet("report", flag.ExitOnError)
	in := fs.String("in", "results.jsonl", "JSON lines written by the workload subcommands")
	dir := fs.String("dir", ".", "where to write summary.md, results.csv, ratios.png and the scaling curves' curve-*.png")
	settings := fs.String("settings", "", "markdown file to print before the tables")
	gobench := fs.String("gobench", "", "output of go test -bench for the watch package")
	fs.Parse(args)

	results, err := readResults(*in)
	if err != nil {
		return err
	}
	if err := writeCSV(filepath.Join(*dir, "results.csv"), results); err != nil {
		return err
	}
	var md strings.Builder
	if *settings != "" {
		if b, err := os.ReadFile(*settings); err == nil {
			md.Write(b)
		}
	}
	// A curve's points are not cases of the workload tables: those compare
	// like cases only, and the curves get tables and plots of their own.
	tabled := slices.DeleteFunc(slices.Clone(results), func(r Result) bool { return r.Curve != "" })
	rows := buildRows(tabled)
	writeTables(&md, rows, tabled)
	writeBaselineTable(&md, buildBaselineRows(tabled))
	writeSoloTable(&md, "slow watchers (raftwatch only)",
		"Watchers that never read, on one node, beside live watchers on the same node that read everything; RSS from /proc/PID/status (VmRSS includes bbolt's resident file pages; RssAnon does not). Not run against etcd: its slow watchers' memory grows without bound.",
		slowRows(results), results, "slow-watchers")
	writeSoloTable(&md, "watch resume (raftwatch only)",
		"Go-client watchers on one follower (listed first of three endpoints), kill -9 of that follower; latency per watcher from the kill to its first delivered put that was sent after the kill.",
		resumeRows(results), results, "watch-resume")
	writeMassTable(&md, results)
	writeCurves(&md, results, *dir)
	if *gobench != "" {
		writeGoBench(&md, *gobench)
	}
	if err := writeChart(filepath.Join(*dir, "ratios.png"), rows); err != nil {
		fmt.Fprintf(&md, "\n(chart not written: %v)\n", err)
	}
	os.Stdout.WriteString(md.String())
	return os.WriteFile(filepath.Join(*dir, "summary.md"), []byte(md.String()), 0o644)
}

func readResults(path string) ([]Result, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Result
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var r Result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		out = append(out, r)
	}
	return out, sc.Err()
}

// writeCSV writes every number of every result in long form.
func writeCSV(path string, results []Result) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	w.Write([]string{"workload", "case", "target", "round", "metric", "value", "curve"})
	for _, r := range results {
		num := func(name string, v float64) {
			w.Write([]string{r.Workload, r.Case, r.Target, strconv.Itoa(r.Round), name, strconv.FormatFloat(v, 'g', 6, 64), r.Curve})
		}
		num("throughput_ops_s", r.Throughput)
		num("p50_ms", r.P50Ms)
		num("p99_ms", r.P99Ms)
		num("max_ms", r.MaxMs)
		num("ops", float64(r.Ops))
		num("errors", float64(r.Errors))
		if r.Workload == "txn" {
			num("compare_failed", float64(r.CompareFailed))
		}
		num("events_per_s", r.EventsPerS)
		num("events", float64(r.Events))
		num("expected_events", float64(r.ExpectedEvents))
		num("puts_per_s", r.PutsPerS)
		num("ended_streams", float64(r.EndedStreams))
		num("bytes_per_watcher", r.BytesPerWatcher)
		num("duration_s", r.DurationS)
		if r.NodeCPUS != nil { // measured: 0 is a value, not "not measured"
			for i, s := range r.NodeCPUS {
				num(fmt.Sprintf("node%d_cpu_s", i), s)
			}
			num("server_cpu_s", r.ServerCPUS)
			num("cpu_per_op_us", r.CPUPerOpUs)
			if r.Events > 0 {
				num("cpu_per_event_us", r.CPUPerEventUs)
			}
		}
		if s := r.Slow; s != nil {
			for i := range s.RSSBefore {
				node := fmt.Sprintf("node%d_", i)
				if i == s.Node {
					node = "watched_" + node
				}
				num(node+"rss_before_bytes", float64(s.RSSBefore[i]))
				num(node+"rss_held_bytes", float64(s.RSSHeld[i]))
				num(node+"rss_max_bytes", float64(s.RSSMax[i]))
				num(node+"rss_end_bytes", float64(s.RSSEnd[i]))
				num(node+"anon_before_bytes", float64(s.AnonBefore[i]))
				num(node+"anon_max_bytes", float64(s.AnonMax[i]))
				num(node+"anon_end_bytes", float64(s.AnonEnd[i]))
			}
			num("catching_up_at_end", float64(s.CatchingUpAtEnd))
			num("watchers_at_end", float64(s.WatchersAtEnd))
			num("live_missing", float64(s.LiveMissing))
			num("live_out_of_order", float64(s.LiveOutOfOrder))
			num("live_duplicates", float64(s.LiveDuplicates))
			num("live_canceled", float64(s.LiveCanceled))
		}
		if m := r.Mass; m != nil {
			num("opened", float64(m.Opened))
			num("open_s", m.OpenS)
			num("open_per_s", m.OpenPerS)
			num("survived", map[bool]float64{true: 1, false: 0}[m.Survived()])
			num("idle_rss_bytes", float64(m.IdleRSS))
			num("idle_anon_bytes", float64(m.IdleAnon))
			if m.Survived() {
				num("held_rss_bytes", float64(m.HeldRSS))
				num("held_anon_bytes", float64(m.HeldAnon))
				num("anon_per_watcher", m.AnonPerWatcher(r.Watchers))
			}
			for _, p := range []struct {
				name string
				s    *PutSummary
			}{{"put_idle_", m.PutIdle}, {"put_held_", m.PutHeld}} {
				if p.s != nil {
					num(p.name+"throughput_ops_s", p.s.Throughput)
					num(p.name+"p99_ms", p.s.P99Ms)
					num(p.name+"errors", float64(p.s.Errors))
					num(p.name+"cpu_per_op_us", p.s.CPUPerOpUs)
				}
			}
			if x := m.HeldRatio(); !math.IsNaN(x) {
				num("put_held_over_idle", x)
			}
		}
		if w := r.Resume; w != nil {
			num("resumes", float64(w.Resumes))
			num("watchers_resumed", float64(w.WatchersResumed))
			num("never_after_kill", float64(w.NeverAfterKill))
			num("missing", float64(w.Missing))
			num("out_of_order", float64(w.OutOfOrder))
			num("duplicates", float64(w.Duplicates))
		}
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func buildRows(results []Result) []row {
	var rows []row
	for _, wl := range workloads {
		var cases []string
		clients := map[string]int{}
		for _, r := range results {
			if r.Workload == wl.name && !slices.Contains(cases, r.Case) {
				cases = append(cases, r.Case)
				clients[r.Case] = r.Clients
			}
		}
		for _, c := range cases {
			for _, m := range wl.metrics {
				rw := row{workload: wl.name, caseName: c, m: m}
				for _, r := range results {
					if r.Case != c {
						continue
					}
					switch r.Target {
					case targetA:
						rw.a = appendValue(rw.a, m.get(r))
					case targetB:
						rw.b = appendValue(rw.b, m.get(r))
					}
				}
				if len(rw.a) == 0 && len(rw.b) == 0 {
					continue // e.g. CPU, in results of runs that did not measure it
				}
				rw.goal = goalFor(wl.name, m.name, c, clients[c])
				rows = append(rows, rw)
			}
		}
	}
	return rows
}

// buildBaselineRows pairs raftwatch (a) with the baseline build (b) for
// every put case the baseline ran: throughput against historyCostGoal, and
// p50 and p99 for information.
func buildBaselineRows(results []Result) []row {
	var cases []string
	clients := map[string]int{}
	for _, r := range results {
		if r.Workload == historyCostGoal.workload && r.Target == targetBaseline && !slices.Contains(cases, r.Case) {
			cases = append(cases, r.Case)
			clients[r.Case] = r.Clients
		}
	}
	var rows []row
	for _, c := range cases {
		for _, m := range []metric{mThroughput, mP50, mP99, mCPU} {
			rw := row{workload: historyCostGoal.workload, caseName: c, m: m}
			for _, r := range results {
				if r.Case != c {
					continue
				}
				switch r.Target {
				case targetA:
					rw.a = appendValue(rw.a, m.get(r))
				case targetBaseline:
					rw.b = appendValue(rw.b, m.get(r))
				}
			}
			if len(rw.a) == 0 && len(rw.b) == 0 {
				continue
			}
			if m.name == historyCostGoal.metric && clients[c] >= historyCostGoal.minClients {
				g := historyCostGoal
				rw.goal = &g
			}
			rows = append(rows, rw)
		}
	}
	return rows
}

// writeBaselineTable prints the history-cost table: raftwatch against
// raftwatch built before the event history, same run, same rounds.
func writeBaselineTable(w io.Writer, rows []row) {
	if len(rows) == 0 {
		return
	}
	fmt.Fprintf(w, "\n### history cost (ratio = %s / %s; the baseline commit is in Settings)\n\n", targetA, targetBaseline)
	fmt.Fprintf(w, "| case | metric | %s median | %s median | ratio | %s min–max | %s min–max | target | met |\n",
		targetA, targetBaseline, targetA, targetBaseline)
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---|---|")
	for _, r := range rows {
		g := ""
		if r.goal != nil {
			g = r.goal.String()
		}
		name := r.m.name
		if r.m.unit != "" {
			name += " (" + r.m.unit + ")"
		}
		fmt.Fprintf(w, "| %s | %s: %s / %s | %s | %s | %s | %s | %s | %s | %s |\n",
			r.caseName, name, targetA, targetBaseline, fmtNum(median(r.a)), fmtNum(median(r.b)), fmtNum(r.ratio()),
			spread(r.a), spread(r.b), g, r.met())
	}
}

func fmtNum(v float64) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case math.Abs(v) >= 1000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case math.Abs(v) >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

func spread(v []float64) string {
	if len(v) == 0 {
		return "–"
	}
	return fmtNum(slices.Min(v)) + "–" + fmtNum(slices.Max(v))
}

func writeTables(w io.Writer, rows []row, results []Result) {
	fmt.Fprintf(w, "## Results (medians over rounds; ratio = %s / %s)\n", targetA, targetB)
	for _, wl := range workloads {
		first := true
		for _, r := range rows {
			if r.workload != wl.name {
				continue
			}
			if first {
				fmt.Fprintf(w, "\n### %s\n\n", wl.name)
				fmt.Fprintf(w, "| case | metric | %s median | %s median | ratio | %s min–max | %s min–max | target | met |\n",
					targetA, targetB, targetA, targetB)
				fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---|---|")
				first = false
			}
			g := ""
			if r.goal != nil {
				g = r.goal.String()
			}
			name := r.m.name
			if r.m.unit != "" {
				name += " (" + r.m.unit + ")"
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
				r.caseName, name, fmtNum(median(r.a)), fmtNum(median(r.b)), fmtNum(r.ratio()),
				spread(r.a), spread(r.b), g, r.met())
		}
		for _, res := range results {
			if res.Workload != wl.name {
				continue
			}
			var notes []string
			if res.Errors > 0 {
				notes = append(notes, fmt.Sprintf("%d errors (first: %s)", res.Errors, res.FirstError))
			}
			if res.CompareFailed > 0 {
				notes = append(notes, fmt.Sprintf("%d of %d transactions found a compare false", res.CompareFailed, res.Ops))
			}
			if res.TeardownError != "" {
				notes = append(notes, "teardown failed: "+res.TeardownError)
			}
			if res.EndedStreams > 0 {
				notes = append(notes, fmt.Sprintf("%d watch streams ended early (%s)", res.EndedStreams, res.FirstError))
			}
			if res.ExpectedEvents > 0 && res.Events < res.ExpectedEvents {
				notes = append(notes, fmt.Sprintf("delivered %d of %d events (%.1f%%)", res.Events, res.ExpectedEvents,
					100*float64(res.Events)/float64(res.ExpectedEvents)))
			}
			if len(notes) > 0 {
				fmt.Fprintf(w, "\n- %s, %s, round %d: %s", res.Case, res.Target, res.Round, strings.Join(notes, "; "))
			}
		}
		fmt.Fprintln(w)
	}
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+(\d+)\s+([\d.]+) ns/op(.*)$`)

// writeGoBench prints the watch package's benchmarks and, for names that
// differ only in a watcher count, the time with the most watchers over the
// time with the fewest (the prefix-dispatch target wants <= 2).
func writeGoBench(w io.Writer, path string) {
	b, err := os.ReadFile(path)
	fmt.Fprintf(w, "\n### watch/ Go benchmarks (prefix dispatch)\n\n")
	if err != nil {
		fmt.Fprintf(w, "not run: %v\n", err)
		return
	}
	type bench struct {
		name string
		ns   float64
		rest string
	}
	var list []bench
	for _, line := range strings.Split(string(b), "\n") {
		if m := benchLine.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
			ns, _ := strconv.ParseFloat(m[3], 64)
			list = append(list, bench{m[1], ns, strings.TrimSpace(m[4])})
		}
	}
	if len(list) == 0 {
		fmt.Fprintf(w, "no benchmark results in %s:\n\n```\n%s\n```\n", path, strings.TrimSpace(string(b)))
		return
	}
	fmt.Fprintln(w, "| benchmark | ns/op | other |")
	fmt.Fprintln(w, "|---|---:|---|")
	for _, x := range list {
		fmt.Fprintf(w, "| %s | %s | %s |\n", x.name, fmtNum(x.ns), x.rest)
	}
	num := regexp.MustCompile(`\d+`)
	type point struct {
		n  int
		ns float64
	}
	groups := map[string][]point{}
	var order []string
	for _, x := range list {
		ms := num.FindAllStringIndex(x.name, -1)
		for _, loc := range ms {
			n, _ := strconv.Atoi(x.name[loc[0]:loc[1]])
			key := x.name[:loc[0]] + "N" + x.name[loc[1]:]
			if _, ok := groups[key]; !ok {
				order = append(order, key)
			}
			groups[key] = append(groups[key], point{n, x.ns})
		}
	}
	var lines []string
	for _, k := range order {
		g := groups[k]
		if len(g) < 2 {
			continue
		}
		lo, hi := g[0], g[0]
		for _, p := range g {
			if p.n < lo.n {
				lo = p
			}
			if p.n > hi.n {
				hi = p
			}
		}
		if lo.n == hi.n || lo.ns == 0 {
			continue
		}
		lines = append(lines, fmt.Sprintf("- %s: N=%d %s ns/op vs N=%d %s ns/op: %.2fx", k, hi.n, fmtNum(hi.ns), lo.n, fmtNum(lo.ns), hi.ns/lo.ns))
	}
	if len(lines) > 0 {
		fmt.Fprintf(w, "\nScaling by count (target: unrelated-prefix watchers 100,000 vs 1 within 2x):\n\n%s\n", strings.Join(lines, "\n"))
	}
}

// writeChart draws raftwatch's advantage per row (> 1: raftwatch better),
// green where better, red where worse, with a line at 1.
func writeChart(path string, rows []row) error {
	var names []string
	var better, worse plotter.Values
	for _, r := range rows {
		a := r.advantage()
		if math.IsNaN(a) || math.IsInf(a, 0) || r.m.name == mSuccess.name {
			continue
		}
		names = append(names, r.caseName+" "+r.m.name)
		if a >= 1 {
			better, worse = append(better, a), append(worse, 0)
		} else {
			better, worse = append(better, 0), append(worse, a)
		}
	}
	if len(names) == 0 {
		return fmt.Errorf("no metric has results for both %s and %s", targetA, targetB)
	}
	p := plot.New()
	p.Title.Text = "raftwatch vs etcd: advantage (×, > 1 = raftwatch better; medians)"
	p.X.Label.Text = "etcd/raftwatch for latency, memory and CPU, raftwatch/etcd for rates"
	p.X.Min = 0
	width := vg.Points(10)
	for _, s := range []struct {
		v plotter.Values
		c color.Color
	}{{better, color.RGBA{G: 150, A: 255}}, {worse, color.RGBA{R: 200, A: 255}}} {
		bars, err := plotter.NewBarChart(s.v, width)
		if err != nil {
			return err
		}
		bars.Horizontal = true
		bars.Color = s.c
		bars.LineStyle.Width = 0
		p.Add(bars)
	}
	one, err := plotter.NewLine(plotter.XYs{{X: 1, Y: -0.5}, {X: 1, Y: float64(len(names)) - 0.5}})
	if err != nil {
		return err
	}
	one.LineStyle.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	p.Add(one)
	p.NominalY(names...)
	p.Add(plotter.NewGrid())
	return p.Save(10*vg.Inch, vg.Length(1.2+0.22*float64(len(names)))*vg.Inch, path)
}

// soloRow is one line of the table of a workload only raftwatch runs: one
// value per round, and a check where the issue sets one.
type soloRow struct {
	caseName, name string
	vals           []float64
	count          bool   // a number of things: printed without decimals
	target         string // "" when the row only reports
	ok             func(v float64) bool
}

func (r soloRow) fmt(v float64) string {
	if r.count && !math.IsNaN(v) {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return fmtNum(v)
}

// counted marks a row as a count.
func counted(r soloRow) soloRow {
	r.count = true
	return r
}

func (r soloRow) met() string {
	if r.ok == nil {
		return ""
	}
	if len(r.vals) == 0 {
		return "n/a"
	}
	for _, v := range r.vals {
		if !r.ok(v) {
			return "**no**"
		}
	}
	return "yes"
}

func isZero(v float64) bool { return v == 0 }

const mib = 1 << 20

// slowRows are the rows of the slow-watchers workload: the watched node's
// memory, a control follower's, how many watchers were catching up, and
// whether the live watchers were unaffected.
func slowRows(results []Result) []soloRow {
	var rows []soloRow
	for _, c := range casesOf(results, "slow-watchers") {
		runs := runsOf(results, c, func(r Result) bool { return r.Slow != nil })
		per := func(name string, f func(r Result, s *SlowWatchers) float64) soloRow {
			row := soloRow{caseName: c, name: name}
			for _, r := range runs {
				row.vals = append(row.vals, f(r, r.Slow))
			}
			return row
		}
		at := func(v []int64, i int) float64 {
			if i < 0 || i >= len(v) {
				return math.NaN()
			}
			return float64(v[i])
		}
		rows = append(rows,
			per("puts/s (writer)", func(r Result, _ *SlowWatchers) float64 { return r.PutsPerS }),
			per("watched node RSS before the watchers (MiB)", func(_ Result, s *SlowWatchers) float64 { return at(s.RSSBefore, s.Node) / mib }),
			per("watched node RSS with the watchers, before any put (MiB)", func(_ Result, s *SlowWatchers) float64 { return at(s.RSSHeld, s.Node) / mib }),
			per("watched node RSS max (MiB)", func(_ Result, s *SlowWatchers) float64 { return at(s.RSSMax, s.Node) / mib }),
			per("watched node RSS max − before (MiB)", func(_ Result, s *SlowWatchers) float64 {
				return (at(s.RSSMax, s.Node) - at(s.RSSBefore, s.Node)) / mib
			}),
			per("watched node RSS at the end (MiB)", func(_ Result, s *SlowWatchers) float64 { return at(s.RSSEnd, s.Node) / mib }),
			per("watched node RSS at the end − before (MiB)", func(_ Result, s *SlowWatchers) float64 {
				return (at(s.RSSEnd, s.Node) - at(s.RSSBefore, s.Node)) / mib
			}),
			per("watched node RssAnon max − before (MiB)", func(_ Result, s *SlowWatchers) float64 {
				return (at(s.AnonMax, s.Node) - at(s.AnonBefore, s.Node)) / mib
			}),
			per("control follower (no watchers) RSS max − before (MiB)", func(_ Result, s *SlowWatchers) float64 {
				return (at(s.RSSMax, s.Control()) - at(s.RSSBefore, s.Control())) / mib
			}),
			counted(per("watchers catching up at the end", func(_ Result, s *SlowWatchers) float64 { return float64(s.CatchingUpAtEnd) })),
			counted(per("watchers registered at the end", func(_ Result, s *SlowWatchers) float64 { return float64(s.WatchersAtEnd) })),
			per("live watchers: p99 latency (ms)", func(r Result, _ *SlowWatchers) float64 { return r.P99Ms }),
		)
		live := per("live watchers: puts missing, out of order, twice, CANCELED or stream ended", func(r Result, s *SlowWatchers) float64 {
			return float64(s.LiveMissing + s.LiveOutOfOrder + s.LiveDuplicates + s.LiveCanceled + int64(r.EndedStreams))
		})
		live.count, live.target, live.ok = true, "0", isZero
		rows = append(rows, live)
	}
	return rows
}

// resumeRows are the rows of the watch-resume workload.
func resumeRows(results []Result) []soloRow {
	var rows []soloRow
	for _, c := range casesOf(results, "watch-resume") {
		runs := runsOf(results, c, func(r Result) bool { return r.Resume != nil })
		per := func(name string, f func(r Result, w *WatchResume) float64) soloRow {
			row := soloRow{caseName: c, name: name}
			for _, r := range runs {
				row.vals = append(row.vals, f(r, r.Resume))
			}
			return row
		}
		rows = append(rows,
			per("puts/s (writer, through the leader)", func(r Result, _ *WatchResume) float64 { return r.PutsPerS }),
			per("kill to first put written after it, p50 (ms)", func(r Result, _ *WatchResume) float64 { return r.P50Ms }),
			per("kill to first put written after it, p99 (ms)", func(r Result, _ *WatchResume) float64 { return r.P99Ms }),
			per("kill to first put written after it, max (ms)", func(r Result, _ *WatchResume) float64 { return r.MaxMs }),
			counted(per("resumes (sum over watchers)", func(_ Result, w *WatchResume) float64 { return float64(w.Resumes) })),
			counted(per("watchers that resumed", func(_ Result, w *WatchResume) float64 { return float64(w.WatchersResumed) })),
		)
		broken := per("puts missing, twice or out of order; watchers ended or silent after the kill", func(r Result, w *WatchResume) float64 {
			return float64(w.Missing + w.OutOfOrder + w.Duplicates + w.NeverAfterKill + int64(r.EndedStreams))
		})
		broken.count, broken.target, broken.ok = true, "0", isZero
		rows = append(rows, broken)
	}
	return rows
}

func casesOf(results []Result, workload string) []string {
	var cases []string
	for _, r := range results {
		if r.Workload == workload && !slices.Contains(cases, r.Case) {
			cases = append(cases, r.Case)
		}
	}
	return cases
}

// writeSoloTable prints a workload only raftwatch runs, and under it the
// errors of its runs.
func writeSoloTable(w io.Writer, title, note string, rows []soloRow, results []Result, workload string) {
	if len(rows) == 0 {
		return
	}
	fmt.Fprintf(w, "\n### %s\n\n%s\n\n", title, note)
	fmt.Fprintln(w, "| case | metric | median | min–max | target | met |")
	fmt.Fprintln(w, "|---|---|---:|---:|---|---|")
	for _, r := range rows {
		minMax := "–"
		if len(r.vals) > 0 {
			minMax = r.fmt(slices.Min(r.vals)) + "–" + r.fmt(slices.Max(r.vals))
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", r.caseName, r.name, r.fmt(median(r.vals)), minMax, r.target, r.met())
	}
	for _, res := range results {
		if res.Workload == workload && (res.Errors > 0 || res.FirstError != "") {
			fmt.Fprintf(w, "\n- %s, round %d: %d errors (first: %s)", res.Case, res.Round, res.Errors, res.FirstError)
		}
	}
	fmt.Fprintln(w)
}

// runsOf returns the results of case c that have has.
func runsOf(results []Result, c string, has func(Result) bool) []Result {
	var runs []Result
	for _, r := range results {
		if r.Case == c && has(r) {
			runs = append(runs, r)
		}
	}
	return runs
}
