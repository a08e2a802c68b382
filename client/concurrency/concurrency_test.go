package concurrency

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/raftwatch/raftwatch/client"
	"github.com/raftwatch/raftwatch/nodetest"
	pb "github.com/raftwatch/raftwatch/proto"
)

// startNode serves a one-node cluster in this process on loopback TCP,
// with real bbolt files, and returns its client address once it takes
// writes.
func startNode(t *testing.T) string {
	t.Helper()
	return nodetest.Start(t, nil).ClientAddr
}

func newSession(t *testing.T, c *client.Client, ttl int64) *Session {
	t.Helper()
	s, err := NewSession(ctxT(t, 10*time.Second), c, WithTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// keysUnder returns the keys under prefix, in contender order.
func keysUnder(t *testing.T, c *client.Client, prefix string) []string {
	t.Helper()
	kvs, _, err := contenders(ctxT(t, 5*time.Second), c, prefix)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, kv := range kvs {
		out = append(out, string(kv.Key))
	}
	return out
}

// acquisition is one Lock's result, in the order the holders got it.
type acquisition struct {
	who   int
	token uint64
	rev   uint64
	key   string
}

// TestMutexIsExclusiveFIFOAndTokensIncrease: five contenders on five
// clients enter one after another while the first holds the lock; they
// get it in that order, one at a time (each checks, with a fenced write,
// that nobody else is inside), with strictly increasing tokens. Then five
// race: the order is still (create_revision, key).
func TestMutexIsExclusiveFIFOAndTokensIncrease(t *testing.T) {
	addr := startNode(t)
	const n = 5
	const prefix = "/locks/fifo/"
	obs := nodetest.Client(t, addr)
	var mus []*Mutex
	for i := 0; i < n; i++ {
		mus = append(mus, NewMutex(newSession(t, nodetest.Client(t, addr), 30), prefix))
	}
	var inside atomic.Int32
	var mu sync.Mutex
	var got []acquisition
	run := func(i int, wg *sync.WaitGroup) {
		defer wg.Done()
		m := mus[i]
		tok, err := m.Lock(ctxT(t, 60*time.Second))
		if err != nil {
			t.Errorf("contender %d: lock: %v", i, err)
			return
		}
		if k := inside.Add(1); k != 1 {
			t.Errorf("contender %d inside the lock with %d others", i, k-1)
		}
		mu.Lock()
		got = append(got, acquisition{i, tok, m.rev, m.key})
		mu.Unlock()
		// A fenced write, as a holder would make: it must succeed.
		r, err := m.s.c.Txn(ctxT(t, 10*time.Second)).If(m.IsOwner()).
			Then(client.OpPut([]byte("/fifo/last"), []byte(strconv.Itoa(i)))).Commit()
		if err != nil || !r.Succeeded {
			t.Errorf("contender %d: fenced write while holding: %v %v", i, r, err)
		}
		inside.Add(-1)
		if err := m.Unlock(ctxT(t, 10*time.Second)); err != nil {
			t.Errorf("contender %d: unlock: %v", i, err)
		}
	}

	// Round 1: entry order is known. Contender 0 holds until all entered.
	if _, err := mus[0].Lock(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	first := acquisition{0, mus[0].token, mus[0].rev, mus[0].key}
	var wg sync.WaitGroup
	for i := 1; i < n; i++ {
		wg.Add(1)
		go run(i, &wg)
		nodetest.Eventually(t, 10*time.Second, "contender "+strconv.Itoa(i)+" entered", func() bool {
			return len(keysUnder(t, obs, prefix)) == i+1
		})
	}
	got = append(got, first)
	if err := mus[0].Unlock(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i, a := range got {
		if a.who != i {
			t.Fatalf("acquisition order %v, want contenders 0..4 in entry order", got)
		}
		if i > 0 && a.token <= got[i-1].token {
			t.Fatalf("token %d of contender %d is not above the previous holder's %d", a.token, a.who, got[i-1].token)
		}
	}

	// Round 2: all race; the order is whatever (create_revision, key) says.
	got = nil
	for i := 0; i < n; i++ {
		wg.Add(1)
		go run(i, &wg)
	}
	wg.Wait()
	if len(got) != n {
		t.Fatalf("%d acquisitions, want %d", len(got), n)
	}
	ordered := slices.IsSortedFunc(got, func(a, b acquisition) int {
		return contenderOrder(&pb.KeyValue{Key: []byte(a.key), CreateRevision: a.rev}, &pb.KeyValue{Key: []byte(b.key), CreateRevision: b.rev})
	})
	if !ordered {
		t.Fatalf("racing acquisitions %v are not in (create_revision, key) order", got)
	}
	for i := 1; i < n; i++ {
		if got[i].token <= got[i-1].token {
			t.Fatalf("racing tokens not increasing: %v", got)
		}
	}
	if ks := keysUnder(t, obs, prefix); len(ks) != 0 {
		t.Fatalf("keys left under %s after every unlock: %v", prefix, ks)
	}
}

// TestContendersCreatedInOneEntry: two sessions' keys created by one Txn
// share a create revision; the key breaks the tie, the same way for both
// contenders, for Leader, and for the lock itself.
func TestContendersCreatedInOneEntry(t *testing.T) {
	addr := startNode(t)
	const prefix = "/locks/tie/"
	ca, cb := nodetest.Client(t, addr), nodetest.Client(t, addr)
	sa, sb := newSession(t, ca, 30), newSession(t, cb, 30)
	ma, mb := NewMutex(sa, prefix), NewMutex(sb, prefix)
	r, err := ca.Txn(ctxT(t, 10*time.Second)).
		Then(client.OpPut([]byte(mb.Key()), nil, client.WithLease(sb.Lease())),
			client.OpPut([]byte(ma.Key()), nil, client.WithLease(sa.Lease()))).Commit()
	if err != nil || !r.Succeeded {
		t.Fatalf("txn creating both keys: %v %v", r, err)
	}
	kvs, _, err := contenders(ctxT(t, 5*time.Second), ca, prefix)
	if err != nil || len(kvs) != 2 || kvs[0].CreateRevision != kvs[1].CreateRevision || kvs[0].CreateRevision != r.Revision {
		t.Fatalf("contenders %v %v: want two keys created at revision %d", kvs, err, r.Revision)
	}
	firstKey, second := string(kvs[0].Key), mb
	if want := min(ma.Key(), mb.Key()); firstKey != want {
		t.Fatalf("first of two keys created at one revision: %s, want the smaller key %s", firstKey, want)
	}
	if firstKey == mb.Key() {
		second = ma
	}
	// Each contender's own view of who is first agrees.
	for _, m := range []*Mutex{ma, mb} {
		first, err := isFirst(ctxT(t, 5*time.Second), m.s, prefix, m.key, r.Revision)
		if err != nil || first != (m.key == firstKey) {
			t.Fatalf("%s: isFirst = %v %v, want %v (first is %s)", m.key, first, err, m.key == firstKey, firstKey)
		}
	}
	if l, err := NewElection(sa, prefix).Leader(ctxT(t, 5*time.Second)); err != nil || string(l.Key) != firstKey {
		t.Fatalf("Leader = %v %v, want %s", l, err, firstKey)
	}
	// The lock: the second cannot take it; both Lock; the first wins.
	if _, err := second.TryLock(ctxT(t, 5*time.Second)); !errors.Is(err, ErrLocked) {
		t.Fatalf("TryLock of the second contender: %v, want ErrLocked", err)
	}
	firstM := ma
	if firstM == second {
		firstM = mb
	}
	type res struct {
		tok uint64
		err error
	}
	secondGot := make(chan res, 1)
	go func() {
		tok, err := second.Lock(ctxT(t, 30*time.Second))
		secondGot <- res{tok, err}
	}()
	tok1, err := firstM.Lock(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-secondGot:
		t.Fatalf("the second contender got the lock (%v) while the first holds it", r)
	default:
	}
	// A fenced write of the second contender fails while the first holds.
	if r, err := cb.Txn(ctxT(t, 5*time.Second)).If(client.Compare(client.ModRevision([]byte(second.Key())), "=", tok1)).
		Then(client.OpPut([]byte("/tie/x"), nil)).Commit(); err != nil || r.Succeeded {
		t.Fatalf("fenced write with the holder's token on the waiter's key: %v %v, want failure", r, err)
	}
	if err := firstM.Unlock(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-secondGot:
		if r.err != nil || r.tok <= tok1 {
			t.Fatalf("second contender: token %d %v, want one above %d", r.tok, r.err, tok1)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the second contender did not get the lock after the first unlocked")
	}
}

// watchLog records the watches waiters open (testHookWatch).
type watchLog struct {
	mu  sync.Mutex
	all [][2]string // waiter, watched
}

func (l *watchLog) hook(waiter string, watched []byte) {
	l.mu.Lock()
	l.all = append(l.all, [2]string{waiter, string(watched)})
	l.mu.Unlock()
}

func (l *watchLog) get() [][2]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.all)
}

// TestWaitersWatchOnlyTheirPredecessor: with one holder and four waiters,
// each waiter watches the key just before its own and nothing else (the
// node serves exactly four watchers); a release wakes only the next; a
// waiter that gives up makes the one after it watch the one before it.
func TestWaitersWatchOnlyTheirPredecessor(t *testing.T) {
	var log watchLog
	testHookWatch = log.hook
	t.Cleanup(func() { testHookWatch = nil })
	addr := startNode(t)
	const n = 5
	const prefix = "/locks/herd/"
	obs := nodetest.Client(t, addr)
	var mus []*Mutex
	for i := 0; i < n; i++ {
		mus = append(mus, NewMutex(newSession(t, nodetest.Client(t, addr), 30), prefix))
	}
	if _, err := mus[0].Lock(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	ctxs := make([]context.CancelFunc, n)
	locked := make(chan int, n)
	errs := make(chan error, n)
	for i := 1; i < n; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		ctxs[i] = cancel
		t.Cleanup(cancel)
		go func() {
			if _, err := mus[i].Lock(ctx); err != nil {
				errs <- err
				return
			}
			locked <- i
		}()
		nodetest.Eventually(t, 10*time.Second, "contender entered", func() bool { return len(keysUnder(t, obs, prefix)) == i+1 })
	}
	nodetest.Eventually(t, 10*time.Second, "four waiters watching", func() bool { return len(log.get()) == n-1 })
	for i, w := range log.get() {
		if w[0] != mus[i+1].key || w[1] != mus[i].key {
			t.Fatalf("watch %d: %s watched %s, want %s watching %s", i, w[0], w[1], mus[i+1].key, mus[i].key)
		}
	}
	st, err := obs.Status(ctxT(t, 5*time.Second), addr)
	if err != nil || st.Watchers != n-1 {
		t.Fatalf("node serves %v watchers (%v), want %d: one per waiter", st.GetWatchers(), err, n-1)
	}

	// Waiter 2 gives up: waiter 3 now watches waiter 1.
	ctxs[2]()
	if err := <-errs; !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled waiter: %v", err)
	}
	nodetest.Eventually(t, 10*time.Second, "waiter 3 watching waiter 1", func() bool { return len(log.get()) == n })
	if w := log.get()[n-1]; w[0] != mus[3].key || w[1] != mus[1].key {
		t.Fatalf("after waiter 2 left: %s watched %s, want %s watching %s", w[0], w[1], mus[3].key, mus[1].key)
	}
	if ks := keysUnder(t, obs, prefix); slices.Contains(ks, mus[2].key) {
		t.Fatalf("the canceled waiter's key %s is still there: %v", mus[2].key, ks)
	}

	// The holder releases: only waiter 1 wakes; nobody opens a new watch.
	if err := mus[0].Unlock(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if i := <-locked; i != 1 {
		t.Fatalf("contender %d got the lock after the holder, want 1", i)
	}
	if got := log.get(); len(got) != n {
		t.Fatalf("a release made waiters open watches: %v", got[n:])
	}
	for _, step := range [][2]int{{1, 3}, {3, 4}} {
		if err := mus[step[0]].Unlock(ctxT(t, 5*time.Second)); err != nil {
			t.Fatal(err)
		}
		if j := <-locked; j != step[1] {
			t.Fatalf("after %d unlocked, %d got the lock, want %d", step[0], j, step[1])
		}
	}
}

// TestSessionLossHandsTheLockOverAndFencesTheOldHolder: the holder's
// keepalives stop (as in a paused process); its lease expires, the waiter
// gets the lock with a larger token, and a write fenced by the old
// holder's key fails.
func TestSessionLossHandsTheLockOverAndFencesTheOldHolder(t *testing.T) {
	addr := startNode(t)
	const prefix = "/locks/loss/"
	ca, cb := nodetest.Client(t, addr), nodetest.Client(t, addr)
	sa, sb := newSession(t, ca, 2), newSession(t, cb, 30)
	ma, mb := NewMutex(sa, prefix), NewMutex(sb, prefix)
	tokA, err := ma.Lock(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan uint64, 1)
	go func() {
		tok, err := mb.Lock(ctxT(t, 30*time.Second))
		if err != nil {
			t.Error(err)
		}
		got <- tok
	}()
	nodetest.Eventually(t, 10*time.Second, "B waiting", func() bool { return len(keysUnder(t, ca, prefix)) == 2 })
	stopped := time.Now()
	sa.cancel() // no more keepalives, no revoke
	var tokB uint64
	select {
	case tokB = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("B did not get the lock after A's lease stopped being renewed")
	}
	if d := time.Since(stopped); d > 2*time.Second+1500*time.Millisecond+time.Second {
		t.Fatalf("B got the lock %v after A's keepalives stopped (TTL 2 s)", d)
	}
	if tokB <= tokA {
		t.Fatalf("B's token %d not above A's %d", tokB, tokA)
	}
	select {
	case <-sa.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("A's session not Done after its lease was lost")
	}
	if !errors.Is(sa.Err(), ErrSessionLost) {
		t.Fatalf("A's session ended with %v, want ErrSessionLost", sa.Err())
	}
	r, err := ca.Txn(ctxT(t, 5*time.Second)).If(ma.IsOwner()).Then(client.OpPut([]byte("/loss/data"), []byte("A"))).Commit()
	if err != nil || r.Succeeded {
		t.Fatalf("A's fenced write after losing the lock: %v %v, want the compare to fail", r, err)
	}
	r, err = ca.Txn(ctxT(t, 5*time.Second)).If(client.Compare(client.ModRevision([]byte(ma.Key())), "=", tokA)).
		Then(client.OpPut([]byte("/loss/data"), []byte("A"))).Commit()
	if err != nil || r.Succeeded {
		t.Fatalf("A's token-fenced write after losing the lock: %v %v, want the compare to fail", r, err)
	}
	r, err = cb.Txn(ctxT(t, 5*time.Second)).If(mb.IsOwner()).Then(client.OpPut([]byte("/loss/data"), []byte("B"))).Commit()
	if err != nil || !r.Succeeded {
		t.Fatalf("B's fenced write: %v %v", r, err)
	}
	if err := ma.Unlock(ctxT(t, 5*time.Second)); !errors.Is(err, ErrSessionLost) {
		t.Fatalf("A's unlock after the loss: %v, want ErrSessionLost", err)
	}
	// A Lock on the lost session fails at once.
	if _, err := ma.Lock(ctxT(t, 5*time.Second)); !errors.Is(err, ErrSessionLost) {
		t.Fatalf("Lock on a lost session: %v, want ErrSessionLost", err)
	}
}

// TestLockWaitingWhenTheSessionIsLostWithdraws: a waiter whose session is
// lost returns ErrSessionLost and leaves no key behind.
func TestLockWaitingWhenTheSessionIsLostWithdraws(t *testing.T) {
	addr := startNode(t)
	const prefix = "/locks/wloss/"
	c := nodetest.Client(t, addr)
	holder := NewMutex(newSession(t, c, 30), prefix)
	if _, err := holder.Lock(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	sw := newSession(t, nodetest.Client(t, addr), 2)
	w := NewMutex(sw, prefix)
	done := make(chan error, 1)
	go func() { _, err := w.Lock(ctxT(t, 30*time.Second)); done <- err }()
	nodetest.Eventually(t, 10*time.Second, "waiter entered", func() bool { return len(keysUnder(t, c, prefix)) == 2 })
	sw.cancel()
	select {
	case err := <-done:
		if !errors.Is(err, ErrSessionLost) {
			t.Fatalf("waiter: %v, want ErrSessionLost", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter did not return after its session was lost")
	}
	nodetest.Eventually(t, 10*time.Second, "the waiter's key gone", func() bool { return len(keysUnder(t, c, prefix)) == 1 })
}

// TestElectionCampaignProclaimResignObserve: an observer sees every
// leader and every proclaimed value, in order.
func TestElectionCampaignProclaimResignObserve(t *testing.T) {
	addr := startNode(t)
	const prefix = "/election/e/"
	obs := NewElection(newSession(t, nodetest.Client(t, addr), 30), prefix)
	if _, err := obs.Leader(ctxT(t, 5*time.Second)); !errors.Is(err, ErrNoLeader) {
		t.Fatalf("Leader of an empty election: %v, want ErrNoLeader", err)
	}
	octx, ocancel := context.WithCancel(context.Background())
	defer ocancel()
	seen := obs.Observe(octx)
	next := func(want string) *pb.KeyValue {
		t.Helper()
		select {
		case kv, ok := <-seen:
			if !ok || string(kv.Value) != want {
				t.Fatalf("observed %v (open %v), want leader value %q", kv, ok, want)
			}
			return kv
		case <-time.After(15 * time.Second):
			t.Fatalf("no leader value %q observed", want)
		}
		return nil
	}
	e1 := NewElection(newSession(t, nodetest.Client(t, addr), 30), prefix)
	s2 := newSession(t, nodetest.Client(t, addr), 30)
	e2 := NewElection(s2, prefix)
	if err := e1.Proclaim(ctxT(t, 5*time.Second), "x"); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("Proclaim before Campaign: %v, want ErrNotLeader", err)
	}
	if err := e1.Campaign(ctxT(t, 10*time.Second), "a"); err != nil {
		t.Fatal(err)
	}
	kv := next("a")
	if string(kv.Key) != e1.Key() || kv.CreateRevision != e1.Rev() {
		t.Fatalf("observed leader %v, want key %s created at %d", kv, e1.Key(), e1.Rev())
	}
	won := make(chan error, 1)
	go func() { won <- e2.Campaign(ctxT(t, 30*time.Second), "b") }()
	nodetest.Eventually(t, 10*time.Second, "e2 campaigning", func() bool { return len(keysUnder(t, s2.c, prefix)) == 2 })
	if err := e1.Proclaim(ctxT(t, 5*time.Second), "a2"); err != nil {
		t.Fatal(err)
	}
	next("a2")
	if l, err := e2.Leader(ctxT(t, 5*time.Second)); err != nil || string(l.Value) != "a2" || string(l.Key) != e1.Key() {
		t.Fatalf("Leader = %v %v, want %s = a2", l, err, e1.Key())
	}
	select {
	case err := <-won:
		t.Fatalf("e2 won (%v) while e1 leads", err)
	default:
	}
	tok1 := e1.Token()
	if err := e1.Resign(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := <-won; err != nil {
		t.Fatal(err)
	}
	next("b")
	if e2.Token() <= tok1 {
		t.Fatalf("e2's token %d not above e1's %d", e2.Token(), tok1)
	}
	if err := e1.Proclaim(ctxT(t, 5*time.Second), "late"); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("Proclaim after Resign: %v, want ErrNotLeader", err)
	}
	// The leader's session ends; the next candidate is observed.
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e1.Campaign(ctxT(t, 10*time.Second), "c"); err != nil {
		t.Fatal(err)
	}
	next("c")
}

// TestFailedLockLeavesNoKey: whatever point a Lock's context ends at —
// including just after its create Txn applied, when the outcome is
// unknown to the caller — the failed Lock leaves no key behind to hold up
// everyone else (before, such a key blocked the lock until the session
// ended).
func TestFailedLockLeavesNoKey(t *testing.T) {
	addr := startNode(t)
	ca, cb := nodetest.Client(t, addr), nodetest.Client(t, addr)
	sa, sb := newSession(t, ca, 30), newSession(t, cb, 30)
	const prefix = "/locks/unknown/"
	failed := 0
	for step := 1; step <= 200; step++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(step)*50*time.Microsecond)
		m := NewMutex(sa, prefix)
		_, err := m.Lock(ctx)
		cancel()
		if err == nil {
			if err := m.Unlock(ctxT(t, 5*time.Second)); err != nil {
				t.Fatal(err)
			}
			continue
		}
		failed++
		nodetest.Eventually(t, 3*time.Second, "a failed Lock's key is gone", func() bool {
			return len(keysUnder(t, ca, prefix)) == 0
		})
		other := NewMutex(sb, prefix)
		if _, err := other.TryLock(ctxT(t, 5*time.Second)); err != nil {
			t.Fatalf("step %d: after a failed Lock, another session's TryLock: %v", step, err)
		}
		if err := other.Unlock(ctxT(t, 5*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	if failed == 0 {
		t.Fatal("no Lock failed: the timeouts never cut one short")
	}
}

// TestNestedLockNamesDoNotContend: the lock "a" is free while "a/b" is
// held, although the keys of "a/b" are under the prefix of "a".
func TestNestedLockNamesDoNotContend(t *testing.T) {
	addr := startNode(t)
	ca, cb := nodetest.Client(t, addr), nodetest.Client(t, addr)
	sa, sb := newSession(t, ca, 30), newSession(t, cb, 30)
	inner := NewMutex(sa, "/locks/billing/db/")
	if _, err := inner.Lock(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	outer := NewMutex(sb, "/locks/billing/")
	if _, err := outer.TryLock(ctxT(t, 5*time.Second)); err != nil {
		t.Fatalf("TryLock of a free lock whose prefix holds another lock's key: %v", err)
	}
}

// TestObserveReportsEveryLeader: an observer that reads late still gets
// every leader in order, including one that led and resigned while the
// observer was not reading (before, it read the order as it was when it
// got round to it, and skipped that leader).
func TestObserveReportsEveryLeader(t *testing.T) {
	addr := startNode(t)
	const prefix = "/election/late/"
	octx, ocancel := context.WithCancel(context.Background())
	defer ocancel()
	seen := Observe(octx, nodetest.Client(t, addr), prefix)
	ea := NewElection(newSession(t, nodetest.Client(t, addr), 30), prefix)
	eb := NewElection(newSession(t, nodetest.Client(t, addr), 30), prefix)
	ec := NewElection(newSession(t, nodetest.Client(t, addr), 30), prefix)
	if err := ea.Campaign(ctxT(t, 10*time.Second), "a"); err != nil {
		t.Fatal(err)
	}
	// The observer is not reading while a, b and c come and go.
	for _, step := range []func() error{
		func() error { return ea.Proclaim(ctxT(t, 5*time.Second), "a2") },
		func() error { return ea.Resign(ctxT(t, 5*time.Second)) },
		func() error { return eb.Campaign(ctxT(t, 10*time.Second), "b") },
		func() error { return eb.Resign(ctxT(t, 5*time.Second)) },
		func() error { return ec.Campaign(ctxT(t, 10*time.Second), "c") },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for len(got) < 4 {
		select {
		case kv := <-seen:
			got = append(got, string(kv.Value))
		case <-time.After(10 * time.Second):
			t.Fatalf("observed %v, then nothing for 10 s; want [a a2 b c]", got)
		}
	}
	if !slices.Equal(got, []string{"a", "a2", "b", "c"}) {
		t.Fatalf("observed %v, want [a a2 b c]", got)
	}
}
