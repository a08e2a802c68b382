package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftwatch/raftwatch/client"
	pb "github.com/raftwatch/raftwatch/proto"
)

// memberProgressInterval is how often `member add` looks at the new
// member's progress while the leader waits for it to catch up.
const memberProgressInterval = 500 * time.Millisecond

// memberAddTimeout is `member add`'s default --timeout: catching up a new
// member may take a snapshot transfer and a long log, more than a request.
const memberAddTimeout = 2 * time.Minute

func newMembersCmd() *cobra.Command {
	var g *clientFlags
	cmd := &cobra.Command{
		Use:   "members",
		Short: "List the cluster's members with their raft and client addresses",
		Long: `List the cluster's members: id, raft and client addresses, voter or
nonvoter, and which one leads. When the answering node is the leader it also
says which members it cannot reach (no contact for two election timeouts):
"unreachable". Membership changes count reachable voters.`,
		Args: cobra.NoArgs,
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
					out := map[string]any{"id": m.Id, "raft_addr": m.RaftAddr, "client_addr": m.ClientAddr, "voter": m.Voter, "leader": m.Leader}
					if m.Reachable != nil {
						out["reachable"] = *m.Reachable
					}
					printJSON(out)
					continue
				}
				role := "voter"
				if !m.Voter {
					role = "nonvoter"
				}
				if m.Leader {
					role += ",leader"
				}
				if m.Reachable != nil && !*m.Reachable {
					role += ",unreachable"
				}
				fmt.Printf("%s raft=%s client=%s %s\n", m.Id, m.RaftAddr, orUnknown(m.ClientAddr), role)
			}
			return nil
		},
	}
	g = addClientFlags(cmd)
	return cmd
}

func orUnknown(s string) string {
	if s == "" {
		return "(unknown)"
	}
	return s
}

func newMemberCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "member", Short: "Change membership (add, remove)"}
	var addFlags, removeFlags *clientFlags
	var addForce, removeForce bool
	add := &cobra.Command{
		Use:   "add ID RAFT_ADDR CLIENT_ADDR",
		Short: "Add a member: a non-voter until it has caught up, then a voter",
		Long: `Add a member. Start it first with "raftwatch serve" and no --initial-cluster
(it may also be started while this command waits). The leader adds it as a
non-voter, which counts toward no quorum, waits until it has applied what the
leader has committed, then promotes it to voter. Progress goes to stderr
("catching up: applied X of Y"), then "promoted ID to voter (index N)" to
stdout.

If the member has not caught up within --timeout, it is left a non-voter and
the command fails (DeadlineExceeded): run it again with the same arguments to
keep waiting, or "member remove ID". An id or address another member has is
refused (AlreadyExists), as is a malformed one (InvalidArgument). The
promotion is refused (FailedPrecondition) if too few voters would be
reachable to commit, unless --force.`,
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := addFlags.open()
			if err != nil {
				return err
			}
			defer done()
			var opts []client.OpOption
			if addForce {
				opts = append(opts, client.WithForce())
			}
			id, clientAddr := args[0], args[2]
			fmt.Fprintf(os.Stderr, "adding %s as a non-voter; it becomes a voter once it has caught up\n", id)
			type result struct {
				r   *pb.AddVoterResponse
				err error
			}
			res := make(chan result, 1)
			go func() {
				r, err := c.AddVoter(ctx, id, args[1], clientAddr, opts...)
				res <- result{r, err}
			}()
			t := time.NewTicker(memberProgressInterval)
			defer t.Stop()
			last := ""
			for {
				select {
				case r := <-res:
					if r.err != nil {
						return r.err
					}
					if addFlags.json {
						return printJSON(map[string]any{"index": r.r.Index})
					}
					fmt.Printf("promoted %s to voter (index %d)\n", id, r.r.Index)
					return nil
				case <-t.C:
					if line := addProgress(ctx, c, id, clientAddr); line != last {
						fmt.Fprintln(os.Stderr, line)
						last = line
					}
				}
			}
		},
	}
	remove := &cobra.Command{
		Use:   "remove ID",
		Short: "Remove a member (NotFound when ID is not one)",
		Long: `Remove a member. Removing a voter is refused (FailedPrecondition) when the
voters the leader can still reach would be too few to commit without it
(e.g. three voters, one down: removing a live one leaves one of two); --force
removes it anyway. The removed node stops serving: it answers every request
but status with FailedPrecondition "removed from the cluster", and cancels
its watches with that reason. To bring it back, stop it, wipe its data
directory, start it empty and "member add" it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := removeFlags.open()
			if err != nil {
				return err
			}
			defer done()
			var opts []client.OpOption
			if removeForce {
				opts = append(opts, client.WithForce())
			}
			r, err := c.RemoveServer(ctx, args[0], opts...)
			if err != nil {
				if _, hint := client.NotLeaderHint(err); !removeForce && !hint && !client.Removed(err) &&
					status.Code(err) == codes.FailedPrecondition {
					return exitCode{code: exitError, msg: describe(err) + "; --force removes it anyway"}
				}
				return err
			}
			return printIndex(removeFlags, r.Index)
		},
	}
	addFlags, removeFlags = addClientFlags(add), addClientFlags(remove)
	add.Flags().Lookup("timeout").DefValue = memberAddTimeout.String()
	addFlags.timeout = memberAddTimeout
	add.Flags().BoolVar(&addForce, "force", false, "promote even if too few voters would be reachable to commit")
	remove.Flags().BoolVar(&removeForce, "force", false, "remove even if too few voters would be reachable to commit")
	cmd.AddCommand(add, remove)
	return cmd
}

// addProgress describes, in one line, how far the new member has caught up
// with the leader's commit index.
func addProgress(ctx context.Context, c *client.Client, id, clientAddr string) string {
	ctx, cancel := context.WithTimeout(ctx, memberProgressInterval)
	defer cancel()
	st, err := c.Status(ctx, clientAddr)
	if err != nil {
		return fmt.Sprintf("%s: catching up: applied - of - (it does not answer at %s yet)", id, clientAddr)
	}
	if st.LeaderAddr == "" {
		return fmt.Sprintf("%s: catching up: applied %d (it has not heard from the leader yet)", id, st.AppliedIndex)
	}
	ls, err := c.Status(ctx, st.LeaderAddr)
	if err != nil {
		return fmt.Sprintf("%s: catching up: applied %d (the leader at %s does not answer)", id, st.AppliedIndex, st.LeaderAddr)
	}
	return fmt.Sprintf("%s: catching up: applied %d of %d", id, st.AppliedIndex, ls.CommitIndex)
}

// printIndex reports a committed configuration change.
func printIndex(g *clientFlags, index uint64) error {
	if g.json {
		return printJSON(map[string]any{"index": index})
	}
	fmt.Printf("OK (index %d)\n", index)
	return nil
}
