package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/raftwatch/raftwatch/client"
)

// defaultEndpoints are the client ports of scripts/cluster.sh's local cluster.
const defaultEndpoints = "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103"

// defaultTimeout bounds a request, including following leader hints and
// waiting out an election (several election timeouts).
const defaultTimeout = 10 * time.Second

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "raftwatch",
		Short: "A Raft-replicated key-value store with watches",
		Long: `raftwatch is a Raft-replicated key-value store with a watch mechanism built
into its state machine. Run three nodes with "raftwatch serve" (or
scripts/cluster.sh up), write through any node (followers redirect to the
leader), and read or watch keys and '/'-terminated prefixes on any node.

Exit codes: 0 ok; 1 error, or key not found (get); 2 condition failed (put,
del; txn: the failure branch ran); 3 watch canceled by the server. They are
the same with --json, which still prints its JSON on stdout first. Keys and
values in --json output are standard base64.`,
		Version:       buildVersion().String(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.AddCommand(newServeCmd(), newPutCmd(), newGetCmd(), newDelCmd(), newListCmd(), newTxnCmd(),
		newWatchCmd(), newStatusCmd(), newMembersCmd(), newMemberCmd(), newVersionCmd(),
		newLeaseCmd(), newLockCmd(), newElectCmd(), newSnapshotCmd(), newCertsCmd(), newRoleCmd(), newUserCmd())
	return root
}

// clientFlags are the flags of every subcommand that talks to a cluster.
type clientFlags struct {
	endpoints   string
	json        bool
	timeout     time.Duration
	dialTimeout time.Duration
	tls         *clientTLSFlags
}

// addClientFlags gives cmd the client flags (--endpoints, --json,
// --timeout, --dial-timeout, --cacert, --cert, --key) and returns where
// their values land.
func addClientFlags(cmd *cobra.Command) *clientFlags {
	g := &clientFlags{}
	env := os.Getenv("RAFTWATCH_ENDPOINTS")
	if env == "" {
		env = defaultEndpoints
	}
	f := cmd.Flags()
	f.StringVar(&g.endpoints, "endpoints", env,
		"comma-separated client addresses of cluster nodes: host:port, http://host:port or https://host:port "+
			"(https:// means TLS, as do --cacert and --cert); env RAFTWATCH_ENDPOINTS")
	f.BoolVar(&g.json, "json", false, "print one JSON object per line; keys and values are standard base64")
	f.DurationVar(&g.timeout, "timeout", defaultTimeout,
		"how long a request may take, including following the leader (0 = no timeout)")
	f.DurationVar(&g.dialTimeout, "dial-timeout", client.DefaultDialTimeout,
		"how long to wait for a connection to one endpoint before trying the next")
	g.tls = addClientTLSFlags(f)
	return g
}

func (g *clientFlags) endpointList() []string {
	var out []string
	for _, e := range strings.Split(g.endpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

func (g *clientFlags) client() (*client.Client, error) {
	switch {
	case g.timeout < 0:
		return nil, fmt.Errorf("--timeout %v: must not be negative (0 = no timeout)", g.timeout)
	case g.dialTimeout <= 0:
		return nil, fmt.Errorf("--dial-timeout %v: must be positive", g.dialTimeout)
	case len(g.endpointList()) == 0:
		return nil, fmt.Errorf("--endpoints is empty: give host:port of at least one node")
	}
	retry := g.timeout
	if retry == 0 {
		retry = -1 // no timeout: follow hints and wait for a leader until interrupted
	}
	tlsConfig, err := g.tls.config()
	if err != nil {
		return nil, err
	}
	return client.New(client.Config{Endpoints: g.endpointList(), TLS: tlsConfig, DialTimeout: g.dialTimeout, RetryTimeout: retry})
}

// ctx is one request's context: --timeout, or none when it is 0.
func (g *clientFlags) ctx() (context.Context, context.CancelFunc) {
	if g.timeout == 0 {
		return context.WithCancel(context.Background())
	}
	return context.WithTimeout(context.Background(), g.timeout)
}

// open returns a client and a request context, and a func releasing both.
func (g *clientFlags) open() (*client.Client, context.Context, func(), error) {
	c, err := g.client()
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := g.ctx()
	return c, ctx, func() { cancel(); c.Close() }, nil
}
