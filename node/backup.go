package node

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"

	"github.com/hashicorp/raft"

	"github.com/raftwatch/raftwatch/fsm"
)

// BackupInfo describes a consistent copy of the state machine.
type BackupInfo struct {
	Index uint64 // the revision (applied index) the copy is at
	Term  uint64 // this node's raft term when the copy was taken
	Size  int64  // bytes of database that follow
}

// Backup writes a consistent copy of this node's state machine (its bbolt
// database at its applied index, see fsm.Backup) to w, calling begin with
// the copy's description before the first byte. Any node serves it; a
// follower's copy may be a little behind the leader's.
func (n *Node) Backup(w io.Writer, begin func(BackupInfo) error) error {
	if err := n.Serving(); err != nil {
		return err
	}
	if err := n.readable(); err != nil {
		return err
	}
	term := n.raft.CurrentTerm()
	err := n.fsm.Backup(w, func(index uint64, size int64) error {
		return begin(BackupInfo{Index: index, Term: term, Size: size})
	})
	if rerr := n.readable(); rerr != nil {
		return rerr // the copy found damage: DATA_LOSS, read from another node
	}
	return err
}

// seedTerm is the raft term of the snapshot a seeded data directory starts
// from. A new cluster's first election is in term 1, so every entry it
// appends after the snapshot has a term at least the snapshot's: raft's
// "log at least as up to date" comparison keeps working. The source term
// (recorded in the file) would put the snapshot above the new terms.
const seedTerm = 1

// SeedConfig names the member whose data directory Seed creates.
type SeedConfig struct {
	DataDir string
	ID      string
	// InitialCluster is id -> raft address of every member of the new
	// cluster; every member is seeded from the same backup with the same
	// InitialCluster.
	InitialCluster map[string]string
	Logger         *slog.Logger
}

// Seed creates cfg.DataDir, which must not exist or be empty, for member
// cfg.ID of a new cluster whose state is db: a state machine database at
// revision index (the body of a backup). Nothing is left behind on error.
//
// The directory holds a raft snapshot at index (term seedTerm) whose
// configuration is cfg.InitialCluster, and nothing else. At start, raft
// takes its configuration and last index from that snapshot, so the next
// entry, and the next revision, is index+1; the node, finding its state
// machine behind the newest snapshot, restores it from the snapshot (see
// restoreNewerSnapshot). This is what raft.RecoverCluster leaves behind
// (a snapshot carrying the new configuration), without needing an old log.
func Seed(cfg SeedConfig, db io.Reader, index uint64) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	conf, err := seedConfiguration(cfg)
	if err != nil {
		return err
	}
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return fmt.Errorf("data directory %q: %w", cfg.DataDir, err)
	}
	if err := checkEmptyDir(dataDir); err != nil {
		return err
	}
	parent := filepath.Dir(dataDir)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", parent, err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dataDir)+".seed-")
	if err != nil {
		return fmt.Errorf("create a directory to seed in: %w", err)
	}
	if err := seedIn(tmp, conf, db, index, log); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	// An existing empty directory is replaced (checked empty above).
	if err := os.Remove(dataDir); err != nil && !errors.Is(err, os.ErrNotExist) {
		os.RemoveAll(tmp)
		return fmt.Errorf("replace empty data directory %s: %w", dataDir, err)
	}
	if err := os.Rename(tmp, dataDir); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("move seeded data directory into place: %w", err)
	}
	syncDir(parent)
	return nil
}

func seedConfiguration(cfg SeedConfig) (raft.Configuration, error) {
	if cfg.ID == "" || cfg.DataDir == "" {
		return raft.Configuration{}, invalid("an id and a data directory are required")
	}
	if _, ok := cfg.InitialCluster[cfg.ID]; !ok {
		return raft.Configuration{}, invalid("the initial cluster does not contain this member's id %q", cfg.ID)
	}
	var conf raft.Configuration
	for id, addr := range cfg.InitialCluster {
		conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(id), Address: raft.ServerAddress(addr)})
	}
	sort.Slice(conf.Servers, func(i, j int) bool { return conf.Servers[i].ID < conf.Servers[j].ID })
	return conf, nil
}

// checkEmptyDir refuses a data directory that exists with anything in it:
// seeding never mixes a backup with another cluster's state.
func checkEmptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("data directory %s: %w", dir, err)
	case len(entries) > 0:
		return invalid("data directory %s is not empty: restore only into a new or empty directory", dir)
	}
	return nil
}

// seedIn writes db to dir, checks it, and makes it dir's raft snapshot.
func seedIn(dir string, conf raft.Configuration, db io.Reader, index uint64, log *slog.Logger) error {
	dbPath := filepath.Join(dir, "seed.db")
	if err := writeSynced(dbPath, db); err != nil {
		return fmt.Errorf("write the backup's database: %w", err)
	}
	got, err := fsm.CheckFile(dbPath)
	if err != nil {
		return fmt.Errorf("the backup's database: %w", err)
	}
	if got != index {
		return fmt.Errorf("the backup's database is at revision %d, but its header says %d", got, index)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, newRaftLogger(log))
	if err != nil {
		return fmt.Errorf("open snapshot store: %w", err)
	}
	sink, err := snaps.Create(raft.SnapshotVersionMax, index, seedTerm, conf, index, peerEncoder{})
	if err != nil {
		return fmt.Errorf("create raft snapshot: %w", err)
	}
	f, err := os.Open(dbPath)
	if err != nil {
		sink.Cancel()
		return err
	}
	_, err = io.Copy(sink, f)
	f.Close()
	if err != nil {
		sink.Cancel()
		return fmt.Errorf("write raft snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("write raft snapshot: %w", err)
	}
	return os.Remove(dbPath)
}

// peerEncoder encodes the snapshot's legacy peer list the way raft's TCP
// transport does; Create needs it, and no transport exists while seeding.
type peerEncoder struct{ raft.Transport }

func (peerEncoder) EncodePeer(_ raft.ServerID, addr raft.ServerAddress) []byte { return []byte(addr) }

func writeSynced(path string, r io.Reader) error {
	out, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, r)
	if err == nil {
		err = out.Sync()
	}
	return errors.Join(err, out.Close())
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
