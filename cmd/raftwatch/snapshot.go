package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/raftwatch/raftwatch/backup"
	"github.com/raftwatch/raftwatch/client"
	"github.com/raftwatch/raftwatch/node"
)

// snapshotSaveTimeout is `snapshot save`'s default --timeout: streaming a
// large state machine takes longer than a request.
const snapshotSaveTimeout = 10 * time.Minute

func newSnapshotCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Back up a cluster's state to a file, or seed a new cluster from one",
	}
	cmd.AddCommand(newSnapshotSaveCmd(), newSnapshotRestoreCmd())
	return cmd
}

func newSnapshotSaveCmd() *cobra.Command {
	var g *clientFlags
	cmd := &cobra.Command{
		Use:   "save FILE",
		Short: "Write a consistent snapshot of the state, streamed from a node, to FILE",
		Long: `Write a consistent snapshot of the cluster's state to FILE: every key with
its value, revisions and version, the leases and the watch history, as one
node (the first endpoint that answers) had applied them at one revision.
The file ends with a SHA-256 of its contents; it is written to FILE.part and
renamed to FILE once complete and checked, so FILE is never a partial copy.
Prints the revision, the size and the checksum.

A follower's snapshot may be a few entries behind the leader's; to capture
a given write, pass the leader (or the node that answered the write) first
in --endpoints.`,
		Example: `  raftwatch snapshot save backup.rwsnap`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.open()
			if err != nil {
				return err
			}
			defer done()
			res, err := saveSnapshot(ctx, c, args[0])
			if err != nil {
				return err
			}
			sum := hex.EncodeToString(res.sum)
			if g.json {
				return printJSON(map[string]any{"file": args[0], "revision": res.info.Index, "term": res.info.Term,
					"db_bytes": res.info.Size, "file_bytes": res.fileSize, "sha256": sum, "endpoint": res.info.Endpoint})
			}
			fmt.Printf("saved %s: revision %d (term %d, from %s), %d bytes, sha256 %s\n",
				args[0], res.info.Index, res.info.Term, res.info.Endpoint, res.fileSize, sum)
			return nil
		},
	}
	g = addClientFlags(cmd)
	cmd.Flags().Lookup("timeout").DefValue = snapshotSaveTimeout.String()
	g.timeout = snapshotSaveTimeout
	return cmd
}

type saved struct {
	info     client.SnapshotInfo
	fileSize int64
	sum      []byte
}

// saveSnapshot streams a snapshot into path+".part", syncs it and renames it
// to path; on any error the partial file is removed.
func saveSnapshot(ctx context.Context, c *client.Client, path string) (saved, error) {
	part := path + ".part"
	f, err := os.OpenFile(part, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return saved{}, fmt.Errorf("create %s: %w", part, err)
	}
	fail := func(err error) (saved, error) {
		f.Close()
		os.Remove(part)
		return saved{}, err
	}
	buf := bufio.NewWriterSize(f, 1<<20)
	body := &bodyWriter{}
	info, err := c.Snapshot(ctx, body, func(i client.SnapshotInfo) error {
		var err error
		body.w, err = backup.NewWriter(buf, backup.Header{Index: i.Index, Term: i.Term, Size: uint64(i.Size)})
		return err
	})
	if err != nil {
		return fail(err)
	}
	sum, err := body.w.Close()
	if err == nil {
		err = buf.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		return fail(fmt.Errorf("write %s: %w", part, err))
	}
	st, err := f.Stat()
	if err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(part)
		return saved{}, fmt.Errorf("write %s: %w", part, err)
	}
	if err := os.Rename(part, path); err != nil {
		os.Remove(part)
		return saved{}, err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return saved{info: info, fileSize: st.Size(), sum: sum}, nil
}

// bodyWriter passes the database to the snapshot file's writer, which
// exists once the stream's header arrived.
type bodyWriter struct{ w *backup.Writer }

func (b *bodyWriter) Write(p []byte) (int, error) { return b.w.Write(p) }

func newSnapshotRestoreCmd() *cobra.Command {
	var dataDir, id, initial, logLevel string
	cmd := &cobra.Command{
		Use:   "restore FILE --data-dir DIR --id ID --initial-cluster id=raft-addr,...",
		Short: "Seed a new member's data directory from a snapshot file",
		Long: `Check FILE (its length and SHA-256, then every stored value's checksum) and
create --data-dir for member --id of a new cluster whose state is the
snapshot's. A file that fails a check is refused with what failed, and
nothing is created. --data-dir must not exist or be empty.

Restore every member of the new cluster from the same file with the same
--initial-cluster and its own --id and --data-dir, then start each with
"raftwatch serve" and the same --id, --data-dir and --initial-cluster. The
new cluster has the snapshot's keys, values, revisions, versions, leases and
history; its next write gets a revision above the snapshot's. The members'
client addresses are recorded again as they start. The data directory holds
the snapshot and no raft log yet: serve creates the log in the store its
--log-store names (boltdb or wal), whichever store the saved cluster used.`,
		Example: `  raftwatch snapshot restore backup.rwsnap --id n1 --data-dir .cluster/n1 \
    --initial-cluster n1=127.0.0.1:7201,n2=127.0.0.1:7202,n3=127.0.0.1:7203`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := newLogger("text", logLevel)
			if err != nil {
				return err
			}
			cluster, err := parseInitialCluster(initial)
			if err != nil {
				return err
			}
			if len(cluster) == 0 {
				return errors.New("--initial-cluster is required: every member of the new cluster, id=raft-addr,...")
			}
			h, sum, err := restoreSnapshot(args[0], node.SeedConfig{DataDir: dataDir, ID: id, InitialCluster: cluster, Logger: log})
			if err != nil {
				return err
			}
			fmt.Printf("restored %s into %s for %s: revision %d, %d bytes of state, sha256 %s\n",
				args[0], dataDir, id, h.Index, h.Size, hex.EncodeToString(sum))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", "", "the new member's data directory; must not exist or be empty (required)")
	f.StringVar(&id, "id", "", "the new member's id, one of --initial-cluster's (required)")
	f.StringVar(&initial, "initial-cluster", "", "id=raft-addr,... of every member of the new cluster (required)")
	f.StringVar(&logLevel, "log-level", "warn", "log level: debug, info, warn or error")
	for _, name := range []string{"data-dir", "id", "initial-cluster"} {
		cmd.MarkFlagRequired(name)
	}
	return cmd
}

// restoreSnapshot checks the whole file first, so a damaged one creates
// nothing, then seeds the data directory from it (checking it again as it
// is read, in case it changed in between).
func restoreSnapshot(path string, cfg node.SeedConfig) (backup.Header, []byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return backup.Header{}, nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return backup.Header{}, nil, err
	}
	if _, _, err := backup.Verify(bufio.NewReaderSize(f, 1<<20), st.Size()); err != nil {
		return backup.Header{}, nil, fmt.Errorf("%s: %w; nothing was restored", path, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return backup.Header{}, nil, err
	}
	r, err := backup.NewReader(bufio.NewReaderSize(f, 1<<20), st.Size())
	if err != nil {
		return backup.Header{}, nil, fmt.Errorf("%s: %w; nothing was restored", path, err)
	}
	if err := node.Seed(cfg, r, r.Header.Index); err != nil {
		return backup.Header{}, nil, fmt.Errorf("restore %s: %w; nothing was restored", path, err)
	}
	return r.Header, r.Sum(), nil
}
