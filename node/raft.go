package node

import (
	"errors"
	"fmt"
	"net"
	"sort"

	"github.com/hashicorp/raft"
)

// startRaft opens the raft log (of cfg.LogStore's kind, checked, cached),
// the snapshot store and
// the transport, brings the state machine up to the newest snapshot, starts
// raft and bootstraps a new cluster when this node has no raft state yet.
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

	store, logPath, err := openRaftStore(cfg.DataDir, cfg.LogStore, cfg.walSegmentSize, cfg.DropDamagedWALTail, rc.Logger)
	if err != nil {
		return n.refuseDamagedLog(err)
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
	trans, err := newTransport(cfg, advertise, rc.Logger)
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
	if err := n.checkLogHoldsApplied(checked, snaps); err != nil {
		store.Close()
		trans.Close()
		return n.refuseDamagedLog(err)
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
	n.raft, n.store, n.logStore, n.logStorePath, n.transport = r, store, checked, logPath, trans

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
