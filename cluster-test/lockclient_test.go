package main

import (
	"context"
	"testing"
	"time"

	"github.com/raftwatch/raftwatch/cluster-test/checker"
	"github.com/raftwatch/raftwatch/cluster-test/history"
	"github.com/raftwatch/raftwatch/nodetest"
)

// startOneNode serves a one-node cluster in this process on loopback TCP,
// with real bbolt files, and returns its client address once it takes
// writes.
func startOneNode(t *testing.T) string {
	t.Helper()
	return nodetest.Start(t, nil).ClientAddr
}

func newTestLockClient(t *testing.T, addr string) *goLock {
	t.Helper()
	lc, err := newGoLockClient([]string{addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lc.Close() })
	return lc.(*goLock)
}

// TestLockClientFencesAndClassifies: on a real node, a hold's fenced write
// succeeds and moves the fence to its token; when the holder's lease is
// revoked behind its back, the next holder gets a larger token, the old
// holder's fenced write fails its compare (ok, not succeeded) and its
// release is a fail (nothing was deleted); its next Acquire runs on a new
// session. A write fenced by an older token than the fence's also fails.
func TestLockClientFencesAndClassifies(t *testing.T) {
	addr := startOneNode(t)
	a, b := newTestLockClient(t, addr), newTestLockClient(t, addr)
	ctx := func() context.Context {
		c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		t.Cleanup(cancel)
		return c
	}
	if _, ok, err := a.InitKeys(ctx(), map[string]string{fenceKey: checker.FenceValue(0), counterKey: checker.CounterValue(0)}); err != nil || !ok {
		t.Fatalf("InitKeys: %v %v", ok, err)
	}
	if _, ok, err := b.InitKeys(ctx(), map[string]string{fenceKey: checker.FenceValue(0), counterKey: checker.CounterValue(0)}); err != nil || ok {
		t.Fatalf("second InitKeys: succeeded=%v %v, want the absent compare to fail", ok, err)
	}

	tokA, leaseA, err := a.Acquire(ctx(), lockName)
	if err != nil || tokA == 0 || leaseA == 0 {
		t.Fatalf("A acquire: token %d lease %d %v", tokA, leaseA, err)
	}
	if _, ok, err := a.FencedWrite(ctx(), fencedWrite{FenceKey: fenceKey, CounterKey: counterKey, Token: tokA, Counter: 1}); err != nil || !ok {
		t.Fatalf("A's fenced write while holding: succeeded=%v %v", ok, err)
	}
	if v, _, err := a.Get(ctx(), fenceKey); err != nil || v != checker.FenceValue(tokA) {
		t.Fatalf("fence after A's write: %q %v, want %q", v, err, checker.FenceValue(tokA))
	}

	// B waits; A's lease is revoked behind its back (as an expiry would).
	type acq struct {
		tok uint64
		err error
	}
	got := make(chan acq, 1)
	go func() {
		tok, _, err := b.Acquire(ctx(), lockName)
		got <- acq{tok, err}
	}()
	if _, err := a.c.Revoke(ctx(), leaseA); err != nil {
		t.Fatal(err)
	}
	var tokB uint64
	select {
	case r := <-got:
		if r.err != nil || r.tok <= tokA {
			t.Fatalf("B acquire: token %d %v, want one above A's %d", r.tok, r.err, tokA)
		}
		tokB = r.tok
	case <-time.After(15 * time.Second):
		t.Fatal("B did not get the lock after A's lease was revoked")
	}
	_, ok, err := a.FencedWrite(ctx(), fencedWrite{FenceKey: fenceKey, CounterKey: counterKey, Token: tokA, Counter: 2})
	if err != nil || ok {
		t.Fatalf("A's fenced write after losing the lock: succeeded=%v %v, want the compare to fail", ok, err)
	}
	err = a.Release(ctx())
	if typ, msg := classify(err); typ != history.Fail {
		t.Fatalf("A's release after losing the lock: %s (%s), want fail", typ, msg)
	}
	short, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	tokA2, leaseA2, err := a.Acquire(short, lockName)
	if err == nil {
		t.Fatalf("A acquired (token %d) while B holds the lock", tokA2)
	}
	if leaseA2 == leaseA || leaseA2 == 0 {
		t.Fatalf("A's acquire after the loss ran on lease %x, want a new session (old %x)", leaseA2, leaseA)
	}
	// A's Acquire ended with an error (its context): it holds nothing, so
	// B's release below lets A in.

	// B writes; a write with A's older token would not pass the fence even
	// with IsOwner holding: checked with B's own hold and A's token.
	if _, ok, err := b.FencedWrite(ctx(), fencedWrite{FenceKey: fenceKey, CounterKey: counterKey, Token: tokB, Counter: 2}); err != nil || !ok {
		t.Fatalf("B's fenced write: succeeded=%v %v", ok, err)
	}
	b.token = tokA // B's key still exists: only the fence compare can stop this one
	if _, ok, err := b.FencedWrite(ctx(), fencedWrite{FenceKey: fenceKey, CounterKey: counterKey, Token: tokA, Counter: 3}); err != nil || ok {
		t.Fatalf("a write fenced by the older token %d after token %d wrote: succeeded=%v %v, want the compare to fail", tokA, tokB, ok, err)
	}
	b.token = tokB
	if err := b.Release(ctx()); err != nil {
		t.Fatalf("B's release: %v", err)
	}
	tokA3, _, err := a.Acquire(ctx(), lockName)
	if err != nil || tokA3 <= tokB {
		t.Fatalf("A's acquire after B released: token %d %v, want one above %d", tokA3, err, tokB)
	}
	if v, _, err := a.Get(ctx(), counterKey); err != nil || v != checker.CounterValue(2) {
		t.Fatalf("counter %q %v, want 2 (the two fenced writes that passed)", v, err)
	}
}
