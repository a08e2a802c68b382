package concurrency

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/raftwatch/raftwatch/client"
	pb "github.com/raftwatch/raftwatch/proto"
)

// Election is a leader election under a key prefix. Candidates are the
// contenders of the package invariant: the first in (create_revision, key)
// order leads, the others wait in that order, each watching only the one
// before it. The leader's key holds its proclaimed value. An Election is
// used by one goroutine at a time (Observe's channel aside).
type Election struct {
	s      *Session
	prefix string
	key    string
	rev    uint64 // the key's create revision while campaigning or leading
	token  uint64
}

// NewElection returns an Election of session s under prefix (a '/' is
// appended if it does not end with one). Its key is prefix + the
// session's lease id in hex.
func NewElection(s *Session, prefix string) *Election {
	p := normPrefix(prefix)
	return &Election{s: s, prefix: p, key: contenderKey(p, s)}
}

// Campaign enters the election with value and returns once this session
// leads, with value proclaimed. When ctx ends or the session is lost
// before, it withdraws (deletes the key it created) and returns the
// reason.
func (e *Election) Campaign(ctx context.Context, value string) error {
	v := []byte(value)
	rev, created, err := enter(ctx, e.s, e.key, v)
	if err != nil {
		return err
	}
	var token uint64
	if err = waitFirst(ctx, e.s, e.prefix, e.key, rev); err == nil {
		token, err = fence(ctx, e.s, e.key, v, rev)
	}
	if err != nil {
		if created {
			leaveDetached(ctx, e.s, e.key, rev)
		}
		return err
	}
	e.rev, e.token = rev, token
	return nil
}

// Proclaim replaces the leader's value, in a Txn conditioned on the
// leader key's create revision: ErrNotLeader when this Election does not
// lead, or no longer does (the session was lost).
func (e *Election) Proclaim(ctx context.Context, value string) error {
	if e.rev == 0 {
		return ErrNotLeader
	}
	k := []byte(e.key)
	r, err := e.s.c.Txn(ctx).
		If(client.Compare(client.CreateRevision(k), "=", e.rev)).
		Then(client.OpPut(k, []byte(value), client.WithLease(e.s.id))).
		Commit()
	switch {
	case err != nil:
		return sessionErr(e.s, fmt.Errorf("concurrency: proclaim on %q: %w", e.key, err))
	case !r.Succeeded:
		e.rev, e.token = 0, 0
		return fmt.Errorf("%w: the leader key %q is gone (the session was lost)", ErrNotLeader, e.key)
	}
	return nil
}

// Resign gives up leadership (deletes the leader key); the next candidate
// in order becomes leader. Resigning when not leading does nothing.
func (e *Election) Resign(ctx context.Context) error {
	if e.rev == 0 {
		return nil
	}
	if _, err := leave(ctx, e.s, e.key, e.rev); err != nil {
		return err
	}
	e.rev, e.token = 0, 0
	return nil
}

// Key returns the Election's key: prefix + the session's lease id in hex.
func (e *Election) Key() string { return e.key }

// Rev returns the leader key's create revision while this Election leads,
// else 0.
func (e *Election) Rev() uint64 { return e.rev }

// Token returns the revision of the Txn that confirmed this leadership
// (strictly greater than every earlier leader's), 0 when not leading.
func (e *Election) Token() uint64 { return e.token }

// Leader returns the current leader's key: its value (the proclaimed
// value), create revision and mod revision; ErrNoLeader when there is no
// candidate.
func (e *Election) Leader(ctx context.Context) (*pb.KeyValue, error) {
	return Leader(ctx, e.s.c, e.prefix)
}

// Leader is Election.Leader for whoever has no session: an observer.
func Leader(ctx context.Context, c *client.Client, prefix string) (*pb.KeyValue, error) {
	kv, _, err := leader(ctx, c, normPrefix(prefix))
	return kv, err
}

func leader(ctx context.Context, c *client.Client, prefix string, rev ...uint64) (*pb.KeyValue, uint64, error) {
	kvs, at, err := contenders(ctx, c, prefix, rev...)
	if err != nil {
		return nil, 0, err
	}
	if len(kvs) == 0 {
		return nil, at, ErrNoLeader
	}
	return kvs[0], at, nil
}

// observeRetry is the pause before Observe reads again after a failed
// read or watch (no leader reachable, say).
const observeRetry = 200 * time.Millisecond

// Observe returns a channel that receives the leader each time it changes
// or proclaims a new value, starting with the current one (if any); it is
// closed when ctx ends. It reads the order, then watches only the
// leader's key (or, while there is none, the prefix) from the revision it
// read at, so no change is missed. A leader's value is sent once: a put
// of the value it already has (Campaign confirming it leads) is not a
// change.
func (e *Election) Observe(ctx context.Context) <-chan *pb.KeyValue {
	return Observe(ctx, e.s.c, e.prefix)
}

// Observe is Election.Observe for whoever has no session: an observer.
func Observe(ctx context.Context, c *client.Client, prefix string) <-chan *pb.KeyValue {
	ch := make(chan *pb.KeyValue)
	go observe(ctx, c, normPrefix(prefix), ch)
	return ch
}

func observe(ctx context.Context, c *client.Client, prefix string, ch chan<- *pb.KeyValue) {
	defer close(ch)
	var last *pb.KeyValue
	send := func(kv *pb.KeyValue) bool {
		if last != nil && string(last.Key) == string(kv.Key) && last.CreateRevision == kv.CreateRevision &&
			string(last.Value) == string(kv.Value) {
			return true // the same leader with the same value (e.g. Campaign's confirming put)
		}
		select {
		case ch <- kv:
			last = kv
			return true
		case <-ctx.Done():
			return false
		}
	}
	// next is the revision the next read of the order is pinned to: the one
	// at which the leader changed (its key's deletion, a first candidate's
	// put), so a leader who came and went since is not skipped; 0 = now.
	var next uint64
	for ctx.Err() == nil {
		kv, at, err := leader(ctx, c, prefix, next)
		next = 0
		if err == nil {
			if !send(kv) {
				return
			}
			next, err = followLeader(ctx, c, kv, at, send)
		} else if errors.Is(err, ErrNoLeader) {
			next, err = waitCandidate(ctx, c, prefix, at)
		}
		if err != nil {
			// Includes a pinned read the history no longer reaches: the
			// retry reads the order as it is now.
			next = 0
			select {
			case <-time.After(observeRetry):
			case <-ctx.Done():
			}
		}
	}
}

// followLeader sends each value the leader kv proclaims after revision at
// and returns the revision its key was deleted at, or an error. Keys
// created later sort after it, so only its deletion changes the leader.
func followLeader(ctx context.Context, c *client.Client, kv *pb.KeyValue, at uint64, send func(*pb.KeyValue) bool) (uint64, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := c.Watch(wctx, kv.Key, client.WithStartRevision(at+1))
	for err == nil {
		var ev *pb.WatchResponse
		if ev, err = w.Recv(); err != nil {
			break
		}
		switch ev.Type {
		case pb.EventType_DELETE:
			return ev.Revision, nil
		case pb.EventType_PUT:
			kv = &pb.KeyValue{Key: kv.Key, Value: ev.Value, CreateRevision: kv.CreateRevision,
				ModRevision: ev.Revision, Version: ev.Version, Lease: kv.Lease}
			if !send(kv) {
				return 0, ctx.Err()
			}
		}
	}
	if errors.Is(err, client.ErrCompacted) {
		return 0, nil // read the order again, as it is now
	}
	return 0, err
}

// waitCandidate returns the revision of the first put under prefix after
// revision at (only direct children: the keys of candidates), or an error.
func waitCandidate(ctx context.Context, c *client.Client, prefix string, at uint64) (uint64, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := c.Watch(wctx, []byte(prefix), client.WithPrefix(), client.WithStartRevision(at+1))
	for err == nil {
		var ev *pb.WatchResponse
		if ev, err = w.Recv(); err == nil && ev.Type == pb.EventType_PUT && !strings.Contains(string(ev.Key[len(prefix):]), "/") {
			return ev.Revision, nil
		}
	}
	if errors.Is(err, client.ErrCompacted) {
		return 0, nil
	}
	return 0, err
}
