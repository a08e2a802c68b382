package main

import (
	"context"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/raftwatch/raftwatch/client"
)

// defaultEndpoints are the client ports of scripts/cluster.sh's local cluster.
const defaultEndpoints = "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103"

type globalFlags struct {
	endpoints string
	json      bool
	timeout   time.Duration
}

func newRootCmd() *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:   "raftwatch",
		Short: "A Raft-replicated key-value store with watches",
		Long: `raftwatch is a Raft-replicated key-value store with a watch mechanism built
into its state machine. Run three nodes with "raftwatch serve" (or
scripts/cluster.sh up), write through any node (followers redirect to the
leader), and read or watch keys and '/'-terminated prefixes on any node.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	env := os.Getenv("RAFTWATCH_ENDPOINTS")
	if env == "" {
		env = defaultEndpoints
	}
	root.PersistentFlags().StringVar(&g.endpoints, "endpoints", env,
		"comma-separated host:port client addresses of cluster nodes (env RAFTWATCH_ENDPOINTS)")
	root.PersistentFlags().BoolVar(&g.json, "json", false, "print one JSON object per line")
	root.PersistentFlags().DurationVar(&g.timeout, "timeout", 10*time.Second,
		"how long a request may take, including following the leader")
	root.AddCommand(newServeCmd(), newPutCmd(g), newGetCmd(g), newDelCmd(g), newListCmd(g),
		newWatchCmd(g), newStatusCmd(g), newMembersCmd(g), newMemberCmd(g))
	return root
}

func (g *globalFlags) endpointList() []string {
	var out []string
	for _, e := range strings.Split(g.endpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

func (g *globalFlags) client() (*client.Client, error) {
	return client.New(client.Config{Endpoints: g.endpointList(), RetryTimeout: g.timeout})
}

func (g *globalFlags) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), g.timeout)
}

// open returns a client and a request context, and a func releasing both.
func (g *globalFlags) open() (*client.Client, context.Context, func(), error) {
	c, err := g.client()
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := g.ctx()
	return c, ctx, func() { cancel(); c.Close() }, nil
}
