package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// rssSamples is how many RSS readings are taken, rssSampleGap apart; the
// median damps a GC cycle that happens to run during one reading.
const (
	rssSamples   = 5
	rssSampleGap = 300 * time.Millisecond
)

// readRSS returns VmRSS of pid in bytes, from /proc/PID/status.
func readRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest) // "123456 kB"
			if len(f) != 2 || f[1] != "kB" {
				return 0, fmt.Errorf("pid %d: unexpected VmRSS line %q", pid, line)
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("pid %d: no VmRSS in /proc/%d/status", pid, pid)
}

// sampleRSS returns, per pid, the median of rssSamples readings.
func sampleRSS(pids []int) ([]int64, error) {
	samples := make([][]int64, len(pids))
	for s := 0; s < rssSamples; s++ {
		if s > 0 {
			time.Sleep(rssSampleGap)
		}
		for i, pid := range pids {
			v, err := readRSS(pid)
			if err != nil {
				return nil, err
			}
			samples[i] = append(samples[i], v)
		}
	}
	out := make([]int64, len(pids))
	for i, s := range samples {
		out[i] = medianInt(s)
	}
	return out, nil
}

func medianInt(v []int64) int64 {
	c := slices.Clone(v)
	slices.Sort(c)
	return c[len(c)/2]
}

// runWatchHold opens cfg.watchers watchers and holds them. With pids it
// measures the nodes' RSS before and after (settle after opening) and
// returns; without, it prints "ready" to stderr and holds until hold ends
// (signal or --hold). The streams live on ctx.
func runWatchHold(ctx, hold context.Context, cfg watchConfig, pids []int, settle time.Duration) (Result, error) {
	var idle []int64
	if len(pids) > 0 {
		var err error
		if idle, err = sampleRSS(pids); err != nil {
			return Result{}, err
		}
	}
	ws, err := openWatchers(ctx, cfg, []byte(watchKeyName))
	if err != nil {
		return Result{}, err
	}
	rcv := startReceivers(ws, false)
	defer rcv.stop(ws)
	r := Result{
		Workload: "memory",
		Case:     fmt.Sprintf("memory %d watchers %s", cfg.watchers, placement(cfg)),
		Target:   cfg.target,
		Watchers: cfg.watchers,
		Conns:    cfg.conns,
	}
	if len(pids) == 0 {
		fmt.Fprintf(os.Stderr, "ready: holding %d watchers; stop with SIGINT/SIGTERM\n", cfg.watchers)
		t0 := time.Now()
		select {
		case <-hold.Done():
		case <-ctx.Done():
			return Result{}, ctx.Err()
		}
		r.DurationS = time.Since(t0).Seconds()
		r.EndedStreams = int(rcv.ended.Load())
		r.FirstError = rcv.first.msg
		return r, nil
	}
	t0 := time.Now()
	select {
	case <-time.After(settle):
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
	held, err := sampleRSS(pids)
	if err != nil {
		return Result{}, err
	}
	var delta int64
	for i := range held {
		delta += held[i] - idle[i]
	}
	r.DurationS = time.Since(t0).Seconds()
	r.IdleRSS, r.HeldRSS = idle, held
	r.BytesPerWatcher = float64(delta) / float64(cfg.watchers)
	r.EndedStreams = int(rcv.ended.Load())
	r.FirstError = rcv.first.msg
	return r, nil
}
