package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Key and value shapes shared by every workload and target.
const (
	keySize    = 8   // bytes; keys are '/' and a zero-padded decimal number
	valueSize  = 256 // bytes
	keySpace   = 100_000
	opTimeout  = 10 * time.Second // one request; a slower one counts as an error
	getKeyName = "/getkey0"       // the single key of the get workload (8 B)
	// readyKeyName is written and read to tell that a cluster serves.
	readyKeyName = "/ready00"
)

// loadConfig is a closed-loop workload: clients goroutines over conns client
// objects, each goroutine issuing one request at a time.
type loadConfig struct {
	target    string
	endpoints []string
	clients   int
	conns     int
	duration  time.Duration // measured window
	warmup    time.Duration // run, unmeasured, before the window
	ops       int64         // stop after this many measured ops (0: duration only)
	// pids are the server processes whose CPU is measured over the
	// window (none: not measured).
	pids []int
}

// makeKeys returns the key table: keySpace keys of keySize bytes.
func makeKeys() [][]byte {
	keys := make([][]byte, keySpace)
	for i := range keys {
		keys[i] = []byte(fmt.Sprintf("/%0*d", keySize-1, i))
	}
	return keys
}

// makeValue returns a valueSize value of printable filler.
func makeValue() []byte {
	v := make([]byte, valueSize)
	for i := range v {
		v[i] = 'a' + byte(i%26)
	}
	return v
}

// runLoad runs op from cfg.clients goroutines; goroutine g uses client object
// g mod conns. It returns the measured count, errors and latencies.
func runLoad(ctx context.Context, cfg loadConfig, op func(ctx context.Context, d Driver, seq int64) error) (Result, error) {
	return runLoadEach(ctx, cfg, loadHooks{}, func(_ context.Context, d Driver) (clientOp, func()) {
		return func(ctx context.Context, seq int64) (bool, error) { return false, op(ctx, d, seq) }, func() {}
	})
}

// clientOp is one requester's operation number seq. miss reports a
// completed op whose outcome was negative (a transaction whose compares
// failed): it counts in throughput and latency, and in Result.CompareFailed.
type clientOp func(ctx context.Context, seq int64) (miss bool, err error)

// loadHooks run on the dialed pool outside the measurement: setup before
// the clock starts, teardown after the last op (both optional). A setup
// error fails the run; a teardown error is recorded in the result
// (TeardownError), whose measurement stands.
type loadHooks struct {
	setup, teardown func(ctx context.Context, pool []Driver) error
}

// runLoadEach is runLoad with state per requester: newOp builds goroutine
// g's op on its client object (ctx lives as long as the run) and a func
// that releases what the op holds.
func runLoadEach(ctx context.Context, cfg loadConfig, hooks loadHooks,
	newOp func(ctx context.Context, d Driver) (clientOp, func())) (Result, error) {
	if cfg.clients < 1 || cfg.conns < 1 || cfg.conns > cfg.clients {
		return Result{}, fmt.Errorf("need 1 <= conns (%d) <= clients (%d)", cfg.conns, cfg.clients)
	}
	pool, err := dialPool(cfg.target, cfg.conns, func(i int) []string { return rotate(cfg.endpoints, i) })
	if err != nil {
		return Result{}, err
	}
	defer closePool(pool)
	if hooks.setup != nil {
		if err := hooks.setup(ctx, pool); err != nil {
			return Result{}, fmt.Errorf("setup: %w", err)
		}
	}

	var (
		seq      atomic.Int64 // every issued op, warmup included
		measured atomic.Int64 // ops issued inside the window
		errs     atomic.Int64
		misses   atomic.Int64
		first    firstError
		lat      latencies
		wg       sync.WaitGroup
		lastDone atomic.Int64 // unix nanos of the last measured completion
	)
	start := time.Now()
	winStart := start.Add(cfg.warmup)
	winEnd := winStart.Add(cfg.duration)
	cpu := startCPUWindow(ctx, cfg.pids, winStart)
	for g := 0; g < cfg.clients; g++ {
		op, done := newOp(ctx, pool[g%cfg.conns])
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer done()
			var mine []time.Duration
			defer func() { lat.add(mine) }()
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(winEnd) {
					return
				}
				inWindow := !t0.Before(winStart)
				if inWindow && cfg.ops > 0 && measured.Add(1) > cfg.ops {
					return
				}
				octx, cancel := context.WithTimeout(ctx, opTimeout)
				miss, err := op(octx, seq.Add(1)-1)
				cancel()
				t1 := time.Now()
				if !inWindow {
					continue
				}
				if err != nil {
					errs.Add(1)
					first.set(err)
					continue
				}
				if miss {
					misses.Add(1)
				}
				mine = append(mine, t1.Sub(t0))
				for {
					last := lastDone.Load()
					if t1.UnixNano() <= last || lastDone.CompareAndSwap(last, t1.UnixNano()) {
						break
					}
				}
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return Result{}, ctx.Err()
	}
	// Right after the last op, before the teardown's untimed work.
	nodeCPU, err := cpu.stop()
	if err != nil {
		return Result{}, err
	}
	var teardownErr string
	if hooks.teardown != nil {
		if err := hooks.teardown(ctx, pool); err != nil {
			teardownErr = err.Error()
		}
	}
	elapsed := time.Duration(lastDone.Load() - winStart.UnixNano())
	if elapsed <= 0 {
		elapsed = cfg.duration
	}
	r := Result{
		Target:        cfg.target,
		Clients:       cfg.clients,
		Conns:         cfg.conns,
		DurationS:     elapsed.Seconds(),
		Errors:        errs.Load(),
		FirstError:    first.msg,
		CompareFailed: misses.Load(),
		TeardownError: teardownErr,
	}
	r.Ops = int64(len(lat.all))
	r.Throughput = float64(r.Ops) / elapsed.Seconds()
	r.P50Ms, r.P99Ms, r.MaxMs = lat.percentiles()
	r.setServerCPU(nodeCPU)
	return r, nil
}

func runPut(ctx context.Context, cfg loadConfig) (Result, error) {
	keys, value := makeKeys(), makeValue()
	r, err := runLoad(ctx, cfg, func(ctx context.Context, d Driver, seq int64) error {
		return d.Put(ctx, keys[seq%keySpace], value)
	})
	r.Workload = "put"
	r.Case = fmt.Sprintf("put %d clients/%d conns", cfg.clients, cfg.conns)
	return r, err
}

func runGet(ctx context.Context, cfg loadConfig, serializable bool) (Result, error) {
	key := []byte(getKeyName)
	d, err := dial(cfg.target, cfg.endpoints)
	if err != nil {
		return Result{}, err
	}
	pctx, cancel := context.WithTimeout(ctx, opTimeout)
	err = d.Put(pctx, key, makeValue())
	cancel()
	d.Close()
	if err != nil {
		return Result{}, fmt.Errorf("put the key to read: %w", err)
	}
	r, err := runLoad(ctx, cfg, func(ctx context.Context, d Driver, _ int64) error {
		return d.Get(ctx, key, serializable)
	})
	mode := "linearizable"
	if serializable {
		mode = "serializable"
	}
	r.Workload = "get"
	r.Case = fmt.Sprintf("get %s %d clients/%d conns", mode, cfg.clients, cfg.conns)
	return r, err
}

// readyPoll is the pause between attempts while a cluster starts.
const readyPoll = 200 * time.Millisecond

// waitReady returns once a put through every endpoint's client succeeds:
// the cluster has a leader and each node answers (followers forward or hint).
func waitReady(ctx context.Context, target string, endpoints []string) error {
	for _, ep := range endpoints {
		var last error
		for {
			if ctx.Err() != nil {
				return fmt.Errorf("%s at %s not ready: %v", target, ep, last)
			}
			last = func() error {
				d, err := dial(target, rotate(endpoints, indexOf(endpoints, ep)))
				if err != nil {
					return err
				}
				defer d.Close()
				octx, cancel := context.WithTimeout(ctx, 2*time.Second)
				defer cancel()
				if err := d.Put(octx, []byte(readyKeyName), []byte("1")); err != nil {
					return err
				}
				return d.Get(octx, []byte(readyKeyName), true)
			}()
			if last == nil {
				break
			}
			time.Sleep(readyPoll)
		}
	}
	return nil
}

func indexOf(list []string, s string) int {
	for i, v := range list {
		if v == s {
			return i
		}
	}
	return 0
}
