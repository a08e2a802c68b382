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
	c, out := upScriptCluster(t, "--tls")
	m := regexp.MustCompile(`(?m)^try: \S+ put \S+ \S+ (--cacert \S+ --cert \S+ --key \S+)  `).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("up --tls did not print the client flags:\n%s", out)
	}
	tlsFlags, cli, run, logs, clientBase := m[1], c.cli, c.run, c.logs, c.clientBase

	if out, err := cli(append([]string{"put", "/tls/key", "secret"}, strings.Fields(tlsFlags)...)...); err != nil {
		logs()
		t.Fatalf("put with the printed TLS flags: %v\n%s", err, out)
	}
	if out, err := cli(append([]string{"get", "/tls/key"}, strings.Fields(tlsFlags)...)...); err != nil || strings.TrimSpace(out) != "secret" {
		t.Fatalf("get with the printed TLS flags: %v\n%s", err, out)
	}
	out, err := cli("put", "/tls/key", "plaintext")
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

// scriptCluster is a cluster started with scripts/cluster.sh beside any
// other (own directory and ports); the test's cleanup brings it down.
type scriptCluster struct {
	t          *testing.T
	dir        string
	endpoints  string
	clientBase int
	env        []string
	script     string
}

// upScriptCluster runs "cluster.sh up" with upArgs and returns the cluster
// and what up printed, after checking that it named the leader.
func upScriptCluster(t *testing.T, upArgs ...string) (*scriptCluster, string) {
	t.Helper()
	script, err := filepath.Abs("../scripts/cluster.sh")
	if err != nil {
		t.Fatal(err)
	}
	clientBase, raftBase := scriptPortBases(t)
	c := &scriptCluster{t: t, dir: t.TempDir(), script: script, clientBase: clientBase,
		endpoints: fmt.Sprintf("127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d", clientBase+1, clientBase+2, clientBase+3)}
	c.env = append(os.Environ(),
		"RAFTWATCH_CLUSTER_DIR="+c.dir,
		"RAFTWATCH_BIN="+binary,
		fmt.Sprintf("RAFTWATCH_CLIENT_PORT_BASE=%d", clientBase),
		fmt.Sprintf("RAFTWATCH_RAFT_PORT_BASE=%d", raftBase))
	out, err := c.run(append([]string{"up"}, upArgs...)...)
	t.Cleanup(func() {
		if out, err := c.run("down"); err != nil {
			t.Errorf("down: %v\n%s", err, out)
		}
	})
	if err != nil {
		c.logs()
		t.Fatalf("up %s: %v\n%s", strings.Join(upArgs, " "), err, out)
	}
	if !regexp.MustCompile(`cluster up; leader: n[123] `).MatchString(out) {
		t.Fatalf("up did not name the leader:\n%s", out)
	}
	return c, out
}

// run runs cluster.sh with args.
func (c *scriptCluster) run(args ...string) (string, error) {
	cmd := exec.Command(c.script, args...)
	cmd.Env = c.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// logs logs every node's log.
func (c *scriptCluster) logs() {
	for i := 1; i <= 3; i++ {
		if b, err := os.ReadFile(filepath.Join(c.dir, fmt.Sprintf("n%d.log", i))); err == nil {
			c.t.Logf("--- n%d.log ---\n%s", i, b)
		}
	}
}

// cli runs the CLI against the cluster with only the flags given (no
// RAFTWATCH_ variables from the environment).
func (c *scriptCluster) cli(args ...string) (string, error) {
	cmd := exec.Command(binary, append(args, "--endpoints", c.endpoints, "--timeout", "10s")...)
	cmd.Env = withoutRaftwatchVars(os.Environ())
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// as runs the CLI with the certificate of identity, made by up --tls.
func (c *scriptCluster) as(identity string, args ...string) (string, error) {
	tls := filepath.Join(c.dir, "tls")
	return c.cli(append(args, "--cacert", filepath.Join(tls, "ca.crt"),
		"--cert", filepath.Join(tls, identity+".crt"), "--key", filepath.Join(tls, identity+".key"))...)
}

// TestClusterScriptUpAuth runs "cluster.sh up --tls --auth" and checks
// roles through the CLI, as the README shows them: an identity with no role,
// or without the role a call needs, is refused with PERMISSION_DENIED and
// nothing changes; root (the admin identity) manages roles; a granted role
// takes effect on every node.
func TestClusterScriptUpAuth(t *testing.T) {
	c, out := upScriptCluster(t, "--tls", "--auth")
	if !strings.Contains(out, "roles enforced") {
		t.Fatalf("up --tls --auth did not say roles are enforced:\n%s", out)
	}
	mustOK := func(out string, err error) string {
		t.Helper()
		if err != nil {
			c.logs()
			t.Fatalf("%v\n%s", err, out)
		}
		return strings.TrimSpace(out)
	}
	denied := func(what string, out string, err error) {
		t.Helper()
		if err == nil || !strings.Contains(out, "(PermissionDenied)") {
			t.Fatalf("%s: want PERMISSION_DENIED, got %v\n%s", what, err, out)
		}
	}
	valueOf := func(key string) string {
		t.Helper()
		out, err := c.as("root", "get", key)
		if err != nil && !strings.Contains(out, "key not found") {
			t.Fatalf("get %s as root: %v\n%s", key, err, out)
		}
		if err != nil {
			return "<absent>"
		}
		return strings.TrimSpace(out)
	}

	mustOK(c.as("root", "put", "/app/x", "v1"))
	out, err := c.as("alice", "put", "/app/x", "by-alice")
	denied("put by an identity with no role", out, err)
	out, err = c.as("alice", "get", "/app/x")
	denied("get by an identity with no role", out, err)
	if v := valueOf("/app/x"); v != "v1" {
		t.Fatalf("a refused put changed /app/x to %q", v)
	}
	if out, err := c.cli("put", "/app/x", "anonymous"); err == nil || !strings.Contains(out, "(Unavailable)") {
		t.Fatalf("put without a certificate: %v\n%s", err, out)
	}

	mustOK(c.as("root", "role", "add", "app"))
	mustOK(c.as("root", "role", "grant", "app", "/app/", "readwrite"))
	mustOK(c.as("root", "role", "add", "app-reader"))
	mustOK(c.as("root", "role", "grant", "app-reader", "/app/", "read"))
	mustOK(c.as("root", "user", "grant", "alice", "app"))
	mustOK(c.as("root", "user", "grant", "bob", "app-reader"))

	// Granted through the leader, enforced wherever the CLI lands (it
	// tries the endpoints in order; reads go to any node).
	mustOK(c.as("alice", "put", "/app/x", "v2"))
	if got := mustOK(c.as("bob", "get", "/app/x", "--serializable")); got != "v2" {
		t.Fatalf("bob read %q, want v2", got)
	}
	out, err = c.as("bob", "put", "/app/x", "by-bob")
	denied("put by a read-only identity", out, err)
	out, err = c.as("alice", "put", "/other/y", "outside")
	denied("put outside the role's prefix", out, err)
	if v, w := valueOf("/app/x"), valueOf("/other/y"); v != "v2" || w != "<absent>" {
		t.Fatalf("refused puts changed the data: /app/x=%q /other/y=%q", v, w)
	}
	out, err = c.as("alice", "role", "add", "sneaky")
	denied("role add by a non-admin", out, err)
	out, err = c.as("alice", "snapshot", "save", filepath.Join(t.TempDir(), "s.db"))
	denied("snapshot save by a non-admin", out, err)
	if got := mustOK(c.as("alice", "user", "whoami")); !strings.Contains(got, "alice") || !strings.Contains(got, "app") {
		t.Fatalf("whoami as alice: %q", got)
	}
	mustOK(c.as("root", "snapshot", "save", filepath.Join(t.TempDir(), "s.db")))

	// Each follower records its client address by calling SetMember on
	// the leader, presenting its node certificate: allowed under --auth
	// as the member itself.
	clientAddr := regexp.MustCompile(`client=127\.0\.0\.1:(\d+)`)
	var members string
	eventually(t, 20*time.Second, "members lists every client address", func() bool {
		out, err := c.as("root", "members")
		members = out
		found := map[int]bool{}
		for _, m := range clientAddr.FindAllStringSubmatch(out, -1) {
			p, _ := strconv.Atoi(m[1])
			found[p] = true
		}
		return err == nil && found[c.clientBase+1] && found[c.clientBase+2] && found[c.clientBase+3]
	})
	t.Logf("members:\n%s", members)
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
