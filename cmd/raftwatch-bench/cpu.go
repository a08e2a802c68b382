package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"time"
)

// clockTick is the unit of utime and stime in /proc/PID/stat:
// 1/sysconf(_SC_CLK_TCK) s. The kernel reports these in USER_HZ, which
// is 100 on every architecture Go runs on under Linux (it is part of the
// ABI, independent of the kernel's own HZ), so it is a constant here
// rather than a cgo call; TestProcCPUAgreesWithGetrusage fails if it is
// ever wrong.
const clockTick = 10 * time.Millisecond

// procCPU is one reading of a process's CPU time, summed over its
// threads, from /proc/PID/stat. Resolution: one clockTick per field.
type procCPU struct {
	user, system time.Duration
	// start is the process's start time in clock ticks after boot: two
	// readings of one PID are of the same process only if it is equal.
	start uint64
}

func (c procCPU) total() time.Duration { return c.user + c.system }

// Fields of /proc/PID/stat counted from the one after the command name
// (field 3, the state), per proc(5): utime is field 14, stime 15,
// starttime 22.
const (
	statUtime     = 14 - 3
	statStime     = 15 - 3
	statStarttime = 22 - 3
)

// parseProcStat reads utime, stime and starttime from the contents of
// /proc/PID/stat. The command name (field 2) is in parentheses and may
// itself hold spaces and parentheses, so the fields are split after its
// last ')'.
func parseProcStat(b []byte) (procCPU, error) {
	end := bytes.LastIndexByte(b, ')')
	if end < 0 {
		return procCPU{}, fmt.Errorf("no ')' closing the command name in %q", b)
	}
	f := bytes.Fields(b[end+1:])
	if len(f) <= statStarttime {
		return procCPU{}, fmt.Errorf("%d fields after the command name, want at least %d", len(f), statStarttime+1)
	}
	num := func(i int, name string) (uint64, error) {
		v, err := strconv.ParseUint(string(f[i]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", name, err)
		}
		return v, nil
	}
	var c procCPU
	u, err := num(statUtime, "utime")
	if err != nil {
		return procCPU{}, err
	}
	s, err := num(statStime, "stime")
	if err != nil {
		return procCPU{}, err
	}
	if c.start, err = num(statStarttime, "starttime"); err != nil {
		return procCPU{}, err
	}
	c.user, c.system = time.Duration(u)*clockTick, time.Duration(s)*clockTick
	return c, nil
}

// readProcCPU reads the CPU time of process pid (all its threads).
func readProcCPU(pid int) (procCPU, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procCPU{}, fmt.Errorf("node process %d: %w", pid, err)
	}
	c, err := parseProcStat(b)
	if err != nil {
		return procCPU{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return c, nil
}

// sampleCPU reads every pid once, in order.
func sampleCPU(pids []int) ([]procCPU, error) {
	out := make([]procCPU, len(pids))
	for i, pid := range pids {
		c, err := readProcCPU(pid)
		if err != nil {
			return nil, err
		}
		out[i] = c
	}
	return out, nil
}

// cpuBetween returns the CPU time each process spent between two samples
// of pids. A process that was replaced in between (another start time
// under its PID, i.e. it died and the PID was reused) is an error: its
// work would be lost or someone else's counted.
func cpuBetween(pids []int, before, after []procCPU) ([]time.Duration, error) {
	if len(before) != len(pids) || len(after) != len(pids) {
		return nil, fmt.Errorf("%d PIDs but %d and %d readings", len(pids), len(before), len(after))
	}
	out := make([]time.Duration, len(pids))
	for i := range pids {
		if before[i].start != after[i].start {
			return nil, fmt.Errorf("node process %d was replaced during the measured window (start time %d, then %d)",
				pids[i], before[i].start, after[i].start)
		}
		if after[i].total() < before[i].total() {
			return nil, fmt.Errorf("node process %d: CPU time went back from %v to %v", pids[i], before[i].total(), after[i].total())
		}
		out[i] = after[i].total() - before[i].total()
	}
	return out, nil
}

// cpuWindow measures the CPU time the server processes spend in a
// window. A nil window (no PIDs given) measures nothing.
type cpuWindow struct {
	pids   []int
	taken  chan struct{} // closed once before and err are set
	before []procCPU
	err    error
}

// startCPUWindow opens a window at the instant at (now, if that has
// passed). The first reading is taken by a goroutine of its own, so a
// load that is already running keeps going while it waits; ctx ending
// first abandons the window.
func startCPUWindow(ctx context.Context, pids []int, at time.Time) *cpuWindow {
	if len(pids) == 0 {
		return nil
	}
	w := &cpuWindow{pids: pids, taken: make(chan struct{})}
	go func() {
		defer close(w.taken)
		t := time.NewTimer(time.Until(at))
		defer t.Stop()
		select {
		case <-t.C:
			w.before, w.err = sampleCPU(pids)
		case <-ctx.Done():
			w.err = ctx.Err()
		}
	}()
	return w
}

// stop closes the window and returns the CPU time of each process in it,
// in PID order. It waits for the first reading, at most until the instant
// the window opens.
func (w *cpuWindow) stop() ([]time.Duration, error) {
	if w == nil {
		return nil, nil
	}
	<-w.taken
	if w.err != nil {
		return nil, fmt.Errorf("server CPU at the window's start: %w", w.err)
	}
	after, err := sampleCPU(w.pids)
	if err != nil {
		return nil, fmt.Errorf("server CPU at the window's end: %w", err)
	}
	return cpuBetween(w.pids, w.before, after)
}

// setServerCPU records the nodes' CPU time over the measured window and
// divides their sum by the completed ops and, when the workload delivers
// watch events, by the events. Ops and Events must be set. Without nodes
// (CPU not measured) it leaves r as it is.
func (r *Result) setServerCPU(nodes []time.Duration) {
	if len(nodes) == 0 {
		return
	}
	var sum time.Duration
	r.NodeCPUS = make([]float64, len(nodes))
	for i, d := range nodes {
		r.NodeCPUS[i] = d.Seconds()
		sum += d
	}
	r.ServerCPUS = sum.Seconds()
	r.CPUPerOpUs = microsPer(sum, r.Ops)
	r.CPUPerEventUs = microsPer(sum, r.Events)
}

// microsPer is d divided by n, in microseconds; 0 (not recorded) when
// there is nothing to divide by.
func microsPer(d time.Duration, n int64) float64 {
	if n <= 0 {
		return 0
	}
	return float64(d) / float64(time.Microsecond) / float64(n)
}
