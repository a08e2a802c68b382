package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/raftwatch/raftwatch/client"
	"github.com/raftwatch/raftwatch/node"
)

// Lease ids are printed and read in hex, as etcdctl does.
func leaseHex(id int64) string { return strconv.FormatInt(id, 16) }

func parseLeaseID(s string) (int64, error) {
	id, err := strconv.ParseInt(strings.TrimPrefix(strings.ToLower(s), "0x"), 16, 64)
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("lease id %q: want a positive hexadecimal id as \"lease grant\" prints it, e.g. 1f", s)
	}
	return id, nil
}

// parseTTL reads a TTL in seconds: "10" or a duration such as "90s", "5m".
func parseTTL(s string) (int64, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d%time.Second != 0 {
		return 0, fmt.Errorf("TTL %q: want whole seconds, e.g. 10 or 90s or 5m", s)
	}
	return int64(d / time.Second), nil
}

// addLeaseServeFlags gives serve the lease caps and checkpoint interval.
func addLeaseServeFlags(f *pflag.FlagSet, c *node.LeaseConfig) {
	f.Uint64Var(&c.MaxLeases, "max-leases", 100_000, "most leases the cluster holds; a grant beyond it is refused with RESOURCE_EXHAUSTED (the leader's value, written into each grant, so nodes never disagree)")
	f.Uint64Var(&c.MaxKeysPerLease, "max-keys-per-lease", 10_000, "most keys attached to one lease; a put beyond it is refused with RESOURCE_EXHAUSTED (the leader's value, written into each put, so nodes never disagree)")
	f.DurationVar(&c.CheckpointInterval, "lease-checkpoint-interval", node.DefaultLeaseCheckpointInterval, "how often the leader records the remaining TTL of leases not renewed since, so a restart does not reset them to their full TTL (a restarted node may keep a lease up to this much longer)")
}

// leaseOpt is put's --lease flag.
type leaseOpt struct{ id string }

func (l *leaseOpt) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&l.id, "lease", "", "attach the key to this lease (hex id from \"lease grant\"); a put without it detaches the key from any lease")
}

func (l *leaseOpt) opts() ([]client.OpOption, error) {
	if l.id == "" {
		return nil, nil
	}
	id, err := parseLeaseID(l.id)
	if err != nil {
		return nil, err
	}
	return []client.OpOption{client.WithLease(id)}, nil
}

func newLeaseCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lease",
		Short: "Grant, keep alive, revoke and inspect leases",
		Long: `A lease has a TTL (2 s to 30 days); keys put with --lease ID are deleted, all
in one revision, when it expires or is revoked. Ids are hexadecimal.`,
		Example: `  id=$(raftwatch lease grant 10 | awk '{print $2}')
  raftwatch put /services/web/n1 10.0.0.5:80 --lease $id
  raftwatch lease keepalive $id &
  raftwatch lease ttl $id --keys
  raftwatch lease revoke $id`,
	}
	cmd.AddCommand(newLeaseGrantCmd(), newLeaseKeepAliveCmd(), newLeaseRevokeCmd(), newLeaseTTLCmd(), newLeaseListCmd())
	return cmd
}

func newLeaseGrantCmd() *cobra.Command {
	var g *clientFlags
	cmd := &cobra.Command{
		Use:   "grant TTL",
		Short: "Create a lease of TTL seconds and print its id",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ttl, err := parseTTL(args[0])
			if err != nil {
				return err
			}
			c, ctx, done, err := g.open()
			if err != nil {
				return err
			}
			defer done()
			r, err := c.Grant(ctx, ttl)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(map[string]any{"id": leaseHex(r.Id), "ttl": r.Ttl, "revision": r.Revision})
			}
			fmt.Printf("lease %s granted with TTL(%ds)\n", leaseHex(r.Id), r.Ttl)
			return nil
		},
	}
	g = addClientFlags(cmd)
	return cmd
}

func newLeaseRevokeCmd() *cobra.Command {
	var g *clientFlags
	cmd := &cobra.Command{
		Use:   "revoke ID",
		Short: "Delete a lease and all its keys (in one revision)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseLeaseID(args[0])
			if err != nil {
				return err
			}
			c, ctx, done, err := g.open()
			if err != nil {
				return err
			}
			defer done()
			r, err := c.Revoke(ctx, id)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(map[string]any{"id": leaseHex(id), "revision": r.Revision})
			}
			fmt.Printf("lease %s revoked (revision %d)\n", leaseHex(id), r.Revision)
			return nil
		},
	}
	g = addClientFlags(cmd)
	return cmd
}

func newLeaseKeepAliveCmd() *cobra.Command {
	var g *clientFlags
	var once bool
	cmd := &cobra.Command{
		Use:   "keepalive ID",
		Short: "Keep a lease alive until interrupted (renews every TTL/3, following the leader)",
		Long: `Renew the lease every TTL/3 until interrupted, printing each renewal. Exits 1
when the lease no longer exists. With --once, renew it once.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseLeaseID(args[0])
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			defer c.Close()
			if once {
				ctx, cancel := g.ctx()
				defer cancel()
				r, err := c.KeepAliveOnce(ctx, id)
				if err != nil {
					return err
				}
				return printKeepAlive(g, r.Id, r.Ttl, r.Revision)
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			ch, err := c.KeepAlive(ctx, id)
			if err != nil {
				return err
			}
			for r := range ch {
				if err := printKeepAlive(g, r.Id, r.Ttl, r.Revision); err != nil {
					return err
				}
			}
			if ctx.Err() != nil {
				return nil // interrupted
			}
			return fmt.Errorf("lease %s expired or was revoked", leaseHex(id))
		},
	}
	g = addClientFlags(cmd)
	cmd.Flags().BoolVar(&once, "once", false, "renew once and exit")
	return cmd
}

func printKeepAlive(g *clientFlags, id, ttl int64, rev uint64) error {
	if g.json {
		return printJSON(map[string]any{"id": leaseHex(id), "ttl": ttl, "revision": rev})
	}
	fmt.Printf("lease %s keepalived with TTL(%d) (revision %d)\n", leaseHex(id), ttl, rev)
	return nil
}

func newLeaseTTLCmd() *cobra.Command {
	var g *clientFlags
	var keys bool
	cmd := &cobra.Command{
		Use:     "ttl ID",
		Aliases: []string{"timetolive"},
		Short:   "Print a lease's remaining TTL (as the leader estimates it) and, with --keys, its keys",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseLeaseID(args[0])
			if err != nil {
				return err
			}
			c, ctx, done, err := g.open()
			if err != nil {
				return err
			}
			defer done()
			r, err := c.TimeToLive(ctx, id, keys)
			if err != nil {
				return err
			}
			if g.json {
				ks := make([]string, len(r.Keys))
				for i, k := range r.Keys {
					ks[i] = b64(k)
				}
				out := map[string]any{"id": leaseHex(id), "ttl": r.Ttl, "granted_ttl": r.GrantedTtl,
					"remaining_ms": r.RemainingMs, "revision": r.Revision}
				if keys {
					out["keys"] = ks
				}
				return printJSON(out)
			}
			fmt.Printf("lease %s granted with TTL(%ds), remaining(%ds)\n", leaseHex(id), r.GrantedTtl, r.Ttl)
			if keys {
				fmt.Printf("attached keys (%d):\n", len(r.Keys))
				for _, k := range r.Keys {
					fmt.Println(quote(k))
				}
			}
			return nil
		},
	}
	g = addClientFlags(cmd)
	cmd.Flags().BoolVar(&keys, "keys", false, "also print the keys attached to the lease")
	return cmd
}

func newLeaseListCmd() *cobra.Command {
	var g *clientFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List every lease id",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.open()
			if err != nil {
				return err
			}
			defer done()
			r, err := c.Leases(ctx)
			if err != nil {
				return err
			}
			ids := make([]string, len(r.Leases))
			for i, l := range r.Leases {
				ids[i] = leaseHex(l.Id)
			}
			if g.json {
				return printJSON(map[string]any{"leases": ids})
			}
			fmt.Printf("found %d leases\n", len(ids))
			for _, id := range ids {
				fmt.Println(id)
			}
			return nil
		},
	}
	g = addClientFlags(cmd)
	return cmd
}

// leaseJSON is a key's lease in --json output: hex, empty when none.
func leaseJSON(id int64) string {
	if id == 0 {
		return ""
	}
	return leaseHex(id)
}
