package e2e

import (
	"bufio"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The CLI is the same binary the nodes run; these tests drive it the way a
// person would, against three real nodes.

// cli runs the raftwatch binary with args and returns stdout, stderr and
// the exit code.
func cli(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return cliIn(t, nil, args...)
}

// cliEvent is one line of watch --json; key, value and prev_value are
// base64 ([]byte fields decode it).
type cliEvent struct {
	Type      string  `json:"type"`
	Key       []byte  `json:"key"`
	Value     []byte  `json:"value"`
	PrevValue *[]byte `json:"prev_value"`
	Revision  uint64  `json:"revision"`
	Reason    string  `json:"reason"`
}

func TestCLIPutThroughFollowerAndWatchOnAnother(t *testing.T) {
	c := startCluster(t)
	fs := c.followers()
	if len(fs) < 2 {
		t.Fatal("want two followers")
	}
	// Start the watcher first on one follower; read its JSON lines.
	watch := exec.Command(binary, "watch", "--prefix", "/config/", "--prev-kv", "--json", "--endpoints", fs[1].clientAddr)
	stdout, err := watch.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { watch.Process.Kill(); watch.Wait() }()
	events := make(chan cliEvent, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var ev cliEvent
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				events <- ev
			}
		}
		close(events)
	}()
	next := func(skipProgress bool) cliEvent {
		t.Helper()
		for {
			select {
			case ev, ok := <-events:
				if !ok {
					t.Fatal("watch output ended")
				}
				if skipProgress && ev.Type == "PROGRESS" {
					continue
				}
				return ev
			case <-time.After(10 * time.Second):
				t.Fatal("no watch output within 10 s")
			}
		}
	}
	if ev := next(true); ev.Type != "CREATED" {
		t.Fatalf("first line %+v, want CREATED", ev)
	}

	// Flags after the positional arguments; the endpoint is a follower.
	out, errOut, code := cli(t, "put", "/config/db/host", "a", "--endpoints", fs[0].clientAddr, "--json")
	if code != 0 {
		t.Fatalf("put via follower exited %d: %s", code, errOut)
	}
	var put struct {
		Revision  uint64 `json:"revision"`
		Succeeded bool   `json:"succeeded"`
	}
	if err := json.Unmarshal([]byte(out), &put); err != nil || !put.Succeeded {
		t.Fatalf("put output %q: %v", out, err)
	}
	ev := next(true)
	if ev.Type != "PUT" || string(ev.Key) != "/config/db/host" || string(ev.Value) != "a" || ev.Revision != put.Revision ||
		ev.PrevValue == nil || len(*ev.PrevValue) != 0 {
		t.Fatalf("watch printed %+v, want PUT a at %d with empty prev_value", ev, put.Revision)
	}

	out, errOut, code = cli(t, "del", "/config/db/host", "--endpoints", fs[0].clientAddr, "--json")
	if code != 0 {
		t.Fatalf("del exited %d: %s", code, errOut)
	}
	var del struct {
		Revision uint64 `json:"revision"`
		Deleted  bool   `json:"deleted"`
	}
	if err := json.Unmarshal([]byte(out), &del); err != nil || !del.Deleted {
		t.Fatalf("del output %q: %v", out, err)
	}
	ev = next(true)
	if ev.Type != "DELETE" || ev.Revision != del.Revision || del.Revision <= put.Revision || ev.PrevValue == nil || string(*ev.PrevValue) != "a" {
		t.Fatalf("watch printed %+v, want DELETE at %d with prev_value a", ev, del.Revision)
	}

	// A prefix without slashes fails with a clear message and a non-zero exit.
	_, errOut, code = cli(t, "watch", "--prefix", "config", "--endpoints", fs[1].clientAddr)
	if code == 0 || !strings.Contains(errOut, `invalid prefix "config"`) || !strings.Contains(errOut, `try "/config/"`) {
		t.Fatalf("watch --prefix config: exit %d, stderr %q", code, errOut)
	}
	// get of the deleted key says so and exits 1.
	_, errOut, code = cli(t, "get", "/config/db/host", "--endpoints", fs[0].clientAddr)
	if code != 1 || !strings.Contains(errOut, "key not found") {
		t.Fatalf("get of a deleted key: exit %d, stderr %q", code, errOut)
	}
}

// A watch whose only node shuts down (CANCELED "shutdown") does not end: it
// resumes when the node is back and prints what happened meanwhile, from
// history, exactly once.
func TestCLIWatchResumesWhenItsOnlyNodeRestarts(t *testing.T) {
	c := startCluster(t)
	f := c.followers()[0]
	events, _ := cliWatch(t, "/k", "--endpoints", f.clientAddr)
	eventually(t, 10*time.Second, "the watch to register", func() bool {
		st, err := c.status(f)
		return err == nil && st.Watchers == 1
	})
	cl := c.client(c.waitLeader().clientAddr)
	r1, err := cl.Put(ctxT(t, 10*time.Second), []byte("/k"), []byte("before"))
	if err != nil {
		t.Fatal(err)
	}
	if ev := nextCLIData(t, events, 10*time.Second); ev.Revision != r1.Revision {
		t.Fatalf("got %+v, want the put at %d", ev, r1.Revision)
	}
	if err := c.stop(f); err != nil { // the node cancels every watcher with "shutdown"
		t.Fatal(err)
	}
	r2, err := cl.Put(ctxT(t, 10*time.Second), []byte("/k"), []byte("while down"))
	if err != nil {
		t.Fatal(err)
	}
	c.start(f)
	ev := nextCLIData(t, events, 20*time.Second)
	if ev.Type != "PUT" || ev.Revision != r2.Revision || string(ev.Value) != "while down" {
		t.Fatalf("after the restart got %+v, want the put made while the node was down (revision %d)", ev, r2.Revision)
	}
	r3, err := cl.Put(ctxT(t, 10*time.Second), []byte("/k"), []byte("after"))
	if err != nil {
		t.Fatal(err)
	}
	if ev := nextCLIData(t, events, 10*time.Second); ev.Revision != r3.Revision {
		t.Fatalf("got %+v, want the put at %d and nothing twice", ev, r3.Revision)
	}
}

func TestMembershipChange(t *testing.T) {
	c := startCluster(t)
	// A fourth node with no --initial-cluster waits to be added.
	ports := freePorts(t, 2)
	p := &proc{id: "n4", raftAddr: ports[0], clientAddr: ports[1]}
	p.dataDir = t.TempDir() + "/n4"
	p.logPath = p.dataDir + ".log"
	saved := c.initial
	c.initial = ""
	c.start(p)
	c.initial = saved
	c.nodes = append(c.nodes, p)

	out, errOut, code := cli(t, "member", "add", "n4", p.raftAddr, p.clientAddr, "--json", "--endpoints", strings.Join(c.endpoints()[:3], ","))
	var added struct{ Index uint64 }
	if code != 0 || json.Unmarshal([]byte(out), &added) != nil || added.Index == 0 {
		t.Fatalf("member add --json exited %d: %q %s", code, out, errOut)
	}
	out, _, code = cli(t, "members", "--json", "--endpoints", p.clientAddr)
	if code != 0 || strings.Count(out, `"voter":true`) != 4 || !strings.Contains(out, p.clientAddr) {
		t.Fatalf("members after add: %s", out)
	}
	// The new member receives writes.
	if _, errOut, code := cli(t, "put", "/after-add", "1", "--endpoints", c.endpoints()[0]); code != 0 {
		t.Fatalf("put: %s", errOut)
	}
	eventually(t, 10*time.Second, "n4 to apply the put", func() bool {
		out, _, code := cli(t, "get", "/after-add", "--serializable", "--endpoints", p.clientAddr)
		return code == 0 && strings.TrimSpace(out) == "1"
	})
	out, errOut, code = cli(t, "member", "remove", "n4", "--json", "--endpoints", c.endpoints()[0])
	var removed struct{ Index uint64 }
	if code != 0 || json.Unmarshal([]byte(out), &removed) != nil || removed.Index <= added.Index {
		t.Fatalf("member remove --json exited %d: %q %s", code, out, errOut)
	}
	out, _, _ = cli(t, "members", "--json", "--endpoints", c.endpoints()[0])
	if strings.Contains(out, `"id":"n4"`) {
		t.Fatalf("n4 still a member: %s", out)
	}
}
