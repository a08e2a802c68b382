package node

import (
	"os"
	"path/filepath"
	"time"

	"github.com/raftwatch/raftwatch/watch"
)

// A node removed from the cluster must stop serving: its state only gets
// staler, and its watchers would get PROGRESS forever and no event. It
// learns of its removal from the configuration entry that removes it: the
// leader replicates that entry to it before it stops replicating to it
// (raft appends configuration entries to the latest configuration before
// they commit, and the removed node may never learn of the commit), and a
// removed leader sees its own entry. A node that was down while it was
// removed never receives the entry and cannot tell; see the README.
//
// Removal is final for the data directory: a marker file keeps a restarted
// node removed. To bring the machine back, wipe the directory, start it
// empty and add it again.

// RemovedReason is the reason a removed node's watchers are canceled with.
const RemovedReason = "this node was removed from the cluster; resume on another member"

// removedMarker is the file in the data directory that records removal.
const removedMarker = "REMOVED"

// membershipCheckInterval is how often a node looks for itself in the
// latest configuration (an atomic read in raft).
const membershipCheckInterval = 100 * time.Millisecond

// checkRemovedMarker marks the node removed if a previous run was.
func (n *Node) checkRemovedMarker() {
	if _, err := os.Stat(filepath.Join(n.cfg.DataDir, removedMarker)); err == nil {
		n.markRemoved("the data directory records a removal")
	}
}

// watchMembership marks the node removed once it has been in the latest
// configuration and then is not.
func (n *Node) watchMembership() {
	t := time.NewTicker(membershipCheckInterval)
	defer t.Stop()
	member := false
	for !n.removed.Load() {
		servers := n.raft.GetConfiguration().Configuration().Servers
		in := false
		for _, s := range servers {
			in = in || string(s.ID) == n.cfg.ID
		}
		switch {
		case in:
			member = true
		case member && len(servers) > 0:
			n.markRemoved("the latest configuration no longer lists this node")
			return
		}
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
	}
}

// markRemoved makes the node refuse every request but Status, cancels its
// watchers with RemovedReason, records the removal in the data directory
// and stops raft, which has nothing left to do here but campaign in vain.
func (n *Node) markRemoved(how string) {
	if n.removed.Swap(true) {
		return
	}
	n.log.Warn("this node was removed from the cluster: it no longer serves reads, writes or watches", "detected", how)
	if err := os.WriteFile(filepath.Join(n.cfg.DataDir, removedMarker), []byte(how+"\n"), 0o600); err != nil {
		n.log.Error("could not record the removal in the data directory", "err", err)
	}
	n.cancelWatchers(watch.CauseRemoved, RemovedReason)
	if err := n.raft.Shutdown().Error(); err != nil {
		n.log.Warn("raft shutdown after removal", "err", err)
	}
	n.raftStopped()
}

// Serving returns ErrRemoved once the node was removed from the cluster,
// else nil.
func (n *Node) Serving() error {
	if n.removed.Load() {
		return ErrRemoved
	}
	return nil
}
