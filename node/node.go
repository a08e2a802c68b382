package node

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"

	"github.com/raftwatch/raftwatch/fsm"
	"github.com/raftwatch/raftwatch/watch"
)

// KeyValue is a stored key with its revisions.
type KeyValue = fsm.KeyValue

// Node is one raftwatch node.
type Node struct {
	cfg Config
	log *slog.Logger

	raft         *raft.Raft
	store        raftStore        // raft's log and stable store (raftstore.go)
	logStore     *checkedLogStore // store's log, checked
	logStorePath string           // where store lives
	transport    *raft.NetworkTransport
	fsm          *fsm.FSM
	registry     *watch.Registry
	dispatcher   *watch.Dispatcher
	batcher      *batcher

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
	// logScrub is what the scrubs of the raft log found (logscrub.go).
	logScrub scrubRecord

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
	// Before anything is opened: a directory holding the other kind of log
	// is refused, and an automatic choice is made once, here.
	kind, err := resolveLogStore(cfg.DataDir, cfg.LogStore)
	if err != nil {
		return nil, err
	}
	if cfg.LogStore = kind; kind == LogStoreWAL {
		if err := cfg.checkWALLimits(); err != nil {
			return nil, err
		}
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
		"data_dir", cfg.DataDir, "log_store", cfg.LogStore, "applied_index", n.fsm.Applied())
	return n, nil
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
		err = errors.Join(err, n.transport.Close(), n.store.Close())
		if ferr := n.fsm.Close(); ferr != nil {
			err = errors.Join(err, ferr)
		} else {
			err = errors.Join(err, n.endSession())
		}
		n.log.Info("node stopped")
	})
	return err
}
