package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/raftwatch/raftwatch/client"
	pb "github.com/raftwatch/raftwatch/proto"
)

// kvJSON is how a key-value pair is printed with --json.
type kvJSON struct {
	Key            string `json:"key"`
	Value          string `json:"value"`
	CreateRevision uint64 `json:"create_revision"`
	ModRevision    uint64 `json:"mod_revision"`
	Version        uint64 `json:"version"`
}

func toJSON(kv *pb.KeyValue) *kvJSON {
	if kv == nil {
		return nil
	}
	return &kvJSON{Key: string(kv.Key), Value: string(kv.Value), CreateRevision: kv.CreateRevision,
		ModRevision: kv.ModRevision, Version: kv.Version}
}

func printJSON(v any) error {
	return json.NewEncoder(os.Stdout).Encode(v)
}

type writeFlags struct {
	prevKV      bool
	modRevision uint64
	absent      bool
}

func (w *writeFlags) add(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&w.prevKV, "prev-kv", false, "also print the key's previous value")
	cmd.Flags().Uint64Var(&w.modRevision, "if-mod-revision", 0, "write only if the key's mod revision equals this")
	cmd.Flags().BoolVar(&w.absent, "if-absent", false, "write only if the key does not exist")
}

func (w *writeFlags) opts() ([]client.OpOption, error) {
	var o []client.OpOption
	if w.prevKV {
		o = append(o, client.WithPrevKV())
	}
	if w.modRevision != 0 && w.absent {
		return nil, fmt.Errorf("--if-mod-revision and --if-absent cannot be combined")
	}
	if w.modRevision != 0 {
		o = append(o, client.WithModRevision(w.modRevision))
	}
	if w.absent {
		o = append(o, client.WithAbsent())
	}
	return o, nil
}

func newPutCmd(g *globalFlags) *cobra.Command {
	var wf writeFlags
	cmd := &cobra.Command{
		Use:   "put KEY VALUE",
		Short: "Write a key (through the leader)",
		Example: `  raftwatch put /config/db/host db1.internal
  raftwatch put /lock/a me --if-absent`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := wf.opts()
			if err != nil {
				return err
			}
			c, ctx, done, err := g.open()
			if err != nil {
				return err
			}
			defer done()
			r, err := c.Put(ctx, []byte(args[0]), []byte(args[1]), opts...)
			if err != nil {
				return err
			}
			return printWrite(g, "put", r.Revision, r.Succeeded, r.ModRevision, r.PrevKv, nil)
		},
	}
	wf.add(cmd)
	return cmd
}

func newDelCmd(g *globalFlags) *cobra.Command {
	var wf writeFlags
	cmd := &cobra.Command{
		Use:     "del KEY",
		Aliases: []string{"delete"},
		Short:   "Delete a key (through the leader)",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := wf.opts()
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
			return printWrite(g, "del", r.Revision, r.Succeeded, r.ModRevision, r.PrevKv, &r.Deleted)
		},
	}
	wf.add(cmd)
	return cmd
}

func printWrite(g *globalFlags, verb string, rev uint64, ok bool, mod uint64, prev *pb.KeyValue, deleted *bool) error {
	if g.json {
		out := map[string]any{"revision": rev, "succeeded": ok, "mod_revision": mod}
		if prev != nil {
			out["prev_kv"] = toJSON(prev)
		}
		if deleted != nil {
			out["deleted"] = *deleted
		}
		return printJSON(out)
	}
	switch {
	case !ok:
		fmt.Printf("condition failed: nothing written (key's mod revision %d)\n", mod)
	case deleted != nil && !*deleted:
		fmt.Printf("OK, key did not exist (revision %d)\n", rev)
	default:
		fmt.Printf("OK (revision %d)\n", rev)
	}
	if prev != nil {
		fmt.Printf("previous: %q (mod revision %d, version %d)\n", prev.Value, prev.ModRevision, prev.Version)
	}
	if !ok {
		return exitError{code: 2}
	}
	return nil
}

func newGetCmd(g *globalFlags) *cobra.Command {
	var serializable bool
	cmd := &cobra.Command{
		Use:   "get KEY",
		Short: "Read a key (linearizable by default)",
		Long:  "Read a key. Exits 1 with \"key not found\" when the key does not exist.",
		Args:  cobra.ExactArgs(1),
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
				return printJSON(map[string]any{"kv": toJSON(r.Kv), "revision": r.Revision})
			}
			if r.Kv == nil {
				return exitError{code: 1, msg: fmt.Sprintf("key not found: %s (revision %d)", args[0], r.Revision)}
			}
			fmt.Println(string(r.Kv.Value))
			return nil
		},
	}
	cmd.Flags().BoolVar(&serializable, "serializable", false, "serve from the contacted node (may be stale)")
	return cmd
}

func newListCmd(g *globalFlags) *cobra.Command {
	var serializable bool
	var limit uint64
	cmd := &cobra.Command{
		Use:   "list PREFIX",
		Short: "List keys starting with PREFIX, in key order",
		Args:  cobra.ExactArgs(1),
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
				fmt.Printf("%s = %s\n", kv.Key, kv.Value)
			}
			more := ""
			if r.More {
				more = ", more keys exist (raise --limit)"
			}
			fmt.Fprintf(os.Stderr, "%d keys at revision %d%s\n", len(r.Kvs), r.Revision, more)
			return nil
		},
	}
	cmd.Flags().BoolVar(&serializable, "serializable", false, "serve from the contacted node (may be stale)")
	cmd.Flags().Uint64Var(&limit, "limit", 0, "at most this many keys (0 = all)")
	return cmd
}

func newStatusCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show each endpoint's role, leader, term and indexes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			defer c.Close()
			failed := 0
			for _, ep := range g.endpointList() {
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
						"applied_index": s.AppliedIndex, "fsm_index": s.FsmIndex, "watchers": s.Watchers})
					continue
				}
				fmt.Printf("%-18s id=%s role=%s leader=%s term=%d commit=%d applied=%d fsm=%d watchers=%d\n",
					ep, s.Id, s.Role, s.LeaderId, s.Term, s.CommitIndex, s.AppliedIndex, s.FsmIndex, s.Watchers)
			}
			if failed == len(g.endpointList()) {
				return exitError{code: 1, msg: "no endpoint answered"}
			}
			return nil
		},
	}
}

func newMembersCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "members",
		Short: "List the cluster's members",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.open()
			if err != nil {
				return err
			}
			defer done()
			r, err := c.Members(ctx)
			if err != nil {
				return err
			}
			for _, m := range r.Members {
				if g.json {
					printJSON(map[string]any{"id": m.Id, "raft_addr": m.RaftAddr, "client_addr": m.ClientAddr, "voter": m.Voter, "leader": m.Leader})
					continue
				}
				role := "voter"
				if !m.Voter {
					role = "nonvoter"
				}
				if m.Leader {
					role += ",leader"
				}
				fmt.Printf("%s raft=%s client=%s %s\n", m.Id, m.RaftAddr, orUnknown(m.ClientAddr), role)
			}
			return nil
		},
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "(unknown)"
	}
	return s
}

func newMemberCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "member", Short: "Change membership (add, remove)"}
	add := &cobra.Command{
		Use:   "add ID RAFT_ADDR CLIENT_ADDR",
		Short: "Add a voter (start it first with serve and no --initial-cluster)",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.open()
			if err != nil {
				return err
			}
			defer done()
			r, err := c.AddVoter(ctx, args[0], args[1], args[2])
			if err != nil {
				return err
			}
			fmt.Println("OK (index " + strconv.FormatUint(r.Index, 10) + ")")
			return nil
		},
	}
	remove := &cobra.Command{
		Use:   "remove ID",
		Short: "Remove a server",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.open()
			if err != nil {
				return err
			}
			defer done()
			r, err := c.RemoveServer(ctx, args[0])
			if err != nil {
				return err
			}
			fmt.Println("OK (index " + strconv.FormatUint(r.Index, 10) + ")")
			return nil
		},
	}
	cmd.AddCommand(add, remove)
	return cmd
}
