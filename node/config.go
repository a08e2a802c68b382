package node

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"time"

	"github.com/raftwatch/raftwatch/watch"
)

// Limits and defaults, each with the reason for its value.
const (
	// DefaultMaxKeySize matches etcd's practical key sizes with room to spare.
	DefaultMaxKeySize = 4 << 10
	// DefaultMaxValueSize keeps one entry well inside gRPC's message limit.
	DefaultMaxValueSize = 1 << 20
	// MaxSizeCeiling bounds MaxKeySize, MaxValueSize and MaxTxnBytes: a
	// watch event carrying a value and its previous value, with its key,
	// stays well inside gRPC's 2 GiB message ceiling.
	MaxSizeCeiling = 256 << 20
	// DefaultMaxTxnOps bounds a Txn's compares and each branch's ops, as
	// etcd's --max-txn-ops does: enough for any recipe, small enough that
	// one Txn cannot make apply stall.
	DefaultMaxTxnOps = 128
	// DefaultMaxTxnBytes bounds a Txn request's encoded size: the size of
	// one chunk (chunkMaxBytes), so a Txn fits a log entry.
	DefaultMaxTxnBytes = 1 << 20
	// chunkMaxOps bounds how many client writes share one log entry: large
	// enough that one fsync serves a burst, small enough to keep apply short.
	chunkMaxOps = 512
	// chunkMaxBytes bounds a chunk's payload (a single larger op is allowed
	// alone) so that one entry never dominates replication.
	chunkMaxBytes = 1 << 20
	// proposalQueue is how many writes may wait for the batcher; under load
	// they accumulate here and leave as large chunks.
	proposalQueue = 4096
	// inflightChunks bounds entries proposed but not yet applied. Raft
	// pipelines a few (leader append, replication, apply overlap); beyond
	// that, letting writes wait and leave as one chunk costs less per
	// write than more entries (fewer log records to encode, store, read
	// back and send).
	inflightChunks = 4
	// logCacheSize keeps the newest entries in memory so replication does
	// not read them back from bbolt and decode them again.
	logCacheSize = 1024
	// readBatch bounds how many linearizable reads share one leadership check.
	readBatch = 4096
	// DefaultScrubInterval: a paced pass over a full history (1M events)
	// takes a few tens of seconds, so hourly costs well under 1% of a core
	// while finding rot on data that is never read within the hour.
	DefaultScrubInterval = time.Hour
)

// Config describes one node.
type Config struct {
	ID             string            // raft server ID, e.g. "n1"
	DataDir        string            // raft log, snapshots and state machine live here
	RaftAddr       string            // host:port raft binds and advertises
	ClientAddr     string            // host:port clients reach this node's gRPC server at
	InitialCluster map[string]string // id -> raft address; bootstraps a new cluster when non-empty
	// LogStore is the kind of raft log store a new data directory gets; a
	// directory that holds the other kind is refused (raftstore.go). Zero
	// (LogStoreAuto): the kind the directory holds, DefaultLogStore for a
	// new one. Open sets it to the kind it opened.
	LogStore LogStore
	// DropDamagedWALTail, when not zero, lets a WAL whose last batch
	// fails its CRC and starts at this index start, dropping that batch as
	// a torn write, and clears the damage marker its refusal left; for a
	// machine that lost power while writing it (see openWAL). Naming the
	// index keeps it from dropping a later, different batch. Never set it
	// for disk damage.
	DropDamagedWALTail uint64
	// PeerTLS, when set, carries raft traffic over mutual TLS: each member
	// presents its node certificate and verifies the other's, which must
	// chain to the peer CA and be a node certificate (certs.NodeID; nil:
	// plain TCP).
	PeerTLS *TLS
	// ClientAPITLS, when set, says the members' client APIs serve TLS: it
	// returns the config this node dials another member's client API with
	// (SetMember on the leader, Status polls), for the member at host
	// serverName (nil: plaintext). The certificate it presents should be
	// this node's node certificate: with roles enforced, the member
	// recognises a member node by it.
	ClientAPITLS func(serverName string) *tls.Config
	// ApplyObserver, when set, is told of every batch the state machine
	// applies (metrics.go).
	ApplyObserver ApplyObserver

	MaxKeySize   int
	MaxValueSize int
	// MaxTxnOps bounds a Txn's compares, and each of its branches' ops;
	// MaxTxnBytes its encoded size.
	MaxTxnOps   int
	MaxTxnBytes int

	// FSMSync fsyncs the state machine on every batch. Off by default: the
	// raft log is fsynced, and after a machine crash the state machine is
	// rebuilt from the newest snapshot and the log (see session.go).
	FSMSync bool
	// HistoryMaxEvents and HistoryMaxBytes bound the event history the
	// state machine keeps for watches that start in the past, catch up or
	// resume (zero: fsm's defaults, 1,000,000 events and 256 MiB).
	HistoryMaxEvents uint64
	HistoryMaxBytes  uint64
	// ScrubInterval is how long after one scrub of the state machine's
	// stored values the next starts; the first starts at open (0: none).
	ScrubInterval time.Duration
	// Leases caps leases and paces the leader's checkpoints (lease.go).
	Leases LeaseConfig
	// walSegmentSize is the size of the WAL's segment files (zero:
	// raft-wal's default, 64 MiB); tests shrink it so that a compaction
	// deletes whole segments.
	walSegmentSize int

	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	// CommitTimeout is how long the leader waits, with no new writes, before
	// telling followers the latest commit index: it bounds how late a
	// follower applies (and its watchers see) a write.
	CommitTimeout     time.Duration
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	TrailingLogs      uint64

	Watch watch.Config

	Logger *slog.Logger
}

// DefaultConfig returns the settings tuned for nodes on one machine or a LAN.
// Raft's defaults (1 s heartbeat and election timeouts, 50 ms commit timeout)
// are for WANs: failover would take seconds and follower watchers would
// trail the leader by up to 100 ms. The timeouts stay well above what a
// CPU-starved 2-core machine under benchmark load delays heartbeats by: a
// 250 ms leader lease made the leader step down mid-benchmark.
func DefaultConfig() Config {
	return Config{
		LogStore:           LogStoreAuto,
		MaxKeySize:         DefaultMaxKeySize,
		MaxValueSize:       DefaultMaxValueSize,
		MaxTxnOps:          DefaultMaxTxnOps,
		MaxTxnBytes:        DefaultMaxTxnBytes,
		HeartbeatTimeout:   750 * time.Millisecond,
		ElectionTimeout:    750 * time.Millisecond,
		LeaderLeaseTimeout: 500 * time.Millisecond,
		CommitTimeout:      2 * time.Millisecond,
		SnapshotThreshold:  8192,
		SnapshotInterval:   30 * time.Second,
		TrailingLogs:       10240,
		ScrubInterval:      DefaultScrubInterval,
		Watch: watch.Config{
			BufferSize:           watch.DefaultBufferSize,
			StreamBytes:          watch.DefaultStreamBytes,
			ClientBytes:          watch.DefaultClientBytes,
			TotalBytes:           watch.DefaultTotalBytes,
			MaxWatchers:          watch.DefaultMaxWatchers,
			MaxWatchersPerClient: watch.DefaultMaxWatchersPerClient,
			MaxStreamsPerClient:  watch.DefaultMaxStreamsPerClient,
			QueueSize:            watch.DefaultQueueSize,
			ProgressInterval:     watch.DefaultProgressInterval,
		},
	}
}

// validate checks c and fills in the defaults of its zero fields that have
// one (LogStore).
func (c *Config) validate() error {
	if err := checkMemberID(c.ID); err != nil {
		return fmt.Errorf("node id: %w", err)
	}
	if c.DataDir == "" {
		return fmt.Errorf("data directory is required")
	}
	if c.RaftAddr == "" || c.ClientAddr == "" {
		return fmt.Errorf("raft and client addresses are required")
	}
	if len(c.InitialCluster) > 0 {
		if addr, ok := c.InitialCluster[c.ID]; !ok {
			return fmt.Errorf("initial cluster does not contain this node's id %q", c.ID)
		} else if addr != c.RaftAddr {
			return fmt.Errorf("initial cluster gives %s the raft address %s, but --raft-addr is %s", c.ID, addr, c.RaftAddr)
		}
	}
	if c.PeerTLS != nil {
		if c.PeerTLS.Server == nil || c.PeerTLS.Dial == nil {
			return fmt.Errorf("peer TLS needs both a server config and a dial config")
		}
		// Raft trusts whoever reaches its port: a peer must prove it is one.
		if c.PeerTLS.Server.ClientAuth != tls.RequireAndVerifyClientCert {
			return fmt.Errorf("peer TLS must require and verify the dialing peer's certificate (tls.RequireAndVerifyClientCert)")
		}
	}
	if c.MaxKeySize <= 0 || c.MaxValueSize <= 0 {
		return fmt.Errorf("key and value size limits must be positive")
	}
	if c.MaxKeySize > MaxSizeCeiling || c.MaxValueSize > MaxSizeCeiling || c.MaxTxnBytes > MaxSizeCeiling {
		return fmt.Errorf("--max-key-size %d, --max-value-size %d and --max-txn-bytes %d must each be at most %d (a watch event carries two values in one gRPC message, which cannot exceed 2 GiB)",
			c.MaxKeySize, c.MaxValueSize, c.MaxTxnBytes, MaxSizeCeiling)
	}
	if c.MaxTxnOps <= 0 || c.MaxTxnBytes <= 0 {
		return fmt.Errorf("txn limits (--max-txn-ops %d, --max-txn-bytes %d) must be positive", c.MaxTxnOps, c.MaxTxnBytes)
	}
	switch c.LogStore {
	case LogStoreAuto, "auto":
		c.LogStore = LogStoreAuto
	case LogStoreBoltDB:
	case LogStoreWAL:
		if err := c.checkWALLimits(); err != nil {
			return err
		}
	default:
		return fmt.Errorf("--log-store %q: use %s, %s, or auto (the data dir's own, %s for a new one)", c.LogStore, LogStoreBoltDB, LogStoreWAL, DefaultLogStore)
	}
	return nil
}

// checkWALLimits refuses sizes the WAL cannot read back in one entry.
func (c *Config) checkWALLimits() error {
	if c.MaxKeySize+c.MaxValueSize > walMaxOpBytes || c.MaxTxnBytes > walMaxOpBytes {
		return fmt.Errorf("--log-store wal reads back log entries of at most 64 MiB: --max-key-size plus --max-value-size (%d) and --max-txn-bytes (%d) must each be at most %d; lower them or use --log-store boltdb",
			c.MaxKeySize+c.MaxValueSize, c.MaxTxnBytes, walMaxOpBytes)
	}
	return nil
}

// Limits are the sizes a node accepts; the server sizes its gRPC messages
// from them.
type Limits struct {
	MaxKeySize, MaxValueSize, MaxTxnBytes int
}

// Limits returns the node's configured size limits.
func (n *Node) Limits() Limits {
	return Limits{MaxKeySize: n.cfg.MaxKeySize, MaxValueSize: n.cfg.MaxValueSize, MaxTxnBytes: n.cfg.MaxTxnBytes}
}
