package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/raftwatch/raftwatch/node"
)

// TestCLIListsMaxSizeValuesIntact: raftwatch list --json prints a prefix
// holding more than one message's worth (three 1 MiB values, the largest
// a node takes) whole, every byte intact, and nothing outside the prefix.
func TestCLIListsMaxSizeValuesIntact(t *testing.T) {
	c := startCluster(t)
	cl := c.client()
	want := map[string][]byte{"/big/small": []byte("s"), "/bigger": []byte("not under /big/")}
	for i, b := range []byte("abc") {
		v := bytes.Repeat([]byte{b}, node.DefaultMaxValueSize)
		v[0], v[len(v)-1] = byte(i), byte(i) // ends that tell the values apart
		want[fmt.Sprintf("/big/%d", i)] = v
	}
	for k, v := range want {
		if _, err := cl.Put(ctxT(t, 10*time.Second), []byte(k), v); err != nil {
			t.Fatalf("put %s: %v", k, err)
		}
	}
	delete(want, "/bigger")

	out, errOut, code := cliIn(t, nil, "list", "/big/", "--json", "--endpoints", strings.Join(c.endpoints(), ","))
	if code != 0 {
		t.Fatalf("raftwatch list exited %d: %s", code, errOut)
	}
	var res struct {
		Kvs []struct{ Key, Value []byte } // base64 in the JSON
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("raftwatch list --json: %v", err)
	}
	got := map[string][]byte{}
	for _, kv := range res.Kvs {
		got[string(kv.Key)] = kv.Value
	}
	if !slices.Equal(slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want))) {
		t.Fatalf("raftwatch list: keys %q, want %q", slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
	}
	for k, v := range want {
		if !bytes.Equal(got[k], v) {
			t.Fatalf("raftwatch list: value of %s: %d bytes, differs from the %d put", k, len(got[k]), len(v))
		}
	}
}

// TestCLIPrintsTheKeyRule: put, get and del of a key without a leading
// '/', and list of a prefix without one, exit 1 with the node's message
// and code, and write nothing.
func TestCLIPrintsTheKeyRule(t *testing.T) {
	c := startCluster(t)
	eps := strings.Join(c.endpoints(), ",")
	for _, args := range [][]string{{"put", "probe", "v"}, {"get", "probe"}, {"del", "probe"}} {
		_, errOut, code := cliIn(t, nil, append(args, "--endpoints", eps)...)
		want := `error: invalid key "probe": a key must start with '/' (try "/probe") (InvalidArgument)`
		if code != 1 || strings.TrimSpace(errOut) != want {
			t.Fatalf("raftwatch %v: exit %d, stderr %q, want 1 and %q", args, code, errOut, want)
		}
	}
	_, errOut, code := cliIn(t, nil, "list", "probe", "--endpoints", eps)
	want := `error: invalid prefix "probe": a prefix must start and end with '/' (try "/probe/") (InvalidArgument)`
	if code != 1 || strings.TrimSpace(errOut) != want {
		t.Fatalf("raftwatch list probe: exit %d, stderr %q, want 1 and %q", code, errOut, want)
	}
	if r, err := c.client().List(ctxT(t, 10*time.Second), []byte("/")); err != nil || len(r.Kvs) != 0 {
		t.Fatalf("after the refused writes, / holds %v (%v), want nothing", r.GetKvs(), err)
	}
}
