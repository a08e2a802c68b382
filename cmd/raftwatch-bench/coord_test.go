package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"
)

// memTarget is an in-memory target for the workload logic: a revisioned
// key-value map with two-key transactions and leases, shared by every
// client object dialed from it.
type memTarget struct {
	mu       sync.Mutex
	rev      uint64
	modRev   map[string]uint64
	leases   map[int64]bool // live lease ids
	renewals map[int64]int  // lease id -> keepalives received, kept after a revoke
	nextID   int64
	revoked  int
	streams  int // keepalive streams opened
	failKA   map[int64]bool
	putsSeen int
	// interfere, when set, is called inside every Txn2 before its compares
	// are evaluated (with mu held): it may bump keys like another writer.
	interfere func(m *memTarget, a, b string)
}

func newMemTarget() *memTarget {
	return &memTarget{modRev: map[string]uint64{}, leases: map[int64]bool{}, renewals: map[int64]int{},
		failKA: map[int64]bool{}}
}

// register makes the target dialable as name for the test's duration.
func (m *memTarget) register(t *testing.T, name string) {
	t.Helper()
	drivers[name] = func([]string) (Driver, error) { return &memDriver{m: m}, nil }
	t.Cleanup(func() { delete(drivers, name) })
}

type memDriver struct{ m *memTarget }

func (d *memDriver) Put(context.Context, []byte, []byte) error { return errors.New("not used") }
func (d *memDriver) Get(context.Context, []byte, bool) error   { return errors.New("not used") }
func (d *memDriver) Watch(context.Context, []byte) (WatchStream, error) {
	return nil, errors.New("not used")
}
func (d *memDriver) Close() error { return nil }

func (d *memDriver) PutAll(_ context.Context, keys [][]byte, _ []byte) (uint64, error) {
	m := d.m
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rev++
	for _, k := range keys {
		m.modRev[string(k)] = m.rev
	}
	m.putsSeen += len(keys)
	return m.rev, nil
}

func (d *memDriver) Txn2(_ context.Context, a, b []byte, revA, revB uint64, _ []byte) (TxnOutcome, error) {
	m := d.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.interfere != nil {
		m.interfere(m, string(a), string(b))
	}
	m.rev++ // every transaction is an entry, as in both systems
	if m.modRev[string(a)] != revA || m.modRev[string(b)] != revB {
		return TxnOutcome{RevA: m.modRev[string(a)], RevB: m.modRev[string(b)]}, nil
	}
	m.modRev[string(a)], m.modRev[string(b)] = m.rev, m.rev
	return TxnOutcome{Succeeded: true, RevA: m.rev, RevB: m.rev}, nil
}

func (d *memDriver) Grant(context.Context, int64) (int64, error) {
	m := d.m
	m.mu.Lock()
	defer m.mu.Unlock()
	m.nextID++
	m.leases[m.nextID] = true
	return m.nextID, nil
}

func (d *memDriver) Revoke(_ context.Context, id int64) error {
	m := d.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.leases[id] {
		return fmt.Errorf("lease %d not found", id)
	}
	delete(m.leases, id)
	m.revoked++
	return nil
}

func (d *memDriver) KeepAliveStream(context.Context) (KeepAliveStream, error) {
	d.m.mu.Lock()
	d.m.streams++
	d.m.mu.Unlock()
	return &memKeepAlive{m: d.m}, nil
}

type memKeepAlive struct {
	m      *memTarget
	closed bool
}

func (k *memKeepAlive) KeepAlive(_ context.Context, id int64) error {
	if k.closed {
		return errors.New("keepalive on a closed stream")
	}
	m := k.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failKA[id] {
		return fmt.Errorf("lease %d: injected failure", id)
	}
	if !m.leases[id] {
		return fmt.Errorf("lease %d not found", id)
	}
	m.renewals[id]++
	return nil
}

func (k *memKeepAlive) Close() { k.closed = true }

// testLoad is a short closed-loop run bounded by count and time.
func testLoad(target string, clients, conns int, ops int64) loadConfig {
	return loadConfig{target: target, endpoints: []string{"mem"}, clients: clients, conns: conns,
		duration: 5 * time.Second, ops: ops}
}

// Any accounts/2 consecutive transactions touch distinct keys, and over
// accounts transactions every account is each side of a pair once.
func TestPairOfSpreadsPairsOverTheKeySpace(t *testing.T) {
	for _, n := range []int{2, 3, 10, 11, 1000} {
		asA, asB := make([]int, n), make([]int, n)
		for seq := int64(0); seq < int64(3*n); seq++ {
			a, b := pairOf(seq, n)
			if a == b || a < 0 || b < 0 || a >= n || b >= n {
				t.Fatalf("n=%d seq=%d: pair (%d, %d)", n, seq, a, b)
			}
			if seq >= int64(n) && seq < int64(2*n) {
				asA[a]++
				asB[b]++
			}
			seen := map[int]bool{}
			for s := seq; s < seq+int64(n/2); s++ {
				x, y := pairOf(s, n)
				if seen[x] || seen[y] {
					t.Fatalf("n=%d: transactions %d..%d share a key", n, seq, s)
				}
				seen[x], seen[y] = true, true
			}
		}
		for i := range n {
			if asA[i] != 1 || asB[i] != 1 {
				t.Fatalf("n=%d: account %d is a %d and b %d times in one pass, want 1 and 1", n, i, asA[i], asB[i])
			}
		}
	}
}

// A late answer never rolls a cached revision back.
func TestRevCacheKeepsTheLatestRevision(t *testing.T) {
	c := newRevCache(1)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := uint64(0); r < 1000; r++ {
				c.see(0, r*8+uint64(g))
			}
		}()
	}
	wg.Wait()
	if got := c.get(0); got != 999*8+7 {
		t.Fatalf("cached %d, want the highest seen %d", got, 999*8+7)
	}
	c.see(0, 5)
	if got := c.get(0); got != 999*8+7 {
		t.Fatalf("an older revision rolled the cache back to %d", got)
	}
}

// Without another writer every transaction's compares hold: setup wrote
// every account and seeded the cache with its revision. 3,000
// transactions over 10,000 accounts use each pair once, so no two
// requesters can race on one, however they are scheduled.
func TestTxnWorkloadCompareHoldsWithoutInterference(t *testing.T) {
	m := newMemTarget()
	m.register(t, "mem-txn")
	r, err := runTxn(context.Background(), testLoad("mem-txn", 8, 2, 3000), 10000)
	if err != nil {
		t.Fatal(err)
	}
	if m.putsSeen != 10000 {
		t.Errorf("setup wrote %d accounts, want 10000", m.putsSeen)
	}
	if r.Ops != 3000 || r.Errors != 0 || r.CompareFailed != 0 {
		t.Fatalf("ops %d, errors %d, compare failed %d; want 3000, 0, 0", r.Ops, r.Errors, r.CompareFailed)
	}
	if r.SuccessRate() != 100 || r.Workload != "txn" || r.Accounts != 10000 || r.Clients != 8 || r.Conns != 2 {
		t.Fatalf("result %+v, success %.1f%%", r, r.SuccessRate())
	}
}

// Another writer's change makes the next transaction on that key fail
// its compare: counted, still a completed transaction, and the cache
// learns the key's revision so that the following ones hold again.
func TestTxnWorkloadCountsFailedComparesAndRecovers(t *testing.T) {
	m := newMemTarget()
	bumped := 0
	m.interfere = func(m *memTarget, a, _ string) {
		if a == string(accountKey(7)) && bumped < 3 { // the first 3 times account 7 leads a pair
			m.rev++
			m.modRev[a] = m.rev
			bumped++
		}
	}
	m.register(t, "mem-txn-bump")
	// 1 client: transactions run in seq order, so the count is exact. Over
	// 1000 transactions on 10 accounts, account 7 leads a pair 100 times.
	r, err := runTxn(context.Background(), testLoad("mem-txn-bump", 1, 1, 1000), 10)
	if err != nil {
		t.Fatal(err)
	}
	if r.Ops != 1000 || r.Errors != 0 || r.CompareFailed != 3 {
		t.Fatalf("ops %d, errors %d, compare failed %d; want 1000, 0, 3", r.Ops, r.Errors, r.CompareFailed)
	}
	if got := r.SuccessRate(); math.Abs(got-99.7) > 1e-9 {
		t.Fatalf("success rate %.3f%%, want 99.7%%", got)
	}
}

// runTxn refuses more requesters than half the accounts: they would share
// keys and measure the key pattern's contention, not the system.
func TestTxnWorkloadRefusesTooFewAccounts(t *testing.T) {
	m := newMemTarget()
	m.register(t, "mem-txn-few")
	_, err := runTxn(context.Background(), testLoad("mem-txn-few", 64, 16, 10), 100)
	if err == nil || !strings.Contains(err.Error(), "--accounts 100") {
		t.Fatalf("err = %v, want a refusal naming --accounts", err)
	}
}

// Keepalives go round robin over every granted lease; a failed keepalive
// is an error whose requester reopens its stream; teardown revokes every
// lease.
func TestKeepAliveWorkloadRoundRobinAndRevokes(t *testing.T) {
	m := newMemTarget()
	m.register(t, "mem-ka")
	const leases, ops = 50, 5000
	// 1 client: exactly ops/leases keepalives per lease.
	r, err := runKeepAlive(context.Background(), testLoad("mem-ka", 1, 1, ops), leases, 60)
	if err != nil {
		t.Fatal(err)
	}
	if r.Ops != ops || r.Errors != 0 || r.Workload != "keepalive" || r.Leases != leases {
		t.Fatalf("result %+v", r)
	}
	if m.revoked != leases || len(m.leases) != 0 || r.TeardownError != "" {
		t.Fatalf("revoked %d of %d leases (%d left, teardown %q)", m.revoked, leases, len(m.leases), r.TeardownError)
	}
	if m.streams != 1 {
		t.Fatalf("%d streams opened by one requester without errors, want 1", m.streams)
	}
	for id := int64(1); id <= leases; id++ {
		if m.renewals[id] != ops/leases {
			t.Errorf("lease %d renewed %d times, want %d", id, m.renewals[id], ops/leases)
		}
	}
}

// With several requesters the keepalives still cover every lease equally
// (the round robin is over all requesters' ops), and a failing lease is an
// error each time, after which that requester opens a new stream.
func TestKeepAliveWorkloadSpreadsOverLeasesAndReopensAfterErrors(t *testing.T) {
	m := newMemTarget()
	m.register(t, "mem-ka-spread")
	m.failKA[3] = true
	const leases, ops = 20, 2000
	r, err := runKeepAlive(context.Background(), testLoad("mem-ka-spread", 4, 2, ops), leases, 60)
	if err != nil {
		t.Fatal(err)
	}
	if r.Errors != ops/leases || r.Ops+r.Errors != ops {
		t.Fatalf("ops %d, errors %d; want %d errors of %d", r.Ops, r.Errors, ops/leases, ops)
	}
	if !strings.Contains(r.FirstError, "lease 3") {
		t.Fatalf("first error %q, want lease 3's", r.FirstError)
	}
	for id := int64(1); id <= leases; id++ {
		want := ops / leases
		if id == 3 {
			want = 0
		}
		if m.renewals[id] != want {
			t.Errorf("lease %d renewed %d times, want %d", id, m.renewals[id], want)
		}
	}
	// One stream per requester, and one more after each error unless it
	// was that requester's last op.
	if m.streams < int(r.Errors) || m.streams > 4+int(r.Errors) {
		t.Fatalf("%d streams opened for %d errors and 4 requesters", m.streams, r.Errors)
	}
	if m.revoked != leases {
		t.Fatalf("revoked %d of %d", m.revoked, leases)
	}
}
