package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/raftwatch/raftwatch/fsm"
	pb "github.com/raftwatch/raftwatch/proto"
	"github.com/raftwatch/raftwatch/watch"
)

// KeyValue is a stored key with its revisions.
type KeyValue = fsm.KeyValue

// Node is one raftwatch node.
type Node struct {
	cfg Config
	log *slog.Logger

	raft       *raft.Raft
	boltStore  *raftboltdb.BoltStore
	logStore   *checkedLogStore
	transport  *raft.NetworkTransport
	fsm        *fsm.FSM
	registry   *watch.Registry
	dispatcher *watch.Dispatcher
	batcher    *batcher

	reads chan readRequest
	// readyTerm is the term in which this node, as leader, has committed
	// an entry of its own; linearizable reads need it to equal the term.
	readyTerm atomic.Uint64
	// contacts: on the leader, the followers it cannot reach (contact.go).
	contacts contacts
	// removed is set once this node has seen itself removed from the
	// cluster (removal.go); it then serves nothing but Status.
	removed atomic.Bool

	stop chan struct{}
	// watchersDone is closed once every watcher has been canceled.
	watchersDone     chan struct{}
	watchersDoneOnce sync.Once
	// raftDone is closed once raft has shut down: a raft future not
	// answered by then never will be (see await). Closed by Close, or
	// earlier when removal stops raft.
	raftDone     chan struct{}
	raftDoneOnce sync.Once
	closeOnce    sync.Once
	wg           sync.WaitGroup

	// logDamage is the first damaged raft log entry found (health.go);
	// logDamaged is closed then.
	healthMu   sync.Mutex
	logDamage  error
	logDamaged chan struct{}

	// ready is the latest readiness check (ready.go).
	ready readiness
}

// Open assembles and starts a node: state machine, raft, then the
// background goroutines — watch dispatcher, write batcher and its completer,
// read confirmer, leadership monitor, leader contact watch, follower contact
// tracker, membership watch, client address recorder, health guard,
// readiness tracker, the
// leader's lease expiry and checkpoint loops (lease.go) and scrub. Close
// stops them in reverse.
func Open(cfg Config) (*Node, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("node", cfg.ID)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	n := &Node{cfg: cfg, log: log, reads: make(chan readRequest, readBatch),
		stop: make(chan struct{}), raftDone: make(chan struct{}), watchersDone: make(chan struct{}),
		logDamaged: make(chan struct{}), ready: readiness{reason: "starting", changed: make(chan struct{})}}

	statePath := filepath.Join(cfg.DataDir, "state.db")
	if err := n.checkDamageMarkers(statePath); err != nil {
		return nil, err
	}
	// Even with FSMSync: the previous run may have been without it.
	if _, err := n.beginSession(statePath); err != nil {
		return nil, err
	}
	openFSM := func() (*fsm.FSM, error) {
		return fsm.Open(statePath, nil, log.With("component", "fsm"), fsm.Options{NoSync: !cfg.FSMSync,
			HistoryMaxEvents: cfg.HistoryMaxEvents, HistoryMaxBytes: cfg.HistoryMaxBytes,
			Leases: fsm.LeaseLimits{MaxLeases: cfg.Leases.MaxLeases, MaxKeysPerLease: cfg.Leases.MaxKeysPerLease}})
	}
	f, err := openFSM()
	if errors.Is(err, fsm.ErrCorrupt) {
		// Damage found while opening (a bookkeeping value such as the
		// applied index): the same repair as damage found while running,
		// now rather than at the next start.
		log.Error("state machine damaged at open: setting it aside to rebuild it from the newest snapshot and the raft log",
			"path", statePath, "err", err)
		if err = fsm.WriteMarker(statePath, err.Error()); err == nil {
			if err = n.checkDamageMarkers(statePath); err == nil {
				f, err = openFSM()
			}
		}
	}
	if err != nil {
		return nil, err
	}
	n.fsm = f
	// The state machine publishes each committed batch to the dispatcher;
	// the dispatcher reads the state machine's history for watchers that
	// start in the past or fall behind. Nothing else links them.
	cfg.Watch.Logger = log.With("component", "watch")
	n.registry = watch.NewRegistry(cfg.Watch, f, f.Applied())
	n.dispatcher = watch.NewDispatcher(n.registry, f, cfg.Watch)
	f.SetSink(n.dispatcher)

	if err := n.startRaft(); err != nil {
		n.fsm.Close()
		return nil, err
	}

	n.batcher = newBatcher(n.raft, n.await)
	n.checkRemovedMarker()
	n.wg.Add(13)
	go func() { defer n.wg.Done(); n.dispatcher.Run() }()
	go func() { defer n.wg.Done(); n.batcher.run() }()
	go func() { defer n.wg.Done(); n.batcher.complete() }()
	go func() { defer n.wg.Done(); n.readConfirmer() }()
	go func() { defer n.wg.Done(); n.monitorLeadership() }()
	go func() { defer n.wg.Done(); n.watchLeaderContact() }()
	go func() { defer n.wg.Done(); n.trackContacts() }()
	go func() { defer n.wg.Done(); n.watchMembership() }()
	go func() { defer n.wg.Done(); n.recordClientAddr() }()
	go func() { defer n.wg.Done(); n.guardHealth() }()
	go func() { defer n.wg.Done(); n.trackReadiness() }()
	go func() { defer n.wg.Done(); n.expireLeases() }()
	go func() { defer n.wg.Done(); n.checkpointLeases(cfg.Leases.checkpointInterval()) }()
	if cfg.ScrubInterval > 0 {
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.scrub(cfg.ScrubInterval) }()
	}
	log.Info("node started", "raft_addr", cfg.RaftAddr, "client_addr", cfg.ClientAddr,
		"data_dir", cfg.DataDir, "applied_index", n.fsm.Applied())
	return n, nil
}

func (n *Node) startRaft() error {
	cfg := n.cfg
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.Logger = newRaftLogger(n.log)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.TrailingLogs = cfg.TrailingLogs
	// Entries proposed concurrently share one disk write on the leader.
	rc.BatchApplyCh = true
	// The state machine is persistent and knows its own applied index.
	rc.NoSnapshotRestoreOnStart = true
	if err := raft.ValidateConfig(rc); err != nil {
		return fmt.Errorf("raft configuration: %w", err)
	}

	// fsync on every append (NoSync=false): a write is acknowledged only
	// once it is on disk on a majority.
	logPath := filepath.Join(cfg.DataDir, "raft.db")
	store, err := raftboltdb.New(raftboltdb.Options{Path: logPath})
	if err != nil {
		return fmt.Errorf("open raft log %s: %w", logPath, err)
	}
	checked, err := newCheckedLogStore(store, logPath, n.markLogDamaged)
	if err != nil {
		store.Close()
		return fmt.Errorf("open raft log %s: %w", logPath, err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, rc.Logger)
	if err != nil {
		store.Close()
		return fmt.Errorf("open snapshot store: %w", err)
	}
	advertise, err := net.ResolveTCPAddr("tcp", cfg.RaftAddr)
	if err != nil {
		store.Close()
		return fmt.Errorf("raft address %q: %w", cfg.RaftAddr, err)
	}
	trans, err := raft.NewTCPTransportWithLogger(cfg.RaftAddr, advertise, 3, 10*time.Second, rc.Logger)
	if err != nil {
		store.Close()
		return fmt.Errorf("listen for raft on %s: %w", cfg.RaftAddr, err)
	}
	hasState, err := raft.HasExistingState(store, store, snaps)
	if err != nil {
		store.Close()
		trans.Close()
		return fmt.Errorf("inspect raft state: %w", err)
	}
	if err := n.restoreNewerSnapshot(snaps); err != nil {
		store.Close()
		trans.Close()
		return err
	}
	if err := n.verifyLog(checked, snaps); err != nil {
		store.Close()
		trans.Close()
		return err
	}
	logs, err := raft.NewLogCache(logCacheSize, checked)
	if err != nil {
		store.Close()
		trans.Close()
		return fmt.Errorf("raft log cache: %w", err)
	}
	r, err := raft.NewRaft(rc, n.raftFSM(), logs, store, snaps, trans)
	if err != nil {
		store.Close()
		trans.Close()
		return fmt.Errorf("start raft: %w", err)
	}
	n.raft, n.boltStore, n.logStore, n.transport = r, store, checked, trans

	if !hasState && len(cfg.InitialCluster) > 0 {
		var servers []raft.Server
		for id, addr := range cfg.InitialCluster {
			servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(id), Address: raft.ServerAddress(addr)})
		}
		sort.Slice(servers, func(i, j int) bool { return servers[i].ID < servers[j].ID })
		if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			r.Shutdown().Error()
			store.Close()
			trans.Close()
			return fmt.Errorf("bootstrap cluster: %w", err)
		}
		n.log.Info("bootstrapped new cluster", "members", len(servers))
	} else if hasState {
		n.log.Info("resuming from existing raft state", "last_index", r.LastIndex())
	}
	return nil
}

// restoreNewerSnapshot brings the state machine up to the newest stored
// snapshot when it is behind it. Raft is told not to restore on start (the
// bbolt state is persistent), and assumes everything up to its newest
// snapshot is applied; that is false if the node crashed while installing
// a snapshot from the leader (raft stores it before the FSM restores it),
// so without this the node would apply later entries over older state.
func (n *Node) restoreNewerSnapshot(snaps raft.SnapshotStore) error {
	metas, err := snaps.List()
	if err != nil {
		return fmt.Errorf("list snapshots: %w", err)
	}
	if len(metas) == 0 || metas[0].Index <= n.fsm.Applied() {
		return nil
	}
	n.log.Warn("state machine is behind the newest snapshot; restoring it",
		"applied_index", n.fsm.Applied(), "snapshot_index", metas[0].Index)
	_, rc, err := snaps.Open(metas[0].ID)
	if err != nil {
		return fmt.Errorf("open snapshot %s: %w", metas[0].ID, err)
	}
	if err := n.fsm.Restore(rc); err != nil {
		return fmt.Errorf("restore snapshot %s: %w", metas[0].ID, err)
	}
	return nil
}

// await waits for a raft future, unless raft shuts down first: futures
// still queued inside raft at shutdown are never answered. The goroutine
// waiting on such a future then stays blocked for the life of the process
// (at most inflightChunks plus a read round's per Close; it matters only to
// a program that opens and closes many nodes).
func (n *Node) await(f raft.Future) error {
	ch := make(chan error, 1)
	go func() { ch <- f.Error() }()
	select {
	case err := <-ch:
		return err
	case <-n.raftDone:
		select {
		case err := <-ch:
			return err
		default:
			return raft.ErrRaftShutdown
		}
	}
}

// monitorLeadership makes a new leader ready for linearizable reads: it
// commits an entry of its own term (recording its client address, which
// followers then use for leader hints) and notes the term once applied.
func (n *Node) monitorLeadership() {
	for {
		select {
		case isLeader := <-n.raft.LeaderCh():
			if !isLeader {
				n.readyTerm.Store(0)
				n.log.Info("lost leadership")
				continue
			}
			term := n.raft.CurrentTerm()
			n.log.Info("became leader", "term", term)
			if n.unhealthy() != nil {
				continue // guardHealth hands leadership over
			}
			n.announceLeader(term)
		case <-n.stop:
			return
		}
	}
}

// leaderCheckInterval is how often watchLeaderContact looks for a leader.
const leaderCheckInterval = 100 * time.Millisecond

// watchLeaderContact cancels require-leader watchers when this node stops
// knowing a leader: raft forgets the leader when a follower misses
// heartbeats for the heartbeat timeout and when a leader cannot reach a
// quorum within its lease, so such watchers move to a node in touch with
// the cluster. While no leader is known, new require-leader watches are
// refused (WatchStream.Watch), so one cancel per loss is enough.
func (n *Node) watchLeaderContact() {
	t := time.NewTicker(leaderCheckInterval)
	defer t.Stop()
	hadLeader := true
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
			_, id := n.raft.LeaderWithID()
			if id == "" && hadLeader {
				if c := n.registry.CancelRequireLeader("this node lost touch with the leader; resume on another node"); c > 0 {
					n.log.Warn("canceled require-leader watchers: no leader", "count", c)
				}
			}
			hadLeader = id != ""
		}
	}
}

// announceLeader retries until the entry commits, leadership is lost or the
// node stops.
func (n *Node) announceLeader(term uint64) {
	chunk := &pb.Chunk{Ops: []*pb.Op{{Kind: pb.Op_SET_MEMBER, Key: []byte(n.cfg.ID), Value: []byte(n.cfg.ClientAddr)}}}
	data := mustMarshal(chunk)
	for n.raft.State() == raft.Leader && n.raft.CurrentTerm() == term {
		err := n.await(n.raft.Apply(data, applyEnqueueTimeout))
		if err == nil {
			if n.raft.CurrentTerm() == term {
				n.readyTerm.Store(term)
				n.log.Info("leader ready", "term", term, "applied_index", n.fsm.Applied())
			}
			return
		}
		n.log.Warn("leader announcement failed; retrying", "term", term, "err", err)
		select {
		case <-n.stop:
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// notLeader builds the error a follower returns, with the leader's client
// address when this node knows it.
func (n *Node) notLeader() error {
	_, id := n.raft.LeaderWithID()
	if id == "" {
		return ErrNoLeader
	}
	e := &NotLeaderError{LeaderID: string(id)}
	if members, err := n.fsm.Members(); err == nil {
		e.LeaderAddr = members[string(id)]
	}
	return e
}

// Condition makes a write depend on the key's current state.
type Condition struct {
	ModRevision uint64 // when nonzero: the key exists with this mod revision
	Absent      bool   // the key does not exist
}

// WriteOptions modify Put and Delete.
type WriteOptions struct {
	PrevKV bool       // return the key's previous state
	If     *Condition // nil: unconditional
	Lease  int64      // Put: attach the key to this lease (0: none, detaching it from any)
}

// WriteResult is the outcome of a Put or Delete.
type WriteResult struct {
	Revision    uint64    // index of the log entry that carried the write
	Succeeded   bool      // false when the condition did not hold; nothing changed
	Deleted     bool      // Delete removed an existing key
	Prev        *KeyValue // previous state when asked or a condition was set (nil: absent)
	ModRevision uint64    // the key's mod revision afterwards (0: absent)
}

// Put writes key=value through the leader's batcher.
func (n *Node) Put(ctx context.Context, key, value []byte, opt WriteOptions) (WriteResult, error) {
	if err := n.checkKey(key); err != nil {
		return WriteResult{}, err
	}
	if len(value) > n.cfg.MaxValueSize {
		return WriteResult{}, invalid("value of %d bytes exceeds the limit of %d bytes", len(value), n.cfg.MaxValueSize)
	}
	op, err := writeOp(pb.Op_PUT, key, value, opt)
	if err != nil {
		return WriteResult{}, err
	}
	if op.Lease != 0 {
		op.MaxKeysPerLease = n.cfg.Leases.maxKeysPerLease()
	}
	return n.propose(ctx, op)
}

// Delete removes key through the leader's batcher.
func (n *Node) Delete(ctx context.Context, key []byte, opt WriteOptions) (WriteResult, error) {
	if err := n.checkKey(key); err != nil {
		return WriteResult{}, err
	}
	op, err := writeOp(pb.Op_DELETE, key, nil, opt)
	if err != nil {
		return WriteResult{}, err
	}
	return n.propose(ctx, op)
}

func writeOp(kind pb.Op_Kind, key, value []byte, opt WriteOptions) (*pb.Op, error) {
	if opt.Lease < 0 || kind != pb.Op_PUT && opt.Lease != 0 {
		return nil, invalid("lease %d: only a put attaches a key, to a positive lease id", opt.Lease)
	}
	op := &pb.Op{Kind: kind, Key: key, Value: value, WantPrev: opt.PrevKV, Lease: opt.Lease}
	if c := opt.If; c != nil {
		switch {
		case c.ModRevision != 0 && c.Absent:
			return nil, invalid("a condition cannot require both a mod revision and absence")
		case c.ModRevision != 0:
			op.Condition = &pb.Condition{Require: &pb.Condition_ModRevision{ModRevision: c.ModRevision}}
		case c.Absent:
			op.Condition = &pb.Condition{Require: &pb.Condition_Absent{Absent: true}}
		}
	}
	return op, nil
}

// checkKey applies the key rule (package keyspace) to a request's key.
func (n *Node) checkKey(key []byte) error { return checkKey(key, n.cfg.MaxKeySize) }

func (n *Node) propose(ctx context.Context, op *pb.Op) (WriteResult, error) {
	r, err := n.proposeOp(ctx, op)
	if err != nil {
		return WriteResult{}, err
	}
	return WriteResult{Revision: r.index, Succeeded: r.res.Succeeded, Deleted: r.res.Deleted,
		Prev: r.res.Prev, ModRevision: r.res.ModRevision}, nil
}

// proposeOp hands op to the leader's batcher and waits until its entry is
// applied.
func (n *Node) proposeOp(ctx context.Context, op *pb.Op) (proposalResult, error) {
	if err := n.Serving(); err != nil {
		return proposalResult{}, err
	}
	if n.raft.State() != raft.Leader {
		return proposalResult{}, n.notLeader()
	}
	if err := n.writable(); err != nil {
		return proposalResult{}, err
	}
	p := &proposal{op: op, done: make(chan proposalResult, 1)}
	select {
	case n.batcher.in <- p:
	case <-n.stop:
		return proposalResult{}, ErrShuttingDown
	case <-ctx.Done():
		return proposalResult{}, ctx.Err() // not yet proposed
	}
	select {
	case r := <-p.done:
		if r.err == nil && r.res.Err != nil {
			r.err = r.res.Err // refused at apply (e.g. its lease does not exist); nothing changed
		}
		return r, r.err
	case <-ctx.Done():
		return proposalResult{}, errors.Join(ErrOutcomeUnknown, ctx.Err())
	case <-n.stop:
		return proposalResult{}, errors.Join(ErrOutcomeUnknown, ErrShuttingDown)
	}
}

// Consistency selects how a read is served.
type Consistency int

const (
	// Linearizable reads are served by the leader after confirming leadership.
	Linearizable Consistency = iota
	// Serializable reads are served locally and may be stale.
	Serializable
)

// readGate is what a read checks first, in this order: a removed node
// refuses; a linearizable read on a follower gets the leader hint, so a
// client finds the leader even through a node that found damaged data; an
// unhealthy node refuses with DATA_LOSS.
func (n *Node) readGate(c Consistency) error {
	if err := n.Serving(); err != nil {
		return err
	}
	if c == Linearizable && n.raft.State() != raft.Leader {
		return n.notLeader()
	}
	return n.readable()
}

// Get returns the key (nil when absent) and the revision it was read at.
func (n *Node) Get(ctx context.Context, key []byte, c Consistency) (*KeyValue, uint64, error) {
	if err := n.checkKey(key); err != nil {
		return nil, 0, err
	}
	if err := n.readGate(c); err != nil {
		return nil, 0, err
	}
	if c == Linearizable {
		if _, err := n.readIndex(ctx); err != nil {
			return nil, 0, err
		}
	}
	kv, rev, err := n.fsm.Get(key)
	if rerr := n.readable(); rerr != nil {
		return nil, 0, rerr // whatever was read, this node found damage meanwhile
	}
	return kv, rev, err
}

// ListOptions select one page of a List.
type ListOptions struct {
	// Start is the first key to return (inclusive), under the prefix;
	// empty: from the prefix. A later page passes the previous one's Next.
	Start []byte
	// Revision reads the keys as they were at this revision; 0 = now. A
	// later page passes the first page's Revision, so the pages together
	// are one revision's keys. A Linearizable page refuses a revision past
	// the commit index (no page was read there); a Serializable one waits
	// until this node has applied it. One whose state history no longer
	// reaches is refused with a *fsm.RevisionUnavailableError (it wraps
	// watch.ErrCompacted).
	Revision uint64
	// Limit bounds the pairs (0 = no bound); MaxBytes their key, value and
	// fsm.KVOverhead bytes (0 = no bound), at least one pair whatever its
	// size.
	Limit, MaxBytes int
}

// ListResult is one page of the keys under a prefix.
type ListResult struct {
	KVs      []KeyValue
	Revision uint64 // the revision the page was read at
	More     bool   // a bound cut the page short; Next is where to go on
	Next     []byte // the first key left out (nil when none)
}

// List returns one page of the keys starting with prefix, in key order,
// from one read transaction. With c Linearizable every page confirms
// leadership first, so the first page (Revision 0) is linearizable and
// later pages, pinned to its revision, are consistent with it.
func (n *Node) List(ctx context.Context, prefix []byte, o ListOptions, c Consistency) (ListResult, error) {
	if err := checkList(prefix, o, n.cfg.MaxKeySize); err != nil {
		return ListResult{}, err
	}
	if err := n.readGate(c); err != nil {
		return ListResult{}, err
	}
	if c == Linearizable {
		// Every revision a page was ever read at is committed, so at or
		// below the index a confirmed leader reads at: one above it was
		// never handed out, and waiting for it could take forever.
		index, err := n.readIndex(ctx)
		if err != nil {
			return ListResult{}, err
		}
		if o.Revision > index {
			return ListResult{}, invalid("revision %d is past the commit index %d: pass the revision of the list's first page", o.Revision, index)
		}
	} else if o.Revision > 0 {
		// A page read at this revision on another node: wait until this
		// node has applied it, as a watch from a future revision does.
		if err := n.fsm.WaitApplied(ctx, o.Revision); err != nil {
			return ListResult{}, fmt.Errorf("wait until this node has applied revision %d (it has applied %d): %w", o.Revision, n.fsm.Applied(), err)
		}
	}
	p, err := n.fsm.List(prefix, fsm.ListOptions{Start: o.Start, Revision: o.Revision, Limit: o.Limit, MaxBytes: o.MaxBytes})
	if rerr := n.readable(); rerr != nil {
		return ListResult{}, rerr // whatever was read, this node found damage meanwhile
	}
	return ListResult{KVs: p.KVs, Revision: p.Revision, More: p.Next != nil, Next: p.Next}, err
}

// checkList refuses a List page request that breaks the key rule for its
// prefix, starts outside its prefix or has a negative bound.
func checkList(prefix []byte, o ListOptions, maxKeySize int) error {
	if err := checkPrefix(prefix, maxKeySize); err != nil {
		return err
	}
	if len(o.Start) > 0 && (!bytes.HasPrefix(o.Start, prefix) || len(o.Start) > maxKeySize) {
		return invalid("start key %.80q is not a key under the prefix %.80q", o.Start, prefix)
	}
	if o.Limit < 0 || o.MaxBytes < 0 {
		return invalid("limit %d and byte bound %d must not be negative", o.Limit, o.MaxBytes)
	}
	return nil
}

// WatchOptions select what a watch delivers.
type WatchOptions struct {
	Prefix bool // key is a prefix that starts and ends with '/'
	PrevKV bool // events carry the previous value
	// StartRevision: deliver every matching event with revision >= it,
	// from history, then live events. 0 = from now. Below the oldest
	// retained revision: a *watch.CompactedError. In the future: waits.
	StartRevision uint64
	// RequireLeader: cancel the watch (watch.CauseNoLeader) when this node
	// loses touch with the leader, so the client resumes elsewhere.
	RequireLeader bool
}

func (o WatchOptions) watchOptions() watch.Options {
	return watch.Options{Prefix: o.Prefix, PrevKV: o.PrevKV, StartRevision: o.StartRevision, RequireLeader: o.RequireLeader}
}

// WatchStream multiplexes many watchers for one consumer (a gRPC stream, or
// an embedding program): their events share one bounded queue, taken with
// Take or, one at a time, Next.
type WatchStream struct {
	*watch.Stream
	n *Node
}

// NewWatchStream returns an empty stream; Close it when the consumer goes.
func (n *Node) NewWatchStream() *WatchStream {
	return &WatchStream{Stream: n.registry.NewStream(), n: n}
}

// NewWatchConn returns a group for the watch streams of one client
// connection: they share one byte budget (Config.Watch.ConnBytes) and one
// watcher quota (Config.Watch.MaxWatchersPerConn).
func (n *Node) NewWatchConn() *watch.Conn { return n.registry.NewConn() }

// NewWatchStreamOn returns an empty stream of c; Close it when the
// consumer goes.
func (n *Node) NewWatchStreamOn(c *watch.Conn) *WatchStream {
	return &WatchStream{Stream: c.NewStream(), n: n}
}

// Watch registers a watcher on the stream. Its Start() is the revision the
// watch starts after; the stream then carries every later matching event
// for it (Event.WatchID), or a CANCELED event.
func (s *WatchStream) Watch(key []byte, opt WatchOptions) (*watch.Watcher, error) {
	if err := s.n.Serving(); err != nil {
		return nil, err
	}
	if err := s.n.checkWatchKey(key, opt); err != nil {
		return nil, err
	}
	if err := s.n.writable(); err != nil {
		return nil, err
	}
	if _, id := s.n.raft.LeaderWithID(); opt.RequireLeader && id == "" {
		return nil, ErrNoLeader
	}
	return s.Stream.Register(key, opt.watchOptions())
}

func (n *Node) checkWatchKey(key []byte, opt WatchOptions) error {
	if !opt.Prefix {
		return n.checkKey(key)
	}
	return checkPrefix(key, n.cfg.MaxKeySize)
}

// Status describes this node's view of the cluster.
type Status struct {
	ID, Role, LeaderID, LeaderAddr, ClientAddr              string
	Term, CommitIndex, AppliedIndex, FSMIndex, LastLogIndex uint64
	Watchers, WatchersLive, WatchersCatchingUp              int
	// HistoryOldest is the oldest revision a watch can start at.
	HistoryOldest, HistoryEvents, HistoryBytes uint64
	// Healthy is false once this node found damaged stored data;
	// UnhealthyReason says what (health.go).
	Healthy         bool
	UnhealthyReason string
	// Scrub is what the scrubs of the state machine found so far.
	Scrub fsm.ScrubStats
}

// Status returns this node's raft and state machine positions. Its Role is
// "removed" once this node has seen itself removed from the cluster.
func (n *Node) Status() Status {
	_, leaderID := n.raft.LeaderWithID()
	s := Status{
		ID:           n.cfg.ID,
		Role:         strings.ToLower(n.raft.State().String()),
		LeaderID:     string(leaderID),
		ClientAddr:   n.cfg.ClientAddr,
		Term:         n.raft.CurrentTerm(),
		CommitIndex:  n.raft.CommitIndex(),
		AppliedIndex: n.raft.AppliedIndex(),
		FSMIndex:     n.fsm.Applied(),
		LastLogIndex: n.raft.LastIndex(),
	}
	if n.removed.Load() {
		s.Role = "removed"
	}
	s.WatchersLive, s.WatchersCatchingUp = n.registry.Counts()
	s.Watchers = s.WatchersLive + s.WatchersCatchingUp
	s.HistoryOldest, s.HistoryEvents, s.HistoryBytes = n.fsm.HistoryStats()
	s.Healthy = true
	if reason := n.unhealthy(); reason != nil {
		s.Healthy, s.UnhealthyReason = false, reason.Error()
	}
	s.Scrub = n.fsm.ScrubStats()
	if leaderID != "" {
		if m, err := n.fsm.Members(); err == nil {
			s.LeaderAddr = m[string(leaderID)]
		}
	}
	return s
}

// Member is one server in the raft configuration.
type Member struct {
	ID, RaftAddr, ClientAddr string
	Voter, Leader            bool
	// Reachable is set only on the leader: whether it heard from the
	// member within two election timeouts.
	Reachable *bool
}

// Members returns the raft configuration with known client addresses.
func (n *Node) Members() ([]Member, error) {
	if err := n.Serving(); err != nil {
		return nil, err
	}
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	addrs, err := n.fsm.Members()
	if err != nil {
		return nil, err
	}
	_, leader := n.raft.LeaderWithID()
	isLeader := n.raft.State() == raft.Leader
	var out []Member
	for _, s := range f.Configuration().Servers {
		m := Member{ID: string(s.ID), RaftAddr: string(s.Address), ClientAddr: addrs[string(s.ID)],
			Voter: s.Suffrage == raft.Voter, Leader: s.ID == leader}
		if isLeader {
			r := n.reachable(s.ID)
			m.Reachable = &r
		}
		out = append(out, m)
	}
	return out, nil
}

// LogEntry is one committed raft log entry, decoded.
type LogEntry struct {
	Index, Term uint64
	Type        string
	Chunk       *pb.Chunk // command entries only
}

// CommittedLog calls fn for each committed entry from index from on, with
// the oldest index this node still holds (older entries are compacted into
// a snapshot), and returns that oldest index.
func (n *Node) CommittedLog(from uint64, fn func(oldest uint64, e LogEntry) error) (uint64, error) {
	first, err := n.logStore.FirstIndex()
	if err != nil {
		return 0, err
	}
	if from < first {
		from = first
	}
	commit := n.raft.CommitIndex()
	for i := from; i <= commit && i != 0; i++ {
		var l raft.Log
		if err := n.logStore.GetLog(i, &l); err != nil {
			return first, fmt.Errorf("read log entry %d: %w", i, err)
		}
		e := LogEntry{Index: l.Index, Term: l.Term, Type: strings.TrimPrefix(strings.ToLower(l.Type.String()), "log")}
		if l.Type == raft.LogCommand {
			e.Chunk = new(pb.Chunk)
			if err := unmarshal(l.Data, e.Chunk); err != nil {
				return first, fmt.Errorf("decode log entry %d: %w", i, err)
			}
		}
		if err := fn(first, e); err != nil {
			return first, err
		}
	}
	return first, nil
}

// StepDown hands leadership to another voter when this node leads, so a
// planned stop does not wait for an election timeout.
func (n *Node) StepDown() {
	if n.raft.State() != raft.Leader {
		return
	}
	if err := n.raft.LeadershipTransfer().Error(); err != nil {
		n.log.Warn("leadership transfer failed", "err", err)
		return
	}
	n.log.Info("leadership handed over")
}

// CancelWatchers ends every watch with a CANCELED event carrying reason and
// stops the dispatcher; Close does it with "shutdown" if not done before.
func (n *Node) CancelWatchers(reason string) { n.cancelWatchers(watch.CauseShutdown, reason) }

// cancelWatchers is CancelWatchers with the cause the CANCELED events carry.
func (n *Node) cancelWatchers(cause watch.CancelCause, reason string) {
	n.dispatcher.StopFor(cause, reason)
	n.watchersDoneOnce.Do(func() { close(n.watchersDone) })
}

// raftStopped closes raftDone once raft has been shut down.
func (n *Node) raftStopped() { n.raftDoneOnce.Do(func() { close(n.raftDone) }) }

// WatchersDone is closed once CancelWatchers (or Close) has canceled every
// watcher; watch streams end then, as no watch can be created any more.
func (n *Node) WatchersDone() <-chan struct{} { return n.watchersDone }

// Close stops the node: the background goroutines, raft, then the stores.
func (n *Node) Close() error {
	var err error
	n.closeOnce.Do(func() {
		n.CancelWatchers("shutdown")
		close(n.stop)
		close(n.batcher.stop)
		if e := n.raft.Shutdown().Error(); e != nil {
			err = fmt.Errorf("raft shutdown: %w", e)
		}
		n.raftStopped()
		n.wg.Wait()
		err = errors.Join(err, n.transport.Close(), n.boltStore.Close())
		if ferr := n.fsm.Close(); ferr != nil {
			err = errors.Join(err, ferr)
		} else {
			err = errors.Join(err, n.endSession())
		}
		n.log.Info("node stopped")
	})
	return err
}
