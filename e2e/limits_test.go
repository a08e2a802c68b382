package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftwatch/raftwatch/client"
)

// TestLargeValueLimitIsTheConfiguredOne: nodes started with
// --max-value-size 4 MiB accept and serve a 3 MiB value end to end, through
// the CLI (stdin) and the Go client, on the leader and on a follower; a
// value over the configured size is still refused with INVALID_ARGUMENT.
// The gRPC message limits follow the flag, not a constant.
func TestLargeValueLimitIsTheConfiguredOne(t *testing.T) {
	const maxValue = 4 << 20
	c := startCluster(t, "--max-value-size", strconv.Itoa(maxValue))
	c.waitLeader()
	eps := strings.Join(c.endpoints(), ",")
	rng := rand.New(rand.NewPCG(10, 3))
	value := randomBytes(rng, 3<<20)

	// CLI: put from stdin, get --json through every node.
	if _, e, code := cliIn(t, value, "put", "/big/cli", "--endpoints", eps); code != 0 {
		t.Fatalf("put a 3 MiB value through the CLI: exit %d %s", code, e)
	}
	for _, p := range c.nodes {
		eventually(t, 10*time.Second, "get --serializable on "+p.id+" returns the value", func() bool {
			o, e, code := cli(t, "get", "/big/cli", "--json", "--serializable", "--endpoints", p.clientAddr)
			var got struct{ Kv struct{ Value []byte } }
			if code != 0 || json.Unmarshal([]byte(o), &got) != nil {
				t.Logf("get on %s: exit %d %s", p.id, code, e)
				return false
			}
			return bytes.Equal(got.Kv.Value, value)
		})
	}

	// Go client: put, linearizable and serializable get, list.
	cl := c.client()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cl.Put(ctx, []byte("/big/go"), value); err != nil {
		t.Fatalf("put a 3 MiB value through the Go client: %v", err)
	}
	r, err := cl.Get(ctx, []byte("/big/go"))
	if err != nil || r.Kv == nil || !bytes.Equal(r.Kv.Value, value) {
		t.Fatalf("get through the Go client: %v", err)
	}
	for _, p := range c.followers() {
		eventually(t, 10*time.Second, "the follower serves the value", func() bool {
			r, err := c.client(p.clientAddr).Get(ctx, []byte("/big/go"), client.WithSerializable())
			return err == nil && r.Kv != nil && bytes.Equal(r.Kv.Value, value)
		})
	}
	l, err := cl.List(ctx, []byte("/big/"))
	if err != nil || len(l.Kvs) != 2 || !bytes.Equal(l.Kvs[0].Value, value) || !bytes.Equal(l.Kvs[1].Value, value) {
		t.Fatalf("list of two 3 MiB values: %v", err)
	}

	// Over the configured size: the node's clear refusal, nothing written.
	_, err = cl.Put(ctx, []byte("/big/over"), make([]byte, maxValue+1))
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "limit of 4194304 bytes") {
		t.Fatalf("put over --max-value-size: %v, want INVALID_ARGUMENT naming the limit", err)
	}
	if r, err := cl.Get(ctx, []byte("/big/over")); err != nil || r.Kv != nil {
		t.Fatalf("the refused put left %v (err %v)", r.GetKv(), err)
	}
}
