package node

import (
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// The leader's replication keeps, per follower, when it last heard from it,
// but raft does not expose it. What raft does report are observations:
// FailedHeartbeatObservation (with that last contact) each time a heartbeat
// to a follower fails, ResumedHeartbeatObservation when one succeeds again.
// contacts keeps the followers whose heartbeats fail, so membership changes
// can count the voters the leader can reach.

// contactObservations is the observer's buffer: raft drops observations an
// observer has no room for, and a dropped "resumed" would leave a follower
// counted unreachable until its next failure.
const contactObservations = 256

// contacts is, on the leader, the followers whose heartbeats are failing.
type contacts struct {
	mu sync.Mutex
	// failing maps a follower to when the leader last heard from it; a
	// follower absent from it answers heartbeats.
	failing map[raft.ServerID]time.Time
}

// note records one raft observation.
func (c *contacts) note(o any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch o := o.(type) {
	case raft.FailedHeartbeatObservation:
		if c.failing == nil {
			c.failing = map[raft.ServerID]time.Time{}
		}
		c.failing[o.PeerID] = o.LastContact
	case raft.ResumedHeartbeatObservation:
		delete(c.failing, o.PeerID)
	case raft.PeerObservation:
		if o.Removed {
			delete(c.failing, o.Peer.ID)
		}
	case raft.LeaderObservation:
		// A new leader replicates afresh; its own failures will come.
		clear(c.failing)
	}
}

// reachable reports whether the leader heard from follower id within
// window (true for a follower whose heartbeats succeed).
func (c *contacts) reachable(id raft.ServerID, window time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	last, failing := c.failing[id]
	return !failing || time.Since(last) < window
}

// contactWindow is how long a voter may go unheard before the leader counts
// it unreachable: two election timeouts, so that one slow heartbeat on a
// loaded machine does not count, while a dead node counts within seconds.
func (n *Node) contactWindow() time.Duration { return 2 * n.cfg.ElectionTimeout }

// trackContacts feeds raft's heartbeat observations to n.contacts until the
// node stops.
func (n *Node) trackContacts() {
	ch := make(chan raft.Observation, contactObservations)
	obs := raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.FailedHeartbeatObservation, raft.ResumedHeartbeatObservation, raft.PeerObservation, raft.LeaderObservation:
			return true
		}
		return false
	})
	n.raft.RegisterObserver(obs)
	defer n.raft.DeregisterObserver(obs)
	for {
		select {
		case <-n.stop:
			return
		case o := <-ch:
			n.contacts.note(o.Data)
		}
	}
}

// reachable reports whether member id is this node (the leader) or a
// follower it heard from recently. Meaningful on the leader only.
func (n *Node) reachable(id raft.ServerID) bool {
	return string(id) == n.cfg.ID || n.contacts.reachable(id, n.contactWindow())
}
