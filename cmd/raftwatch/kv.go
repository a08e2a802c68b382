package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/raftwatch/raftwatch/client"
	"github.com/raftwatch/raftwatch/node"
	pb "github.com/raftwatch/raftwatch/proto"
)

// Exit codes, the same with and without --json.
const (
	exitError           = 1 // any error; get: the key does not exist
	exitConditionFailed = 2 // put, del: the condition did not hold; nothing was written
	exitWatchCanceled   = 3 // watch: the server canceled the watch
)

// b64 is how bytes (keys, values) are printed with --json: standard base64,
// as etcdctl does, so every byte survives (JSON strings are Unicode).
func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// kvJSON is how a key-value pair is printed with --json.
type kvJSON struct {
	Key            string `json:"key"`   // base64
	Value          string `json:"value"` // base64
	CreateRevision uint64 `json:"create_revision"`
	ModRevision    uint64 `json:"mod_revision"`
	Version        uint64 `json:"version"`
	Lease          string `json:"lease,omitempty"` // hex
}

func toJSON(kv *pb.KeyValue) *kvJSON {
	if kv == nil {
		return nil
	}
	return &kvJSON{Key: b64(kv.Key), Value: b64(kv.Value), CreateRevision: kv.CreateRevision,
		ModRevision: kv.ModRevision, Version: kv.Version, Lease: leaseJSON(kv.Lease)}
}

func printJSON(v any) error {
	return json.NewEncoder(os.Stdout).Encode(v)
}

// quote prints bytes in the human format: a Go string literal, so that
// newlines, " = " and non-UTF-8 bytes cannot be mistaken for structure.
func quote(b []byte) string { return strconv.Quote(string(b)) }

type writeFlags struct {
	prevKV      bool
	modRevision uint64
	absent      bool
}

func (w *writeFlags) add(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&w.prevKV, "prev-kv", false, "also print the key's previous value")
	cmd.Flags().Uint64Var(&w.modRevision, "if-mod-revision", 0,
		"write only if the key's mod revision equals this; 0 means only if the key does not exist (as --if-absent)")
	cmd.Flags().BoolVar(&w.absent, "if-absent", false, "write only if the key does not exist")
}

// opts turns the flags into request options. A condition the user typed is
// never dropped: --if-mod-revision 0 is etcd's mod_revision == 0, "the key
// does not exist".
func (w *writeFlags) opts(cmd *cobra.Command) ([]client.OpOption, error) {
	var o []client.OpOption
	if w.prevKV {
		o = append(o, client.WithPrevKV())
	}
	modSet := cmd.Flags().Changed("if-mod-revision")
	switch {
	case modSet && w.modRevision == 0:
		o = append(o, client.WithAbsent())
	case modSet && w.absent:
		return nil, fmt.Errorf("--if-mod-revision %d requires the key to exist and --if-absent requires it not to: "+
			"give one of them", w.modRevision)
	case modSet:
		o = append(o, client.WithModRevision(w.modRevision))
	case w.absent:
		o = append(o, client.WithAbsent())
	}
	return o, nil
}

// maxStdinValue is the largest value put reads from stdin: the largest any
// node can be configured to accept (the node refuses a value over its own
// --max-value-size with INVALID_ARGUMENT).
const maxStdinValue = node.MaxSizeCeiling

// readValue reads a value from stdin, up to maxStdinValue bytes.
func readValue() ([]byte, error) {
	if fi, err := os.Stdin.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		fmt.Fprintln(os.Stderr, "reading the value from stdin; end it with Ctrl-D")
	}
	b, err := io.ReadAll(io.LimitReader(os.Stdin, maxStdinValue+1))
	if err != nil {
		return nil, fmt.Errorf("read the value from stdin: %w", err)
	}
	if len(b) > maxStdinValue {
		return nil, fmt.Errorf("the value on stdin is over %d bytes, the largest value a node can accept", maxStdinValue)
	}
	return b, nil
}

func newPutCmd() *cobra.Command {
	var wf writeFlags
	var lf leaseOpt
	var g *clientFlags
	cmd := &cobra.Command{
		Use:   "put KEY [VALUE | -]",
		Short: "Write a key (through the leader)",
		Long: `Write a key. With no VALUE, or with "-", the value is read from stdin, every
byte of it (up to the node's --max-value-size, 1 MiB by default); to store a literal "-", pipe it in.

With --if-mod-revision N the write happens only if the key's mod revision is
N; N = 0 means only if the key does not exist, like --if-absent. A failed
condition writes nothing and exits 2.`,
		Example: `  raftwatch put /config/db/host db1.internal
  raftwatch put /config/cert < cert.pem
  raftwatch put /lock/a me --if-absent
  raftwatch put /config/x v2 --if-mod-revision 12
  raftwatch put /services/web/n1 10.0.0.5:80 --lease 1f`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := wf.opts(cmd)
			if err != nil {
				return err
			}
			lo, err := lf.opts()
			if err != nil {
				return err
			}
			opts = append(opts, lo...)
			var value []byte
			if len(args) == 1 || args[1] == "-" {
				if value, err = readValue(); err != nil {
					return err
				}
			} else {
				value = []byte(args[1])
			}
			c, ctx, done, err := g.open()
			if err != nil {
				return err
			}
			defer done()
			r, err := c.Put(ctx, []byte(args[0]), value, opts...)
			if err != nil {
				return err
			}
			return printWrite(g, r.Revision, r.Succeeded, r.ModRevision, r.PrevKv, nil)
		},
	}
	g = addClientFlags(cmd)
	wf.add(cmd)
	lf.add(cmd)
	return cmd
}

func newDelCmd() *cobra.Command {
	var wf writeFlags
	var g *clientFlags
	cmd := &cobra.Command{
		Use:     "del KEY",
		Aliases: []string{"delete"},
		Short:   "Delete a key (through the leader)",
		Long: `Delete a key. Conditions work as for put; a failed condition deletes nothing
and exits 2.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := wf.opts(cmd)
			if err != nil {
				return err
			}
			c, ctx, done, err := g.open()
			if err != nil {
				return err
			}
			defer done()
			r, err := c.Delete(ctx, []byte(args[0]), opts...)
			if err != nil {
				return err
			}
			return printWrite(g, r.Revision, r.Succeeded, r.ModRevision, r.PrevKv, &r.Deleted)
		},
	}
	g = addClientFlags(cmd)
	wf.add(cmd)
	return cmd
}

func printWrite(g *clientFlags, rev uint64, ok bool, mod uint64, prev *pb.KeyValue, deleted *bool) error {
	if g.json {
		out := map[string]any{"revision": rev, "succeeded": ok, "mod_revision": mod}
		if prev != nil {
			out["prev_kv"] = toJSON(prev)
		}
		if deleted != nil {
			out["deleted"] = *deleted
		}
		if err := printJSON(out); err != nil {
			return err
		}
	} else {
		switch {
		case !ok:
			fmt.Printf("condition failed: nothing written (key's mod revision %d)\n", mod)
		case deleted != nil && !*deleted:
			fmt.Printf("OK, key did not exist (revision %d)\n", rev)
		default:
			fmt.Printf("OK (revision %d)\n", rev)
		}
		if prev != nil {
			fmt.Printf("previous: %s (mod revision %d, version %d)\n", quote(prev.Value), prev.ModRevision, prev.Version)
		}
	}
	if !ok {
		return exitCode{code: exitConditionFailed}
	}
	return nil
}

func newGetCmd() *cobra.Command {
	var serializable bool
	var g *clientFlags
	cmd := &cobra.Command{
		Use:   "get KEY",
		Short: "Read a key (linearizable by default)",
		Long: `Read a key and print its value as it is. Exits 1 with "key not found" when the
key does not exist (with --json too, after printing {"kv":null,...}).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.open()
			if err != nil {
				return err
			}
			defer done()
			var o []client.OpOption
			if serializable {
				o = append(o, client.WithSerializable())
			}
			r, err := c.Get(ctx, []byte(args[0]), o...)
			if err != nil {
				return err
			}
			if g.json {
				if err := printJSON(map[string]any{"kv": toJSON(r.Kv), "revision": r.Revision}); err != nil {
					return err
				}
			} else if r.Kv != nil {
				fmt.Println(string(r.Kv.Value))
			}
			if r.Kv == nil {
				return exitCode{code: exitError, msg: fmt.Sprintf("key not found: %s (revision %d)", quote([]byte(args[0])), r.Revision)}
			}
			return nil
		},
	}
	g = addClientFlags(cmd)
	cmd.Flags().BoolVar(&serializable, "serializable", false, "serve from the contacted node (may be stale)")
	return cmd
}

func newListCmd() *cobra.Command {
	var serializable bool
	var limit uint64
	var g *clientFlags
	cmd := &cobra.Command{
		Use:   "list PREFIX",
		Short: "List keys starting with PREFIX, in key order",
		Long: `List keys starting with PREFIX, in key order: one line per key,
"key" = "value", each a Go string literal (escapes for quotes, newlines and
bytes that are not UTF-8). The count and revision go to stderr. --json
prints one object with every pair, keys and values in base64.

PREFIX starts and ends with '/' ("/" lists every key). A node answers in
pages of at most 1 MiB; list reads them all, at the revision of the first,
so the output is the prefix at one revision however large it is. If the
node no longer holds that revision's history before the last page (the
listing outlived the history's retention), list starts over, up to 3 times.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.open()
			if err != nil {
				return err
			}
			defer done()
			o := []client.OpOption{client.WithLimit(limit)}
			if serializable {
				o = append(o, client.WithSerializable())
			}
			r, err := c.List(ctx, []byte(args[0]), o...)
			if err != nil {
				return err
			}
			if g.json {
				kvs := make([]*kvJSON, len(r.Kvs))
				for i, kv := range r.Kvs {
					kvs[i] = toJSON(kv)
				}
				return printJSON(map[string]any{"kvs": kvs, "revision": r.Revision, "more": r.More})
			}
			for _, kv := range r.Kvs {
				fmt.Printf("%s = %s\n", quote(kv.Key), quote(kv.Value))
			}
			more := ""
			if r.More {
				more = ", more keys exist (raise --limit)"
			}
			fmt.Fprintf(os.Stderr, "%d keys at revision %d%s\n", len(r.Kvs), r.Revision, more)
			return nil
		},
	}
	g = addClientFlags(cmd)
	cmd.Flags().BoolVar(&serializable, "serializable", false, "serve from the contacted node (may be stale)")
	cmd.Flags().Uint64Var(&limit, "limit", 0, "at most this many keys (0 = all)")
	return cmd
}

func newStatusCmd() *cobra.Command {
	var g *clientFlags
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show each endpoint's role, leader, term and indexes",
		Long:  "Show each endpoint's role, leader, term and indexes. Exits 1 when no endpoint answers.",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			defer c.Close()
			failed := 0
			for _, ep := range c.Endpoints() {
				ctx, cancel := g.ctx()
				s, err := c.Status(ctx, ep)
				cancel()
				if err != nil {
					failed++
					if g.json {
						printJSON(map[string]any{"endpoint": ep, "error": describe(err)})
					} else {
						fmt.Printf("%-18s unreachable: %s\n", ep, describe(err))
					}
					continue
				}
				if g.json {
					printJSON(map[string]any{"endpoint": ep, "id": s.Id, "role": s.Role, "leader_id": s.LeaderId,
						"leader_addr": s.LeaderAddr, "term": s.Term, "commit_index": s.CommitIndex,
						"applied_index": s.AppliedIndex, "fsm_index": s.FsmIndex, "watchers": s.Watchers,
						"watchers_catching_up": s.WatchersCatchingUp, "history_oldest_revision": s.HistoryOldestRevision,
						"history_events": s.HistoryEvents, "history_bytes": s.HistoryBytes,
						"healthy": s.Healthy, "unhealthy_reason": s.UnhealthyReason, "scrub_passes": s.ScrubPasses,
						"scrub_last_pass_unix_ms": s.ScrubLastPassUnixMs, "scrub_last_pass_values": s.ScrubLastPassValues,
						"scrub_mismatches": s.ScrubMismatches, "log_scrub_passes": s.LogScrubPasses,
						"log_scrub_last_pass_unix_ms": s.LogScrubLastPassUnixMs, "log_scrub_mismatches": s.LogScrubMismatches,
						"log_scrub_last_pass_entries": s.LogScrubLastPassEntries, "apply_lag": s.ApplyLag, "dispatcher_lag": s.DispatcherLag,
						"state_db_bytes": s.StateDbBytes, "raft_db_bytes": s.RaftDbBytes, "leases": s.Leases,
						"ready": s.Ready, "not_ready_reason": s.NotReadyReason})
					continue
				}
				fmt.Printf("%-18s id=%s role=%s leader=%s term=%d commit=%d applied=%d fsm=%d watchers=%d (catching up %d) history_from=%d history_events=%d history_bytes=%d apply_lag=%d dispatcher_lag=%d state_db_bytes=%d raft_db_bytes=%d leases=%d %s %s\n",
					ep, s.Id, s.Role, s.LeaderId, s.Term, s.CommitIndex, s.AppliedIndex, s.FsmIndex, s.Watchers,
					s.WatchersCatchingUp, s.HistoryOldestRevision, s.HistoryEvents, s.HistoryBytes, s.ApplyLag,
					s.DispatcherLag, s.StateDbBytes, s.RaftDbBytes, s.Leases, readyLine(s), healthLine(s))
			}
			if failed == len(c.Endpoints()) {
				return exitCode{code: exitError, msg: "no endpoint answered"}
			}
			return nil
		},
	}
	g = addClientFlags(cmd)
	return cmd
}

// readyLine is the readiness part of a human status line.
func readyLine(s *pb.StatusResponse) string {
	if s.Ready {
		return "ready=true"
	}
	return fmt.Sprintf("ready=false not_ready_reason=%q", s.NotReadyReason)
}

// healthLine is the health and scrub part of a human status line.
func healthLine(s *pb.StatusResponse) string {
	scrub := fmt.Sprintf("scrub_passes=%d scrub_mismatches=%d", s.ScrubPasses, s.ScrubMismatches)
	if s.ScrubLastPassUnixMs != 0 {
		scrub += fmt.Sprintf(" scrub_last=%s scrub_values=%d",
			time.UnixMilli(s.ScrubLastPassUnixMs).UTC().Format(time.RFC3339), s.ScrubLastPassValues)
	}
	scrub += fmt.Sprintf(" log_scrub_passes=%d log_scrub_mismatches=%d", s.LogScrubPasses, s.LogScrubMismatches)
	if s.LogScrubLastPassUnixMs != 0 {
		scrub += fmt.Sprintf(" log_scrub_last=%s log_scrub_entries=%d",
			time.UnixMilli(s.LogScrubLastPassUnixMs).UTC().Format(time.RFC3339), s.LogScrubLastPassEntries)
	}
	if !s.Healthy {
		return fmt.Sprintf("healthy=false %s unhealthy_reason=%q", scrub, s.UnhealthyReason)
	}
	return "healthy=true " + scrub
}
