// Command cluster-test is raftwatch's Jepsen-style test: it runs three
// `raftwatch serve` processes in their own network namespaces, drives a
// concurrent KV workload and long-running watchers against them while a
// nemesis partitions, kills and pauses nodes on a seeded schedule, then heals
// everything and checks the recorded history:
//
//  1. linearizable     porcupine, per key, with put/get/delete/cas
//  2. no-lost-writes   acknowledged writes survive on every node
//  3. convergence      same fsm_index and data digest everywhere
//  4. watch            ordered, unique, reliable... per watch across resumes
//  5. availability     ok/fail/info per fault window (a report)
//  6. bank, lock       the txn and lock workloads (--workload), when they ran
//
// Usage (as root, from the repository root):
//
//	go run ./cluster-test --time-limit 60s --nemesis all --seed 1 --out /tmp/ct
//
// The last line is VALID or INVALID: <checks>. Exit 0 = valid, 1 = an anomaly
// was found, 2 = the harness itself failed.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/raftwatch/raftwatch/cluster-test/checker"
	"github.com/raftwatch/raftwatch/cluster-test/history"
	"github.com/raftwatch/raftwatch/cluster-test/nemesis"
	"github.com/raftwatch/raftwatch/cluster-test/netns"
	pb "github.com/raftwatch/raftwatch/proto"
)

// Exit codes.
const (
	exitValid   = 0
	exitInvalid = 1
	exitHarness = 2
)

// Harness timing.
const (
	clusterCount   = 3
	readyTimeout   = 30 * time.Second
	progressPeriod = 5 * time.Second
	// finalProgressWait: time the watchers get to answer the final progress
	// request before they are stopped.
	finalProgressWait = 2 * time.Second
	// recoveryWait: extra time after the final heal before the convergence
	// polls start.
	recoveryWait = 2 * time.Second
)

type config struct {
	timeLimit    time.Duration
	nemesis      string
	families     []string
	seed         uint64
	out          string
	consistency  pb.Consistency
	concurrency  int
	clients      string
	rate         float64
	opTimeout    time.Duration
	binary       string
	checkTimeout time.Duration
	cleanup      bool
	recheck      string
	workloads    []string
}

// harnessError marks a failure of the harness (exit 2), not of the system.
type harnessError struct{ err error }

func (e harnessError) Error() string { return e.err.Error() }

func harnessf(format string, args ...any) error {
	return harnessError{fmt.Errorf(format, args...)}
}

func main() {
	os.Exit(run())
}

func parseFlags() (config, error) {
	var cfg config
	var err error
	var rc, workloads string
	flag.DurationVar(&cfg.timeLimit, "time-limit", 60*time.Second, "how long the workload runs (faults end "+nemesis.RecoveryMargin.String()+" before)")
	flag.StringVar(&cfg.nemesis, "nemesis", "all", "faults: comma list of partition,kill,pause, or all, or none")
	flag.Uint64Var(&cfg.seed, "seed", uint64(time.Now().UnixNano()%1_000_000), "seed of the fault schedule and the workload")
	flag.StringVar(&cfg.out, "out", "", "output directory (required)")
	flag.StringVar(&rc, "read-consistency", "linearizable", "consistency of gets: linearizable or serializable")
	flag.IntVar(&cfg.concurrency, "concurrency", 10, "number of client processes of each kind --clients runs")
	flag.StringVar(&cfg.clients, "clients", clientsPinned, "which clients run: pinned (raw gRPC, one node each), failover (the Go client with every endpoint) or both")
	flag.Float64Var(&cfg.rate, "rate", 100, "total operations per second (upper bound)")
	flag.DurationVar(&cfg.opTimeout, "op-timeout", time.Second, "per-operation timeout")
	flag.StringVar(&cfg.binary, "binary", "", "raftwatch binary to test (default: go build ./cmd/raftwatch into --out)")
	flag.DurationVar(&cfg.checkTimeout, "check-timeout", 5*time.Minute, "porcupine time limit per key")
	flag.BoolVar(&cfg.cleanup, "cleanup", false, "remove a leftover rwbr0 bridge and rw-n* namespaces from an earlier run first")
	flag.StringVar(&workloads, "workload", workloadKV, "workloads: comma list of kv (put/get/delete/cas), txn (transfers with a conserved total), lock (fenced lock holders), or all")
	flag.StringVar(&cfg.recheck, "recheck", "", "only rerun the checkers on the files of an earlier run in this directory (no root needed)")
	flag.Parse()
	switch rc {
	case "linearizable":
		cfg.consistency = pb.Consistency_LINEARIZABLE
	case "serializable":
		cfg.consistency = pb.Consistency_SERIALIZABLE
	default:
		return cfg, fmt.Errorf("--read-consistency %q: use linearizable or serializable", rc)
	}
	if cfg.out == "" && cfg.recheck == "" {
		return cfg, errors.New("--out DIR is required")
	}
	if cfg.concurrency < 1 || cfg.rate <= 0 || cfg.timeLimit <= 0 {
		return cfg, errors.New("--concurrency, --rate and --time-limit must be positive")
	}
	switch cfg.clients {
	case clientsPinned, clientsFailover, clientsBoth:
	default:
		return cfg, fmt.Errorf("--clients %q: use pinned, failover or both", cfg.clients)
	}
	if cfg.workloads, err = parseWorkloads(workloads); err != nil && cfg.recheck == "" {
		return cfg, err
	}
	fams, err := nemesis.ParseFamilies(cfg.nemesis)
	if err != nil {
		return cfg, err
	}
	cfg.families = fams
	return cfg, nil
}

func run() int {
	cfg, err := parseFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster-test:", err)
		return exitHarness
	}
	if cfg.recheck != "" {
		code, err := recheck(cfg)
		if err != nil {
			fmt.Fprintln(os.Stderr, "cluster-test:", err)
			fmt.Println("INVALID: harness failure:", err)
			return exitHarness
		}
		return code
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "cluster-test: must run as root (it creates network namespaces, a bridge and nftables rules); try sudo")
		return exitHarness
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			hint := "apt-get install -y iproute2"
			if tool == "nft" {
				hint = "apt-get install -y nftables"
			}
			fmt.Fprintf(os.Stderr, "cluster-test: %s not found in PATH (%s)\n", tool, hint)
			return exitHarness
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "\ncluster-test: %v: stopping and cleaning up (again to abort)\n", s)
		cancel()
		<-sigs
		fmt.Fprintln(os.Stderr, "cluster-test: aborted; leftovers can be removed with --cleanup")
		os.Exit(exitHarness)
	}()

	code, err := runTest(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster-test:", err)
		if ctx.Err() != nil {
			fmt.Println("INVALID: harness interrupted")
		} else {
			fmt.Println("INVALID: harness failure:", err)
		}
		return exitHarness
	}
	return code
}

// runTest owns every resource it creates and releases all of them on return.
func runTest(ctx context.Context, cfg config) (int, error) {
	if err := os.MkdirAll(cfg.out, 0o755); err != nil {
		return 0, err
	}
	out, err := filepath.Abs(cfg.out)
	if err != nil {
		return 0, err
	}
	if err := os.RemoveAll(filepath.Join(out, "data")); err != nil {
		return 0, err
	}
	for i := 1; i <= clusterCount; i++ {
		os.Remove(filepath.Join(out, fmt.Sprintf("n%d.log", i))) // fresh logs per run; appended across restarts
	}
	os.Remove(filepath.Join(out, "linearizability.html"))
	// The checkers run on whichever coordination records exist.
	for _, f := range []string{bankFile, lockFile} {
		if err := os.Remove(filepath.Join(out, f)); err != nil && !os.IsNotExist(err) {
			return 0, err
		}
	}
	// The checker reads every watch-*.jsonl: none may be left from an
	// earlier run (which may have had other watches or another naming).
	stale, _ := filepath.Glob(filepath.Join(out, "watch-*.jsonl"))
	for _, f := range stale {
		if err := os.Remove(f); err != nil {
			return 0, err
		}
	}

	binary := cfg.binary
	if binary == "" {
		binary = filepath.Join(out, "raftwatch")
		fmt.Printf("building %s\n", binary)
		b := exec.CommandContext(ctx, "go", "build", "-o", binary, "./cmd/raftwatch")
		b.Stdout, b.Stderr = os.Stdout, os.Stderr
		if err := b.Run(); err != nil {
			return 0, fmt.Errorf("go build ./cmd/raftwatch (run from the repository root, or pass --binary): %w", err)
		}
	} else if binary, err = filepath.Abs(binary); err != nil {
		return 0, err
	}

	nw := netns.New(clusterCount)
	if left := nw.Leftovers(); len(left) > 0 {
		if !cfg.cleanup {
			return 0, fmt.Errorf("%s already exist: another cluster-test is running, or one was killed before cleaning up (rerun with --cleanup to remove them)", strings.Join(left, ", "))
		}
		if err := nw.RemoveLeftovers(); err != nil {
			return 0, fmt.Errorf("removing leftovers: %w", err)
		}
	}
	defer func() {
		if err := nw.Teardown(); err != nil {
			fmt.Fprintln(os.Stderr, "cluster-test: teardown:", err)
		}
	}()
	if err := nw.Setup(); err != nil {
		return 0, fmt.Errorf("network setup: %w", err)
	}

	cl := newCluster(nw, binary, out)
	var stopOnce sync.Once
	var stopProblems []string
	stopNodes := func() { stopOnce.Do(func() { stopProblems = cl.StopAll() }) }
	defer stopNodes()
	if err := cl.dialAll(); err != nil {
		return 0, err
	}
	defer cl.closeConns()
	for _, id := range cl.Nodes() {
		if err := cl.Start(id); err != nil {
			return 0, err
		}
	}
	if err := cl.WaitReady(ctx, readyTimeout); err != nil {
		return 0, err
	}
	fmt.Printf("cluster ready: %s (leader %s)\n", cl.initial, cl.Leader(ctx))

	hist, err := history.Create(filepath.Join(out, "history.jsonl"))
	if err != nil {
		return 0, err
	}
	defer hist.Close()
	timeline, err := history.Create(filepath.Join(out, "nemesis.jsonl"))
	if err != nil {
		return 0, err
	}
	defer timeline.Close()

	start := time.Now()
	var eps []endpoint
	for _, n := range nw.Nodes {
		eps = append(eps, endpoint{id: n.ID, addr: clientAddr(n)})
	}
	wl := &workload{start: start, hist: hist, nodes: eps, keys: workloadKeys(), consistency: cfg.consistency,
		opTimeout: cfg.opTimeout, concurrency: cfg.concurrency, seed: cfg.seed,
		pinned: cfg.clients != clientsFailover, failover: cfg.clients != clientsPinned}
	ws := &watchers{start: start, specs: watchSpecsFor(cl.Nodes(), wl.keys), nodes: cl.Nodes(), conns: cl.conns, out: out,
		seed: cfg.seed, pastDelayMax: pastStartDelayMax}
	schedule := nemesis.NewSchedule(cfg.seed, cfg.timeLimit, cfg.families, clusterCount)
	if wl.failover {
		// The failover clients' availability check needs a follower down.
		schedule = nemesis.WithFollowerFault(schedule, cfg.seed)
	}
	nem := &nemesis.Runner{Cluster: cl, Schedule: schedule, Start: start, Timeline: timeline}
	fmt.Printf("seed %d: %d faults scheduled over %v (%s), %d clients (%s) at <= %.0f ops/s, %s reads\n",
		cfg.seed, len(schedule), cfg.timeLimit, cfg.nemesis, wl.processes(), cfg.clients, cfg.rate, strings.ToLower(cfg.consistency.String()))

	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	if err := ws.startAll(watchCtx); err != nil {
		return 0, err
	}
	nemCtx, stopNem := context.WithCancel(ctx)
	defer stopNem()
	nemDone := make(chan error, 1)
	go func() { nemDone <- nem.Run(nemCtx) }()

	wlCtx, stopWl := context.WithTimeout(ctx, cfg.timeLimit)
	defer stopWl()
	// Every selected workload gets an equal share of --rate.
	share := cfg.rate / float64(len(cfg.workloads))
	coord, err := startCoord(wlCtx, cfg, out, start, eps, share)
	if err != nil {
		return 0, err
	}
	defer coord.close()
	wlDone := make(chan struct{})
	go func() {
		if slices.Contains(cfg.workloads, workloadKV) {
			wl.run(wlCtx, share)
		}
		coord.wait()
		close(wlDone)
	}()
	tick := time.NewTicker(progressPeriod)
	for waiting := true; waiting; {
		select {
		case <-wlDone:
			waiting = false
		case <-tick.C:
			fault := nem.Current()
			if fault == "" {
				fault = "none"
			}
			coordOps := ""
			if p := coord.progress(); p != "" {
				coordOps = ", " + p
			}
			fmt.Printf("[%4.0fs] ops %d (ok %d, fail %d, info %d)%s, watch msgs %d (resumes %d), fault: %s\n",
				time.Since(start).Seconds(), wl.ok.Load()+wl.fail.Load()+wl.info.Load(),
				wl.ok.Load(), wl.fail.Load(), wl.info.Load(), coordOps, ws.count(), ws.resumes.Load(), fault)
		}
	}
	tick.Stop()
	stopNem()
	nemErr := <-nemDone
	if err := coord.err(); err != nil {
		return 0, harnessf("coordination workload: %w", err)
	}
	end := time.Since(start).Nanoseconds()
	if err := hist.Flush(); err != nil {
		return 0, err
	}
	if err := coord.flush(); err != nil {
		return 0, err
	}
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}

	// Final phase: heal everything, let the cluster recover, read the result.
	fmt.Println("workload done; healing every fault")
	if err := nem.HealAll(); err != nil {
		nemErr = errors.Join(nemErr, err)
	}
	for _, id := range cl.Nodes() {
		if err := cl.Resume(id); err != nil {
			nemErr = errors.Join(nemErr, err)
		}
		if err := cl.Restart(id); err != nil {
			return 0, harnessf("restart %s for the final phase: %w", id, err)
		}
	}
	timeline.Write(history.NemesisEvent{Time: time.Since(start).Nanoseconds(), Phase: "heal", Kind: "final"})
	time.Sleep(recoveryWait)
	sts, converged, why := cl.waitConverged(ctx)
	if !converged {
		fmt.Printf("nodes did not converge within %v: %s\n", convergeTimeout, why)
	}
	finals := map[string]checker.NodeFinal{}
	data := map[string]map[string]checker.KV{}
	for _, id := range cl.Nodes() {
		nf := checker.NodeFinal{}
		if st, ok := sts[id]; ok {
			nf.FSMIndex = st.FsmIndex
		}
		d, err := cl.finalData(ctx, id)
		if err != nil {
			nf.Error = fmt.Sprintf("final List: %v", err)
		}
		nf.Data = d
		data[id] = d
		finals[id] = nf
	}
	var log *checker.Log
	var logErr error
	logFrom := ""
	for _, id := range append([]string{cl.Leader(ctx)}, cl.Nodes()...) {
		if id == "" {
			continue
		}
		if log, logErr = cl.pullLog(ctx, id); logErr == nil {
			logFrom = id
			break
		}
	}
	ws.requestProgress()
	time.Sleep(finalProgressWait)
	stopWatch()
	if err := ws.wait(); err != nil {
		return 0, err
	}
	stopNodes()
	if err := hist.Flush(); err != nil {
		return 0, err
	}
	if err := coord.flush(); err != nil {
		return 0, err
	}
	if err := timeline.Flush(); err != nil {
		return 0, err
	}
	if logErr != nil {
		return 0, harnessf("pulling the committed log (Debug.Log) from every node failed: %w", logErr)
	}
	if err := writeJSON(filepath.Join(out, "log.json"), log); err != nil {
		return 0, err
	}
	if err := writeJSON(filepath.Join(out, "final.json"), toSaved(finals)); err != nil {
		return 0, err
	}
	if err := writeJSON(filepath.Join(out, "run.json"), savedRun{End: end, Schedule: schedule, Faults: nem.Counts,
		Unexpected: cl.Unexpected(), Shutdown: stopProblems, LogFrom: logFrom}); err != nil {
		return 0, err
	}

	return check(cfg, out, end, schedule, nem.Counts, nemErr, cl.Unexpected(), stopProblems, log, logFrom, finals)
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// results is results.json.
type results struct {
	Seed          uint64                     `json:"seed"`
	TimeLimit     string                     `json:"time_limit"`
	Nemesis       string                     `json:"nemesis"`
	Consistency   string                     `json:"read_consistency"`
	Concurrency   int                        `json:"concurrency"`
	Rate          float64                    `json:"rate"`
	Ops           map[string]map[string]int  `json:"ops"`
	Faults        map[string]int             `json:"faults"`
	Schedule      []nemesis.Fault            `json:"schedule"`
	NemesisErrors string                     `json:"nemesis_errors,omitempty"`
	LogFrom       string                     `json:"log_from"`
	LogFirstIndex uint64                     `json:"log_first_index"`
	LogLastIndex  uint64                     `json:"log_last_index"`
	Linearizable  checker.LinearizableResult `json:"linearizable"`
	NoLostWrites  checker.LostWritesResult   `json:"no_lost_writes"`
	Convergence   checker.ConvergenceResult  `json:"convergence"`
	Watch         checker.WatchResult        `json:"watch"`
	Processes     processResult              `json:"processes"`
	Coordination  coordChecks                `json:"coordination"`
	Clients       string                     `json:"clients"`
	Availability  []checker.Window           `json:"availability"`
	// Failover: the failover clients' availability and its check (only
	// when they ran).
	Failover       *checker.FailoverResult    `json:"failover_availability,omitempty"`
	Verdict        string                     `json:"verdict"`
	FailedChecks   []string                   `json:"failed_checks,omitempty"`
	UndecidedCheck []string                   `json:"undecided_checks,omitempty"`
	Notes          []string                   `json:"notes,omitempty"`
	Extra          map[string]json.RawMessage `json:"-"`
}

type processResult struct {
	Valid      bool     `json:"valid"`
	Unexpected []string `json:"unexpected_exits,omitempty"`
	Shutdown   []string `json:"unclean_shutdowns,omitempty"`
	Detail     string   `json:"detail"`
}

// check loads the recorded files back (the files are the record) and runs
// every checker.
func check(cfg config, out string, end int64, schedule []nemesis.Fault, faults map[string]int, nemErr error,
	unexpected, shutdown []string, log *checker.Log, logFrom string, finals map[string]checker.NodeFinal) (int, error) {
	events, err := history.ReadFile[history.Event](filepath.Join(out, "history.jsonl"))
	if err != nil {
		return 0, harnessf("reading history: %w", err)
	}
	ops := history.Pair(events)
	nemEvents, err := history.ReadFile[history.NemesisEvent](filepath.Join(out, "nemesis.jsonl"))
	if err != nil {
		return 0, harnessf("reading nemesis timeline: %w", err)
	}
	var wmsgs []history.WatchMsg
	files, _ := filepath.Glob(filepath.Join(out, "watch-*.jsonl"))
	sort.Strings(files)
	for _, f := range files {
		if !watchFile.MatchString(filepath.Base(f)) {
			return 0, harnessf("%s: not a logical watch record (watch-w<id>.jsonl); it comes from a run of an older cluster-test, whose per-node watch files this checker cannot group", f)
		}
		ms, err := history.ReadFile[history.WatchMsg](f)
		if err != nil {
			return 0, harnessf("reading %s: %w", f, err)
		}
		wmsgs = append(wmsgs, ms...)
	}
	rp, err := checker.NewReplay(log)
	if err != nil {
		return 0, harnessf("replaying the committed log: %w", err)
	}

	res := results{Seed: cfg.seed, TimeLimit: cfg.timeLimit.String(), Nemesis: cfg.nemesis,
		Consistency: strings.ToLower(cfg.consistency.String()), Concurrency: cfg.concurrency, Rate: cfg.rate, Clients: cfg.clients,
		Faults: faults, Schedule: schedule, LogFrom: logFrom, LogFirstIndex: rp.FirstIndex, LogLastIndex: rp.LastIndex,
		Ops: map[string]map[string]int{}}
	if nemErr != nil {
		res.NemesisErrors = nemErr.Error()
	}
	for _, o := range ops {
		if res.Ops[o.Invoke.Op] == nil {
			res.Ops[o.Invoke.Op] = map[string]int{}
		}
		res.Ops[o.Invoke.Op][o.Outcome()]++
	}
	if rp.FirstIndex > 1 {
		res.Notes = append(res.Notes, fmt.Sprintf("the committed log from %s starts at index %d (compacted): checks that need it only cover revisions from there", logFrom, rp.FirstIndex))
	}

	fmt.Println()
	fmt.Printf("history: %d ops %v; log: %d entries (first index %d, last %d, from %s)\n",
		len(ops), res.Ops, len(log.Entries), rp.FirstIndex, rp.LastIndex, logFrom)

	var failed, undecided []string
	verdict := func(name string, valid bool, detail string) {
		v := "valid"
		if !valid {
			v = "INVALID"
			failed = append(failed, name)
		}
		fmt.Printf("%-16s %-7s %s\n", name+":", v, detail)
	}

	res.Linearizable = checker.CheckLinearizable(ops, checker.LinearizableOptions{
		Replay: rp, Timeout: cfg.checkTimeout, HTMLPath: filepath.Join(out, "linearizability.html")})
	if res.Linearizable.Undecided && res.Linearizable.Valid {
		undecided = append(undecided, "linearizable")
		fmt.Printf("%-16s %-7s %s\n", "linearizable:", "UNKNOWN", res.Linearizable.Detail)
	} else {
		verdict("linearizable", res.Linearizable.Valid, res.Linearizable.Detail)
	}
	res.NoLostWrites = checker.CheckNoLostWrites(ops, rp, dataOf(finals))
	verdict("no-lost-writes", res.NoLostWrites.Valid, res.NoLostWrites.Detail)
	res.Convergence = checker.CheckConvergence(finals, rp)
	verdict("convergence", res.Convergence.Valid, res.Convergence.Detail)
	windows := checker.Windows(nemEvents, end)
	res.Watch = checker.CheckWatch(checker.GroupWatches(wmsgs), rp, windows)
	verdict("watch", res.Watch.Valid, res.Watch.Detail)
	fmt.Printf("%-16s %s\n", "", watchResumes(res.Watch))
	res.Processes = processResult{Valid: len(unexpected) == 0, Unexpected: unexpected, Shutdown: shutdown}
	res.Processes.Detail = "no node exited on its own"
	if !res.Processes.Valid {
		res.Processes.Detail = strings.Join(unexpected, "; ")
	}
	if len(shutdown) > 0 {
		res.Notes = append(res.Notes, "unclean shutdown at the end: "+strings.Join(shutdown, "; "))
	}
	verdict("processes", res.Processes.Valid, res.Processes.Detail)
	res.Coordination, err = checkCoord(out, rp, dataOf(finals), windows, cfg.checkTimeout)
	if err != nil {
		return 0, harnessf("%w", err)
	}
	if b := res.Coordination.Bank; b != nil {
		if b.Undecided && b.Valid {
			undecided = append(undecided, "bank")
			fmt.Printf("%-16s %-7s %s\n", "bank:", "UNKNOWN", b.Detail)
		} else {
			verdict("bank", b.Valid, b.Detail)
		}
	}
	if l := res.Coordination.Lock; l != nil {
		verdict("lock", l.Valid, l.Detail)
	}

	windows, table := checker.Availability(ops, windows)
	res.Availability = windows
	failoverRan := false
	for _, o := range ops {
		failoverRan = failoverRan || o.Invoke.Client == history.ClientFailover
	}
	if failoverRan {
		fa := checker.FailoverAvailability(windows)
		res.Failover = &fa
		verdict("availability", fa.Valid, fa.Detail)
	}
	if cfg.clients != clientsFailover {
		fmt.Printf("\navailability of the pinned clients per window (a report, not a check):\n%s", table)
	}
	if res.Failover != nil {
		fmt.Printf("\navailability of the failover clients (the Go client with every endpoint) per window:\n%s", res.Failover.Table)
		if res.Failover.Valid {
			fmt.Printf("availability: PASS (%s)\n", res.Failover.Detail)
		} else {
			fmt.Printf("availability: FAIL (%s)\n", res.Failover.Detail)
		}
	}
	fmt.Printf("faults injected: %v\n", faults)
	if nemErr != nil {
		fmt.Printf("nemesis errors: %v\n", nemErr)
	}
	for _, n := range res.Notes {
		fmt.Println("note:", n)
	}
	if len(ops) > 0 { // a run of only the coordination workloads has no KV ops to plot
		if err := plotLatency(filepath.Join(out, "latency.png"), ops, windows, end); err != nil {
			fmt.Println("latency plot:", err)
		}
		if err := plotAvailability(filepath.Join(out, "availability.png"), ops, windows, end); err != nil {
			fmt.Println("availability plot:", err)
		}
	}

	code := exitValid
	switch {
	case len(failed) > 0:
		res.Verdict = "INVALID"
		code = exitInvalid
	case len(undecided) > 0:
		res.Verdict = "UNKNOWN"
		code = exitHarness
	default:
		res.Verdict = "VALID"
	}
	res.FailedChecks, res.UndecidedCheck = failed, undecided
	if err := writeJSON(filepath.Join(out, "results.json"), res); err != nil {
		return 0, err
	}
	fmt.Printf("output in %s (history.jsonl, nemesis.jsonl, watch-*.jsonl, n*.log, log.json, results.json, latency.png, availability.png", out)
	if res.Linearizable.HTML != "" {
		fmt.Print(", linearizability.html")
	}
	fmt.Println(")")
	switch {
	case len(failed) > 0:
		fmt.Printf("INVALID: %s\n", strings.Join(failed, ", "))
	case len(undecided) > 0:
		fmt.Printf("INVALID: undecided (%s timed out; raise --check-timeout)\n", strings.Join(undecided, ", "))
	default:
		fmt.Println("VALID")
	}
	return code, nil
}

// watchFile names the record of one logical watch.
var watchFile = regexp.MustCompile(`^watch-w[0-9]+\.jsonl$`)

// watchResumes is the summary line of the watch checker's resumes: in
// total, by the fault during which the stream before ended, and per watch.
func watchResumes(r checker.WatchResult) string {
	var kinds []string
	for k := range r.ResumesByFault {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	var by []string
	for _, k := range kinds {
		by = append(by, fmt.Sprintf("%s=%d", k, r.ResumesByFault[k]))
	}
	var per []string
	for _, w := range r.PerWatch {
		p := fmt.Sprintf("w%d=%d", w.ID, w.Resumes)
		if w.Ended != "" {
			p += "(ended: " + w.Ended + ")"
		}
		per = append(per, p)
	}
	return fmt.Sprintf("resumes: %d (by fault: %s; per watch: %s), raw duplicates dropped: %d, ended by compaction: %d",
		r.Resumes, strings.Join(by, " "), strings.Join(per, " "), r.Dropped, r.Compacted)
}

// savedNode is one node's entry in final.json.
type savedNode struct {
	FSMIndex uint64                `json:"fsm_index"`
	Error    string                `json:"error,omitempty"`
	Data     map[string]checker.KV `json:"data"`
}

func toSaved(finals map[string]checker.NodeFinal) map[string]savedNode {
	out := map[string]savedNode{}
	for id, nf := range finals {
		out[id] = savedNode{FSMIndex: nf.FSMIndex, Error: nf.Error, Data: nf.Data}
	}
	return out
}

// savedRun is run.json: what the checkers need besides the other files.
type savedRun struct {
	End        int64           `json:"end_ns"`
	Schedule   []nemesis.Fault `json:"schedule"`
	Faults     map[string]int  `json:"faults"`
	Unexpected []string        `json:"unexpected_exits,omitempty"`
	Shutdown   []string        `json:"unclean_shutdowns,omitempty"`
	LogFrom    string          `json:"log_from"`
}

// recheck reruns the checkers on the files of an earlier run (--recheck DIR);
// edit those files by hand to see a checker fail.
func recheck(cfg config) (int, error) {
	dir := cfg.recheck
	var run savedRun
	var log checker.Log
	var saved map[string]savedNode
	for name, v := range map[string]any{"run.json": &run, "log.json": &log, "final.json": &saved} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return 0, err
		}
		if err := json.Unmarshal(b, v); err != nil {
			return 0, fmt.Errorf("%s: %w", name, err)
		}
	}
	finals := map[string]checker.NodeFinal{}
	for id, s := range saved {
		finals[id] = checker.NodeFinal{FSMIndex: s.FSMIndex, Error: s.Error, Data: s.Data}
	}
	var prev results
	if b, err := os.ReadFile(filepath.Join(dir, "results.json")); err == nil {
		_ = json.Unmarshal(b, &prev)
		cfg.seed, cfg.nemesis, cfg.concurrency, cfg.rate = prev.Seed, prev.Nemesis, prev.Concurrency, prev.Rate
		if prev.Clients != "" {
			cfg.clients = prev.Clients
		}
		if prev.Consistency == "serializable" {
			cfg.consistency = pb.Consistency_SERIALIZABLE
		}
		if d, err := time.ParseDuration(prev.TimeLimit); err == nil {
			cfg.timeLimit = d
		}
	}
	return check(cfg, dir, run.End, run.Schedule, run.Faults, nil, run.Unexpected, run.Shutdown, &log, run.LogFrom, finals)
}

func dataOf(finals map[string]checker.NodeFinal) map[string]map[string]checker.KV {
	out := map[string]map[string]checker.KV{}
	for id, nf := range finals {
		if nf.Error == "" {
			out[id] = nf.Data
		}
	}
	return out
}
