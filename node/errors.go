package node

import (
	"errors"
	"fmt"

	"github.com/raftwatch/raftwatch/keyspace"
)

// NotLeaderError is returned by writes and linearizable reads on a node that
// is not the leader. The request was not applied. LeaderAddr is the leader's
// client address, empty when this node does not know it yet.
type NotLeaderError struct {
	LeaderID   string
	LeaderAddr string
}

func (e *NotLeaderError) Error() string {
	switch {
	case e.LeaderID == "":
		return "this node is not the leader and no leader is known; retry shortly"
	case e.LeaderAddr == "":
		return fmt.Sprintf("this node is not the leader; the leader is %s (client address not known yet)", e.LeaderID)
	}
	return fmt.Sprintf("this node is not the leader; send the request to the leader %s at %s", e.LeaderID, e.LeaderAddr)
}

var (
	// ErrNoLeader: no leader is elected; the request was not applied.
	ErrNoLeader = errors.New("no leader is elected; the request was not applied, retry shortly")
	// ErrNotReady: this node has just become leader and has not yet committed
	// an entry in its term, so it cannot serve a linearizable read nor, with
	// roles enforced, check a call against roles it may not have applied.
	ErrNotReady = errors.New("leader has not committed an entry in its term yet; retry shortly")
	// ErrOutcomeUnknown: the write was proposed but leadership was lost or
	// the node stopped before its fate was known; it may or may not apply.
	ErrOutcomeUnknown = errors.New("write outcome unknown: leadership was lost after it was proposed")
	// ErrNotApplied marks other failures that certainly left the state alone.
	ErrNotApplied = errors.New("the request was not applied")
	// ErrShuttingDown: the node is stopping.
	ErrShuttingDown = errors.New("node is shutting down")
	// ErrInvalidArgument is wrapped by every input validation error.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrRemoved: this node was removed from the cluster; it serves nothing
	// but its status until it is wiped and added again.
	ErrRemoved = errors.New("this node was removed from the cluster; use another member")
	// ErrAlreadyExists is wrapped by errors about an id or address another
	// member already has.
	ErrAlreadyExists = errors.New("already a member")
	// ErrQuorumAtRisk is wrapped by the refusal of a membership change that
	// would leave too few reachable voters to commit.
	ErrQuorumAtRisk = errors.New("the change would leave the cluster unable to commit")
	// ErrNotCaughtUp: a new member did not catch up with the leader in time
	// and was left a non-voter.
	ErrNotCaughtUp = errors.New("the new member has not caught up")
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidArgument, fmt.Sprintf(format, args...))
}

// ruleError is a key or prefix refused by the key rule (package keyspace):
// it wraps ErrInvalidArgument too, but says only what the rule says, so
// every call that carries a key refuses it with the same message.
type ruleError struct{ err error }

func (e ruleError) Error() string   { return e.err.Error() }
func (e ruleError) Unwrap() []error { return []error{ErrInvalidArgument, e.err} }

// checkKey applies the key rule to a key of at most max bytes.
func checkKey(key []byte, max int) error {
	if err := keyspace.CheckKey(key, max); err != nil {
		return ruleError{err}
	}
	return nil
}

// checkPrefix applies the key rule to a prefix of at most max bytes.
func checkPrefix(prefix []byte, max int) error {
	if err := keyspace.CheckPrefix(prefix, max); err != nil {
		return ruleError{err}
	}
	return nil
}
