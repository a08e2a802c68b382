package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/raftwatch/raftwatch/cluster-test/checker"
	"github.com/raftwatch/raftwatch/cluster-test/history"
)

// fakeStore is a linearizable in-memory store (one mutex), standing in for
// the cluster so the generators and their records can be checked end to end.
type fakeStore struct {
	mu   sync.Mutex
	cond *sync.Cond
	rev  uint64
	data map[string]checker.KV
	// lock state
	holder    uint64
	nextLease int64
	acquired  int
	getting   int // calls of Get so far
	// staleReads: ReadAll always returns the first snapshot (a planted bug).
	staleReads bool
	first      *bankSnapshot
	transfers  int
	// readsAfterOwn: reads a client sent after one of its own transfers
	// had succeeded (so in real time after it).
	readsAfterOwn int
	// noExclusion: Acquire does not wait for the holder (a planted bug).
	noExclusion bool
}

func newFakeStore() *fakeStore {
	s := &fakeStore{data: map[string]checker.KV{}}
	s.cond = sync.NewCond(&s.mu)
	return s
}

func (s *fakeStore) put(k, v string) {
	s.data[k] = checker.KV{Value: v, ModRev: s.rev}
}

func (s *fakeStore) InitKeys(_ context.Context, values map[string]string) (uint64, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rev++
	for k := range values {
		if _, ok := s.data[k]; ok {
			return s.rev, false, nil
		}
	}
	for k, v := range values {
		s.put(k, v)
	}
	return s.rev, true, nil
}

func (s *fakeStore) snapshot(keys []string) bankSnapshot {
	out := bankSnapshot{Revision: s.rev, Values: map[string]string{}, ModRevs: map[string]uint64{}}
	for _, k := range keys {
		if kv, ok := s.data[k]; ok {
			out.Values[k], out.ModRevs[k] = kv.Value, kv.ModRev
		}
	}
	return out
}

func (s *fakeStore) ReadAll(_ context.Context, accounts []string) (bankSnapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.staleReads && s.first != nil {
		return *s.first, nil
	}
	snap := s.snapshot(accounts)
	if s.first == nil {
		s.first = &snap
	}
	return s.snapshot(accounts), nil
}

func (s *fakeStore) Transfer(_ context.Context, t bankTransfer) (bankOutcome, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rev++
	if s.data[t.From].ModRev != t.FromRev || s.data[t.To].ModRev != t.ToRev {
		return bankOutcome{Revision: s.rev, Failure: s.snapshot([]string{t.From, t.To})}, nil
	}
	s.put(t.From, t.FromValue)
	s.put(t.To, t.ToValue)
	s.transfers++
	return bankOutcome{Revision: s.rev, Succeeded: true}, nil
}

func (s *fakeStore) Close() error { return nil }

// fakeBank is one bank client of a fakeStore.
type fakeBank struct {
	*fakeStore
	transferred bool
}

func (b *fakeBank) ReadAll(ctx context.Context, accounts []string) (bankSnapshot, error) {
	if b.transferred {
		b.mu.Lock()
		b.readsAfterOwn++
		b.mu.Unlock()
	}
	return b.fakeStore.ReadAll(ctx, accounts)
}

func (b *fakeBank) Transfer(ctx context.Context, t bankTransfer) (bankOutcome, error) {
	out, err := b.fakeStore.Transfer(ctx, t)
	b.transferred = b.transferred || out.Succeeded
	return out, err
}

func (s *fakeStore) final() map[string]map[string]checker.KV {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := map[string]checker.KV{}
	for k, v := range s.data {
		d[k] = v
	}
	return map[string]map[string]checker.KV{"n1": d}
}

// fakeLocker is one lock client of a fakeStore.
type fakeLocker struct {
	*fakeStore
	token uint64
}

func (l *fakeLocker) Acquire(ctx context.Context, _ string) (uint64, int64, error) {
	s := l.fakeStore
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.holder != 0 && !s.noExclusion {
		if ctx.Err() != nil {
			return 0, 0, ctx.Err()
		}
		s.cond.Wait()
	}
	s.rev++
	s.nextLease++
	s.holder, l.token = s.rev, s.rev
	s.acquired++
	s.cond.Broadcast()
	return s.rev, s.nextLease, nil
}

func (l *fakeLocker) Get(_ context.Context, key string) (string, bool, error) {
	s := l.fakeStore
	s.mu.Lock()
	defer s.mu.Unlock()
	// With the planted bug, a holder waits here until another holder got
	// here too: both acquisitions returned and neither released, so their
	// critical sections overlap.
	s.getting++
	s.cond.Broadcast()
	for s.noExclusion && s.getting < 2 {
		s.cond.Wait()
	}
	kv, ok := s.data[key]
	return kv.Value, ok, nil
}

func (l *fakeLocker) FencedWrite(_ context.Context, w fencedWrite) (uint64, bool, error) {
	s := l.fakeStore
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rev++
	if s.data[w.FenceKey].Value >= checker.FenceValue(w.Token+1) {
		return s.rev, false, nil
	}
	s.put(w.FenceKey, checker.FenceValue(w.Token))
	s.put(w.CounterKey, checker.CounterValue(w.Counter))
	return s.rev, true, nil
}

func (l *fakeLocker) Release(context.Context) error {
	s := l.fakeStore
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.holder == l.token {
		s.holder = 0
	}
	s.cond.Broadcast()
	return nil
}

// unlimited hands out tokens as fast as they are taken, until ctx is done.
func unlimited(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case ch <- struct{}{}:
			}
		}
	}()
	return ch
}

// runUntil runs the workload until done() holds (polled) or 10 s pass.
func runUntil(t *testing.T, run func(ctx context.Context) error, done func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- run(ctx) }()
	for !done() && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	if ctx.Err() != nil {
		t.Fatal("the workload did not reach its goal within 10 s")
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func runBank(t *testing.T, s *fakeStore) checker.BankResult {
	t.Helper()
	path := filepath.Join(t.TempDir(), bankFile)
	h, err := history.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := &bankWorkload{coordRecorder: coordRecorder{start: time.Now()}, hist: h,
		nodes: []endpoint{{"n1", "a"}, {"n2", "b"}}, kinds: []string{history.ClientPinned, history.ClientFailover},
		concurrency: 2, opTimeout: time.Second, seed: 1,
		newClient: func(string, []endpoint, uint64) (bankClient, error) { return &fakeBank{fakeStore: s}, nil }}
	runUntil(t, func(ctx context.Context) error { return w.run(ctx, unlimited(ctx)) }, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.transfers >= 20 && s.readsAfterOwn >= 1
	})
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	evs, err := history.ReadFile[history.BankEvent](path)
	if err != nil {
		t.Fatal(err)
	}
	return checker.CheckBank(history.PairBank(evs), s.final(), checker.BankOptions{Accounts: bankAccounts(), Total: bankTotal(), Timeout: time.Minute})
}

func TestBankWorkloadRecordsACheckableHistory(t *testing.T) {
	res := runBank(t, newFakeStore())
	if !res.Valid || res.Undecided || res.Reads == 0 || res.Transfers < 20 {
		t.Fatalf("valid=%v undecided=%v reads=%d transfers=%d: %s", res.Valid, res.Undecided, res.Reads, res.Transfers, res.Detail)
	}
}

func TestBankWorkloadCatchesStaleReads(t *testing.T) {
	s := newFakeStore()
	s.staleReads = true
	res := runBank(t, s)
	if res.Valid || !strings.Contains(res.Detail, "no linearization") {
		t.Fatalf("stale reads not caught: %s", res.Detail)
	}
}

func runLock(t *testing.T, s *fakeStore, goal int) checker.LockResult {
	t.Helper()
	path := filepath.Join(t.TempDir(), lockFile)
	h, err := history.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := &lockWorkload{coordRecorder: coordRecorder{start: time.Now()}, hist: h, endpoints: []string{"a"},
		concurrency: 3, opTimeout: time.Second,
		newClient: func([]string) (lockClient, error) { return &fakeLocker{fakeStore: s}, nil }}
	runUntil(t, func(ctx context.Context) error { return w.run(ctx, unlimited(ctx)) }, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.acquired >= goal
	})
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	evs, err := history.ReadFile[history.LockEvent](path)
	if err != nil {
		t.Fatal(err)
	}
	return checker.CheckLock(history.PairLock(evs), s.final(), checker.LockOptions{FenceKey: fenceKey, CounterKey: counterKey})
}

func TestLockWorkloadRecordsACheckableHistory(t *testing.T) {
	res := runLock(t, newFakeStore(), 20)
	if !res.Valid || res.Acquisitions < 20 || res.WritesOK < 20 {
		t.Fatalf("valid=%v acquisitions=%d writes=%d: %s", res.Valid, res.Acquisitions, res.WritesOK, res.Detail)
	}
}

func TestLockWorkloadCatchesOverlappingHolders(t *testing.T) {
	s := newFakeStore()
	s.noExclusion = true
	res := runLock(t, s, 2)
	if res.Valid || !strings.Contains(res.Detail, "overlap") {
		t.Fatalf("overlapping holders not caught: %s", res.Detail)
	}
}

func TestWorkloadFlagRunsEveryWorkloadWhoseClientExists(t *testing.T) {
	if newBankClient == nil {
		t.Fatal("the txn workload has no client")
	}
	want := []string{workloadKV, workloadTxn}
	if newLockClient != nil {
		want = append(want, workloadLock)
	}
	for _, c := range []struct {
		flag string
		want []string
	}{
		{"kv", []string{workloadKV}},
		{"txn", []string{workloadTxn}},
		{"kv,txn", []string{workloadKV, workloadTxn}},
		{"all", want},
		{"txn,all", append([]string{workloadTxn}, slices.DeleteFunc(slices.Clone(want), func(w string) bool { return w == workloadTxn })...)},
	} {
		if got, err := parseWorkloads(c.flag); err != nil || !slices.Equal(got, c.want) {
			t.Errorf("--workload %s: got %v, %v; want %v", c.flag, got, err, c.want)
		}
	}
	if newLockClient == nil {
		for _, w := range []string{"lock", "kv,lock"} {
			if _, err := parseWorkloads(w); err == nil || !strings.Contains(err.Error(), "not available") {
				t.Errorf("--workload %s without a lock client: %v", w, err)
			}
		}
	}
	if _, err := parseWorkloads("bogus"); err == nil {
		t.Error("--workload bogus accepted")
	}
}

// TestCheckRunsTheCoordinationCheckers: the end-of-run check reads bank.jsonl
// and lock.jsonl when they exist and reports their verdicts in results.json.
func TestCheckRunsTheCoordinationCheckers(t *testing.T) {
	dir := t.TempDir()
	// A txn-only run: no KV ops, no faults.
	files := map[string]string{"history.jsonl": "", "nemesis.jsonl": ""}
	for f, content := range files {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bank := []history.BankEvent{
		{Type: history.Invoke, ID: 1, Op: history.BankRead, Time: 1},
		{Type: history.OK, ID: 1, Op: history.BankRead, Time: 2, Values: map[string]string{"/bank/a0": checker.BankValue(1, "x")}},
	}
	h, err := history.Create(filepath.Join(dir, bankFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range bank {
		h.Write(e)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	cfg := config{timeLimit: time.Second, concurrency: 1, rate: 1, checkTimeout: time.Minute}
	code, err := check(cfg, dir, 10, nil, nil, nil, nil, nil, &checker.Log{FirstIndex: 1}, "n1",
		map[string]checker.NodeFinal{"n1": {Data: map[string]checker.KV{}}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var res results
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if code != exitInvalid || res.Coordination.Bank == nil || res.Coordination.Bank.Valid || res.Coordination.Lock != nil ||
		!slices.Contains(res.FailedChecks, "bank") {
		t.Fatalf("exit %d, failed %v, bank %+v, lock %+v", code, res.FailedChecks, res.Coordination.Bank, res.Coordination.Lock)
	}
}
