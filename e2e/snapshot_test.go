package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/raftwatch/raftwatch/client"
)

// listedKV is what a List says of one key.
type listedKV struct {
	value                string
	create, mod, version uint64
	lease                int64
}

// listAll lists every key with opts (e.g. at a revision, serializable)
// and returns them with the revision the list was read at.
func listAll(t *testing.T, cl *client.Client, opts ...client.OpOption) (map[string]listedKV, uint64) {
	t.Helper()
	out := map[string]listedKV{}
	var at uint64
	for page, err := range cl.ListPages(ctxT(t, time.Minute), []byte("/"), opts...) {
		if err != nil {
			t.Fatalf("list /: %v", err)
		}
		at = page.Revision
		for _, kv := range page.Kvs {
			out[string(kv.Key)] = listedKV{string(kv.Value), kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease}
		}
	}
	return out, at
}

// sameKVs fails t naming the first differences between two listings.
func sameKVs(t *testing.T, what string, want, got map[string]listedKV) {
	t.Helper()
	var diffs []string
	for k, w := range want {
		if g, ok := got[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s missing (want %+v)", k, w))
		} else if g != w {
			diffs = append(diffs, fmt.Sprintf("%s: got %+v, want %+v", k, g, w))
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s unexpected (%+v)", k, g))
		}
	}
	if len(diffs) > 0 {
		if len(diffs) > 10 {
			diffs = append(diffs[:10], fmt.Sprintf("... %d differences in all", len(diffs)))
		}
		t.Fatalf("%s: %d keys wanted, %d found:\n%s", what, len(want), len(got), strings.Join(diffs, "\n"))
	}
}

// putMany puts keys concurrently, bounded in time by the client's timeout.
func putMany(t *testing.T, cl *client.Client, keys []string, value func(string) string) {
	t.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(keys) {
					return
				}
				if _, err := cl.Put(ctxT(t, 30*time.Second), []byte(keys[i]), []byte(value(keys[i]))); err != nil {
					errs <- fmt.Errorf("put %s: %w", keys[i], err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// restoredCluster seeds three new members (new ids, ports and data dirs)
// from file with the CLI and starts them. They run the other log store than
// the default the saved cluster ran (--log-store wal): a seeded data dir
// holds no raft log, so a backup restores into either store.
func restoredCluster(t *testing.T, file string) *testCluster {
	t.Helper()
	c := newTestCluster(t, binary, "r")
	c.extra = []string{"--log-store", "wal"}
	for _, p := range c.nodes {
		out, errOut, code := cli(t, "snapshot", "restore", file, "--id", p.id, "--data-dir", p.dataDir, "--initial-cluster", c.initial)
		if code != 0 {
			t.Fatalf("snapshot restore for %s: exit %d: %s%s", p.id, code, out, errOut)
		}
	}
	for _, p := range c.nodes {
		c.start(p)
	}
	c.waitLeader()
	c.waitAddressesRecorded()
	for _, p := range c.nodes {
		if _, err := os.Stat(filepath.Join(p.dataDir, "wal")); err != nil {
			t.Fatalf("restored %s keeps no raft log in wal/: %v", p.id, err)
		}
	}
	return c
}

var savedRE = regexp.MustCompile(`^saved (\S+): revision (\d+) \(term \d+, from \S+\), (\d+) bytes, sha256 ([0-9a-f]{64})\n$`)

// TestSnapshotRoundTripsIntoANewCluster saves a snapshot of a cluster
// holding 10,000 keys (some overwritten, some deleted, some on a lease),
// destroys the cluster, restores the file into a new three-node cluster on
// new ports and data dirs, and finds every key, value, revision, version
// and lease identical, history still readable at an old revision, and new
// writes above the snapshot's revision.
func TestSnapshotRoundTripsIntoANewCluster(t *testing.T) {
	c := startCluster(t)
	cl := c.client()

	var keys []string
	for i := 0; i < 10000; i++ {
		keys = append(keys, fmt.Sprintf("/snap/%05d", i))
	}
	putMany(t, cl, keys, func(k string) string { return "v1-" + k })
	_, mid := listAll(t, cl) // history: the state here is listed again after the restore
	putMany(t, cl, keys[:1000], func(k string) string { return "v2-" + k })
	for _, k := range keys[9900:] {
		if _, err := cl.Delete(ctxT(t, 10*time.Second), []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	lease := grantWithKey(t, cl, 3600, "/leased/a")
	if _, err := cl.Put(ctxT(t, 10*time.Second), []byte("/leased/b"), []byte("v"), client.WithLease(lease)); err != nil {
		t.Fatal(err)
	}
	atMid, _ := listAll(t, cl, client.WithRevision(mid))
	before, listedAt := listAll(t, cl)
	if len(before) != 9900+2 {
		t.Fatalf("before the snapshot: %d keys, want 9902", len(before))
	}

	file := filepath.Join(t.TempDir(), "backup.rwsnap")
	out, errOut, code := cli(t, "snapshot", "save", file, "--endpoints", c.waitLeader().clientAddr)
	m := savedRE.FindStringSubmatch(out)
	if code != 0 || m == nil {
		t.Fatalf("snapshot save: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	rev, _ := strconv.ParseUint(m[2], 10, 64)
	size, _ := strconv.ParseInt(m[3], 10, 64)
	if st, err := os.Stat(file); err != nil || st.Size() != size {
		t.Fatalf("snapshot file: %v, size %v, printed %d", err, st, size)
	}
	if _, err := os.Stat(file + ".part"); !os.IsNotExist(err) {
		t.Fatalf("%s.part left behind: %v", file, err)
	}
	if rev < listedAt {
		t.Fatalf("snapshot at revision %d, before the list at %d", rev, listedAt)
	}

	// Destroy the cluster: processes and data.
	for _, p := range c.nodes {
		c.kill(p)
		if err := os.RemoveAll(p.dataDir); err != nil {
			t.Fatal(err)
		}
	}

	r := restoredCluster(t, file)
	rcl := r.client()
	after, at := listAll(t, rcl)
	if at < rev {
		t.Fatalf("new cluster lists at revision %d, below the snapshot's %d", at, rev)
	}
	sameKVs(t, "keys after restore", before, after)
	midAfter, _ := listAll(t, rcl, client.WithRevision(mid))
	sameKVs(t, fmt.Sprintf("keys at revision %d (history) after restore", mid), atMid, midAfter)

	ttl, err := rcl.TimeToLive(ctxT(t, 10*time.Second), lease, true)
	if err != nil || ttl.Ttl <= 0 || len(ttl.Keys) != 2 {
		t.Fatalf("lease %x after restore: %v, %v", lease, ttl, err)
	}

	// Writes go on above the snapshot's revision, with versions continued.
	p, err := rcl.Put(ctxT(t, 10*time.Second), []byte("/snap/00000"), []byte("v3"))
	if err != nil || p.Revision <= rev {
		t.Fatalf("put after restore: %v, %v (snapshot revision %d)", p, err, rev)
	}
	g, err := rcl.Get(ctxT(t, 10*time.Second), []byte("/snap/00000"))
	if err != nil || g.Kv == nil || string(g.Kv.Value) != "v3" || g.Kv.Version != 3 ||
		g.Kv.CreateRevision != before["/snap/00000"].create || g.Kv.ModRevision != p.Revision {
		t.Fatalf("key after a put on the restored cluster: %v, %v", g, err)
	}
	n, err := rcl.Put(ctxT(t, 10*time.Second), []byte("/new"), []byte("x"))
	if err != nil || n.Revision <= p.Revision {
		t.Fatalf("new key after restore: %v, %v", n, err)
	}
	// Every member serves the same state (each was seeded from the file).
	for _, q := range r.nodes {
		one := r.client(q.clientAddr)
		eventually(t, 10*time.Second, q.id+" applied the new key", func() bool {
			g, err := one.Get(ctxT(t, 5*time.Second), []byte("/new"), client.WithSerializable())
			return err == nil && g.Kv != nil
		})
		got, _ := listAll(t, one, client.WithSerializable())
		delete(got, "/new")
		want := map[string]listedKV{}
		for k, v := range before {
			want[k] = v
		}
		want["/snap/00000"] = listedKV{"v3", before["/snap/00000"].create, p.Revision, 3, 0}
		sameKVs(t, "keys on "+q.id, want, got)
	}
}

// TestDamagedSnapshotFileIsRefused saves a snapshot, then damages copies of
// it (a flipped byte in the data, in the header, in the checksum; cut
// short; extended) and finds restore refusing each with an error naming
// what failed, and creating nothing.
func TestDamagedSnapshotFileIsRefused(t *testing.T) {
	c := startCluster(t)
	cl := c.client()
	putMany(t, cl, []string{"/a", "/b", "/c"}, func(k string) string { return "value of " + k })
	dir := t.TempDir()
	file := filepath.Join(dir, "good.rwsnap")
	if out, errOut, code := cli(t, "snapshot", "save", file, "--endpoints", c.endpoints()[0]); code != 0 {
		t.Fatalf("snapshot save: exit %d: %s%s", code, out, errOut)
	}
	good, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(at int) []byte {
		b := append([]byte(nil), good...)
		b[at] ^= 0x40
		return b
	}
	cases := []struct {
		name, want string
		data       []byte
	}{
		{"data byte flipped", "checksum mismatch", flip(len(good) / 2)},
		{"revision in header flipped", "checksum mismatch", flip(10)},
		{"size in header flipped", "announces", flip(31)},
		{"magic flipped", "not a raftwatch snapshot file", flip(0)},
		{"checksum flipped", "checksum mismatch", flip(len(good) - 1)},
		{"truncated by one byte", "truncated", good[:len(good)-1]},
		{"truncated to half", "truncated", good[:len(good)/2]},
		{"truncated to a few bytes", "truncated", good[:20]},
		{"extended", "extended", append(append([]byte(nil), good...), 0)},
	}
	for _, tc := range cases {
		bad := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".rwsnap")
		if err := os.WriteFile(bad, tc.data, 0o600); err != nil {
			t.Fatal(err)
		}
		parent := filepath.Join(t.TempDir(), "restore")
		if err := os.Mkdir(parent, 0o700); err != nil {
			t.Fatal(err)
		}
		dataDir := filepath.Join(parent, "n1")
		out, errOut, code := cli(t, "snapshot", "restore", bad, "--id", "n1", "--data-dir", dataDir,
			"--initial-cluster", "n1=127.0.0.1:1,n2=127.0.0.1:2,n3=127.0.0.1:3")
		if code == 0 || !strings.Contains(errOut, tc.want) || !strings.Contains(errOut, "nothing was restored") {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want a failure saying %q", tc.name, code, out, errOut, tc.want)
		}
		if entries, err := os.ReadDir(parent); err != nil || len(entries) != 0 {
			t.Errorf("%s: restore left %v behind (%v)", tc.name, entries, err)
		}
	}

	// The intact file restores; a second restore into the same, now
	// non-empty, directory is refused.
	dataDir := filepath.Join(t.TempDir(), "n1")
	args := []string{"snapshot", "restore", file, "--id", "n1", "--data-dir", dataDir,
		"--initial-cluster", "n1=127.0.0.1:1,n2=127.0.0.1:2,n3=127.0.0.1:3"}
	if out, errOut, code := cli(t, args...); code != 0 || !strings.Contains(out, "restored") {
		t.Fatalf("restore of the intact file: exit %d: %s%s", code, out, errOut)
	}
	if _, errOut, code := cli(t, args...); code == 0 || !strings.Contains(errOut, "not empty") {
		t.Fatalf("restore into a non-empty data dir: exit %d, stderr %q", code, errOut)
	}
	// An id missing from --initial-cluster is refused.
	if _, errOut, code := cli(t, "snapshot", "restore", file, "--id", "n9", "--data-dir", filepath.Join(t.TempDir(), "x"),
		"--initial-cluster", "n1=127.0.0.1:1"); code == 0 || !strings.Contains(errOut, `"n9"`) {
		t.Fatalf("restore with an id outside the cluster: exit %d, stderr %q", code, errOut)
	}
}
