package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// watchKeyName is the one key every watch workload watches and writes (8 B).
	watchKeyName = "/wkey000"
	// watchOpenParallel is how many watches are being opened at once: enough
	// to open 10,000 in seconds, few enough not to look like a create storm.
	watchOpenParallel = 64
	// drainIdle ends the drain early when no event arrived for this long.
	drainIdle = 3 * time.Second
)

// epoch is the one clock of the process: a put carries its send time as
// nanoseconds since epoch, and a watcher subtracts it from its receive time.
var epoch = time.Now()

func sinceEpoch() int64 { return int64(time.Since(epoch)) }

// watchConfig places watchers on client objects: conns objects, object i
// pinned to endpoint i mod len(endpoints), or all to endpoints[node] when
// node >= 0; watcher w uses object w mod conns.
type watchConfig struct {
	target    string
	endpoints []string
	watchers  int
	conns     int
	node      int // -1: spread over all endpoints
	// pids are the server processes whose CPU is measured from the first
	// put to the end of the drain (none: not measured).
	pids []int
}

func (c watchConfig) endpointOf(conn int) string {
	if c.node >= 0 {
		return c.endpoints[c.node]
	}
	return c.endpoints[conn%len(c.endpoints)]
}

// watchSet is a set of open watch streams on one key.
type watchSet struct {
	pool    []Driver
	streams []WatchStream
}

func openWatchers(ctx context.Context, cfg watchConfig, key []byte) (*watchSet, error) {
	if cfg.conns < 1 || cfg.watchers < cfg.conns {
		return nil, fmt.Errorf("need 1 <= conns (%d) <= watchers (%d)", cfg.conns, cfg.watchers)
	}
	if cfg.node >= len(cfg.endpoints) {
		return nil, fmt.Errorf("node %d: only %d endpoints", cfg.node, len(cfg.endpoints))
	}
	pool, err := dialPool(cfg.target, cfg.conns, func(i int) []string { return []string{cfg.endpointOf(i)} })
	if err != nil {
		return nil, err
	}
	streams, err := openStreams(ctx, pool, cfg.watchers, watchOpenParallel,
		func(int) []byte { return key }, cfg.endpointOf, nil)
	ws := &watchSet{pool: pool, streams: streams}
	if err != nil {
		ws.close()
		return nil, fmt.Errorf("open %d watchers: %w", cfg.watchers, err)
	}
	return ws, nil
}

// openStreams opens n watches from parallel goroutines: watch w on the
// key keyOf(w), through pool[w mod len(pool)] (whose endpoint is where(conn),
// for errors). The streams live on ctx. It stops at the first error and
// returns it with what it opened (nil where it did not), for the caller to
// close. opened, when not nil, counts the watches acknowledged so far, for
// a caller watching the progress.
func openStreams(ctx context.Context, pool []Driver, n, parallel int, keyOf func(w int) []byte,
	where func(conn int) string, opened *atomic.Int64) ([]WatchStream, error) {
	streams := make([]WatchStream, n)
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		first firstError
		fails atomic.Int64
	)
	for p := 0; p < parallel; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				w := int(next.Add(1) - 1)
				if w >= n || fails.Load() > 0 {
					return
				}
				// The stream lives on ctx; the process's hard timeout bounds creation.
				s, err := pool[w%len(pool)].Watch(ctx, keyOf(w))
				if err != nil {
					fails.Add(1)
					first.set(fmt.Errorf("watcher %d on %s: %w", w, where(w%len(pool)), err))
					return
				}
				streams[w] = s
				if opened != nil {
					opened.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if fails.Load() > 0 {
		return streams, errors.New(first.msg)
	}
	return streams, nil
}

func (ws *watchSet) close() {
	for _, s := range ws.streams {
		if s != nil {
			s.Close()
		}
	}
	closePool(ws.pool)
}

// receivers runs one goroutine per stream that counts PUT events and, when
// timed, records the latency of each from the send time in the value.
type receivers struct {
	events   atomic.Int64
	lastRecv atomic.Int64 // nanos since epoch of the last event
	ended    atomic.Int64 // streams that ended before close
	closing  atomic.Bool
	stopOnce sync.Once
	first    firstError
	lat      latencies
	wg       sync.WaitGroup
}

func startReceivers(ws *watchSet, timed bool) *receivers {
	r := &receivers{}
	for _, s := range ws.streams {
		r.wg.Add(1)
		go func(s WatchStream) {
			defer r.wg.Done()
			var mine []time.Duration
			defer func() { r.lat.add(mine) }()
			for {
				v, err := s.Next()
				now := sinceEpoch()
				if err != nil {
					if !r.closing.Load() {
						r.ended.Add(1)
						r.first.set(err)
					}
					return
				}
				r.events.Add(1)
				r.lastRecv.Store(now)
				if timed && len(v) >= 8 {
					mine = append(mine, time.Duration(now-int64(binary.BigEndian.Uint64(v))))
				}
			}
		}(s)
	}
	return r
}

// drain waits until want events arrived, no event came for drainIdle, or
// max passed.
func (r *receivers) drain(ctx context.Context, want int64, max time.Duration) {
	deadline := time.Now().Add(max)
	lastCount, lastChange := r.events.Load(), time.Now()
	for r.events.Load() < want && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
		if n := r.events.Load(); n != lastCount {
			lastCount, lastChange = n, time.Now()
		} else if time.Since(lastChange) > drainIdle {
			return
		}
	}
}

// drainUntil drains (for at most max) and returns when the last event
// arrived, or now if none arrived after start.
func (r *receivers) drainUntil(ctx context.Context, want int64, max time.Duration, start int64) int64 {
	r.drain(ctx, want, max)
	if end := r.lastRecv.Load(); end > start {
		return end
	}
	return sinceEpoch()
}

// stop closes the streams and waits for the receivers; after it the
// latencies are complete. It may be called more than once.
func (r *receivers) stop(ws *watchSet) {
	r.stopOnce.Do(func() {
		r.closing.Store(true)
		ws.close()
		r.wg.Wait()
	})
}

// timedValue returns a fresh value carrying the current time of the one clock.
func timedValue() []byte {
	v := makeValue()
	binary.BigEndian.PutUint64(v, uint64(sinceEpoch()))
	return v
}

// runWatchLatency: watchers on one key, one writer putting at rate per
// second; the latency of each delivery is receive time minus send time.
func runWatchLatency(ctx context.Context, cfg watchConfig, rate float64, dur, drainMax time.Duration) (Result, error) {
	key := []byte(watchKeyName)
	ws, err := openWatchers(ctx, cfg, key)
	if err != nil {
		return Result{}, err
	}
	rcv := startReceivers(ws, true)
	defer rcv.stop(ws)
	writer, err := dial(cfg.target, cfg.endpoints)
	if err != nil {
		return Result{}, err
	}
	defer writer.Close()

	var acked, errs int64
	var first firstError
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	cpu := startCPUWindow(ctx, cfg.pids, time.Now())
	start := sinceEpoch()
	stopAt := time.Now().Add(dur)
	for time.Now().Before(stopAt) && ctx.Err() == nil {
		<-tick.C
		octx, cancel := context.WithTimeout(ctx, opTimeout)
		err := writer.Put(octx, key, timedValue())
		cancel()
		if err != nil {
			errs++
			first.set(err)
			continue
		}
		acked++
	}
	want := acked * int64(cfg.watchers)
	end := rcv.drainUntil(ctx, want, drainMax, start)
	nodeCPU, err := cpu.stop()
	if err != nil {
		return Result{}, err
	}
	r := Result{
		Workload:       "watch-latency",
		Case:           fmt.Sprintf("watch-latency %d watchers %s", cfg.watchers, placement(cfg)),
		Target:         cfg.target,
		Watchers:       cfg.watchers,
		Conns:          cfg.conns,
		DurationS:      time.Duration(end - start).Seconds(),
		Ops:            acked,
		Errors:         errs,
		FirstError:     first.msg,
		PutsPerS:       float64(acked) / dur.Seconds(),
		Events:         rcv.events.Load(),
		ExpectedEvents: want,
		EndedStreams:   int(rcv.ended.Load()),
	}
	r.EventsPerS = float64(r.Events) / r.DurationS
	r.setServerCPU(nodeCPU)
	if r.FirstError == "" {
		r.FirstError = rcv.first.msg
	}
	rcv.stop(ws)
	r.P50Ms, r.P99Ms, r.MaxMs = rcv.lat.percentiles()
	return r, nil
}

// runWatchThroughput: watchers on one key, writers putting to it as fast as
// they go for dur; the result is events delivered per second.
func runWatchThroughput(ctx context.Context, cfg watchConfig, putClients, putConns int, dur, drainMax time.Duration) (Result, error) {
	key := []byte(watchKeyName)
	ws, err := openWatchers(ctx, cfg, key)
	if err != nil {
		return Result{}, err
	}
	rcv := startReceivers(ws, false)
	defer rcv.stop(ws)

	cpu := startCPUWindow(ctx, cfg.pids, time.Now())
	start := sinceEpoch()
	load, err := runLoad(ctx, loadConfig{
		target: cfg.target, endpoints: cfg.endpoints,
		clients: putClients, conns: putConns, duration: dur,
	}, func(ctx context.Context, d Driver, _ int64) error {
		return d.Put(ctx, key, makeValue())
	})
	if err != nil {
		return Result{}, err
	}
	want := load.Ops * int64(cfg.watchers)
	end := rcv.drainUntil(ctx, want, drainMax, start)
	nodeCPU, err := cpu.stop()
	if err != nil {
		return Result{}, err
	}
	r := Result{
		Workload:       "watch-throughput",
		Case:           fmt.Sprintf("watch-throughput %d watchers %s", cfg.watchers, placement(cfg)),
		Target:         cfg.target,
		Clients:        putClients,
		Conns:          putConns,
		Watchers:       cfg.watchers,
		DurationS:      time.Duration(end - start).Seconds(),
		Ops:            load.Ops,
		Errors:         load.Errors,
		FirstError:     load.FirstError,
		PutsPerS:       load.Throughput,
		Events:         rcv.events.Load(),
		ExpectedEvents: want,
		EndedStreams:   int(rcv.ended.Load()),
	}
	r.EventsPerS = float64(r.Events) / r.DurationS
	r.setServerCPU(nodeCPU)
	if r.FirstError == "" {
		r.FirstError = rcv.first.msg
	}
	return r, nil
}

func placement(cfg watchConfig) string {
	if cfg.node >= 0 {
		return "one-node"
	}
	return "spread"
}
