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

// procMem is one reading of a process's resident memory, in bytes.
type procMem struct {
	// RSS is VmRSS: anonymous memory plus resident file pages (bbolt's
	// mmap of the data file) plus shared memory.
	RSS int64
	// Anon is RssAnon: heap, stacks and runtime, without the file pages
	// that the kernel can drop; what queued events and watchers cost.
	Anon int64
}

// readProcMem reads VmRSS and RssAnon of pid from /proc/PID/status.
func readProcMem(pid int) (procMem, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procMem{}, err
	}
	var m procMem
	found := 0
	for _, line := range strings.Split(string(b), "\n") {
		var dst *int64
		name, rest, _ := strings.Cut(line, ":")
		switch name {
		case "VmRSS":
			dst = &m.RSS
		case "RssAnon":
			dst = &m.Anon
		default:
			continue
		}
		f := strings.Fields(rest) // "123456 kB"
		if len(f) != 2 || f[1] != "kB" {
			return procMem{}, fmt.Errorf("pid %d: unexpected %s line %q", pid, name, line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return procMem{}, fmt.Errorf("pid %d: %s: %w", pid, name, err)
		}
		*dst = kb * 1024
		found++
	}
	if found != 2 {
		return procMem{}, fmt.Errorf("pid %d: no VmRSS or RssAnon in /proc/%d/status", pid, pid)
	}
	return m, nil
}

// readRSS returns VmRSS of pid in bytes.
func readRSS(pid int) (int64, error) {
	m, err := readProcMem(pid)
	return m.RSS, err
}

// sampleRSS returns, per pid, the median VmRSS of rssSamples readings.
func sampleRSS(pids []int) ([]int64, error) {
	ms, err := sampleProcMem(pids)
	if err != nil {
		return nil, err
	}
	out := make([]int64, len(ms))
	for i, m := range ms {
		out[i] = m.RSS
	}
	return out, nil
}

// sampleProcMem returns, per pid, the medians (each field on its own) of
// rssSamples readings rssSampleGap apart.
func sampleProcMem(pids []int) ([]procMem, error) {
	rss := make([][]int64, len(pids))
	anon := make([][]int64, len(pids))
	for s := 0; s < rssSamples; s++ {
		if s > 0 {
			time.Sleep(rssSampleGap)
		}
		for i, pid := range pids {
			m, err := readProcMem(pid)
			if err != nil {
				return nil, err
			}
			rss[i] = append(rss[i], m.RSS)
			anon[i] = append(anon[i], m.Anon)
		}
	}
	out := make([]procMem, len(pids))
	for i := range pids {
		out[i] = procMem{RSS: medianInt(rss[i]), Anon: medianInt(anon[i])}
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
