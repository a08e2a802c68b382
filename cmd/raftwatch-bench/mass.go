package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"sync/atomic"
	"time"
)

// watch-mass (issue 11): many watchers held on one node, 1,000,000 over 100
// streams at full size. It measures what they cost that node's memory, how
// fast they open, and whether a put load on keys none of them watches runs
// as fast while they are held as before they were opened, on the same
// cluster. A node that dies or an opening that does not finish within
// --open-timeout is a result too ("did not survive"), not only an error.

const (
	massKeysOne      = "one"      // every watcher on watchKeyName
	massKeysDistinct = "distinct" // watcher w on massKey(w)
	// massProgressGap is how often the opening checks the node is alive.
	massProgressGap = time.Second
)

// massKey is watcher w's own key with --keys distinct: "/w/" and 7 digits,
// so 1,000,000 keys share one length, and none is a put workload key
// ("/" and digits) or the one-key case's watchKeyName.
func massKey(w int) []byte { return fmt.Appendf(nil, "/w/%07d", w) }

type massConfig struct {
	watchers     int
	conns        int
	node         int
	keys         string
	openParallel int
	openTimeout  time.Duration
	settle       time.Duration
	put          loadConfig // duration 0: no put load
}

// massFlags declares watch-mass's flags on fs; the returned func checks
// them once parsed.
func massFlags(fs *flag.FlagSet) func() (massConfig, error) {
	var c massConfig
	fs.IntVar(&c.watchers, "watchers", 1_000_000, "watchers held on the one node")
	fs.IntVar(&c.conns, "conns", 100, "client objects (one connection and one watch stream each) the watchers are spread over")
	fs.IntVar(&c.node, "node", 0, "endpoint index of the node holding every watcher")
	fs.StringVar(&c.keys, "keys", massKeysOne, "one: every watcher on one key; distinct: each on a key of its own (exact-key watches)")
	fs.IntVar(&c.openParallel, "open-parallel", 1000, "watches being opened at once (each waits for its creation ack)")
	fs.DurationVar(&c.openTimeout, "open-timeout", 5*time.Minute, "opening must finish within this, else the run reports that the target did not survive")
	fs.DurationVar(&c.settle, "settle", 3*time.Second, "wait after opening before reading the node's memory")
	fs.IntVar(&c.put.clients, "put-clients", 64, "put load: concurrent requesters")
	fs.IntVar(&c.put.conns, "put-conns", 16, "put load: client objects they share")
	fs.DurationVar(&c.put.duration, "put-duration", 0, "put load: measured window, run before the watchers open and again while they are held (0: no put load)")
	fs.DurationVar(&c.put.warmup, "put-warmup", time.Second, "put load: unmeasured run before each window")
	return func() (massConfig, error) {
		switch {
		case c.keys != massKeysOne && c.keys != massKeysDistinct:
			return c, fmt.Errorf("--keys %q: want %s or %s", c.keys, massKeysOne, massKeysDistinct)
		case c.conns < 1 || c.watchers < c.conns:
			return c, fmt.Errorf("need 1 <= --conns (%d) <= --watchers (%d)", c.conns, c.watchers)
		case c.openParallel < 1:
			return c, fmt.Errorf("--open-parallel %d: want at least 1", c.openParallel)
		case c.put.duration > 0 && (c.put.conns < 1 || c.put.clients < c.put.conns):
			return c, fmt.Errorf("need 1 <= --put-conns (%d) <= --put-clients (%d)", c.put.conns, c.put.clients)
		}
		return c, nil
	}
}

// failedRun is an error that comes with a result worth recording: the
// caller emits r, then fails.
type failedRun struct {
	r   Result
	err error
}

func (f *failedRun) Error() string { return f.err.Error() }
func (f *failedRun) Unwrap() error { return f.err }

// runWatchMass runs watch-mass against target at endpoints; pids are the
// node processes in endpoints order. It never closes the watchers, and
// they do not end with ctx: a client ends each of its watches on its own
// when that watch's context ends, which for a million takes minutes. They
// end with the process, right after, and the nodes drop them with the
// connections.
func runWatchMass(ctx context.Context, target string, endpoints []string, pids []int, cfg massConfig) (Result, error) {
	if len(pids) != len(endpoints) {
		return Result{}, fmt.Errorf("--pids: want one PID per endpoint (%d), got %d (the holding node's memory is read from /proc)", len(endpoints), len(pids))
	}
	if cfg.node < 0 || cfg.node >= len(endpoints) {
		return Result{}, fmt.Errorf("--node %d: want an endpoint index below %d", cfg.node, len(endpoints))
	}
	m := &MassWatchers{Keys: cfg.keys, Node: cfg.node, OpenParallel: cfg.openParallel}
	keys := "one key"
	if cfg.keys == massKeysDistinct {
		keys = "distinct keys"
	}
	r := Result{
		Workload: "watch-mass",
		Case:     fmt.Sprintf("watch-mass %d watchers, %s, one node, %d conns", cfg.watchers, keys, cfg.conns),
		Target:   target,
		Watchers: cfg.watchers,
		Conns:    cfg.conns,
		Mass:     m,
	}
	pid := pids[cfg.node]
	start := time.Now()
	put := func() (*PutSummary, error) {
		lc := cfg.put
		lc.target, lc.endpoints, lc.pids = target, endpoints, pids
		pr, err := runPut(ctx, lc)
		if err != nil {
			return nil, err
		}
		return &PutSummary{Clients: pr.Clients, Conns: pr.Conns, Throughput: pr.Throughput, P50Ms: pr.P50Ms,
			P99Ms: pr.P99Ms, Errors: pr.Errors, FirstError: pr.FirstError, CPUPerOpUs: pr.CPUPerOpUs}, nil
	}
	var err error
	if cfg.put.duration > 0 {
		if m.PutIdle, err = put(); err != nil {
			return Result{}, fmt.Errorf("put load before the watchers: %w", err)
		}
	}
	idle, err := sampleProcMem([]int{pid})
	if err != nil {
		return Result{}, err
	}
	m.IdleRSS, m.IdleAnon = idle[0].RSS, idle[0].Anon

	fail := func(format string, args ...any) error {
		m.Failure = fmt.Sprintf(format, args...)
		r.DurationS = time.Since(start).Seconds()
		return &failedRun{r: r, err: fmt.Errorf("%s did not survive %d watchers on one node: %s", target, cfg.watchers, m.Failure)}
	}
	pool, err := dialPool(target, cfg.conns, func(int) []string { return []string{endpoints[cfg.node]} })
	if err != nil {
		return Result{}, err
	}
	keyOf := func(int) []byte { return []byte(watchKeyName) }
	if cfg.keys == massKeysDistinct {
		keyOf = massKey
	}
	var opened atomic.Int64
	openErr := make(chan error, 1)
	t0 := time.Now()
	go func() {
		// Bounded by --open-timeout below, and by the process's watchdog.
		_, err := openStreams(context.WithoutCancel(ctx), pool, cfg.watchers, cfg.openParallel, keyOf,
			func(int) string { return endpoints[cfg.node] }, &opened)
		openErr <- err
	}()
	deadline := time.NewTimer(cfg.openTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(massProgressGap)
	defer tick.Stop()
opening:
	for {
		select {
		case err := <-openErr:
			m.Opened = int(opened.Load())
			if err != nil {
				return Result{}, fail("opening stopped after %d watchers: %v", m.Opened, err)
			}
			break opening
		case <-deadline.C:
			m.Opened = int(opened.Load())
			return Result{}, fail("timed out: %d of %d watchers open after --open-timeout %v", m.Opened, cfg.watchers, cfg.openTimeout)
		case <-tick.C:
			if _, err := readProcMem(pid); err != nil {
				m.Opened = int(opened.Load())
				return Result{}, fail("the node exited (pid %d: %v) after %d watchers were open", pid, err, m.Opened)
			}
		case <-ctx.Done():
			return Result{}, ctx.Err()
		}
	}
	m.OpenS = time.Since(t0).Seconds()
	m.OpenPerS = float64(m.Opened) / m.OpenS

	select {
	case <-time.After(cfg.settle):
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
	held, err := sampleProcMem([]int{pid})
	if err != nil {
		return Result{}, fail("the node exited while the watchers were held: %v", err)
	}
	m.HeldRSS, m.HeldAnon = held[0].RSS, held[0].Anon
	r.BytesPerWatcher = m.BytesPerWatcher(cfg.watchers)
	if cfg.put.duration > 0 {
		if m.PutHeld, err = put(); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return Result{}, err
			}
			return Result{}, fail("put load while the watchers were held: %v", err)
		}
	}
	if _, err := readProcMem(pid); err != nil {
		return Result{}, fail("the node exited under the put load: %v", err)
	}
	r.DurationS = time.Since(start).Seconds()
	return r, nil
}
