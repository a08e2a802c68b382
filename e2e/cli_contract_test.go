package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// cliIn runs the raftwatch binary with stdin and returns stdout, stderr
// and the exit code.
func cliIn(t *testing.T, stdin []byte, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// cliStream is a long-running CLI command (watch) whose stdout lines are
// read as they come.
type cliStream struct {
	t     *testing.T
	cmd   *exec.Cmd
	lines chan string
	mu    sync.Mutex
	all   []string
}

func startCLI(t *testing.T, args ...string) *cliStream {
	t.Helper()
	cmd := exec.Command(binary, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &cliStream{t: t, cmd: cmd, lines: make(chan string, 1000)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			s.mu.Lock()
			s.all = append(s.all, sc.Text())
			s.mu.Unlock()
			s.lines <- sc.Text()
		}
		close(s.lines)
	}()
	t.Cleanup(s.stop)
	return s
}

// next returns the next line that satisfies match, failing after timeout.
func (s *cliStream) next(timeout time.Duration, what string, match func(string) bool) string {
	s.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-s.lines:
			if !ok {
				s.t.Fatalf("output ended while waiting for %s", what)
			}
			if match(l) {
				return l
			}
		case <-deadline:
			s.t.Fatalf("no %s within %v", what, timeout)
		}
	}
}

// stop kills the command and returns every line it printed.
func (s *cliStream) stop() {
	if s.cmd.ProcessState == nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
	}
}

func (s *cliStream) output() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.all...)
}

// randomBytes returns n random bytes from rng, none of them in avoid.
func randomBytes(rng *rand.Rand, n int, avoid ...byte) []byte {
	b := make([]byte, 0, n)
	for len(b) < n {
		c := byte(rng.IntN(256))
		if bytes.IndexByte(avoid, c) < 0 {
			b = append(b, c)
		}
	}
	return b
}

// kvOut is a key-value pair as --json prints it (key and value in base64,
// which []byte decodes).
type kvOut struct {
	Key         []byte `json:"key"`
	Value       []byte `json:"value"`
	ModRevision uint64 `json:"mod_revision"`
}

func mustJSON(t *testing.T, what, line string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(line), v); err != nil {
		t.Fatalf("%s printed %q: not the JSON expected: %v", what, line, err)
	}
}

// TestCLIScriptingContract is what a script may rely on, one case per rule
// of issue 7, against three real nodes.
func TestCLIScriptingContract(t *testing.T) {
	c := startCluster(t)
	eps := strings.Join(c.endpoints(), ",")
	follower := c.followers()[0]
	rng := rand.New(rand.NewPCG(7, uint64(time.Now().UnixNano())))

	cases := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"put --if-mod-revision 0 writes only while the key is absent", func(t *testing.T) {
			if _, e, code := cli(t, "put", "/c/mod0", "first", "--if-mod-revision", "0", "--endpoints", eps); code != 0 {
				t.Fatalf("first put on an absent key: exit %d %s", code, e)
			}
			o, _, code := cli(t, "put", "/c/mod0", "second", "--if-mod-revision", "0", "--endpoints", eps)
			if code != 2 || !strings.Contains(o, "condition failed") {
				t.Fatalf("put --if-mod-revision 0 on an existing key: exit %d %q, want 2 and nothing written", code, o)
			}
			if o, _, _ := cli(t, "get", "/c/mod0", "--endpoints", eps); strings.TrimSpace(o) != "first" {
				t.Fatalf("value after the refused put: %q, want first", o)
			}
			if _, e, code := cli(t, "put", "/c/mod0", "x", "--if-mod-revision", "0", "--if-absent", "--endpoints", eps); code != 2 {
				t.Fatalf("--if-mod-revision 0 with --if-absent (the same condition): exit %d %s, want 2", code, e)
			}
			_, e, code := cli(t, "put", "/c/mod0", "x", "--if-mod-revision", "5", "--if-absent", "--endpoints", eps)
			if code != 1 || !strings.Contains(e, "give one of them") {
				t.Fatalf("contradicting conditions: exit %d %q, want 1 and a refusal", code, e)
			}
		}},

		{"exit codes are the same with and without --json", func(t *testing.T) {
			if _, e, code := cli(t, "put", "/c/exit", "v", "--endpoints", eps); code != 0 {
				t.Fatalf("put: %d %s", code, e)
			}
			for _, tc := range []struct {
				args []string
				code int
			}{
				{[]string{"get", "/c/no-such-key"}, 1},
				{[]string{"put", "/c/exit", "w", "--if-absent"}, 2},
				{[]string{"put", "/c/exit", "w", "--if-mod-revision", "1"}, 2},
				{[]string{"del", "/c/exit", "--if-mod-revision", "1"}, 2},
				{[]string{"get", "/c/exit"}, 0},
			} {
				args := append(tc.args, "--endpoints", eps)
				_, _, human := cli(t, args...)
				o, _, js := cli(t, append(args, "--json")...)
				if human != tc.code || js != tc.code {
					t.Errorf("%v: exit %d, with --json %d; want %d for both", tc.args, human, js, tc.code)
				}
				var v map[string]any
				mustJSON(t, strings.Join(tc.args, " ")+" --json", o, &v)
			}
		}},

		{"--json round-trips every byte of keys and values through get, list and watch", func(t *testing.T) {
			// argv cannot carry NUL; every other byte, and sequences that are
			// not UTF-8 (\xff\xfe), must come back unchanged.
			key := append([]byte("/bin/\xff\xfe"), randomBytes(rng, 32, 0)...)
			v1 := append([]byte("\xff\xfe"), randomBytes(rng, 200, 0)...)
			v2 := append([]byte("\xc3\x28"), randomBytes(rng, 200, 0)...)
			w := startCLI(t, "watch", "--prefix", "/bin/", "--prev-kv", "--json", "--endpoints", follower.clientAddr)
			w.next(10*time.Second, "CREATED", func(l string) bool { return strings.Contains(l, `"CREATED"`) })
			for _, v := range [][]byte{v1, v2} {
				if _, e, code := cli(t, "put", string(key), string(v), "--endpoints", eps); code != 0 {
					t.Fatalf("put: %d %s", code, e)
				}
			}
			o, _, _ := cli(t, "get", string(key), "--json", "--endpoints", eps)
			var got struct{ Kv kvOut }
			mustJSON(t, "get --json", o, &got)
			if !bytes.Equal(got.Kv.Key, key) || !bytes.Equal(got.Kv.Value, v2) {
				t.Errorf("get --json: key %q value %q; want %q %q", got.Kv.Key, got.Kv.Value, key, v2)
			}
			o, _, _ = cli(t, "list", "/bin/", "--json", "--endpoints", eps)
			var list struct{ Kvs []kvOut }
			mustJSON(t, "list --json", o, &list)
			if len(list.Kvs) != 1 || !bytes.Equal(list.Kvs[0].Key, key) || !bytes.Equal(list.Kvs[0].Value, v2) {
				t.Errorf("list --json: %+v; want the one key and value byte for byte", list.Kvs)
			}
			for i, want := range [][]byte{v1, v2} {
				var ev cliEvent
				mustJSON(t, "watch --json", w.next(10*time.Second, "PUT", func(l string) bool { return strings.Contains(l, `"PUT"`) }), &ev)
				if !bytes.Equal(ev.Key, key) || !bytes.Equal(ev.Value, want) {
					t.Errorf("watch --json PUT %d: key %q value %q; want %q %q", i, ev.Key, ev.Value, key, want)
				}
				if i == 1 && (ev.PrevValue == nil || !bytes.Equal(*ev.PrevValue, v1)) {
					t.Errorf("watch --json prev_value: %v; want %q", ev.PrevValue, v1)
				}
			}
		}},

		{"put KEY and put KEY - read the value from stdin, every byte, up to the node's 1 MiB", func(t *testing.T) {
			value := randomBytes(rng, 1<<20) // over the argv limit of one argument (128 KiB), NULs included
			for _, args := range [][]string{{"put", "/c/stdin-a"}, {"put", "/c/stdin-b", "-"}} {
				if _, e, code := cliIn(t, value, append(args, "--endpoints", eps)...); code != 0 {
					t.Fatalf("%v < 1 MiB: exit %d %s", args, code, e)
				}
				o, _, _ := cli(t, "get", args[1], "--json", "--endpoints", eps)
				var got struct{ Kv kvOut }
				mustJSON(t, "get --json", o, &got)
				if !bytes.Equal(got.Kv.Value, value) {
					t.Errorf("%v: read back %d bytes, not the %d written", args, len(got.Kv.Value), len(value))
				}
			}
			_, e, code := cliIn(t, make([]byte, 1<<20+1), "put", "/c/stdin-c", "--endpoints", eps)
			if code != 1 || !strings.Contains(e, "InvalidArgument") || !strings.Contains(e, "limit of 1048576 bytes") {
				t.Fatalf("over 1 MiB on stdin: exit %d %q, want 1 and the node's limit named", code, e)
			}
		}},

		{"list prints one unambiguous line per key", func(t *testing.T) {
			want := map[string]string{"/lst/a": "x\n/lst/b = y", "/lst/c": "p = q", "/lst/d\x01": "\xff"}
			for k, v := range want {
				if _, e, code := cli(t, "put", k, v, "--endpoints", eps); code != 0 {
					t.Fatalf("put: %d %s", code, e)
				}
			}
			o, _, code := cli(t, "list", "/lst/", "--endpoints", eps)
			lines := strings.Split(strings.TrimSuffix(o, "\n"), "\n")
			if code != 0 || len(lines) != len(want) {
				t.Fatalf("list printed %d lines for %d keys (exit %d):\n%s", len(lines), len(want), code, o)
			}
			for _, l := range lines {
				qk, qv, ok := strings.Cut(l, `" = "`)
				k, kerr := strconv.Unquote(qk + `"`)
				v, verr := strconv.Unquote(`"` + qv)
				if !ok || kerr != nil || verr != nil || want[k] != v {
					t.Errorf("line %q does not read back as one of %q", l, want)
				}
			}
		}},

		{"--endpoints accepts the http:// form, and https:// means TLS", func(t *testing.T) {
			if _, e, code := cli(t, "put", "/c/scheme", "v", "--endpoints", "http://"+c.endpoints()[0]); code != 0 {
				t.Fatalf("http:// endpoint: exit %d %s", code, e)
			}
			o, e, code := cli(t, "get", "/c/scheme", "--endpoints", "http://"+c.endpoints()[1]+"/,"+c.endpoints()[2])
			if code != 0 || strings.TrimSpace(o) != "v" {
				t.Fatalf("http:// endpoint with a trailing slash: exit %d %q %s", code, o, e)
			}
			// These nodes serve plaintext: a TLS client reaches none of them.
			if _, e, code := cli(t, "get", "/c/scheme", "--endpoints", "https://"+c.endpoints()[1], "--dial-timeout", "1s"); code != 1 || !strings.Contains(e, "(Unavailable)") {
				t.Fatalf("https:// endpoint of a plaintext node: exit %d %s", code, e)
			}
			if _, e, code := cli(t, "get", "/c/scheme", "--endpoints", "http://"+c.endpoints()[1]+",https://"+c.endpoints()[2]); code != 1 || !strings.Contains(e, "mix http:// and https://") {
				t.Fatalf("mixed schemes: exit %d %s", code, e)
			}
		}},

		{"a dead endpoint fails within the dial timeout, the others are tried, and each is named", func(t *testing.T) {
			hung, err := net.Listen("tcp", "127.0.0.1:0") // accepts TCP, never answers: a wedged node
			if err != nil {
				t.Fatal(err)
			}
			defer hung.Close()
			refused := freePorts(t, 1)[0]
			start := time.Now()
			o, e, code := cli(t, "get", "/c/scheme", "--dial-timeout", "1s", "--endpoints", hung.Addr().String()+","+eps)
			if took := time.Since(start); code != 0 || strings.TrimSpace(o) != "v" || took > 6*time.Second {
				t.Fatalf("dead endpoint first, then live ones: exit %d %q %s after %v; want the value within a few seconds", code, o, e, took)
			}
			start = time.Now()
			_, e, code = cli(t, "get", "/c/scheme", "--dial-timeout", "1s", "--endpoints", hung.Addr().String()+","+refused)
			took := time.Since(start)
			if code != 1 || took > 6*time.Second || !strings.Contains(e, hung.Addr().String()+": no connection within the dial timeout (1s)") ||
				!strings.Contains(e, refused+": ") {
				t.Fatalf("only dead endpoints: exit %d after %v, stderr %q; want 1 within a few seconds naming both", code, took, e)
			}
		}},

		{"--timeout 0 means no timeout; a negative one is refused", func(t *testing.T) {
			if _, e, code := cli(t, "put", "/c/t0", "v", "--timeout", "0", "--endpoints", eps); code != 0 {
				t.Fatalf("put --timeout 0: exit %d %s", code, e)
			}
			if o, e, code := cli(t, "get", "/c/t0", "--timeout", "0", "--endpoints", eps); code != 0 || strings.TrimSpace(o) != "v" {
				t.Fatalf("get --timeout 0: exit %d %q %s", code, o, e)
			}
			if _, e, code := cli(t, "get", "/c/t0", "--timeout", "-1s", "--endpoints", eps); code != 1 || !strings.Contains(e, "must not be negative") {
				t.Fatalf("get --timeout -1s: exit %d %q", code, e)
			}
		}},

		{"member remove of an unknown id is NotFound and changes nothing", func(t *testing.T) {
			_, e, code := cli(t, "member", "remove", "nosuch", "--endpoints", eps)
			if code != 1 || !strings.Contains(e, `no such member "nosuch"`) || !strings.Contains(e, "(NotFound)") {
				t.Fatalf("member remove nosuch: exit %d %q", code, e)
			}
			o, _, _ := cli(t, "members", "--json", "--endpoints", eps)
			if n := strings.Count(o, `"voter":true`); n != 3 {
				t.Fatalf("%d voters after the refused remove:\n%s", n, o)
			}
		}},

		{"--json works on every subcommand that prints", func(t *testing.T) {
			// member add and remove: TestMembershipChange.
			for _, args := range [][]string{
				{"put", "/cj/json", "v"}, {"get", "/cj/json"}, {"list", "/cj/"}, {"del", "/cj/json", "--prev-kv"},
				{"status"}, {"members"}, {"version"},
			} {
				full := append(args, "--json")
				if args[0] != "version" {
					full = append(full, "--endpoints", eps)
				}
				o, e, code := cli(t, full...)
				if code != 0 || o == "" {
					t.Fatalf("%v --json: exit %d %q %s", args, code, o, e)
				}
				for _, l := range strings.Split(strings.TrimSpace(o), "\n") {
					var v map[string]any
					mustJSON(t, strings.Join(args, " ")+" --json", l, &v)
				}
			}
			w := startCLI(t, "watch", "/cj/json", "--json", "--endpoints", eps)
			var ev map[string]any
			mustJSON(t, "watch --json", w.next(10*time.Second, "a line", func(string) bool { return true }), &ev)
		}},

		{"members on every node lists every member's client address", func(t *testing.T) {
			want := map[string]string{}
			for _, p := range c.nodes {
				want[p.id] = p.clientAddr
			}
			for _, p := range c.nodes {
				var last string
				eventually(t, 15*time.Second, "members on "+p.id+" to list all three client addresses", func() bool {
					o, _, code := cli(t, "members", "--json", "--endpoints", p.clientAddr)
					last = o
					got := map[string]string{}
					for _, l := range strings.Split(strings.TrimSpace(o), "\n") {
						var m struct {
							ID         string `json:"id"`
							ClientAddr string `json:"client_addr"`
						}
						if json.Unmarshal([]byte(l), &m) == nil {
							got[m.ID] = m.ClientAddr
						}
					}
					return code == 0 && fmt.Sprint(got) == fmt.Sprint(want)
				})
				if strings.Contains(last, `"client_addr":""`) {
					t.Fatalf("members on %s: %s", p.id, last)
				}
			}
		}},

		{"human watch hides PROGRESS unless --progress; --json keeps it", func(t *testing.T) {
			// The nodes send a PROGRESS every 200 ms (--progress-interval).
			quiet := startCLI(t, "watch", "/c/prog", "--endpoints", follower.clientAddr)
			quiet.next(10*time.Second, "CREATED", func(l string) bool { return strings.HasPrefix(l, "CREATED") })
			loud := startCLI(t, "watch", "/c/prog", "--progress", "--endpoints", follower.clientAddr)
			js := startCLI(t, "watch", "/c/prog", "--json", "--endpoints", follower.clientAddr)
			for i := 0; i < 3; i++ { // the quiet watch, older, has been sent these too
				loud.next(10*time.Second, "PROGRESS with --progress", func(l string) bool { return strings.HasPrefix(l, "PROGRESS revision ") })
			}
			js.next(10*time.Second, "PROGRESS with --json", func(l string) bool { return strings.Contains(l, `"type":"PROGRESS"`) })
			if _, e, code := cli(t, "put", "/c/prog", "v", "--endpoints", eps); code != 0 {
				t.Fatalf("put: %d %s", code, e)
			}
			quiet.next(10*time.Second, "PUT", func(l string) bool { return strings.HasPrefix(l, `PUT "/c/prog" = "v"`) })
			quiet.stop()
			for _, l := range quiet.output() {
				if strings.Contains(l, "PROGRESS") {
					t.Fatalf("watch without --progress printed %q; output:\n%s", l, strings.Join(quiet.output(), "\n"))
				}
			}
		}},

		{"each subcommand shows only its own flags; version and --version name the build", func(t *testing.T) {
			o, _, code := cli(t, "serve", "--help")
			if code != 0 || !strings.Contains(o, "--data-dir") {
				t.Fatalf("serve --help: exit %d\n%s", code, o)
			}
			for _, flag := range []string{"--endpoints", "--json", "--timeout ", "--dial-timeout"} {
				if strings.Contains(o, flag) {
					t.Errorf("serve --help lists %s, which serve ignores", flag)
				}
			}
			if o, _, _ := cli(t, "get", "--help"); !strings.Contains(o, "--endpoints") || !strings.Contains(o, "--dial-timeout") {
				t.Errorf("get --help lacks the client flags:\n%s", o)
			}
			v1, _, c1 := cli(t, "version")
			v2, _, c2 := cli(t, "--version")
			if c1 != 0 || c2 != 0 || v1 != v2 || !strings.HasPrefix(v1, "raftwatch ") || !strings.Contains(v1, "commit ") ||
				!strings.Contains(v1, runtime.Version()) {
				t.Fatalf("version %q (exit %d) and --version %q (exit %d): want the same line naming version, commit and Go", v1, c1, v2, c2)
			}
			checkVersionStampsCommit(t)
		}},

		{"raft's structured log fields are formatted", func(t *testing.T) {
			// raft logs its servers with hclog.Fmt("%+v", ...): printed as
			// servers="[%+v [...]]" before the fix.
			for _, p := range c.nodes {
				b, err := os.ReadFile(p.logPath)
				if err != nil {
					t.Fatal(err)
				}
				log := string(b)
				if strings.Contains(log, "%+v") {
					t.Errorf("%s's log has an unformatted verb:\n%s", p.id, log)
				}
				found := false
				for _, l := range strings.Split(log, "\n") {
					if strings.Contains(l, `msg="initial configuration"`) {
						found = strings.Contains(l, " servers=[") || strings.Contains(l, ` servers="[{`)
					}
				}
				if !found {
					t.Errorf("%s's log lacks raft's initial configuration, formatted:\n%s", p.id, log)
				}
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, tc.run)
	}
}

// checkVersionStampsCommit builds the CLI the way scripts/cluster.sh does
// and checks that version names the checked-out commit. Go stamps it only
// from a repository whose .git is a directory (not a git worktree).
func checkVersionStampsCommit(t *testing.T) {
	t.Helper()
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if fi, serr := os.Stat("../.git"); err != nil || serr != nil || !fi.IsDir() {
		t.Logf("not a plain git checkout; the commit cannot be stamped here")
		return
	}
	bin := filepath.Join(t.TempDir(), "raftwatch")
	if err := buildRaftwatch(bin, "-buildvcs=auto"); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "version", "--json").Output()
	var v struct {
		Version, Commit string
	}
	if err != nil || json.Unmarshal(out, &v) != nil || v.Commit != strings.TrimSpace(string(head)) || v.Version == "" {
		t.Fatalf("version --json of a build from the checkout: %q (%v); want commit %s", out, err, head)
	}
}
