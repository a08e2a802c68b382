package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A node started with --log-store wal keeps its raft log in wal/ and counts
// it in raft_db_bytes; started again on that data dir with the other store
// (--log-store boltdb) it refuses, names the store to use, and creates
// nothing; started without --log-store it keeps the wal. A new data dir
// started without --log-store gets the default, boltdb (raft.db).
func TestServeKeepsTheDataDirsLogStore(t *testing.T) {
	addrs := freePorts(t, 2)
	raftAddr, clientAddr := addrs[0], addrs[1]
	dataDir := filepath.Join(t.TempDir(), "n1")
	args := []string{"--id", "n1", "--data-dir", dataDir, "--raft-addr", raftAddr, "--client-addr", clientAddr,
		"--initial-cluster", "n1=" + raftAddr}

	stop := runServe(t, binary, cleanEnv(), clientAddr, "n1", append(args, "--log-store", "wal")...)
	st, err := nodeStatus(clientAddr)
	stop()
	if err != nil {
		t.Fatal(err)
	}
	// wal-meta.db and a preallocated 64 MiB segment.
	if st.RaftDbBytes < 64<<20 {
		t.Errorf("raft_db_bytes %d on a new wal data dir, want the wal directory's files (at least one 64 MiB segment)", st.RaftDbBytes)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "wal")); err != nil {
		t.Fatalf("no wal directory: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, append([]string{"serve", "--log-store", "boltdb"}, args...)...)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); err == nil || code != 1 {
		t.Fatalf("serve --log-store boltdb on a wal data dir: exit code %d (%v), want 1:\n%s", code, err, out)
	}
	for _, want := range []string{"holds a wal raft log", "--log-store is boltdb", "start this node with --log-store wal"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("refusal does not say %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(filepath.Join(dataDir, "raft.db")); !os.IsNotExist(err) {
		t.Errorf("the refused start created raft.db (%v)", err)
	}

	stop = runServe(t, binary, cleanEnv(), clientAddr, "n1", args...)
	_, err = nodeStatus(clientAddr)
	stop()
	if err != nil {
		t.Fatalf("a wal data dir started without --log-store: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "raft.db")); !os.IsNotExist(err) {
		t.Errorf("a wal data dir started without --log-store got raft.db (%v)", err)
	}

	boltDir := filepath.Join(t.TempDir(), "n1")
	boltArgs := []string{"--id", "n1", "--data-dir", boltDir, "--raft-addr", raftAddr, "--client-addr", clientAddr,
		"--initial-cluster", "n1=" + raftAddr}
	stop = runServe(t, binary, cleanEnv(), clientAddr, "n1", boltArgs...)
	_, err = nodeStatus(clientAddr)
	stop()
	if err != nil {
		t.Fatalf("a new data dir started without --log-store: %v", err)
	}
	if _, err := os.Stat(filepath.Join(boltDir, "raft.db")); err != nil {
		t.Errorf("a new data dir started without --log-store has no raft.db (boltdb, the default): %v", err)
	}
	if _, err := os.Stat(filepath.Join(boltDir, "wal")); !os.IsNotExist(err) {
		t.Errorf("a new data dir started without --log-store got a wal directory (%v)", err)
	}
}
