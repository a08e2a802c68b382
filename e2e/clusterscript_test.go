package e2e

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// clusterScriptRounds is how many fresh clusters TestClusterScriptUpDown
// starts: enough that each node leads in some round with high probability
// (the old leader check failed whenever n1 or n2 led).
const clusterScriptRounds = 5

// scriptPortBases picks client and raft port bases for scripts/cluster.sh
// whose three ports each are free. They lie below the kernel's ephemeral
// range, where freePorts (the other tests) takes its ports, and away from
// the dev cluster (7101-7203) and bench.sh (7301-7403).
func scriptPortBases(t *testing.T) (clientBase, raftBase int) {
	t.Helper()
	for try := 0; try < 50; try++ {
		base := 20000 + 20*rand.IntN(500)
		var ls []net.Listener
		ok := true
		for i := 1; i <= 3 && ok; i++ {
			for _, p := range []int{base + i, base + 10 + i} {
				l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
				if err != nil {
					ok = false
					break
				}
				ls = append(ls, l)
			}
		}
		for _, l := range ls {
			l.Close()
		}
		if ok {
			return base, base + 10
		}
	}
	t.Fatal("no free port range for scripts/cluster.sh")
	return 0, 0
}

// alive reports whether pid is a process that has not exited. A zombie has
// exited; it stays in the table only until its parent (here the machine's
// init, which may not reap) collects it.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(fields) > 0 && fields[0] != "Z" && fields[0] != "X"
}

// TestClusterScriptUpDown runs the README's first command the way a
// newcomer does, several times on fresh data: every "up" must report a
// leader (whichever node it is) and every "down" must leave no process.
func TestClusterScriptUpDown(t *testing.T) {
	script, err := filepath.Abs("../scripts/cluster.sh")
	if err != nil {
		t.Fatal(err)
	}
	clientBase, raftBase := scriptPortBases(t)
	leaderLine := regexp.MustCompile(`cluster up; leader: (n[123]) \(127\.0\.0\.1:(\d+)\)`)
	leaders := map[string]int{}
	for round := 1; round <= clusterScriptRounds; round++ {
		dir := t.TempDir()
		run := func(arg string) string {
			t.Helper()
			cmd := exec.Command(script, arg)
			cmd.Env = append(os.Environ(),
				"RAFTWATCH_CLUSTER_DIR="+dir,
				"RAFTWATCH_BIN="+binary,
				fmt.Sprintf("RAFTWATCH_CLIENT_PORT_BASE=%d", clientBase),
				fmt.Sprintf("RAFTWATCH_RAFT_PORT_BASE=%d", raftBase))
			out, err := cmd.CombinedOutput()
			if err != nil {
				for i := 1; i <= 3; i++ {
					if b, rerr := os.ReadFile(filepath.Join(dir, fmt.Sprintf("n%d.log", i))); rerr == nil {
						t.Logf("--- n%d.log ---\n%s", i, b)
					}
				}
				t.Fatalf("round %d: cluster.sh %s: %v\n%s", round, arg, err, out)
			}
			return string(out)
		}
		var pids []int
		func() {
			// Whatever happens in the round, stop what it started.
			defer func() {
				if t.Failed() {
					run("down")
				}
			}()
			start := time.Now()
			out := run("up")
			m := leaderLine.FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("round %d: up did not name the leader:\n%s", round, out)
			}
			if port, _ := strconv.Atoi(m[2]); port != clientBase+int(m[1][1]-'0') {
				t.Fatalf("round %d: leader %s at port %d, want %d", round, m[1], port, clientBase+int(m[1][1]-'0'))
			}
			leaders[m[1]]++
			t.Logf("round %d: up in %v, leader %s", round, time.Since(start).Round(time.Millisecond), m[1])
			for i := 1; i <= 3; i++ {
				b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("n%d.pid", i)))
				if err != nil {
					t.Fatalf("round %d: %v", round, err)
				}
				pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
				if err != nil || !alive(pid) {
					t.Fatalf("round %d: n%d pid file %q names no running process", round, i, b)
				}
				pids = append(pids, pid)
			}
		}()
		out := run("down")
		for i, pid := range pids {
			if !strings.Contains(out, fmt.Sprintf("stopped n%d (pid %d)", i+1, pid)) {
				t.Errorf("round %d: down did not report stopping n%d (pid %d):\n%s", round, i+1, pid, out)
			}
			if alive(pid) {
				t.Errorf("round %d: n%d (pid %d) still running after down", round, i+1, pid)
			}
		}
		if strings.Contains(out, "killing") {
			t.Errorf("round %d: a node ignored SIGTERM:\n%s", round, out)
		}
		if t.Failed() {
			return
		}
	}
	t.Logf("leaders over %d rounds: %v", clusterScriptRounds, leaders)
}
