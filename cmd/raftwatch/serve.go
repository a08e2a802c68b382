package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	_ "net/http/pprof" // served only when --pprof is set
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/raftwatch/raftwatch/gcpace"
	"github.com/raftwatch/raftwatch/metrics"
	"github.com/raftwatch/raftwatch/node"
	"github.com/raftwatch/raftwatch/server"
)

// grpcDrainTimeout bounds how long shutdown waits for in-flight RPCs.
const grpcDrainTimeout = 5 * time.Second

// The collector's target is paced (package gcpace) unless --gc-percent or
// GOGC fixes it: a fixed GOGC 400 raised put throughput at 64 clients by
// about a quarter on a 2-core machine, but held four bytes of garbage per
// live byte of watchers at rest; the pacer gives a write load that headroom
// and a node at rest half its live heap. No memory limit is set by default:
// the pacer never lets garbage exceed four times the live heap, and a limit
// below a large live heap (a million watchers) would make the collector
// run back to back.

func newServeCmd() *cobra.Command {
	cfg := node.DefaultConfig()
	var initial, logFormat, logLevel, pprofAddr, metricsAddr string
	var gcPercent int
	var pacedGC, rebuildOnDamage bool
	var auth bool
	var authAdmin string
	var memoryLimit int64
	var maxStreams uint32
	var tlsFlags *serveTLSFlags
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a node",
		Long: `Run a raftwatch node. A new cluster is bootstrapped by starting every member
with the same --initial-cluster; a node restarted on an existing --data-dir
resumes from it (and ignores --initial-cluster). A node started with no
--initial-cluster and an empty data dir waits to be added with
"raftwatch member add". A node removed from the cluster stops serving and
stays removed across restarts (its data dir records it): wipe the data dir
to add the machine again.

Raft log: --log-store is the store a new data dir's raft log is kept in:
wal (the default for a new data dir: append-only segment files in wal/, one
fsync per append where boltdb does two; it holds entries of at most 64 MiB,
so --max-value-size and --max-txn-bytes must stay under that) or boltdb
(one bbolt file, raft.db). Without --log-store (or with auto) an existing
data dir keeps the store it holds, so a data dir created with boltdb stays
on boltdb. A data dir keeps its store: a start with the other --log-store is
refused, and nothing converts one into the other; to move a member to the
other store, remove it, empty its data dir and add it back. A WAL whose last
written batch fails its CRC (disk damage, or a machine crash mid-write) is
refused at start, not trimmed: repair the member from a peer.

Memory: each watch stream queues at most --watch-stream-bytes of events,
all the streams of one client together at most --watch-client-bytes
(events being sent included), and all clients together less than twice
--watch-total-bytes (past it, the clients holding the most fall behind),
each plus one revision per stream.
A client is the identity of its verified certificate, or else its IP
address, however many connections it opens. A watch whose budget is spent
is not canceled but falls behind and catches up from the event history (on
disk) once its client reads again. One client may hold at most
--max-watchers-per-client watchers on at most
--max-watch-streams-per-client streams (each holding up to ~100 KiB of
gRPC buffers while its client does not read). So a client that never
reads costs a bounded amount of memory: 1,000 or 2,000 watches on one
stream, on 100 streams or on 1,000 streams of one or two connections of a
client that never reads, while 300 puts/s flow, keep the node under 200 MB
of RSS with the defaults, and the memory is given back when the client
cancels them or goes.

TLS: --cert-file/--key-file serve the client API over TLS (clients then
need --cacert, and with --client-cert-auth a certificate of their own from
--trusted-ca-file's CA); --peer-cert-file, --peer-key-file and
--peer-trusted-ca-file carry raft over mutual TLS (always verifying the
peer's certificate, which must be a node certificate: one naming its node
in a raftwatch://node/ID URI and valid for serverAuth and clientAuth, as
"raftwatch certs" issues for nodes; client certificates are refused). With
--auth, --cert-file must be this node's node certificate too: the node
presents it when it calls another member's client API, which recognises a
member by it. Certificate, key and CA files are reloaded when they change
on disk: new connections use them, without a restart; a replaced
certificate that fails these checks is logged and the previous one stays.

Damaged data: a node that finds a stored value failing its checksum stops
serving (reads, writes, watches and leadership). With --rebuild-on-damage
(the default) it then shuts down as on SIGTERM, its watchers canceled with
the reason, and starts again in the same process on the same addresses,
which sets the damaged state machine aside and rebuilds it from its newest
snapshot and its raft log (both checksummed); at most 3 times an hour, past
which it stays unhealthy until restarted. A damaged raft log entry cannot
be rebuilt locally: the node refuses to start, naming it.

SIGTERM or SIGINT shuts down cleanly: leadership is handed over when this
node leads, every watcher gets CANCELED with reason "shutdown", in-flight
requests drain, and the data files are closed.`,
		Example: `  raftwatch serve --id n1 --data-dir .cluster/n1 \
    --raft-addr 127.0.0.1:7201 --client-addr 127.0.0.1:7101 \
    --initial-cluster n1=127.0.0.1:7201,n2=127.0.0.1:7202,n3=127.0.0.1:7203`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := newLogger(logFormat, logLevel)
			if err != nil {
				return err
			}
			cfg.Logger = log
			if cfg.InitialCluster, err = parseInitialCluster(initial); err != nil {
				return err
			}
			_, fixedGC := os.LookupEnv("GOGC")
			if !fixedGC && gcPercent > 0 {
				debug.SetGCPercent(gcPercent)
				fixedGC = true
			}
			pacedGC = !fixedGC
			if _, set := os.LookupEnv("GOMEMLIMIT"); !set && memoryLimit > 0 {
				debug.SetMemoryLimit(memoryLimit)
			}
			if err := checkAuthFlags(auth, tlsFlags.clientCertAuth, authAdmin); err != nil {
				return err
			}
			if !auth {
				authAdmin = ""
			}
			opts, err := tlsFlags.apply(&cfg, auth, log)
			if err != nil {
				return err
			}
			noLimitWhenZero(&cfg.Watch.ClientBytes, &cfg.Watch.TotalBytes, &cfg.Watch.MaxWatchersPerClient, &cfg.Watch.MaxStreamsPerClient)
			if maxStreams > 0 {
				opts = append(opts, grpc.MaxConcurrentStreams(maxStreams))
			}
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
			defer signal.Stop(sig)
			return serve(cfg, serveConfig{pprofAddr: pprofAddr, metricsAddr: metricsAddr, authAdmin: authAdmin,
				pacedGC: pacedGC, rebuildOnDamage: rebuildOnDamage,
				rebuilds: rebuildLimit{max: maxRebuilds, window: rebuildWindow}}, sig, log, opts...)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.ID, "id", "", "this node's unique id (required), e.g. n1")
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory for the raft log, snapshots and data (required)")
	f.StringVar(&cfg.RaftAddr, "raft-addr", "", "host:port for raft traffic, bound and advertised (required)")
	f.StringVar(&cfg.ClientAddr, "client-addr", "", "host:port for gRPC clients, bound and advertised (required)")
	f.StringVar(&initial, "initial-cluster", "", "id=raft-addr,... of every initial member; bootstraps a new cluster")
	f.StringVar((*string)(&cfg.LogStore), "log-store", string(cfg.LogStore), "raft log store: auto (empty: the one the data dir holds, boltdb for a new one), boltdb (raft.db, hashicorp/raft-boltdb) or wal (wal/, hashicorp/raft-wal: one fsync per append where boltdb does two, but v0.4.0 cannot read back a segment sealed by a tail truncation after a restart: see README); a data dir keeps the one it was created with, and starting it with the other is refused")
	f.Uint64Var(&cfg.DropDamagedWALTail, "wal-drop-damaged-tail", 0, "INDEX: start even though the wal's last batch, the one starting at INDEX that the refusal named, fails its CRC, dropping it as a torn write: only after this machine lost power while writing it (then it was never acknowledged); disk damage is repaired by removing and re-adding the member instead. Refused anyway if the batch was applied; a batch starting elsewhere is still refused")
	f.BoolVar(&cfg.FSMSync, "fsm-sync", cfg.FSMSync, "fsync the state machine on every commit (not needed for durability: the raft log is fsynced and the state is rebuilt from it after a machine crash)")
	f.IntVar(&cfg.MaxKeySize, "max-key-size", cfg.MaxKeySize, "largest key in bytes")
	f.IntVar(&cfg.MaxValueSize, "max-value-size", cfg.MaxValueSize, "largest value in bytes")
	f.IntVar(&cfg.MaxTxnOps, "max-txn-ops", cfg.MaxTxnOps, "most compares in a txn, and most ops in each of its branches (more are refused with INVALID_ARGUMENT)")
	f.IntVar(&cfg.MaxTxnBytes, "max-txn-bytes", cfg.MaxTxnBytes, "largest txn request in encoded bytes (larger are refused with INVALID_ARGUMENT; the gRPC message limits follow it)")
	f.DurationVar(&cfg.HeartbeatTimeout, "heartbeat-timeout", cfg.HeartbeatTimeout, "follower waits this long without a leader before an election")
	f.DurationVar(&cfg.ElectionTimeout, "election-timeout", cfg.ElectionTimeout, "candidate waits this long before a new election")
	f.DurationVar(&cfg.LeaderLeaseTimeout, "leader-lease-timeout", cfg.LeaderLeaseTimeout, "leader steps down after this long without quorum contact")
	f.DurationVar(&cfg.CommitTimeout, "commit-timeout", cfg.CommitTimeout, "idle leader tells followers the commit index this often (bounds follower watch lag)")
	f.Uint64Var(&cfg.SnapshotThreshold, "snapshot-threshold", cfg.SnapshotThreshold, "log entries between snapshots")
	f.DurationVar(&cfg.SnapshotInterval, "snapshot-interval", cfg.SnapshotInterval, "how often to check whether a snapshot is due")
	f.Uint64Var(&cfg.TrailingLogs, "trailing-logs", cfg.TrailingLogs, "log entries kept after a snapshot, for slow followers")
	f.IntVar(&cfg.Watch.BufferSize, "watch-buffer", cfg.Watch.BufferSize, "events one watch may have queued before it falls behind and catches up from history (never canceled for it)")
	f.IntVar(&cfg.Watch.StreamBytes, "watch-stream-bytes", cfg.Watch.StreamBytes, "bytes queued for one watch stream before its watches fall behind and catch up from history")
	f.IntVar(&cfg.Watch.ClientBytes, "watch-client-bytes", cfg.Watch.ClientBytes, "bytes queued for all the watch streams of one client together, over all its connections (including what is being sent), before its watches fall behind and catch up from history; a client is its verified certificate's identity, or else its IP address; 0 = no per-client budget")
	f.IntVar(&cfg.Watch.TotalBytes, "watch-total-bytes", cfg.Watch.TotalBytes, "bytes queued for all watch streams of this node together: past it, the clients holding more than an equal share fall behind and catch up from history, so all clients hold less than twice it; 0 = no node-wide budget")
	f.IntVar(&cfg.Watch.MaxWatchers, "max-watchers", cfg.Watch.MaxWatchers, "most watchers this node serves at once")
	f.IntVar(&cfg.Watch.MaxWatchersPerClient, "max-watchers-per-client", cfg.Watch.MaxWatchersPerClient, "most watchers one client may hold over all its connections (more are refused with RESOURCE_EXHAUSTED); a client is its verified certificate's identity, or else its IP address; 0 = no per-client limit (--max-watchers still holds)")
	f.IntVar(&cfg.Watch.MaxStreamsPerClient, "max-watch-streams-per-client", cfg.Watch.MaxStreamsPerClient, "most watch streams one client may have open over all its connections (more end at once with RESOURCE_EXHAUSTED); each stream of a client that does not read holds up to ~100 KiB of gRPC buffers, and one stream carries any number of watches; 0 = no per-client limit")
	f.Uint32Var(&maxStreams, "max-streams-per-connection", 1000, "most concurrent RPCs (watch streams included) one client connection may have open; more wait for a slot (gRPC's MAX_CONCURRENT_STREAMS); 0 = gRPC's default (no limit)")
	// The names these had while they counted per connection: a client
	// with many connections got each budget many times over.
	f.IntVar(&cfg.Watch.ClientBytes, "watch-conn-bytes", cfg.Watch.ClientBytes, "")
	f.MarkDeprecated("watch-conn-bytes", "use --watch-client-bytes: the budget is now per client (all its connections together)")
	f.IntVar(&cfg.Watch.MaxWatchersPerClient, "max-watchers-per-connection", cfg.Watch.MaxWatchersPerClient, "")
	f.MarkDeprecated("max-watchers-per-connection", "use --max-watchers-per-client: the quota is now per client (all its connections together)")
	f.IntVar(&cfg.Watch.QueueSize, "watch-queue", cfg.Watch.QueueSize, "committed batches queued for the watch dispatcher before its watchers catch up from history instead")
	f.Uint64Var(&cfg.HistoryMaxEvents, "history-max-events", 1000000, "events of history kept for watches that start in the past, catch up or resume (oldest compacted first)")
	f.Uint64Var(&cfg.HistoryMaxBytes, "history-max-bytes", 256<<20, "bytes of keys and values kept in the event history")
	f.DurationVar(&cfg.ScrubInterval, "scrub-interval", cfg.ScrubInterval, "verify the checksum of every stored value at start, then again this long after each pass ends, paced (0 disables)")
	f.BoolVar(&rebuildOnDamage, "rebuild-on-damage", true, fmt.Sprintf("when a stored value fails its checksum, rebuild the state machine from this node's newest snapshot and raft log by restarting the node in-process (at most %d times an hour; past that, or with false, the node stays unhealthy until restarted)", maxRebuilds))
	addLeaseServeFlags(f, &cfg.Leases)
	tlsFlags = addServeTLSFlags(f)
	f.DurationVar(&cfg.Watch.ProgressInterval, "progress-interval", cfg.Watch.ProgressInterval, "PROGRESS heartbeat period (0 disables)")
	f.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.IntVar(&gcPercent, "gc-percent", 0, "fix Go's GC target percentage (GOGC) at this value; 0 = paced: 50 at rest, up to 400 under load so that the collector runs about once per 250 ms of allocation (see README, Local tuning); ignored when GOGC is set in the environment")
	f.Int64Var(&memoryLimit, "memory-limit", 0, "soft limit in bytes on the Go runtime's memory (GOMEMLIMIT): above it the collector runs more often than the GC target asks (keep it well above the live heap, or the collector runs back to back); 0 = none; ignored when GOMEMLIMIT is set in the environment")
	f.StringVar(&metricsAddr, "metrics-addr", "", "serve Prometheus metrics (/metrics), liveness (/healthz) and readiness (/readyz) over HTTP on this host:port (e.g. 127.0.0.1:9101); empty = off")
	f.BoolVar(&auth, "auth", false, "enforce roles: each client call is allowed by the roles granted to the common name of its verified client certificate (needs --client-cert-auth; see \"raftwatch role\" and \"raftwatch user\")")
	f.StringVar(&authAdmin, "auth-admin-identity", "root", "with --auth, the certificate common name that is always admin, whatever the roles say, so a new cluster can be set up; give every node the same")
	f.StringVar(&pprofAddr, "pprof", "", "serve net/http/pprof on this address (e.g. 127.0.0.1:6060)")
	for _, name := range []string{"id", "data-dir", "raft-addr", "client-addr"} {
		cmd.MarkFlagRequired(name)
	}
	addConfigFlag(cmd) // last: its help text follows the rest
	return cmd
}

// noLimitWhenZero turns each flag given as 0 ("no limit") into the largest
// int, since the watch package takes zero for its default.
func noLimitWhenZero(limits ...*int) {
	for _, l := range limits {
		if *l == 0 {
			*l = math.MaxInt
		}
	}
}

// checkAuthFlags refuses --auth without --client-cert-auth (there would be
// no identity to check) and an empty --auth-admin-identity.
func checkAuthFlags(auth, clientCertAuth bool, adminIdentity string) error {
	switch {
	case !auth:
		return nil
	case !clientCertAuth:
		return fmt.Errorf("--auth needs --client-cert-auth: roles are bound to the common names of verified client certificates")
	case adminIdentity == "":
		return fmt.Errorf("--auth-admin-identity is empty: name the certificate common name that is always admin (default root)")
	}
	return nil
}

func newLogger(format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: use text or json", format)
}

func parseInitialCluster(s string) (map[string]string, error) {
	if s == "" {
		return nil, nil
	}
	out := map[string]string{}
	for _, part := range strings.Split(s, ",") {
		id, addr, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("--initial-cluster entry %q: want id=host:port", part)
		}
		if _, dup := out[id]; dup {
			return nil, fmt.Errorf("--initial-cluster names %q twice", id)
		}
		out[id] = addr
	}
	return out, nil
}

// serveConfig is what serve needs beyond the node's configuration.
type serveConfig struct {
	pprofAddr, metricsAddr string
	// authAdmin, when not empty, enforces roles (--auth) with that admin
	// identity.
	authAdmin string
	// pacedGC runs the GC pacer (gcpace) for as long as serve runs.
	pacedGC bool
	// rebuildOnDamage reopens the node in-process when its state machine
	// is found damaged, at most as often as rebuilds allows.
	rebuildOnDamage bool
	rebuilds        rebuildLimit
}

// serve runs the node until stop delivers a signal: it assembles the node
// and its servers (serveOnce) and, each time the node finds its state
// machine damaged, stops them as on a signal and assembles them again on
// the same addresses, which rebuilds the state machine from the newest
// snapshot and the raft log (node.Open). What belongs to the process, not
// to one node, is started once: the GC pacer and the pprof server.
func serve(cfg node.Config, sc serveConfig, stop <-chan os.Signal, log *slog.Logger, opts ...grpc.ServerOption) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if sc.pacedGC {
		go gcpace.New().Run(ctx)
	}
	if sc.pprofAddr != "" {
		go func() { log.Warn("pprof server stopped", "err", http.ListenAndServe(sc.pprofAddr, nil)) }()
	}
	for {
		rebuild, err := serveOnce(cfg, &sc, stop, log, opts...)
		if !rebuild || err != nil {
			return err
		}
		log.Warn("state machine damaged: restarting in-process to rebuild it from the newest snapshot and the raft log",
			"rebuilds_in_window", len(sc.rebuilds.past), "max_rebuilds", sc.rebuilds.max, "window", sc.rebuilds.window)
	}
}

// serveOnce assembles the node (raft, dispatcher, batcher: node.Open),
// then the gRPC server and the metrics server, and stops them in reverse
// on a signal, or when the node finds its state machine damaged and
// sc.rebuilds allows a rebuild: it then returns rebuild true.
func serveOnce(cfg node.Config, sc *serveConfig, stop <-chan os.Signal, log *slog.Logger, opts ...grpc.ServerOption) (rebuild bool, err error) {
	lis, err := net.Listen("tcp", cfg.ClientAddr)
	if err != nil {
		return false, fmt.Errorf("listen for clients on %s: %w", cfg.ClientAddr, err)
	}
	var metricsLis net.Listener
	var m *metrics.Metrics
	if sc.metricsAddr != "" {
		if metricsLis, err = net.Listen("tcp", sc.metricsAddr); err != nil {
			lis.Close()
			return false, fmt.Errorf("listen for metrics on %s: %w", sc.metricsAddr, err)
		}
		// A registry of this node's own: the first run's still holds
		// the node it replaced.
		if m, err = metrics.New(); err != nil {
			lis.Close()
			metricsLis.Close()
			return false, err
		}
		cfg.ApplyObserver = m.ObserveApply
		opts = append(opts, m.ServerOptions()...)
	}
	n, err := node.Open(cfg)
	if err != nil {
		lis.Close()
		if metricsLis != nil {
			metricsLis.Close()
		}
		return false, err
	}
	health := server.NewHealth(n)
	healthCtx, stopHealth := context.WithCancel(context.Background())
	defer stopHealth()
	go health.Run(healthCtx)
	srv := server.New(n, log)
	if sc.authAdmin != "" {
		srv.RequireAuth(sc.authAdmin)
		log.Info("enforcing roles", "admin_identity", sc.authAdmin)
	}
	g := srv.NewGRPCServer(opts...)
	health.Register(g)
	serveErr := make(chan error, 1)
	go func() { serveErr <- g.Serve(lis) }()
	log.Info("serving clients", "addr", cfg.ClientAddr)
	if metricsLis != nil {
		if err := m.AddNode(n); err != nil {
			log.Error("metrics of the node not registered", "err", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", m.Handler())
		mux.HandleFunc("/healthz", health.Healthz)
		mux.HandleFunc("/readyz", health.Readyz)
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		defer hs.Close()
		go func() {
			if err := hs.Serve(metricsLis); !errors.Is(err, http.ErrServerClosed) {
				log.Warn("metrics server stopped", "err", err)
			}
		}()
		log.Info("serving metrics", "addr", metricsLis.Addr().String())
	}

	var damaged <-chan struct{}
	if sc.rebuildOnDamage {
		damaged = n.StateDamaged()
	}
	cancelReason := "shutdown"
	var runErr error
wait:
	for {
		select {
		case s := <-stop:
			log.Info("shutting down", "signal", s.String())
		case runErr = <-serveErr:
			log.Error("gRPC server failed", "err", runErr)
		case <-damaged:
			if !sc.rebuilds.take(time.Now()) {
				log.Error("state machine damaged, but not rebuilt: the node stays unhealthy until an operator restarts it, "+
					"as it was rebuilt in-process too often already (a failing disk?)",
					"max_rebuilds", sc.rebuilds.max, "window", sc.rebuilds.window)
				damaged = nil
				continue
			}
			log.Warn("state machine damaged: shutting the node down to rebuild it")
			rebuild, cancelReason = true, node.DamagedReason
		}
		break wait
	}

	stopHealth() // health checks say NOT_SERVING while this node goes
	n.StepDown()
	n.CancelWatchers(cancelReason)
	drained := make(chan struct{})
	go func() { g.GracefulStop(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(grpcDrainTimeout):
		log.Warn("in-flight requests did not finish in time; closing them")
		g.Stop()
	}
	if err := n.Close(); err != nil {
		return false, fmt.Errorf("close node: %w", err)
	}
	if !rebuild {
		log.Info("shutdown complete")
	}
	return rebuild, runErr
}

// The in-process rebuilds of a damaged state machine are limited to
// maxRebuilds in any rebuildWindow: a state machine damaged again and again
// (a failing disk) is left unhealthy, for an operator, rather than rebuilt
// in a loop.
const (
	maxRebuilds   = 3
	rebuildWindow = time.Hour
)

// rebuildLimit allows at most max rebuilds in any window.
type rebuildLimit struct {
	max    int
	window time.Duration
	past   []time.Time // the rebuilds allowed in the window before the latest, oldest first
}

// take reports whether a rebuild at now is allowed, and counts it if so.
func (l *rebuildLimit) take(now time.Time) bool {
	kept := l.past[:0]
	for _, t := range l.past {
		if now.Sub(t) < l.window {
			kept = append(kept, t)
		}
	}
	l.past = kept
	if len(l.past) >= l.max {
		return false
	}
	l.past = append(l.past, now)
	return true
}
