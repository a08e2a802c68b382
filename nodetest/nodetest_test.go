package nodetest_test

import (
	"context"
	"testing"
	"time"

	"github.com/raftwatch/raftwatch/client"
	"github.com/raftwatch/raftwatch/node"
	"github.com/raftwatch/raftwatch/nodetest"
	pb "github.com/raftwatch/raftwatch/proto"
)

func TestFreeAddrsAreDistinctLoopbackAddresses(t *testing.T) {
	addrs := nodetest.FreeAddrs(t, 4)
	seen := map[string]bool{}
	for _, a := range addrs {
		if seen[a] {
			t.Fatalf("%s handed out twice in %v", a, addrs)
		}
		seen[a] = true
	}
	if len(addrs) != 4 {
		t.Fatalf("FreeAddrs(4) = %v", addrs)
	}
}

// A started node has its tune applied, takes writes as soon as Start
// returns, and a collected watch sees them in order.
func TestStartServesATunedNodeWhoseWatchIsCollected(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) { c.HistoryMaxEvents = 8 })
	if n.Config.HistoryMaxEvents != 8 || n.Config.ClientAddr != n.ClientAddr || n.Config.RaftAddr != n.RaftAddr {
		t.Fatalf("config %+v does not match the node's addresses %s, %s or its tune", n.Config, n.ClientAddr, n.RaftAddr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := n.Client(t)
	w, err := c.Watch(ctx, []byte("/w/"), client.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	events := nodetest.Collect(w)
	for _, k := range []string{"/w/a", "/w/b"} {
		if _, err := c.Put(ctx, []byte(k), []byte("v")); err != nil {
			t.Fatalf("put %s right after Start: %v", k, err)
		}
	}
	for _, want := range []string{"/w/a", "/w/b"} {
		if ev := nodetest.NextData(t, events, 10*time.Second); ev.Type != pb.EventType_PUT || string(ev.Key) != want {
			t.Fatalf("event %v, want PUT %s", ev, want)
		}
	}
}
