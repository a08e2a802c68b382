package node

import (
	"fmt"
	"sync"
	"time"
)

// Readiness: a node is ready to serve when, at the latest check,
//   - it serves at all (not removed) and is healthy (health.go);
//   - it knows a leader (raft's current leader is set: a follower forgets
//     it after HeartbeatTimeout without heartbeats, a leader steps down
//     after LeaderLeaseTimeout without quorum contact);
//   - its state machine has applied at least the commit index it had
//     heard of at the previous check, readyCheckInterval earlier. Comparing
//     with the current commit index would flap under load (entries are
//     committed before they are applied); comparing with one interval ago
//     means "applies everything it learns is committed within an interval".
//
// A node that loses the leader is not ready from the next check on, so
// within HeartbeatTimeout (follower) or LeaderLeaseTimeout (leader) plus
// readyCheckInterval of losing contact with the cluster.

// readyCheckInterval is how often trackReadiness evaluates the rule.
const readyCheckInterval = 100 * time.Millisecond

// readiness is the outcome of the latest check.
type readiness struct {
	mu      sync.Mutex
	ready   bool
	reason  string        // why not ready
	changed chan struct{} // closed and replaced whenever ready changes
}

// Ready reports whether this node is ready to serve (see the rule above),
// and if not, why; changed is closed at the next change.
func (n *Node) Ready() (ready bool, reason string, changed <-chan struct{}) {
	n.ready.mu.Lock()
	defer n.ready.mu.Unlock()
	return n.ready.ready, n.ready.reason, n.ready.changed
}

// trackReadiness evaluates the readiness rule every readyCheckInterval.
func (n *Node) trackReadiness() {
	t := time.NewTicker(readyCheckInterval)
	defer t.Stop()
	var heard uint64 // the commit index at the previous check
	for {
		reason := n.notReadyReason(heard)
		heard = n.raft.CommitIndex()
		n.setReady(reason)
		select {
		case <-n.stop:
			n.setReady("shutting down")
			return
		case <-t.C:
		}
	}
}

// notReadyReason applies the rule; "" means ready.
func (n *Node) notReadyReason(heard uint64) string {
	if err := n.Serving(); err != nil {
		return err.Error()
	}
	if err := n.unhealthy(); err != nil {
		return "unhealthy: " + err.Error()
	}
	if _, id := n.raft.LeaderWithID(); id == "" {
		return "no known leader"
	}
	if heard == 0 {
		return "starting" // nothing heard yet
	}
	if applied := n.fsm.Applied(); applied < heard {
		return fmt.Sprintf("applied index %d is behind the commit index %d heard %v ago", applied, heard, readyCheckInterval)
	}
	return ""
}

func (n *Node) setReady(reason string) {
	n.ready.mu.Lock()
	defer n.ready.mu.Unlock()
	ready := reason == ""
	n.ready.reason = reason
	if ready != n.ready.ready {
		n.ready.ready = ready
		close(n.ready.changed)
		n.ready.changed = make(chan struct{})
		if ready {
			n.log.Info("ready")
		} else {
			n.log.Info("not ready", "reason", reason)
		}
	}
}
