package main

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	rwclient "github.com/raftwatch/raftwatch/client"
	"github.com/raftwatch/raftwatch/client/concurrency"
	"github.com/raftwatch/raftwatch/cluster-test/checker"
)

// The lock workload's client (lockClient): the Go client given every
// endpoint (a failover client) and the client/concurrency recipe. Pinned
// clients do not run this workload: the recipe is written against
// client.Client, and what it relies on (keepalives and fenced Txns reach
// whichever node leads) is the failover client's job; a lock client cut off
// from the leader is what a fault does to it anyway.
//
//   - Acquire: a Session (lease of lockSessionTTL, kept alive in the
//     background) made on demand and kept across holds while it lives, and
//     Mutex.Lock on it: the fencing token is the revision of the Txn that
//     confirmed the hold. After any error the session is closed (its keys
//     revoked; were the revoke lost, its keepalives have stopped, so the
//     lease expires), so the client holds nothing, and the next Acquire
//     starts a new session.
//   - FencedWrite: one Txn: if Mutex.IsOwner() (the hold's key still
//     exists with its create revision: the session was not lost) and
//     value(fence) < FenceValue(token+1) then put fence = FenceValue(token)
//     and counter = CounterValue(n). IsOwner stops a holder whose lease
//     expired; the fence compare keeps committed writes in token order.
//   - Release: Mutex.Unlock. When the hold's key was already gone (the
//     session was lost while holding), nothing was deleted: a
//     FAILED_PRECONDITION status, so it is classified fail.
//
// Errors are returned as they came (the Go client's, which carry a gRPC
// status, or the recipe's, which wrap one or say the session was lost); the
// workload classifies them with classify, so a Txn that may have applied
// is info.

// lockSessionTTL is the lock sessions' lease TTL in seconds. Short enough
// that a holder whose keepalives stop being acknowledged during a fault
// (leader killed, paused or cut off: an election takes 1-2 x 750 ms) loses
// the lease within a few seconds, so a run sees holders lose their lock and
// others take it over (the overlaps the checker must excuse); long enough
// (keepalives every second, each allowed a second) that a quick election
// alone does not end every session.
const lockSessionTTL = 3

func init() { newLockClient = newGoLockClient }

// newGoLockClient makes a lock client on a Go client for endpoints, in the
// order it tries them.
func newGoLockClient(endpoints []string) (lockClient, error) {
	c, err := rwclient.New(rwclient.Config{Endpoints: endpoints})
	if err != nil {
		return nil, fmt.Errorf("lock client: %w", err)
	}
	return &goLock{c: c}, nil
}

// goLock is one lock client process: a Go client, its current session and
// the Mutex on it, and the hold the last Acquire returned.
type goLock struct {
	c     *rwclient.Client
	s     *concurrency.Session
	m     *concurrency.Mutex
	token uint64 // of the current hold; 0 = none
}

func (l *goLock) InitKeys(ctx context.Context, values map[string]string) (uint64, bool, error) {
	return initKeys(ctx, (&failoverBank{c: l.c}).send, values)
}

// Acquire waits for the lock on the current session, starting one when
// there is none or it was lost.
func (l *goLock) Acquire(ctx context.Context, name string) (uint64, int64, error) {
	if l.token != 0 {
		return 0, 0, status.Error(codes.FailedPrecondition, "lock client: Acquire while holding the lock")
	}
	if l.s != nil && l.s.Err() != nil {
		l.dropSession()
	}
	if l.s == nil {
		s, err := concurrency.NewSession(ctx, l.c, concurrency.WithTTL(lockSessionTTL))
		if err != nil {
			return 0, 0, err
		}
		l.s, l.m = s, concurrency.NewMutex(s, name)
	}
	lease := l.s.Lease()
	tok, err := l.m.Lock(ctx)
	if err != nil {
		// Lock withdrew its key if it could; closing the session makes sure.
		l.dropSession()
		return 0, lease, err
	}
	l.token = tok
	return tok, lease, nil
}

// dropSession closes the session (stopping its keepalives and revoking its
// lease), whatever came of the revoke.
func (l *goLock) dropSession() {
	if l.s != nil {
		l.s.Close()
	}
	l.s, l.m = nil, nil
}

func (l *goLock) Get(ctx context.Context, key string) (string, bool, error) {
	r, err := l.c.Get(ctx, []byte(key))
	if err != nil {
		return "", false, err
	}
	if r.Kv == nil {
		return "", false, nil
	}
	return string(r.Kv.Value), true, nil
}

func (l *goLock) FencedWrite(ctx context.Context, w fencedWrite) (uint64, bool, error) {
	if l.token == 0 || w.Token != l.token {
		return 0, false, status.Errorf(codes.FailedPrecondition, "lock client: fenced write with token %d, but the hold is %d", w.Token, l.token)
	}
	r, err := l.c.Txn(ctx).
		If(l.m.IsOwner(),
			rwclient.Compare(rwclient.Value([]byte(w.FenceKey)), "<", checker.FenceValue(w.Token+1))).
		Then(rwclient.OpPut([]byte(w.FenceKey), []byte(checker.FenceValue(w.Token))),
			rwclient.OpPut([]byte(w.CounterKey), []byte(checker.CounterValue(w.Counter)))).
		Commit()
	if err != nil {
		return 0, false, err
	}
	return r.Revision, r.Succeeded, nil
}

// Release unlocks. Whatever the outcome, the hold is over for this client:
// after an error other than a lost session, the session is closed, so its
// key goes with its lease.
func (l *goLock) Release(ctx context.Context) error {
	if l.token == 0 {
		return status.Error(codes.FailedPrecondition, "lock client: Release without a hold")
	}
	l.token = 0
	err := l.m.Unlock(ctx)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, concurrency.ErrSessionLost):
		// The key was gone: the lease expired while holding. Nothing was
		// deleted, and nothing is held.
		l.dropSession()
		return status.Errorf(codes.FailedPrecondition, "lock client: %v", err)
	}
	l.dropSession()
	return err
}

func (l *goLock) Close() error {
	l.dropSession()
	return l.c.Close()
}
