package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestClusterScriptUpTLS runs "scripts/cluster.sh up --tls" as the README
// shows it: the CLI with the printed --cacert/--cert/--key writes and reads
// through the cluster, and without them is refused; every member recorded
// its client address with the leader (a call over the client API's TLS);
// status and down work from the remembered mode.
func TestClusterScriptUpTLS(t *testing.T) {
	script, err := filepath.Abs("../scripts/cluster.sh")
	if err != nil {
		t.Fatal(err)
	}
	clientBase, raftBase := scriptPortBases(t)
	dir := t.TempDir()
	env := append(os.Environ(),
		"RAFTWATCH_CLUSTER_DIR="+dir,
		"RAFTWATCH_BIN="+binary,
		fmt.Sprintf("RAFTWATCH_CLIENT_PORT_BASE=%d", clientBase),
		fmt.Sprintf("RAFTWATCH_RAFT_PORT_BASE=%d", raftBase))
	run := func(args ...string) (string, error) {
		cmd := exec.Command(script, args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	logs := func() {
		for i := 1; i <= 3; i++ {
			if b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("n%d.log", i))); err == nil {
				t.Logf("--- n%d.log ---\n%s", i, b)
			}
		}
	}
	out, err := run("up", "--tls")
	t.Cleanup(func() {
		if out, err := run("down"); err != nil {
			t.Errorf("down: %v\n%s", err, out)
		}
	})
	if err != nil {
		logs()
		t.Fatalf("up --tls: %v\n%s", err, out)
	}
	if !regexp.MustCompile(`cluster up; leader: n[123] `).MatchString(out) {
		t.Fatalf("up --tls did not name the leader:\n%s", out)
	}
	m := regexp.MustCompile(`(?m)^try: \S+ put \S+ \S+ (--cacert \S+ --cert \S+ --key \S+)  `).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("up --tls did not print the client flags:\n%s", out)
	}
	tlsFlags := m[1]
	endpoints := fmt.Sprintf("127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d", clientBase+1, clientBase+2, clientBase+3)
	cli := func(args ...string) (string, error) {
		cmd := exec.Command(binary, append(args, "--endpoints", endpoints, "--timeout", "10s")...)
		cmd.Env = withoutRaftwatchVars(os.Environ()) // only the flags given here
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	if out, err := cli(append([]string{"put", "/tls/key", "secret"}, strings.Fields(tlsFlags)...)...); err != nil {
		logs()
		t.Fatalf("put with the printed TLS flags: %v\n%s", err, out)
	}
	if out, err := cli(append([]string{"get", "/tls/key"}, strings.Fields(tlsFlags)...)...); err != nil || strings.TrimSpace(out) != "secret" {
		t.Fatalf("get with the printed TLS flags: %v\n%s", err, out)
	}
	out, err = cli("put", "/tls/key", "plaintext")
	if err == nil || !strings.Contains(out, "(Unavailable)") {
		t.Fatalf("put without TLS flags: %v\n%s", err, out)
	}
	onlyCA := strings.Fields(tlsFlags)[:2] // --cacert FILE: TLS, but no client certificate
	if out, err := cli(append([]string{"put", "/tls/key", "anonymous"}, onlyCA...)...); err == nil || !strings.Contains(out, "(Unavailable)") {
		t.Fatalf("put without a client certificate: %v\n%s", err, out)
	}
	if out, err := cli(append([]string{"get", "/tls/key"}, strings.Fields(tlsFlags)...)...); err != nil || strings.TrimSpace(out) != "secret" {
		t.Fatalf("the refused puts changed the value: %v\n%s", err, out)
	}

	// Each member records its client address by calling SetMember on the
	// leader's client API, which needs TLS with its own certificate.
	clientAddr := regexp.MustCompile(`client=127\.0\.0\.1:(\d+)`)
	var members string
	eventually(t, 20*time.Second, "members lists every client address", func() bool {
		out, err := cli(append([]string{"members"}, strings.Fields(tlsFlags)...)...)
		members = out
		found := map[int]bool{}
		for _, m := range clientAddr.FindAllStringSubmatch(out, -1) {
			p, _ := strconv.Atoi(m[1])
			found[p] = true
		}
		return err == nil && found[clientBase+1] && found[clientBase+2] && found[clientBase+3]
	})
	t.Logf("members:\n%s", members)
	if out, err := run("status"); err != nil || strings.Count(out, "id=n") != 3 {
		t.Fatalf("status from the remembered TLS mode: %v\n%s", err, out)
	}
}

// withoutRaftwatchVars drops the RAFTWATCH_ variables from environ.
func withoutRaftwatchVars(environ []string) []string {
	var out []string
	for _, kv := range environ {
		if !strings.HasPrefix(kv, "RAFTWATCH_") {
			out = append(out, kv)
		}
	}
	return out
}
