package main

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// statLine is a /proc/PID/stat line of a process named comm with the
// given utime, stime and starttime (fields 14, 15 and 22); the other
// fields are what a Go server's line holds.
func statLine(comm string, utime, stime, start string) string {
	return "4242 (" + comm + ") S 1 4242 4242 0 -1 4194560 28017 0 0 0 " + utime + " " + stime +
		" 0 0 20 0 12 0 " + start + " 1279430656 9812 18446744073709551615 1 1 0 0 0 0 0 0 2143420159 0 0 0 17 1 0 0 0 0 0"
}

func TestParseProcStat(t *testing.T) {
	ok := []struct {
		name, comm string
	}{
		{"plain", "raftwatch"},
		{"spaces", "etcd main loop"},
		{"parentheses and spaces", "a) (b c) 9 9"},
		{"ends in a parenthesis", "x)"},
		{"empty", ""},
	}
	for _, tc := range ok {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseProcStat([]byte(statLine(tc.comm, "1234", "56", "987654") + "\n"))
			if err != nil {
				t.Fatal(err)
			}
			want := procCPU{user: 12340 * time.Millisecond, system: 560 * time.Millisecond, start: 987654}
			if c != want {
				t.Errorf("got %+v, want %+v", c, want)
			}
			if c.total() != 12900*time.Millisecond {
				t.Errorf("total %v, want 12.9s", c.total())
			}
		})
	}
	bad := []struct {
		name, line, wantErr string
	}{
		{"no closing parenthesis", "4242 (raftwatch S 1 2 3", "no ')'"},
		{"cut short", "4242 (raftwatch) S 1 4242 4242 0 -1 4194560 28017 0 0 0 1234 56", "fields after the command name"},
		{"utime not a number", statLine("raftwatch", "12x4", "56", "1"), "utime"},
		{"stime negative", statLine("raftwatch", "1", "-5", "1"), "stime"},
		{"starttime not a number", statLine("raftwatch", "1", "5", "soon"), "starttime"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseProcStat([]byte(tc.line))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %v, want one about %q", err, tc.wantErr)
			}
		})
	}
}

// A real process whose name holds spaces and parentheses (the kernel
// takes it from the executable's file name, here a symlink to sh) is
// read right while it burns CPU; once it is gone, reading it is an error.
func TestReadProcCPUOfOddlyNamedProcess(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh:", err)
	}
	const name = "rw) (x y"
	link := filepath.Join(t.TempDir(), name)
	if err := os.Symlink(sh, link); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(link, "-c", "while :; do :; done")
	cmd.Args[0] = "sh"
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	exited := false
	t.Cleanup(func() {
		if !exited {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(comm)); got != name {
		t.Fatalf("the child is named %q, want %q: the test does not exercise the odd name", got, name)
	}

	first, err := readProcCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	if first.start == 0 {
		t.Errorf("start time 0 in %+v", first)
	}
	// The busy loop accumulates CPU; poll until 5 ticks show.
	deadline := time.Now().Add(10 * time.Second)
	var last procCPU
	for {
		if last, err = readProcCPU(pid); err != nil {
			t.Fatal(err)
		}
		if last.total() >= 5*clockTick {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CPU of the busy child still %v after 10s", last.total())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if last.start != first.start {
		t.Errorf("start time changed from %d to %d for the same process", first.start, last.start)
	}
	if d, err := cpuBetween([]int{pid}, []procCPU{first}, []procCPU{last}); err != nil || d[0] != last.total()-first.total() {
		t.Errorf("cpuBetween = %v, %v; want [%v]", d, err, last.total()-first.total())
	}

	cmd.Process.Kill()
	cmd.Wait()
	exited = true
	if _, err := readProcCPU(pid); err == nil {
		t.Error("reading a process that exited succeeded")
	}
}

// cpuTime is this process's user+system time as getrusage reports it: the
// same kernel counters as /proc/PID/stat, in microseconds, with no
// clock-tick conversion.
func cpuTime(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// The tick length assumed for /proc/PID/stat (clockTick) is the kernel's:
// after 300 ms of CPU, the two readings agree within the ticks' truncation.
func TestProcCPUAgreesWithGetrusage(t *testing.T) {
	deadline := time.Now().Add(20 * time.Second)
	for start := cpuTime(t); cpuTime(t)-start < 300*time.Millisecond; {
		if time.Now().After(deadline) {
			t.Fatal("could not burn 300ms of CPU in 20s")
		}
	}
	proc, err := readProcCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	ru := cpuTime(t) // read second: it may only be ahead
	// utime and stime are each truncated to a tick.
	if diff := ru - proc.total(); diff < -clockTick/2 || diff > 2*clockTick+20*time.Millisecond {
		t.Errorf("/proc/self/stat says %v of CPU, getrusage %v (diff %v): is a tick %v?", proc.total(), ru, diff, clockTick)
	}
}

func TestCPUBetween(t *testing.T) {
	at := func(user, sys time.Duration, start uint64) procCPU {
		return procCPU{user: user, system: sys, start: start}
	}
	pids := []int{11, 12, 13}
	before := []procCPU{at(time.Second, 0, 100), at(2*time.Second, time.Second, 200), at(0, 0, 300)}

	got, err := cpuBetween(pids, before, []procCPU{
		at(1500*time.Millisecond, 20*time.Millisecond, 100), at(2*time.Second, time.Second, 200), at(30*time.Millisecond, 10*time.Millisecond, 300),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{520 * time.Millisecond, 0, 40 * time.Millisecond}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("node %d: %v, want %v", i, got[i], want[i])
		}
	}

	restarted := []procCPU{at(2*time.Second, 0, 100), at(3*time.Second, time.Second, 999), at(0, 0, 300)}
	if _, err := cpuBetween(pids, before, restarted); err == nil || !strings.Contains(err.Error(), "process 12 was replaced") {
		t.Errorf("a restarted node: error %v, want one naming process 12", err)
	}
	backwards := []procCPU{at(time.Second, 0, 100), at(2*time.Second, 0, 200), at(0, 0, 300)}
	if _, err := cpuBetween(pids, before, backwards); err == nil {
		t.Error("CPU time going back was accepted")
	}
	if _, err := cpuBetween(pids, before, before[:2]); err == nil {
		t.Error("a missing reading was accepted")
	}
}

// CPU per op is the nodes' summed CPU over the completed ops, in µs; per
// event over the delivered events; nothing is recorded without readings,
// and nothing is divided by zero.
func TestSetServerCPU(t *testing.T) {
	r := Result{Ops: 1000, Events: 50_000}
	r.setServerCPU([]time.Duration{100 * time.Millisecond, 250 * time.Millisecond, 150 * time.Millisecond})
	if len(r.NodeCPUS) != 3 || r.NodeCPUS[0] != 0.1 || r.NodeCPUS[1] != 0.25 || r.NodeCPUS[2] != 0.15 {
		t.Errorf("NodeCPUS = %v, want [0.1 0.25 0.15]", r.NodeCPUS)
	}
	if r.ServerCPUS != 0.5 || r.CPUPerOpUs != 500 || r.CPUPerEventUs != 10 {
		t.Errorf("server %v s, %v µs/op, %v µs/event; want 0.5, 500, 10", r.ServerCPUS, r.CPUPerOpUs, r.CPUPerEventUs)
	}
	if got := mCPU.get(r); got != 500 {
		t.Errorf("report metric %v, want 500", got)
	}
	line, _ := json.Marshal(r)
	for _, want := range []string{`"node_cpu_s":[0.1,0.25,0.15]`, `"server_cpu_s":0.5`, `"cpu_per_op_us":500`, `"cpu_per_event_us":10`} {
		if !strings.Contains(string(line), want) {
			t.Errorf("results.jsonl line %s lacks %s", line, want)
		}
	}

	none := Result{Ops: 1000}
	none.setServerCPU(nil)
	if none.NodeCPUS != nil || none.CPUPerOpUs != 0 || !math.IsNaN(mCPU.get(none)) {
		t.Errorf("without readings: %+v, metric %v; want nothing recorded, NaN", none, mCPU.get(none))
	}
	if line, _ := json.Marshal(none); strings.Contains(string(line), "cpu") {
		t.Errorf("a run without readings has CPU in its results.jsonl line: %s", line)
	}

	idle := Result{} // no op completed
	idle.setServerCPU([]time.Duration{time.Second})
	if idle.ServerCPUS != 1 || idle.CPUPerOpUs != 0 || !math.IsNaN(mCPU.get(idle)) || !math.IsNaN(mCPUEvent.get(idle)) {
		t.Errorf("without ops: %+v, metrics %v %v; want the CPU kept, no per-op value", idle, mCPU.get(idle), mCPUEvent.get(idle))
	}
}

// clockThreadCPUTime is CLOCK_THREAD_CPUTIME_ID (Linux): the calling
// thread's CPU time, exact at every reading (getrusage's per-thread
// figure moves only at scheduler ticks, which would round every burn up
// to a tick).
const clockThreadCPUTime = 3

// burnCPU spins until the calling goroutine's thread has used d of CPU.
func burnCPU(d time.Duration) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	used := func() time.Duration {
		var ts syscall.Timespec
		syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockThreadCPUTime, uintptr(unsafe.Pointer(&ts)), 0)
		return time.Duration(ts.Nano())
	}
	for start := used(); used()-start < d; {
	}
}

// The load's CPU window is its measured window: ops that burn 40 ms of
// CPU during the warmup and 2 ms after it come out at about 2 ms per op
// (the warmup's CPU would make it about 4 ms). The "server" is this test
// process.
func TestLoadMeasuresCPUAfterWarmup(t *testing.T) {
	m := newMemTarget()
	m.register(t, "cpu-mem")
	const (
		warmup    = 500 * time.Millisecond
		window    = 500 * time.Millisecond
		heavy     = 40 * time.Millisecond
		light     = 2 * time.Millisecond
		perOpWant = float64(light / time.Microsecond)
	)
	cfg := loadConfig{target: "cpu-mem", endpoints: []string{"mem"}, clients: 1, conns: 1,
		duration: window, warmup: warmup, pids: []int{os.Getpid()}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	windowAt := time.Now().Add(warmup) // runLoadEach's window opens just after
	r, err := runLoadEach(ctx, cfg, loadHooks{}, func(context.Context, Driver) (clientOp, func()) {
		return func(context.Context, int64) (bool, error) {
			if time.Now().Before(windowAt) {
				burnCPU(heavy)
			} else {
				burnCPU(light)
			}
			return false, nil
		}, func() {}
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.NodeCPUS) != 1 || r.Ops == 0 {
		t.Fatalf("NodeCPUS %v over %d ops: want one node's CPU and some ops", r.NodeCPUS, r.Ops)
	}
	// Below: at most a tick lost per reading. Above: the test's own
	// overhead and the one heavy op that may straddle the window's start.
	lo := perOpWant - float64(2*clockTick/time.Microsecond)/float64(r.Ops)
	hi := 1.5 * perOpWant
	t.Logf("%.0f µs/op over %d ops (%.3f s)", r.CPUPerOpUs, r.Ops, r.ServerCPUS)
	if r.CPUPerOpUs < lo || r.CPUPerOpUs > hi {
		t.Errorf("want %.0f–%.0f µs/op", lo, hi)
	}
	if got := r.ServerCPUS * 1e6 / float64(r.Ops); math.Abs(got-r.CPUPerOpUs) > 1e-6 {
		t.Errorf("server CPU %v s / %d ops = %v µs, but CPUPerOpUs %v", r.ServerCPUS, r.Ops, got, r.CPUPerOpUs)
	}
}
