package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	pb "github.com/raftwatch/raftwatch/proto"
	"github.com/raftwatch/raftwatch/watch"
)

// A node removed from the cluster must stop serving: its state only gets
// staler, and its watchers would get PROGRESS forever and no event. It
// learns of its removal from the configuration entry that removes it, but
// raft adopts a configuration entry as soon as it is appended, before it
// commits, and a leader that crashes before the entry reaches a majority
// leaves it to be truncated: the node is then still a member. So removal
// has two steps:
//
//   - pending: the latest configuration in this node's log excludes it. It
//     refuses every request but Status at once (a client moves to another
//     member), keeps its watchers and raft running, and serves again if a
//     new leader's log puts it back.
//   - final: the removal is committed. The node knows it when it has
//     applied the entry itself, or when another member that excludes it
//     has committed past the entry (a removed follower rarely learns of
//     the commit: the leader stops replicating to it first). It then
//     cancels its watchers with RemovedReason, writes the REMOVED marker
//     and stops raft.
//
// A leader does not act on its own removal while it leads: raft commits the
// entry, answers RemoveServer, then shuts itself down (ShutdownOnRemove);
// the node then finds the removal committed as above.
//
// A node that crashed after its removal entry reached it, before noticing,
// must notice at restart. The MEMBER file records that the node was in a
// committed configuration (and at which applied index); a node that has
// it and whose log excludes it is being removed. A new member sets it only
// once its add has committed, so a snapshot configuration that predates
// its add (a restart mid-install) cannot make it look removed. A node that
// was down while it was removed never receives the entry and cannot tell;
// see the README.
//
// Removal is final for the data directory: the REMOVED marker keeps a
// restarted node removed. To bring the machine back, wipe the directory,
// start it empty and add it again.

// RemovedReason is the reason a removed node's watchers are canceled with.
const RemovedReason = "this node was removed from the cluster; resume on another member"

// removedMarker is the file in the data directory that records removal;
// memberMarker the one that records membership (see above).
const (
	removedMarker = "REMOVED"
	memberMarker  = "MEMBER"
)

// membershipCheckInterval is how often a node looks for itself in the
// latest configuration (an atomic read in raft); removalConfirmInterval
// how often a node whose removal is pending asks the other members.
const (
	membershipCheckInterval = 100 * time.Millisecond
	removalConfirmInterval  = time.Second
	removalConfirmTimeout   = time.Second
	// maxConfigScan bounds the log entries read to tell whether the
	// latest configuration is committed; a node further behind waits.
	maxConfigScan = 4096
)

// checkRemovedMarker marks the node removed if a previous run was.
func (n *Node) checkRemovedMarker() {
	if _, err := os.Stat(filepath.Join(n.cfg.DataDir, removedMarker)); err == nil {
		n.markRemoved("the data directory records a removal")
	}
}

// membership is one look at this node's place in the configuration.
type membership struct {
	in        bool   // the latest configuration lists this node
	empty     bool   // there is no configuration yet
	committed bool   // the latest configuration is committed
	index     uint64 // the index of its entry when not committed
	applied   uint64 // the state machine's applied index when looked
	others    []raft.Server
}

// lookAtMembership reads the latest configuration and, when whether this
// node is in it differs from member, whether it is committed: it is when no
// configuration entry follows the applied index in the log (everything up
// to it is committed).
func (n *Node) lookAtMembership(member bool) (membership, error) {
	var m membership
	m.applied = n.fsm.Applied()
	servers := n.raft.GetConfiguration().Configuration().Servers
	m.empty = len(servers) == 0
	for _, s := range servers {
		if string(s.ID) == n.cfg.ID {
			m.in = true
		} else {
			m.others = append(m.others, s)
		}
	}
	if m.empty || m.in == member {
		return m, nil
	}
	last := n.raft.LastIndex()
	if last > m.applied+maxConfigScan {
		return m, nil // far behind: not known committed yet
	}
	m.committed = true
	for i := last; i > m.applied; i-- {
		var l raft.Log
		if err := n.logStore.GetLog(i, &l); err != nil {
			if errors.Is(err, raft.ErrLogNotFound) {
				continue // truncated meanwhile, or a snapshot's gap
			}
			return m, err
		}
		if l.Type == raft.LogConfiguration {
			m.committed, m.index = false, i
			break
		}
	}
	// Read again: a truncation between the two reads may have changed it.
	again := n.raft.GetConfiguration().Configuration().Servers
	if !slices.Equal(servers, again) {
		return m, errors.New("the configuration changed while it was read")
	}
	return m, nil
}

// watchMembership marks the node removed once it was in a committed
// configuration and then is not; see the top of this file.
func (n *Node) watchMembership() {
	t := time.NewTicker(membershipCheckInterval)
	defer t.Stop()
	if n.removed.Load() {
		return // checkRemovedMarker found the marker
	}
	member := n.wasMember()
	var lastAsked time.Time
	for {
		m, err := n.lookAtMembership(member)
		switch {
		case err != nil || m.empty:
		case m.in:
			if n.removed.CompareAndSwap(true, false) {
				n.log.Warn("this node is in the configuration again: its removal did not commit; serving again")
			}
			if !member && m.committed {
				member = true
				n.recordMember(m.applied)
			}
		case !member:
		case m.committed:
			n.markRemoved("a committed configuration no longer lists this node")
			return
		case n.raft.State() == raft.Leader:
			// raft commits the entry, then shuts down (ShutdownOnRemove).
		default:
			if !n.removed.Swap(true) {
				n.log.Warn("the latest configuration no longer lists this node; refusing requests until its removal commits or is undone",
					"index", m.index)
			}
			if time.Since(lastAsked) >= removalConfirmInterval {
				lastAsked = time.Now()
				if who, ok := n.removalCommittedAt(m.index, m.others); ok {
					n.markRemoved(fmt.Sprintf("member %s committed the configuration entry %d that removes this node", who, m.index))
					return
				}
			}
		}
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
	}
}

// removalCommittedAt asks the other members whether they have committed
// index and no longer list this node; it returns the first that has.
func (n *Node) removalCommittedAt(index uint64, others []raft.Server) (string, bool) {
	addrs, err := n.fsm.Members()
	if err != nil {
		return "", false
	}
	for _, s := range others {
		addr := addrs[string(s.ID)]
		if addr == "" {
			continue
		}
		if n.confirmsRemoval(addr, string(s.ID), index) {
			return string(s.ID), true
		}
	}
	return "", false
}

// confirmsRemoval reports whether the member at clientAddr has committed
// index and does not list this node. It lists what its latest configuration
// holds; having committed past the entry, that excludes this node only if
// the entry committed or a later change removes it again.
func (n *Node) confirmsRemoval(clientAddr, id string, index uint64) bool {
	confirmed := false
	n.callMember(clientAddr, removalConfirmTimeout, func(ctx context.Context, c pb.ClusterClient) error {
		st, err := c.Status(ctx, &pb.StatusRequest{})
		if err != nil || st.Id != id || st.Role == "removed" || st.CommitIndex < index {
			return err
		}
		ms, err := c.Members(ctx, &pb.MembersRequest{})
		if err != nil {
			return err
		}
		confirmed = !slices.ContainsFunc(ms.Members, func(m *pb.Member) bool { return m.Id == n.cfg.ID })
		return nil
	})
	return confirmed
}

// wasMember reports whether the MEMBER file is in the data directory.
func (n *Node) wasMember() bool {
	_, err := os.Stat(filepath.Join(n.cfg.DataDir, memberMarker))
	return err == nil
}

// recordMember writes the MEMBER file, durably: a removal noticed only
// after a restart depends on it.
func (n *Node) recordMember(applied uint64) {
	if err := writeFileSync(filepath.Join(n.cfg.DataDir, memberMarker),
		[]byte("in a committed configuration at applied index "+strconv.FormatUint(applied, 10)+"\n")); err != nil {
		n.log.Error("could not record membership in the data directory; a removal during a crash may go unnoticed", "err", err)
	}
}

// writeFileSync writes path through a temporary file, synced and renamed.
func writeFileSync(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// markRemoved makes the node refuse every request but Status for good,
// cancels its watchers with RemovedReason, records the removal in the data
// directory and stops raft, which has nothing left to do here but campaign
// in vain. It runs once: from checkRemovedMarker before watchMembership
// starts, or from watchMembership, which then returns.
func (n *Node) markRemoved(how string) {
	n.removed.Store(true)
	n.log.Warn("this node was removed from the cluster: it no longer serves reads, writes or watches", "detected", how)
	if err := writeFileSync(filepath.Join(n.cfg.DataDir, removedMarker), []byte(strings.TrimSpace(how)+"\n")); err != nil {
		n.log.Error("could not record the removal in the data directory", "err", err)
	}
	n.cancelWatchers(watch.CauseRemoved, RemovedReason)
	if err := n.raft.Shutdown().Error(); err != nil {
		n.log.Warn("raft shutdown after removal", "err", err)
	}
	n.raftStopped()
}

// Serving returns ErrRemoved once the node was removed from the cluster,
// or while its removal is pending, else nil.
func (n *Node) Serving() error {
	if n.removed.Load() {
		return ErrRemoved
	}
	return nil
}
