package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftwatch/raftwatch/client"
	"github.com/raftwatch/raftwatch/node"
	"github.com/raftwatch/raftwatch/server"
)

// startNode serves a one-node cluster in this process (roles not enforced)
// and returns its client address once it takes writes.
func startNode(t *testing.T) string {
	t.Helper()
	var addrs []string
	for range 2 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, l.Addr().String())
		l.Close()
	}
	cfg := node.DefaultConfig()
	cfg.ID, cfg.DataDir, cfg.RaftAddr, cfg.ClientAddr = "n1", t.TempDir(), addrs[0], addrs[1]
	cfg.InitialCluster = map[string]string{"n1": addrs[0]}
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	lis, err := net.Listen("tcp", cfg.ClientAddr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := node.Open(cfg)
	if err != nil {
		lis.Close()
		t.Fatal(err)
	}
	g := server.New(n, cfg.Logger).NewGRPCServer()
	go g.Serve(lis)
	t.Cleanup(func() { g.Stop(); n.Close() })
	c, err := client.New(client.Config{Endpoints: []string{cfg.ClientAddr}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.Put(ctx, []byte("/ready"), []byte("1"))
		cancel()
		if err == nil {
			return cfg.ClientAddr
		}
		if time.Now().After(deadline) {
			t.Fatalf("the node takes no writes: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // polling with a deadline
	}
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
	ep := "--endpoints=" + startNode(t)
	run := func(args ...string) string {
		t.Helper()
		out, err := runCLI(t, append(args, ep)...)
		if err != nil {
			t.Fatalf("raftwatch %s: %v", strings.Join(args, " "), err)
		}
		return out
	}
	refused := func(code codes.Code, args ...string) {
		t.Helper()
		_, err := runCLI(t, append(args, ep)...)
		if status.Code(err) != code {
			t.Fatalf("raftwatch %s: %v, want %v", strings.Join(args, " "), err, code)
		}
	}
	if out := run("role", "add", "app"); !strings.HasPrefix(out, "OK (revision ") {
		t.Fatalf("role add printed %q", out)
	}
	run("role", "grant", "app", "/app/", "readwrite")
	run("role", "grant", "app", "/cfg/", "read")
	if _, err := runCLI(t, "role", "grant", "app", "/x/", "write", ep); err == nil || !strings.Contains(err.Error(), "use read or readwrite") {
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
	if out := run("user", "whoami"); !strings.Contains(out, "identity=(no client certificate)") || !strings.Contains(out, "enforced=false") {
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
