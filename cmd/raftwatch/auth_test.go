package main

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftwatch/raftwatch/certs"
	"github.com/raftwatch/raftwatch/node"
	"github.com/raftwatch/raftwatch/nodetest"
)

// startAuthNode serves a one-node cluster in this process enforcing roles
// (admin identity root), its client API over TLS with client certificates
// required, as serve wires it; it returns the CLI flags that reach it as
// root: endpoint, --cacert, --cert and --key.
func startAuthNode(t *testing.T) []string {
	t.Helper()
	ca, err := certs.NewCA("test-ca", 0)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	issueTo(t, ca, dir, "root")
	p := func(name string) string { return filepath.Join(dir, name) }
	flags := &serveTLSFlags{certFile: p("n1.crt"), keyFile: p("n1.key"), trustedCAFile: p("ca.crt"), clientCertAuth: true}
	n := nodetest.Start(t, nil, nodetest.RequireAuth("root"), nodetest.NoWait(), nodetest.Setup(func(cfg *node.Config) ([]grpc.ServerOption, error) {
		return flags.apply(cfg, true, quietLog)
	}))
	root := clientTLSFlags{cacert: p("ca.crt"), cert: p("root.crt"), key: p("root.key")}
	waitPut(t, n.ClientAddr, root, "/ready", "the node takes no writes")
	return []string{"--endpoints=" + n.ClientAddr, "--cacert=" + root.cacert, "--cert=" + root.cert, "--key=" + root.key}
}

// runCLI runs the command line args in this process and returns what it
// printed on stdout.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	read := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(r)
		read <- string(b)
	}()
	cmd := newRootCmd()
	cmd.SetArgs(args)
	cmd.SetErr(io.Discard)
	err = cmd.Execute()
	os.Stdout = stdout
	w.Close()
	return <-read, err
}

func TestRoleAndUserCommands(t *testing.T) {
	root := startAuthNode(t)
	run := func(args ...string) string {
		t.Helper()
		out, err := runCLI(t, append(args, root...)...)
		if err != nil {
			t.Fatalf("raftwatch %s: %v", strings.Join(args, " "), err)
		}
		return out
	}
	refused := func(code codes.Code, args ...string) {
		t.Helper()
		_, err := runCLI(t, append(args, root...)...)
		if status.Code(err) != code {
			t.Fatalf("raftwatch %s: %v, want %v", strings.Join(args, " "), err, code)
		}
	}
	if out := run("role", "add", "app"); !strings.HasPrefix(out, "OK (revision ") {
		t.Fatalf("role add printed %q", out)
	}
	run("role", "grant", "app", "/app/", "readwrite")
	run("role", "grant", "app", "/cfg/", "read")
	if _, err := runCLI(t, append([]string{"role", "grant", "app", "/x/", "write"}, root...)...); err == nil || !strings.Contains(err.Error(), "use read or readwrite") {
		t.Fatalf("a grant with access %q: %v", "write", err)
	}
	refused(codes.AlreadyExists, "role", "add", "app")
	refused(codes.InvalidArgument, "role", "delete", "admin")
	refused(codes.NotFound, "user", "grant", "alice", "nope")
	run("user", "grant", "alice", "app")

	var role struct {
		Name        string
		Permissions []struct{ Prefix, Access string }
	}
	if err := json.Unmarshal([]byte(run("role", "get", "app", "--json")), &role); err != nil {
		t.Fatal(err)
	}
	// Prefixes are keys: base64 in --json ("/app/" and "/cfg/").
	if role.Name != "app" || len(role.Permissions) != 2 || role.Permissions[0].Prefix != "L2FwcC8=" ||
		role.Permissions[0].Access != "readwrite" || role.Permissions[1].Access != "read" {
		t.Fatalf("role get --json: %+v", role)
	}
	if out, want := run("role", "list"), "admin \"/\"=readwrite\napp \"/app/\"=readwrite \"/cfg/\"=read\n"; out != want {
		t.Fatalf("role list printed %q, want %q", out, want)
	}
	if out := run("user", "list"); out != "alice app\n" {
		t.Fatalf("user list printed %q", out)
	}
	if out := run("user", "whoami"); out != "identity=root roles= admin=true enforced=true\n" {
		t.Fatalf("whoami printed %q", out)
	}
	run("role", "delete", "app")
	refused(codes.NotFound, "user", "get", "alice") // deleting the role took it from alice
}

func TestAuthNeedsClientCertAuth(t *testing.T) {
	if err := checkAuthFlags(true, false, "root"); err == nil || !strings.Contains(err.Error(), "--client-cert-auth") {
		t.Fatalf("--auth without --client-cert-auth: %v", err)
	}
	if err := checkAuthFlags(true, true, ""); err == nil || !strings.Contains(err.Error(), "--auth-admin-identity") {
		t.Fatalf("--auth with an empty admin identity: %v", err)
	}
	if err := checkAuthFlags(true, true, "root"); err != nil {
		t.Fatal(err)
	}
	if err := checkAuthFlags(false, false, ""); err != nil {
		t.Fatalf("no --auth: %v", err)
	}
}
