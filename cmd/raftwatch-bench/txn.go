package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
)

// txnSetupBatch is how many account keys one setup transaction writes:
// below both systems' default limit of 128 ops per transaction.
const txnSetupBatch = 64

// accountKey names account i: "/t" and six digits, 8 bytes like every
// other key of the bench.
func accountKey(i int) []byte { return []byte(fmt.Sprintf("/t%06d", i)) }

// pairOf returns the two accounts transaction seq moves between: a runs
// over every account in turn and b is half the key space away, so any
// accounts/2 consecutive transactions touch distinct keys. The pair (a, b)
// comes round again (swapped) accounts/2 transactions later: two
// transactions share keys only when one is overtaken by that many others
// (a stall), and then one of them finds a compare false, as it should.
func pairOf(seq int64, accounts int) (a, b int) {
	n := int64(accounts)
	a64 := seq % n
	return int(a64), int((a64 + n/2) % n)
}

// revCache holds the last mod revision seen of every account, shared by
// all requesters of one run: what each transaction compares against.
type revCache struct{ revs []atomic.Uint64 }

func newRevCache(accounts int) *revCache { return &revCache{revs: make([]atomic.Uint64, accounts)} }

func (c *revCache) get(i int) uint64 { return c.revs[i].Load() }

// see records rev for account i unless a later one was already seen (an
// answer that arrives late must not roll the cache back).
func (c *revCache) see(i int, rev uint64) {
	for {
		cur := c.revs[i].Load()
		if rev <= cur || c.revs[i].CompareAndSwap(cur, rev) {
			return
		}
	}
}

// runTxn measures two-key transactions: compare the mod revisions of two
// accounts with the revisions last seen, then put a new value to both;
// when a compare fails, the transaction reads both instead and the cache
// learns their revisions. A failed compare is a completed transaction
// (throughput and latency count it) and is counted in CompareFailed. Setup
// (not timed) writes every account, 64 per transaction, and seeds the
// cache with the revisions.
func runTxn(ctx context.Context, cfg loadConfig, accounts int) (Result, error) {
	if accounts < 2*cfg.clients {
		return Result{}, fmt.Errorf("--accounts %d: want at least 2 x --clients (%d) so that concurrent transactions touch distinct keys",
			accounts, 2*cfg.clients)
	}
	keys := make([][]byte, accounts)
	for i := range keys {
		keys[i] = accountKey(i)
	}
	value := makeValue()
	cache := newRevCache(accounts)
	setup := func(ctx context.Context, pool []Driver) error {
		return forEachParallel(ctx, pool, cfg.clients, (accounts+txnSetupBatch-1)/txnSetupBatch, func(ctx context.Context, d Driver, i int) error {
			lo, hi := i*txnSetupBatch, min((i+1)*txnSetupBatch, accounts)
			rev, err := d.PutAll(ctx, keys[lo:hi], value)
			if err != nil {
				return fmt.Errorf("write accounts %d-%d: %w", lo, hi-1, err)
			}
			for k := lo; k < hi; k++ {
				cache.see(k, rev)
			}
			return nil
		})
	}
	r, err := runLoadEach(ctx, cfg, loadHooks{setup: setup}, func(_ context.Context, d Driver) (clientOp, func()) {
		return func(ctx context.Context, seq int64) (bool, error) {
			a, b := pairOf(seq, accounts)
			out, err := d.Txn2(ctx, keys[a], keys[b], cache.get(a), cache.get(b), value)
			if err != nil {
				return false, err
			}
			cache.see(a, out.RevA)
			cache.see(b, out.RevB)
			return !out.Succeeded, nil
		}, func() {}
	})
	r.Workload = "txn"
	r.Accounts = accounts
	r.Case = fmt.Sprintf("txn 2 compares + 2 puts, %d clients/%d conns", cfg.clients, cfg.conns)
	return r, err
}

// forEachParallel runs do(i) for i in [0, n) from workers goroutines,
// worker w on client object w mod len(pool), each taking the next i, and
// returns the first error (the others stop at their next step). Each call
// gets its own opTimeout.
func forEachParallel(ctx context.Context, pool []Driver, workers, n int, do func(ctx context.Context, d Driver, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for w := 0; w < workers; w++ {
		d := pool[w%len(pool)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				octx, ocancel := context.WithTimeout(ctx, opTimeout)
				err := do(octx, d, i)
				ocancel()
				if err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}
