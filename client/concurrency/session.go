package concurrency

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftwatch/raftwatch/client"
	pb "github.com/raftwatch/raftwatch/proto"
)

// leaseAck is an acknowledged keepalive.
type leaseAck = pb.LeaseKeepAliveResponse

// DefaultTTL is a session's lease TTL in seconds unless WithTTL: a pause
// of the holder (GC, slow disk, a leader change) does not lose the lock,
// and the lock of a holder that crashed is free again within a minute.
const DefaultTTL = 60

// Errors of sessions, locks and elections.
var (
	// ErrSessionLost: the session's lease expired or was revoked (or its
	// keepalives went unacknowledged for a TTL), so its keys are gone or
	// about to be: no lock or leadership held through it is held anymore.
	ErrSessionLost = errors.New("concurrency: session lost: its lease expired or was revoked")
	// ErrSessionClosed: Close was called.
	ErrSessionClosed = errors.New("concurrency: session closed")
	// ErrLocked: TryLock found the lock held by another session.
	ErrLocked = errors.New("concurrency: the lock is held by another session")
	// ErrNotLocked: Unlock of a Mutex that does not hold the lock.
	ErrNotLocked = errors.New("concurrency: the mutex does not hold the lock")
	// ErrNotLeader: Proclaim by an Election that is not the leader.
	ErrNotLeader = errors.New("concurrency: not the leader")
	// ErrNoLeader: Leader found no candidate.
	ErrNoLeader = errors.New("concurrency: the election has no leader")
)

// Session is a lease kept alive in the background by client.KeepAlive.
// Locks and elections attach their keys to it, so they are released by the
// cluster when the session's process dies or loses touch for a TTL.
type Session struct {
	c      *client.Client
	id     int64
	ttl    int64
	ctx    context.Context    // the keepalives' context: ends when the session does
	cancel context.CancelFunc // stops the keepalives
	done   chan struct{}

	mu  sync.Mutex
	err error // why done was closed
}

// SessionOption configures NewSession.
type SessionOption func(*sessionOptions)

type sessionOptions struct{ ttl int64 }

// WithTTL sets the session lease's TTL in seconds (default DefaultTTL; the
// cluster accepts 2 s to 30 days).
func WithTTL(seconds int64) SessionOption { return func(o *sessionOptions) { o.ttl = seconds } }

// NewSession grants a lease and keeps it alive until Close or until it is
// lost. ctx bounds the grant and the first keepalive only.
func NewSession(ctx context.Context, c *client.Client, opts ...SessionOption) (*Session, error) {
	o := sessionOptions{ttl: DefaultTTL}
	for _, f := range opts {
		f(&o)
	}
	g, err := c.Grant(ctx, o.ttl)
	if err != nil {
		return nil, fmt.Errorf("concurrency: grant a session lease of %ds: %w", o.ttl, err)
	}
	kctx, cancel := context.WithCancel(context.Background())
	ch, err := keepAliveWithin(ctx, kctx, cancel, c, g.Id)
	if err != nil {
		cancel()
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		c.Revoke(rctx, g.Id)
		rcancel()
		return nil, fmt.Errorf("concurrency: keep the session lease %x alive: %w", g.Id, err)
	}
	s := &Session{c: c, id: g.Id, ttl: g.Ttl, ctx: kctx, cancel: cancel, done: make(chan struct{})}
	go s.track(ch)
	return s, nil
}

// keepAliveWithin starts client.KeepAlive on kctx, giving up (and
// canceling kctx) when ctx ends before its first renewal is acknowledged.
func keepAliveWithin(ctx, kctx context.Context, cancel context.CancelFunc, c *client.Client, id int64) (<-chan *leaseAck, error) {
	type result struct {
		ch  <-chan *leaseAck
		err error
	}
	res := make(chan result, 1)
	go func() {
		ch, err := c.KeepAlive(kctx, id)
		res <- result{ch, err}
	}()
	select {
	case r := <-res:
		return r.ch, r.err
	case <-ctx.Done():
		cancel()
		<-res
		return nil, ctx.Err()
	}
}

// track closes done when client.KeepAlive closes its channel: the lease is
// gone, or no renewal was acknowledged for a TTL after the last
// acknowledged one was sent (the cluster may have expired the lease
// already; the lease lives at least that long, so the session never
// outlives it), or Close stopped the keepalives.
func (s *Session) track(ch <-chan *leaseAck) {
	for range ch {
	}
	s.end(fmt.Errorf("%w (the lease expired or was revoked, or no renewal was acknowledged within its TTL of %ds)", ErrSessionLost, s.ttl))
}

// end records why the session ended, stops the keepalives and closes
// done, once.
func (s *Session) end(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	s.err = err
	s.cancel()
	close(s.done)
}

// Client returns the client the session uses.
func (s *Session) Client() *client.Client { return s.c }

// Lease returns the session's lease id.
func (s *Session) Lease() int64 { return s.id }

// TTL returns the lease's TTL in seconds, as granted.
func (s *Session) TTL() int64 { return s.ttl }

// Done is closed when the session ends: its lease was lost (see
// ErrSessionLost) or Close was called. Err says which.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err returns nil while the session lives, then ErrSessionLost (wrapped)
// or ErrSessionClosed.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close stops the keepalives and revokes the lease, deleting every key of
// the session (locks held are released, candidacies withdrawn) in one
// revision. A lease already gone is not an error.
func (s *Session) Close() error {
	s.end(ErrSessionClosed)
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	if _, err := s.c.Revoke(ctx, s.id); err != nil && status.Code(err) != codes.NotFound {
		return fmt.Errorf("concurrency: revoke session lease %x: %w", s.id, err)
	}
	return nil
}

// cleanupTimeout bounds the requests that undo a failed Lock or Campaign
// and Close's revoke, which run even when the caller's context has ended.
const cleanupTimeout = 5 * time.Second
