// Command raftwatch-bench is the load generator of scripts/bench.sh: the same
// workloads, key and value sizes, and client/connection counts against
// raftwatch and against etcd, one JSON line per result.
//
//	raftwatch-bench put --target raftwatch|etcd --endpoints A,B,C --clients 64 --conns 16 [--label baseline] [--pids P1,P2,P3]
//	raftwatch-bench get --consistency linearizable|serializable ...
//	raftwatch-bench txn --clients 64 --conns 16 [--accounts 10000] ...   (2 compares + 2 puts)
//	raftwatch-bench keepalive --clients 64 --conns 16 [--leases 10000 --ttl 600] ...
//	raftwatch-bench watch-latency --watchers 1000 --rate 20 ...
//	raftwatch-bench watch-throughput --watchers 1000 --put-clients 16 --put-conns 4 ...
//	raftwatch-bench watch-hold --watchers 10000 [--node 0] [--pids P1,P2,P3] ...
//	raftwatch-bench watch-mass --watchers 1000000 --conns 100 --node 0 --keys one|distinct [--put-duration 10s] --pids P1,P2,P3 ...
//	raftwatch-bench slow-watchers --watchers 10000 --conns 10 --rate 1000 --duration 60s --pids P1,P2,P3 ...
//	raftwatch-bench watch-resume --watchers 100 --rate 200 --pids P1,P2,P3 ...   (kills a follower)
//	raftwatch-bench ready --target ... --endpoints ...   (waits until a put succeeds)
//	raftwatch-bench report --in results.jsonl --dir DIR
//
// N clients over M connections means M client objects, each used by N/M
// goroutines; a client object is one connection per endpoint it talks to.
// With --pids (the node processes, in --endpoints order), put, get, txn,
// keepalive and the watch workloads also measure the server CPU spent in
// their measured window.
// --curve NAME marks the result as a point of a scaling curve (the report
// plots those apart from the workload tables).
// Every run is bounded by --timeout and stops by itself.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// watchdogGrace is how long past --timeout a stuck run may take to unwind
// before the process exits anyway.
const watchdogGrace = 30 * time.Second

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	stop := startCPUProfile()
	err := run(os.Args[1], os.Args[2:])
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "raftwatch-bench %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

// startCPUProfile writes a CPU profile of this invocation to
// $RAFTWATCH_BENCH_CPUPROFILE.PID when that is set: the load generator
// shares the machine's cores with the nodes, and its own cost is part of
// what a run measures. It returns the function that ends the profile.
func startCPUProfile() func() {
	base := os.Getenv("RAFTWATCH_BENCH_CPUPROFILE")
	if base == "" {
		return func() {}
	}
	f, err := os.Create(fmt.Sprintf("%s.%d", base, os.Getpid()))
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "raftwatch-bench: RAFTWATCH_BENCH_CPUPROFILE: %v\n", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

func usage() {
	var only []string
	for name := range raftwatchWorkloads {
		only = append(only, name)
	}
	slices.Sort(only)
	subs := append([]string{"put", "get", "txn", "keepalive", "watch-latency", "watch-throughput", "watch-hold", "watch-mass"}, only...)
	fmt.Fprintf(os.Stderr, "usage: raftwatch-bench %s|ready|report [flags]\n"+
		"targets compiled in: %s; run a subcommand with -h for its flags\n", strings.Join(subs, "|"), targetNames())
}

// raftwatchWorkloads are the subcommands only raftwatch runs: they use its
// client and API beyond the Driver interface (revisions of puts, raw watch
// streams, resumes, node status). Their files register them when the
// raftwatch client is compiled in. Each declares its own flags on fs and
// returns the function that runs the workload.
var raftwatchWorkloads = map[string]func(fs *flag.FlagSet) func(ctx context.Context, c common) (Result, error){}

// common are the flags of every workload subcommand.
type common struct {
	target    string
	label     string // recorded as the result's target; defaults to target
	endpoints []string
	round     int
	out       string
	timeout   time.Duration
	curve     string // recorded as the result's curve: a point of that scaling curve
}

func commonFlags(fs *flag.FlagSet) func() (common, error) {
	var c common
	var eps string
	fs.StringVar(&c.target, "target", "", "system under test: "+targetNames())
	fs.StringVar(&c.label, "label", "", "name recorded as the result's target (default: --target), e.g. baseline for an older raftwatch build")
	fs.StringVar(&eps, "endpoints", "", "comma-separated client addresses (host:port) of the cluster")
	fs.IntVar(&c.round, "round", 0, "round number recorded in the result")
	fs.StringVar(&c.out, "out", "", "also append the JSON result line to this file")
	fs.DurationVar(&c.timeout, "timeout", 5*time.Minute, "hard limit for the whole run")
	fs.StringVar(&c.curve, "curve", "", "record the result as a point of this scaling curve ("+curveNames()+"), reported apart from the workload tables")
	return func() (common, error) {
		if _, ok := drivers[c.target]; !ok {
			return c, fmt.Errorf("--target %q: want one of %s", c.target, targetNames())
		}
		for _, e := range strings.Split(eps, ",") {
			if e = strings.TrimSpace(e); e != "" {
				e = strings.TrimPrefix(strings.TrimPrefix(e, "http://"), "https://")
				c.endpoints = append(c.endpoints, e)
			}
		}
		if len(c.endpoints) == 0 {
			return c, errors.New("--endpoints is required (e.g. 127.0.0.1:2379,127.0.0.1:22379)")
		}
		return c, nil
	}
}

func run(cmd string, args []string) error {
	if cmd == "report" {
		return runReportCmd(args)
	}
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	parseCommon := commonFlags(fs)
	var (
		clients, conns      int
		duration, warmup    time.Duration
		ops                 int64
		consistency         string
		watchers, node      int
		rate                float64
		drainMax, settle    time.Duration
		putClients, putConn int
		pidList             string
		hold                time.Duration
		accounts, leases    int
		ttl                 int64
		runOnlyRaftwatch    func(context.Context, common) (Result, error)
		parseMass           func() (massConfig, error)
	)
	switch cmd {
	case "put", "get", "txn", "keepalive":
		defClients, defConns := 1, 1
		if cmd != "put" {
			defClients, defConns = 64, 16
		}
		fs.IntVar(&clients, "clients", defClients, "concurrent requesters (goroutines)")
		fs.IntVar(&conns, "conns", defConns, "client objects (connections) the requesters share")
		fs.DurationVar(&duration, "duration", 10*time.Second, "measured window")
		fs.DurationVar(&warmup, "warmup", time.Second, "unmeasured run before the window")
		fs.Int64Var(&ops, "ops", 0, "stop after this many measured ops (0: --duration only)")
		fs.StringVar(&pidList, "pids", "", cpuPIDsUsage)
		switch cmd {
		case "get":
			fs.StringVar(&consistency, "consistency", "linearizable", "linearizable|serializable")
		case "txn":
			fs.IntVar(&accounts, "accounts", 10000, "account keys the transactions' pairs are drawn from (written first, not timed)")
		case "keepalive":
			fs.IntVar(&leases, "leases", 10000, "leases granted first (not timed) and kept alive round robin; revoked at the end")
			fs.Int64Var(&ttl, "ttl", 600, "TTL of the leases, seconds: long enough that none expires during the run")
		}
	case "watch-latency", "watch-throughput", "watch-hold":
		defWatchers := 1000
		if cmd == "watch-hold" {
			defWatchers = 10000
		}
		fs.IntVar(&watchers, "watchers", defWatchers, "watch streams on the one key")
		fs.IntVar(&conns, "conns", 0, "client objects for the watchers (0: one per endpoint, or 1 with --node)")
		fs.IntVar(&node, "node", -1, "put every watcher on this endpoint index (-1: spread round-robin)")
		switch cmd {
		case "watch-latency", "watch-throughput":
			fs.StringVar(&pidList, "pids", "", cpuPIDsUsage)
		}
		switch cmd {
		case "watch-latency":
			fs.Float64Var(&rate, "rate", 20, "puts per second")
			fs.DurationVar(&duration, "duration", 10*time.Second, "how long to put")
			fs.DurationVar(&drainMax, "drain", 10*time.Second, "max wait for deliveries after the last put")
		case "watch-throughput":
			fs.IntVar(&putClients, "put-clients", 16, "concurrent writers")
			fs.IntVar(&putConn, "put-conns", 4, "client objects the writers share")
			fs.DurationVar(&duration, "duration", 10*time.Second, "how long to put")
			fs.DurationVar(&drainMax, "drain", 15*time.Second, "max wait for deliveries after the last put")
		case "watch-hold":
			fs.StringVar(&pidList, "pids", "", "node PIDs in --endpoints order: measure RSS idle and held, then exit")
			fs.DurationVar(&settle, "settle", 3*time.Second, "wait after opening before measuring RSS")
			fs.DurationVar(&hold, "hold", 10*time.Minute, "without --pids: hold at most this long")
		}
	case "watch-mass":
		fs.StringVar(&pidList, "pids", "", "node PIDs in --endpoints order (required: the holding node's memory is read from /proc, and the put loads measure CPU)")
		parseMass = massFlags(fs)
	case "ready":
	default:
		def, ok := raftwatchWorkloads[cmd]
		if !ok {
			usage()
			return fmt.Errorf("unknown subcommand %q", cmd)
		}
		runOnlyRaftwatch = def(fs)
	}
	fs.Parse(args)
	c, err := parseCommon()
	if err != nil {
		return err
	}
	var mcfg massConfig
	if parseMass != nil {
		if mcfg, err = parseMass(); err != nil {
			return err
		}
	}
	if c.curve != "" && !isCurve(c.curve) {
		return fmt.Errorf("--curve %q: want one of %s", c.curve, curveNames())
	}
	if runOnlyRaftwatch != nil && c.target != "raftwatch" {
		return fmt.Errorf("--target %s: %s runs against raftwatch only", c.target, cmd)
	}
	var pids []int
	if runOnlyRaftwatch == nil { // those parse their own --pids
		if pids, err = parsePIDs(pidList); err != nil {
			return err
		}
		if len(pids) > 0 && cmd != "watch-hold" {
			// Fail before the run, not after it, when a PID is wrong.
			if len(pids) != len(c.endpoints) {
				return fmt.Errorf("--pids: want one PID per endpoint (%d), got %d", len(c.endpoints), len(pids))
			}
			if _, err := sampleCPU(pids); err != nil {
				return fmt.Errorf("--pids: %w", err)
			}
		}
	}

	sigCtx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	if cmd != "watch-hold" {
		// Only watch-hold treats a signal as "stop holding"; elsewhere it aborts.
		go func() {
			<-sigCtx.Done()
			cancel()
		}()
	}
	time.AfterFunc(c.timeout+watchdogGrace, func() {
		fmt.Fprintf(os.Stderr, "raftwatch-bench %s: still running %v after --timeout; exiting\n", cmd, watchdogGrace)
		os.Exit(3)
	})

	wcfg := watchConfig{target: c.target, endpoints: c.endpoints, watchers: watchers, conns: conns, node: node, pids: pids}
	if wcfg.conns == 0 {
		wcfg.conns = len(c.endpoints)
		if node >= 0 {
			wcfg.conns = 1
		}
	}
	lcfg := loadConfig{target: c.target, endpoints: c.endpoints, clients: clients, conns: conns,
		duration: duration, warmup: warmup, ops: ops, pids: pids}
	var r Result
	switch cmd {
	case "ready":
		return waitReady(ctx, c.target, c.endpoints)
	case "put":
		r, err = runPut(ctx, lcfg)
	case "get":
		if consistency != "linearizable" && consistency != "serializable" {
			return fmt.Errorf("--consistency %q: want linearizable or serializable", consistency)
		}
		r, err = runGet(ctx, lcfg, consistency == "serializable")
	case "txn":
		r, err = runTxn(ctx, lcfg, accounts)
	case "keepalive":
		r, err = runKeepAlive(ctx, lcfg, leases, ttl)
	case "watch-latency":
		r, err = runWatchLatency(ctx, wcfg, rate, duration, drainMax)
	case "watch-throughput":
		r, err = runWatchThroughput(ctx, wcfg, putClients, putConn, duration, drainMax)
	case "watch-hold":
		holdCtx, holdCancel := context.WithTimeout(sigCtx, hold)
		defer holdCancel()
		r, err = runWatchHold(ctx, holdCtx, wcfg, pids, settle)
	case "watch-mass":
		r, err = runWatchMass(ctx, c.target, c.endpoints, pids, mcfg)
	default:
		r, err = runOnlyRaftwatch(ctx, c)
	}
	if f := (*failedRun)(nil); errors.As(err, &f) {
		// The run's failure is its result (e.g. "did not survive"); record
		// it, then fail.
		if eerr := emit(c.stamp(f.r), c.out); eerr != nil {
			return errors.Join(err, eerr)
		}
		return err
	}
	if err != nil {
		return err
	}
	return emit(c.stamp(r), c.out)
}

// stamp stamps r with what the flags say about every result: round,
// label and curve.
func (c common) stamp(r Result) Result {
	r.Round = c.round
	if c.label != "" {
		r.Target = c.label
	}
	r.Curve = c.curve
	return r
}

// cpuPIDsUsage is the --pids flag of the workloads that measure server CPU.
const cpuPIDsUsage = "node PIDs in --endpoints order: measure their CPU (user+system) over the measured window"

// parsePIDs reads --pids: comma-separated process ids.
func parsePIDs(list string) ([]int, error) {
	var pids []int
	for _, p := range strings.Split(list, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		pid, err := strconv.Atoi(p)
		if err != nil || pid <= 0 {
			return nil, fmt.Errorf("--pids: %q is not a PID", p)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}
