package node

import (
	"strings"

	"github.com/hashicorp/raft"
	"github.com/raftwatch/raftwatch/fsm"
)

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
	// Scrub is what the scrubs of the state machine found so far, and
	// LogScrub what those of the raft log at rest did (values are entries).
	Scrub, LogScrub fsm.ScrubStats
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
	s.LogScrub = n.logScrub.stats()
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
