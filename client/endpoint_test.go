package client

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestNormalizeEndpointForms pins every form an endpoint may take, and the
// refusal of each malformed one: the error quotes the input and says which
// forms are wanted.
func TestNormalizeEndpointForms(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"127.0.0.1:7101", "127.0.0.1:7101"},
		{"localhost:1", "localhost:1"},
		{"node-3.example.com:65535", "node-3.example.com:65535"},
		{"\t127.0.0.1:7101\n", "127.0.0.1:7101"},
		{"http://127.0.0.1:7101", "127.0.0.1:7101"},
		{"http://127.0.0.1:7101/", "127.0.0.1:7101"},
		{"https://127.0.0.1:7101", "127.0.0.1:7101"},
		{"HTTPS://h:1/", "h:1"},
		{"Http://h:1", "h:1"},
		{"[::1]:7101", "[::1]:7101"},
		{"http://[::1]:7101/", "[::1]:7101"},
		{"127.0.0.1:07101", "127.0.0.1:07101"}, // leading zeros: the same port to net.Dial
	} {
		if got, err := NormalizeEndpoint(tc.in); err != nil || got != tc.want {
			t.Errorf("NormalizeEndpoint(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}

	const want = "want host:port, http://host:port or https://host:port"
	for _, tc := range []struct{ in, errHas string }{
		{"", want},
		{"   ", want},
		{"http://", want},
		{"https:///", want},
		{"127.0.0.1", want},
		{"127.0.0.1:", want},
		{"127.0.0.1:0", want},
		{"127.0.0.1:65536", want},
		{"127.0.0.1:-1", want},
		{"127.0.0.1:http", want},
		{"127.0.0.1:71 01", want},
		{"::1:7101", want}, // IPv6 without brackets
		{"[::1]", want},
		{"h:1:2", want},
		{"http://h:1//", want},
		{"http://h:1?x=1", want},
		{"http://h:1/v3", want},
		{"grpc://h:1", `scheme "grpc" is not supported`},
		{"dns:///h:1", `scheme "dns" is not supported`},
		{"unix:///tmp/raftwatch.sock", `scheme "unix" is not supported`},
		{"://h:1", `scheme "" is not supported`},
	} {
		got, err := NormalizeEndpoint(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.errHas) || !strings.Contains(err.Error(), `"`+tc.in+`"`) {
			t.Errorf("NormalizeEndpoint(%q) = %q, %v; want an error quoting the input and containing %q", tc.in, got, err, tc.errHas)
		}
	}
}

// New normalizes every endpoint, keeps their order, refuses a list with a
// bad one (naming it) or none at all, and hands out copies. (https://
// stays out of the tests that connect: with TLS it will mean more than a
// spelling.)
func TestNewNormalizesTheEndpoints(t *testing.T) {
	c, err := New(Config{Endpoints: []string{"http://a:1/", " http://b:2", "HTTP://[::1]:3"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := c.Endpoints()
	if strings.Join(got, ",") != "a:1,b:2,[::1]:3" {
		t.Fatalf("Endpoints() = %q, want [a:1 b:2 [::1]:3]", got)
	}
	got[0] = "changed:1"
	if c.Endpoints()[0] != "a:1" {
		t.Fatalf("changing the returned slice changed the client's endpoints")
	}

	if _, err := New(Config{Endpoints: []string{"a:1", "b"}}); err == nil || !strings.HasPrefix(err.Error(), `client: endpoint "b": `) {
		t.Fatalf("New with a bad endpoint: %v, want an error naming it", err)
	}
	if _, err := New(Config{}); err == nil || !strings.Contains(err.Error(), "at least one endpoint") {
		t.Fatalf("New without endpoints: %v, want an error asking for one", err)
	}
}

// An endpoint given as a URL reaches the node at its host:port, for
// requests and for Status; Status refuses a malformed endpoint before
// dialing anything.
func TestURLEndpointsReachTheNode(t *testing.T) {
	n := startCanned(t, nil)
	c := clientOf(t, Config{Endpoints: []string{"http://" + n.addr + "/"}})
	if err := putOnce(t, c, 5*time.Second); err != nil || n.puts.Load() != 1 {
		t.Fatalf("put through http://%s/: %v, node received %d puts; want 1", n.addr, err, n.puts.Load())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Status(ctx, " http://"+n.addr); err != nil {
		t.Fatalf("Status of http://%s: %v", n.addr, err)
	}
	if _, err := c.Status(ctx, "grpc://"+n.addr); err == nil || !strings.Contains(err.Error(), `scheme "grpc" is not supported`) {
		t.Fatalf("Status of a grpc:// endpoint: %v, want the scheme refused", err)
	}
	c.mu.Lock()
	conns := len(c.conns)
	c.mu.Unlock()
	if conns != 1 {
		t.Fatalf("the client holds %d connections, want 1: the URL forms of one endpoint share its connection", conns)
	}
}
