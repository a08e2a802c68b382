package client

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestNormalizeEndpoint(t *testing.T) {
	cases := []struct {
		in, want, errHas string
	}{
		{in: "127.0.0.1:7101", want: "127.0.0.1:7101"},
		{in: " 127.0.0.1:7101 ", want: "127.0.0.1:7101"},
		{in: "http://127.0.0.1:7101", want: "127.0.0.1:7101"},
		{in: "https://node1.example:7101/", want: "node1.example:7101"},
		{in: "HTTP://[::1]:7101", want: "[::1]:7101"},
		{in: "unix:///tmp/sock", errHas: `scheme "unix" is not supported`},
		{in: "127.0.0.1", errHas: "want host:port"},
		{in: ":7101", errHas: "want host:port"},
		{in: "http://127.0.0.1:7101/v3", errHas: "want host:port"},
		{in: "127.0.0.1:99999", errHas: "want host:port"},
	}
	for _, tc := range cases {
		got, err := NormalizeEndpoint(tc.in)
		switch {
		case tc.errHas != "" && (err == nil || !strings.Contains(err.Error(), tc.errHas)):
			t.Errorf("NormalizeEndpoint(%q) = %q, %v; want an error containing %q", tc.in, got, err, tc.errHas)
		case tc.errHas == "" && (err != nil || got != tc.want):
			t.Errorf("NormalizeEndpoint(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// hungEndpoint accepts TCP connections (the kernel does, into the backlog)
// but never speaks HTTP/2: like a stopped or wedged node.
func hungEndpoint(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.Addr().String()
}

// refusedEndpoint is an address nothing listens on.
func refusedEndpoint(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestUnreachableEndpointsFailWithinTheDialTimeout(t *testing.T) {
	const dial = 300 * time.Millisecond
	hung, refused := hungEndpoint(t), refusedEndpoint(t)
	c, err := New(Config{Endpoints: []string{"http://" + hung, refused}, DialTimeout: dial, RetryTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, op := range []struct {
		name string
		call func(context.Context) error
	}{
		{"put (on the leader)", func(ctx context.Context) error { _, err := c.Put(ctx, []byte("/k"), []byte("v")); return err }},
		{"serializable get (on any node)", func(ctx context.Context) error {
			_, err := c.Get(ctx, []byte("/k"), WithSerializable())
			return err
		}},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		start := time.Now()
		err := op.call(ctx)
		cancel()
		took := time.Since(start)
		var ue *UnreachableError
		if !errors.As(err, &ue) || len(ue.Tried) != 2 {
			t.Fatalf("%s: %v, want an UnreachableError naming both endpoints", op.name, err)
		}
		msg := err.Error()
		if !strings.Contains(msg, hung+": no connection within the dial timeout") || !strings.Contains(msg, refused+": ") {
			t.Errorf("%s: error %q does not say why each endpoint failed", op.name, msg)
		}
		if status.Code(err) != codes.Unavailable || !NotApplied(err) {
			t.Errorf("%s: code %v, NotApplied %v; want UNAVAILABLE and not applied", op.name, status.Code(err), NotApplied(err))
		}
		// One dial timeout for the hung endpoint; the refused one fails at once.
		if took > 4*dial {
			t.Errorf("%s took %v with a dial timeout of %v", op.name, took, dial)
		}
	}
}
