package node

import (
	"time"

	pb "github.com/raftwatch/raftwatch/proto"

	"github.com/hashicorp/raft"
)

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
