package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/raftwatch/raftwatch/client"
)

// The lock and elect commands (client/concurrency underneath) on three
// real nodes, driven as separate processes, so that a holder can be
// paused (SIGSTOP) or killed (SIGKILL) like a real one.

// recipeProc is a running lock or elect CLI; its stdout and stderr lines
// arrive, tagged "out: " and "err: ", on one channel.
type recipeProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	lines  chan string
	exited chan struct{}
	code   int
	mu     sync.Mutex
	all    []string
}

func startRecipe(t *testing.T, args ...string) *recipeProc {
	t.Helper()
	cmd := exec.Command(binary, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &recipeProc{t: t, cmd: cmd, lines: make(chan string, 1000), exited: make(chan struct{})}
	var wg sync.WaitGroup
	read := func(r io.Reader, tag string) {
		defer wg.Done()
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			p.mu.Lock()
			p.all = append(p.all, tag+sc.Text())
			p.mu.Unlock()
			p.lines <- tag + sc.Text()
		}
	}
	wg.Add(2)
	go read(stdout, "out: ")
	go read(stderr, "err: ")
	go func() {
		wg.Wait()
		err := cmd.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			p.code = ee.ExitCode()
		}
		close(p.lines)
		close(p.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGCONT)
		cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("%v:\n%s", args, strings.Join(p.output(), "\n"))
		}
	})
	return p
}

// next returns the first submatches of re in the next line matching it.
func (p *recipeProc) next(timeout time.Duration, re *regexp.Regexp) []string {
	p.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				p.t.Fatalf("%v exited (code %d) before printing %s", p.cmd.Args, p.code, re)
			}
			if m := re.FindStringSubmatch(l); m != nil {
				return m
			}
		case <-deadline:
			p.t.Fatalf("%v printed no %s within %v", p.cmd.Args, re, timeout)
		}
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *recipeProc) wait(timeout time.Duration) int {
	p.t.Helper()
	for {
		select {
		case <-p.lines: // drain
		case <-p.exited:
			return p.code
		case <-time.After(timeout):
			p.t.Fatalf("%v did not exit within %v", p.cmd.Args, timeout)
		}
	}
}

func (p *recipeProc) output() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.all...)
}

func (p *recipeProc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
}

var (
	lockedLine = regexp.MustCompile(`locked \S+: key "([^"]+)", fencing token (\d+)`)
	leaderLine = regexp.MustCompile(`^out: leader "([^"]+)" = "([^"]*)" \(created at revision (\d+), (?:token|revision) (\d+)\)`)
)

func atoi(t *testing.T, s string) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// keysUnder lists the keys under prefix.
func keysUnder(t *testing.T, cl *client.Client, prefix string) []string {
	t.Helper()
	r, err := cl.List(ctxT(t, 10*time.Second), []byte(prefix))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, kv := range r.Kvs {
		out = append(out, string(kv.Key))
	}
	return out
}

// TestCLILockRunsCommandWithTheLock: CMD runs with the lock's key and
// token in its environment, its exit code becomes lock's, and the lock is
// released when it exits.
func TestCLILockRunsCommandWithTheLock(t *testing.T) {
	c := startCluster(t)
	eps := strings.Join(c.endpoints(), ",")
	out, errOut, code := cli(t, "lock", "--endpoints", eps, "jobs", "--",
		"sh", "-c", `echo "key=$RAFTWATCH_LOCK_KEY token=$RAFTWATCH_LOCK_TOKEN"; exit 7`)
	if code != 7 {
		t.Fatalf("lock exited %d, want CMD's 7; stderr: %s", code, errOut)
	}
	m := regexp.MustCompile(`^key=(/raftwatch/locks/jobs/[0-9a-f]+) token=(\d+)\n$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("CMD printed %q, want its key under /raftwatch/locks/jobs/ and a token", out)
	}
	l := lockedLine.FindStringSubmatch(errOut)
	if l == nil || l[1] != m[1] || l[2] != m[2] {
		t.Fatalf("lock's stderr %q does not name the key %s and token %s CMD got", errOut, m[1], m[2])
	}
	if ks := keysUnder(t, c.client(), "/raftwatch/locks/jobs/"); len(ks) != 0 {
		t.Fatalf("the lock was not released: %v", ks)
	}
	// A command that cannot start: an error, and the lock released.
	_, errOut, code = cli(t, "lock", "--endpoints", eps, "jobs", "--", "/nonexistent/cmd")
	if code != 1 || !strings.Contains(errOut, "/nonexistent/cmd") {
		t.Fatalf("lock with a missing CMD: exit %d, stderr %q", code, errOut)
	}
	if ks := keysUnder(t, c.client(), "/raftwatch/locks/jobs/"); len(ks) != 0 {
		t.Fatalf("the lock was not released after CMD failed to start: %v", ks)
	}
}

// TestCLILocksNeverOverlap: two loops of lock CLIs compete; every CMD
// appends "start TOKEN" and "end TOKEN" to one file: the lines never
// interleave and the tokens increase.
func TestCLILocksNeverOverlap(t *testing.T) {
	c := startCluster(t)
	eps := strings.Join(c.endpoints(), ",")
	file := filepath.Join(t.TempDir(), "critical")
	// The pause inside CMD is the critical section's work: it widens the
	// window an overlap would show in.
	script := `echo "start $RAFTWATCH_LOCK_TOKEN" >> "$F"; sleep 0.2; echo "end $RAFTWATCH_LOCK_TOKEN" >> "$F"`
	const rounds = 3
	var wg sync.WaitGroup
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				cmd := exec.Command(binary, "lock", "--endpoints", eps, "--ttl", "10", "shared", "--", "sh", "-c", script)
				cmd.Env = append(os.Environ(), "F="+file)
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Errorf("lock CLI %d round %d: %v\n%s", w, i, err, out)
					return
				}
			}
		}()
	}
	wg.Wait()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2*2*rounds {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), 4*rounds, b)
	}
	var prev uint64
	for i := 0; i < len(lines); i += 2 {
		var s, e uint64
		if _, err := fmt.Sscanf(lines[i]+" "+lines[i+1], "start %d end %d", &s, &e); err != nil || s != e {
			t.Fatalf("lines %d-%d %q %q: a critical section overlapped another:\n%s", i, i+1, lines[i], lines[i+1], b)
		}
		if s <= prev {
			t.Fatalf("token %d after %d: tokens must increase:\n%s", s, prev, b)
		}
		prev = s
	}
}

// TestCLILockSessionLoss: the holder is paused (SIGSTOP) past its TTL;
// the waiter gets the lock with a larger token; a write fenced by the
// paused holder's token fails; resumed, the holder says it lost the lock,
// sends its CMD SIGTERM and exits 1.
func TestCLILockSessionLoss(t *testing.T) {
	c := startCluster(t)
	cl := c.client()
	eps := strings.Join(c.endpoints(), ",")
	termFile := filepath.Join(t.TempDir(), "term")
	pidFile := filepath.Join(t.TempDir(), "grandchild")
	// CMD starts a grandchild that ignores SIGTERM: it must not outlive the
	// lock either.
	a := startRecipe(t, "lock", "--endpoints", eps, "--ttl", "2", "db", "--", "sh", "-c",
		`trap 'echo TERM > "`+termFile+`"; exit 143' TERM; (trap '' TERM; exec sleep 300) & echo $! > "`+pidFile+`"; while :; do sleep 0.05; done`)
	am := a.next(15*time.Second, lockedLine)
	aKey, aTok := am[1], atoi(t, am[2])
	b := startRecipe(t, "lock", "--endpoints", eps, "--ttl", "30", "db")
	eventually(t, 10*time.Second, "b waiting", func() bool { return len(keysUnder(t, cl, "/raftwatch/locks/db/")) == 2 })

	a.signal(syscall.SIGSTOP)
	stopped := time.Now()
	bm := b.next(15*time.Second, lockedLine)
	if d := time.Since(stopped); d > 2*time.Second+twoElections {
		t.Fatalf("b got the lock %v after a was paused, want within TTL 2 s + %v", d, twoElections)
	}
	if bTok := atoi(t, bm[2]); bTok <= aTok {
		t.Fatalf("b's token %d not above a's %d", bTok, aTok)
	}
	// a's fenced write, as a paused holder would make it on waking up.
	out, _, code := cliIn(t, []byte(fmt.Sprintf("mod(%q) = %d\n\nput /db/data from-a\n", aKey, aTok)), "txn", "--endpoints", eps)
	if code != 2 {
		t.Fatalf("a's fenced txn exited %d (%s), want 2: the compare must fail", code, out)
	}
	if r, err := cl.Get(ctxT(t, 5*time.Second), []byte("/db/data")); err != nil || r.Kv != nil {
		t.Fatalf("/db/data = %v %v, want it never written", r, err)
	}

	a.signal(syscall.SIGCONT)
	a.next(15*time.Second, regexp.MustCompile(`^err: .*SESSION LOST.*NO LONGER HELD`))
	if code := a.wait(15 * time.Second); code != 1 {
		t.Fatalf("a exited %d after losing the lock, want 1", code)
	}
	if got, err := os.ReadFile(termFile); err != nil || string(got) != "TERM\n" {
		t.Fatalf("a's CMD was not sent SIGTERM: %q %v", got, err)
	}
	grandchild := atoi(t, strings.TrimSpace(string(must(os.ReadFile(pidFile)))))
	eventually(t, 10*time.Second, "CMD's grandchild, which ignores SIGTERM, is killed", func() bool { return !alive(int(grandchild)) })
	// b holds until SIGTERM, then releases and exits 0.
	b.signal(syscall.SIGTERM)
	if code := b.wait(15 * time.Second); code != 0 {
		t.Fatalf("b exited %d on SIGTERM, want 0", code)
	}
	if ks := keysUnder(t, cl, "/raftwatch/locks/db/"); len(ks) != 0 {
		t.Fatalf("keys left after b released: %v", ks)
	}
}

// TestCLIElection: an observer prints every leader in order; when the
// leader's process is killed, the next candidate leads within its TTL +
// 2 election timeouts; a leader that is signalled resigns.
func TestCLIElection(t *testing.T) {
	c := startCluster(t)
	cl := c.client()
	eps := strings.Join(c.endpoints(), ",")
	obs := startRecipe(t, "elect", "--endpoints", eps, "sched")
	a := startRecipe(t, "elect", "--endpoints", eps, "--ttl", "2", "sched", "node-a")
	am := a.next(15*time.Second, leaderLine)
	if am[2] != "node-a" || !strings.HasPrefix(am[1], "/raftwatch/elections/sched/") {
		t.Fatalf("a's leader line %q", am[0])
	}
	if om := obs.next(15*time.Second, leaderLine); om[1] != am[1] || om[2] != "node-a" {
		t.Fatalf("observer printed %q, want a's key and node-a", om[0])
	}
	b := startRecipe(t, "elect", "--endpoints", eps, "--ttl", "2", "sched", "node-b")
	eventually(t, 10*time.Second, "b campaigning", func() bool { return len(keysUnder(t, cl, "/raftwatch/elections/sched/")) == 2 })

	a.signal(syscall.SIGKILL)
	killed := time.Now()
	bm := b.next(15*time.Second, leaderLine)
	if d := time.Since(killed); d > 2*time.Second+twoElections {
		t.Fatalf("b led %v after a was killed, want within TTL 2 s + %v", d, twoElections)
	}
	if bm[2] != "node-b" || atoi(t, bm[4]) <= atoi(t, am[4]) {
		t.Fatalf("b's leader line %q: want node-b with a token above a's %s", bm[0], am[4])
	}
	if om := obs.next(15*time.Second, leaderLine); om[1] != bm[1] || om[2] != "node-b" {
		t.Fatalf("observer printed %q, want b", om[0])
	}
	// b resigns on SIGTERM; a new candidate leads; the observer follows.
	b.signal(syscall.SIGTERM)
	if code := b.wait(15 * time.Second); code != 0 {
		t.Fatalf("b exited %d on SIGTERM, want 0", code)
	}
	d := startRecipe(t, "elect", "--endpoints", eps, "sched", "node-d")
	dm := d.next(15*time.Second, leaderLine)
	if om := obs.next(15*time.Second, leaderLine); om[1] != dm[1] || om[2] != "node-d" {
		t.Fatalf("observer printed %q, want d", om[0])
	}
	var printed []string
	for _, l := range obs.output() {
		if leaderLine.MatchString(l) {
			printed = append(printed, l)
		}
	}
	if len(printed) != 3 {
		t.Fatalf("observer printed %d leader lines, want 3 (a, b, d): %v", len(printed), printed)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
