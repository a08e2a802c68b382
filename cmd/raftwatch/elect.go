package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/raftwatch/raftwatch/client/concurrency"
	pb "github.com/raftwatch/raftwatch/proto"
)

func newElectCmd() *cobra.Command {
	var g *clientFlags
	var sf sessionFlags
	cmd := &cobra.Command{
		Use:   "elect NAME [PROPOSAL]",
		Short: "Campaign in a leader election with PROPOSAL, or print each leader change",
		Long: `Leader election NAME (key prefix /raftwatch/elections/NAME/).

With PROPOSAL: campaign. Candidates line up in the order they joined; the
first leads. When this one becomes leader it prints one line and holds the
leadership until SIGINT or SIGTERM, then resigns (the next in line takes
over) and exits 0. Leadership is held through a session, a lease of --ttl
seconds renewed in the background: if this process stops renewing it
(crash, SIGSTOP, partition), the next candidate leads once the TTL has
passed. If the session is lost while leading, elect says so on stderr and
exits 1. Interrupted while waiting, it withdraws and exits 1.

Without PROPOSAL: observe. Print the current leader, then one line per
change of leader or of its proclaimed value, until interrupted.

Lines: "leader KEY = PROPOSAL (created at revision C, revision M)"; with
--json, {"key","value","create_revision","mod_revision","version","lease"}
(key and value base64). A campaigner's line also carries its token: the
revision at which it confirmed its leadership, greater than every earlier
leader's.`,
		Example: `  raftwatch elect scheduler "$(hostname):8080" --ttl 10s   # campaign
  raftwatch elect scheduler                                 # observe`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			prefix, err := recipePrefix(electionPrefix, args[0])
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if len(args) == 1 {
				for kv := range concurrency.Observe(ctx, c, prefix) {
					printLeader(g, kv, 0)
				}
				return nil // interrupted
			}
			s, err := sf.open(g, c)
			if err != nil {
				return err
			}
			defer closeSession(s)
			e := concurrency.NewElection(s, prefix)
			if err := e.Campaign(ctx, args[1]); err != nil {
				if ctx.Err() != nil {
					return exitCode{code: exitError, msg: "interrupted before becoming leader of " + args[0]}
				}
				return err
			}
			printLeader(g, &pb.KeyValue{Key: []byte(e.Key()), Value: []byte(args[1]), CreateRevision: e.Rev(),
				ModRevision: e.Token(), Lease: s.Lease()}, e.Token())
			select {
			case <-ctx.Done():
			case <-s.Done():
				return exitCode{code: exitError, msg: lostMessage(s, "the leadership of "+args[0])}
			}
			rctx, cancel := g.ctx()
			defer cancel()
			if err := e.Resign(rctx); err != nil {
				return fmt.Errorf("resign: %w", err)
			}
			return nil
		},
	}
	g = addClientFlags(cmd)
	sf.add(cmd)
	return cmd
}

// printLeader prints one leader line; token > 0 for this process's own
// leadership.
func printLeader(g *clientFlags, kv *pb.KeyValue, token uint64) {
	if g.json {
		out := map[string]any{"key": b64(kv.Key), "value": b64(kv.Value), "create_revision": kv.CreateRevision,
			"mod_revision": kv.ModRevision, "version": kv.Version, "lease": leaseJSON(kv.Lease)}
		if token > 0 {
			out["token"] = token
		}
		printJSON(out)
		return
	}
	if token > 0 {
		fmt.Printf("leader %s = %s (created at revision %d, token %d)\n", quote(kv.Key), quote(kv.Value), kv.CreateRevision, token)
		return
	}
	fmt.Printf("leader %s = %s (created at revision %d, revision %d)\n", quote(kv.Key), quote(kv.Value), kv.CreateRevision, kv.ModRevision)
}
