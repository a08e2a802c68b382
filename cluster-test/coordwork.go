package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/raftwatch/raftwatch/cluster-test/checker"
	"github.com/raftwatch/raftwatch/cluster-test/history"
)

// The coordination workloads of issue 9 (--workload txn and lock). The
// generators below drive one client per process through the interfaces
// bankClient and lockClient and record bank.jsonl and lock.jsonl; the
// checkers (checker.CheckBank, checker.CheckLock) read those files back.
// The clients themselves are made by newBankClient (bankclient.go: pinned
// and failover clients over Txn) and newLockClient (lockclient.go: failover
// clients on the client/concurrency recipe); --workload all runs every
// workload whose client exists.

// Workloads selectable with --workload.
const (
	workloadKV   = "kv"
	workloadTxn  = "txn"
	workloadLock = "lock"
	workloadAll  = "all"
)

// Shape of the coordination workloads.
const (
	bankPrefix    = "/bank/"
	bankAccountsN = 5
	bankInitial   = 100 // per account
	// bankPctRead: share of bank ops that read every account.
	bankPctRead = 30
	lockName    = "/lock/mutex/"
	fenceKey    = "/lock/fence"
	counterKey  = "/lock/counter"
	// acquireTimeout bounds one lock acquisition (waiting for the holders
	// before it, across faults).
	acquireTimeout = 10 * time.Second
	// initAttempts bounds the tries to create the accounts or lock keys.
	initAttempts = 20
)

func bankAccounts() []string {
	var out []string
	for i := range bankAccountsN {
		out = append(out, fmt.Sprintf("%sa%d", bankPrefix, i))
	}
	return out
}

func bankTotal() int64 { return bankAccountsN * bankInitial }

// bankSnapshot is what a read of accounts returned: values by account
// (absent accounts missing), their mod_revisions, and the revision read at.
type bankSnapshot struct {
	Revision uint64
	Values   map[string]string
	ModRevs  map[string]uint64
}

func (s bankSnapshot) clone() bankSnapshot {
	out := bankSnapshot{Revision: s.Revision, Values: map[string]string{}, ModRevs: map[string]uint64{}}
	for k, v := range s.Values {
		out.Values[k] = v
	}
	for k, v := range s.ModRevs {
		out.ModRevs[k] = v
	}
	return out
}

// bankTransfer is one transfer Txn: if mod_revision(From) == FromRev and
// mod_revision(To) == ToRev then put From=FromValue, To=ToValue, else get
// From and To.
type bankTransfer struct {
	From, To           string
	FromRev, ToRev     uint64
	FromValue, ToValue string
}

// bankOutcome is a transfer's result: the Txn's revision, which branch ran,
// and, when the failure branch ran, what its gets read.
type bankOutcome struct {
	Revision  uint64
	Succeeded bool
	Failure   bankSnapshot
}

// keyIniter creates keys once: one Txn whose compares require every key
// absent (exists == false) and whose success branch puts every value.
type keyIniter interface {
	InitKeys(ctx context.Context, values map[string]string) (rev uint64, succeeded bool, err error)
}

// bankClient is what the txn workload needs from one client process.
// Errors are classified like the KV workload's (classify): a gRPC status
// that says the request was not applied is a fail, anything else info.
type bankClient interface {
	keyIniter
	// ReadAll reads every account at one revision (a Txn of gets, or a
	// List at one revision).
	ReadAll(ctx context.Context, accounts []string) (bankSnapshot, error)
	// Transfer runs the transfer Txn.
	Transfer(ctx context.Context, t bankTransfer) (bankOutcome, error)
	Close() error
}

// lockClient is what the lock workload needs from one client process. It
// keeps a session (a lease kept alive) for as long as it holds or waits.
type lockClient interface {
	keyIniter
	// Acquire waits for lock name (the client/concurrency Mutex on a
	// session lease) and returns the fencing token and the session's lease
	// id. After an error the client holds nothing: it revokes or abandons
	// the session, and the next Acquire starts a new one.
	Acquire(ctx context.Context, name string) (token uint64, lease int64, err error)
	// Get reads a key's value ("" and false when absent), linearizably.
	Get(ctx context.Context, key string) (value string, found bool, err error)
	// FencedWrite runs the fenced Txn: if value(fence) < FenceValue(token+1)
	// then put fence=FenceValue(token), counter=CounterValue(counter).
	FencedWrite(ctx context.Context, w fencedWrite) (rev uint64, succeeded bool, err error)
	// Release releases the lock the last Acquire returned.
	Release(ctx context.Context) error
	Close() error
}

// fencedWrite is one fenced write.
type fencedWrite struct {
	FenceKey, CounterKey string
	Token                uint64
	// Counter is the new counter value (the value read + 1).
	Counter uint64
}

// Client factories (nil: the workload is not available in this build).
// Each call makes one client process's client.
var (
	// newBankClient makes a bank client of kind (history.ClientPinned or
	// ClientFailover) for nodes, in the client's order: the first is its
	// home (pinned) or the endpoint it tries first (failover).
	newBankClient func(kind string, nodes []endpoint, seed uint64) (bankClient, error) = newTxnBankClient
	newLockClient func(endpoints []string) (lockClient, error)
)

// parseWorkloads parses --workload: a comma list of kv, txn and lock, or
// all. txn and lock need their client factories; all is every workload
// whose client exists in this build.
func parseWorkloads(s string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, w := range strings.Split(s, ",") {
		w = strings.TrimSpace(w)
		names := []string{w}
		if w == workloadAll {
			names = availableWorkloads()
		}
		for _, n := range names {
			switch n {
			case workloadKV:
			case workloadTxn:
				if newBankClient == nil {
					return nil, fmt.Errorf("--workload %s: the txn workload is not available in this build: the Go client has no Txn API yet (issue 9); use --workload kv", s)
				}
			case workloadLock:
				if newLockClient == nil {
					return nil, fmt.Errorf("--workload %s: the lock workload is not available in this build: the Go client has no lease or lock API yet (issue 9); use kv and txn (--workload all runs every workload whose client exists)", s)
				}
			default:
				return nil, fmt.Errorf("--workload %q: use a comma list of kv, txn, lock, or all", s)
			}
			if !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
	}
	return out, nil
}

// availableWorkloads are the workloads whose clients exist in this build:
// what --workload all runs.
func availableWorkloads() []string {
	out := []string{workloadKV}
	if newBankClient != nil {
		out = append(out, workloadTxn)
	}
	if newLockClient != nil {
		out = append(out, workloadLock)
	}
	return out
}

// coordRecorder records one coordination workload's ops.
type coordRecorder struct {
	start          time.Time
	nextID         atomic.Int64
	ok, fail, info atomic.Int64
}

func (r *coordRecorder) now() int64 { return time.Since(r.start).Nanoseconds() }

// outcome classifies err and counts it.
func (r *coordRecorder) outcome(err error) (string, string) {
	typ, msg := history.OK, ""
	if err != nil {
		typ, msg = classify(err)
	}
	switch typ {
	case history.OK:
		r.ok.Add(1)
	case history.Fail:
		r.fail.Add(1)
	default:
		r.info.Add(1)
	}
	return typ, msg
}

// bankWorkload runs the txn transfer clients: concurrency clients of each
// kind in kinds (history.ClientPinned, ClientFailover), as the KV workload.
type bankWorkload struct {
	coordRecorder
	hist        *history.Writer
	nodes       []endpoint
	kinds       []string
	concurrency int
	opTimeout   time.Duration
	seed        uint64
	newClient   func(kind string, nodes []endpoint, seed uint64) (bankClient, error)
}

// bankProcess is one bank client process.
type bankProcess struct {
	c    bankClient
	kind string
}

// targeter is a client pinned to a node: Target picks the node its next op
// goes to, recorded as the op's node.
type targeter interface{ Target() string }

// run creates the accounts, then runs the clients until ctx is done, each
// op taking a token from tokens.
func (w *bankWorkload) run(ctx context.Context, tokens <-chan struct{}) error {
	var clients []bankProcess
	for _, kind := range w.kinds {
		for range w.concurrency {
			i := len(clients)
			// Each client lists the endpoints from a different one.
			var eps []endpoint
			for j := range w.nodes {
				eps = append(eps, w.nodes[(i+j)%len(w.nodes)])
			}
			c, err := w.newClient(kind, eps, w.seed+uint64(i))
			if err != nil {
				return fmt.Errorf("bank client %d (%s): %w", i, kind, err)
			}
			defer c.Close()
			clients = append(clients, bankProcess{c: c, kind: kind})
		}
	}
	if len(clients) == 0 {
		return errors.New("bank workload: no clients (no client kind selected)")
	}
	init := map[string]string{}
	for _, a := range bankAccounts() {
		init[a] = checker.BankValue(bankInitial, "init")
	}
	if err := w.initAccounts(ctx, clients[0], init); err != nil {
		return err
	}
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.client(ctx, c, i, len(clients), tokens)
		}()
	}
	wg.Wait()
	return nil
}

// initAccounts runs the init Txn until it is known to have applied (ok,
// whichever branch: a failed compare means an earlier try applied).
func (w *bankWorkload) initAccounts(ctx context.Context, p bankProcess, init map[string]string) error {
	for try := 0; try < initAttempts && ctx.Err() == nil; try++ {
		inv := history.BankEvent{Type: history.Invoke, ID: int(w.nextID.Add(1)), Process: -1, Op: history.BankInit, Init: init,
			Client: p.kind, Node: targetOf(p.c)}
		inv.Time = w.now()
		w.hist.Write(inv)
		octx, cancel := context.WithTimeout(ctx, w.opTimeout)
		rev, ok, err := p.c.InitKeys(octx, init)
		cancel()
		comp := history.BankEvent{ID: inv.ID, Process: inv.Process, Op: inv.Op, Client: inv.Client, Node: inv.Node, Revision: rev, Succeeded: ok}
		comp.Type, comp.Error = w.outcome(err)
		comp.Time = w.now()
		w.hist.Write(comp)
		if comp.Type == history.OK {
			return nil
		}
	}
	return fmt.Errorf("creating the bank accounts failed %d times", initAttempts)
}

// targetOf is the node c's next op goes to ("" when c picks it itself).
func targetOf(c bankClient) string {
	if t, ok := c.(targeter); ok {
		return t.Target()
	}
	return ""
}

// client runs one bank client (the i-th of n): reads of every account, and
// transfers based on what it last read.
func (w *bankWorkload) client(ctx context.Context, p bankProcess, i, n int, tokens <-chan struct{}) {
	c := p.c
	rng := rand.New(rand.NewPCG(w.seed, uint64(i)+1000))
	process := i
	accounts := bankAccounts()
	var known bankSnapshot // what this client last read
	for {
		select {
		case <-ctx.Done():
			return
		case <-tokens:
		}
		inv := history.BankEvent{Type: history.Invoke, ID: int(w.nextID.Add(1)), Process: process, Client: p.kind}
		var tr bankTransfer
		if len(known.Values) < len(accounts) || rng.IntN(100) < bankPctRead {
			inv.Op = history.BankRead
		} else {
			f := rng.IntN(len(accounts))
			t := (f + 1 + rng.IntN(len(accounts)-1)) % len(accounts)
			from, to := accounts[f], accounts[t]
			fb, err1 := checker.BankBalance(known.Values[from])
			tb, err2 := checker.BankBalance(known.Values[to])
			if err := errors.Join(err1, err2); err != nil {
				known = bankSnapshot{}
				continue
			}
			amount := int64(0)
			if fb > 0 {
				amount = 1 + rng.Int64N(fb)
			}
			tag := fmt.Sprintf("t%d", inv.ID)
			tr = bankTransfer{From: from, To: to, FromRev: known.ModRevs[from], ToRev: known.ModRevs[to],
				FromValue: checker.BankValue(fb-amount, tag), ToValue: checker.BankValue(tb+amount, tag)}
			inv.Op, inv.From, inv.To, inv.Amount = history.BankTransfer, from, to, amount
			inv.FromRev, inv.ToRev, inv.FromValue, inv.ToValue = tr.FromRev, tr.ToRev, tr.FromValue, tr.ToValue
		}
		inv.Node = targetOf(c)
		inv.Time = w.now()
		w.hist.Write(inv)
		octx, cancel := context.WithTimeout(ctx, w.opTimeout)
		comp := history.BankEvent{ID: inv.ID, Process: process, Op: inv.Op, Client: inv.Client, Node: inv.Node}
		var err error
		switch inv.Op {
		case history.BankRead:
			var s bankSnapshot
			s, err = c.ReadAll(octx, accounts)
			if err == nil {
				comp.Revision, comp.Values, comp.ModRevs = s.Revision, s.Values, s.ModRevs
				known = s.clone() // the client's maps stay its own
			}
		case history.BankTransfer:
			var out bankOutcome
			out, err = c.Transfer(octx, tr)
			if err == nil {
				comp.Revision, comp.Succeeded = out.Revision, out.Succeeded
				if out.Succeeded {
					known.Values[tr.From], known.Values[tr.To] = tr.FromValue, tr.ToValue
					known.ModRevs[tr.From], known.ModRevs[tr.To] = out.Revision, out.Revision
				} else {
					comp.Values, comp.ModRevs = out.Failure.Values, out.Failure.ModRevs
					for a, v := range out.Failure.Values {
						known.Values[a], known.ModRevs[a] = v, out.Failure.ModRevs[a]
					}
				}
			}
		}
		cancel()
		comp.Type, comp.Error = w.outcome(err)
		comp.Time = w.now()
		w.hist.Write(comp)
		if comp.Type == history.Info {
			// The op may still be in flight: a new process id, and read
			// before the next transfer.
			process += n
			known = bankSnapshot{}
		}
	}
}

// lockWorkload runs the lock clients: concurrency failover clients (the Go
// client and its lock recipe; --clients does not apply, see lockclient.go).
type lockWorkload struct {
	coordRecorder
	hist        *history.Writer
	endpoints   []string
	concurrency int
	opTimeout   time.Duration
	newClient   func(endpoints []string) (lockClient, error)
}

func (w *lockWorkload) run(ctx context.Context, tokens <-chan struct{}) error {
	clients := make([]lockClient, w.concurrency)
	for i := range clients {
		var eps []string
		for j := range w.endpoints {
			eps = append(eps, w.endpoints[(i+j)%len(w.endpoints)])
		}
		c, err := w.newClient(eps)
		if err != nil {
			return fmt.Errorf("lock client %d: %w", i, err)
		}
		defer c.Close()
		clients[i] = c
	}
	init := map[string]string{fenceKey: checker.FenceValue(0), counterKey: checker.CounterValue(0)}
	created := false
	for try := 0; try < initAttempts && ctx.Err() == nil && !created; try++ {
		octx, cancel := context.WithTimeout(ctx, w.opTimeout)
		_, _, err := clients[0].InitKeys(octx, init)
		cancel()
		created = err == nil
	}
	if !created {
		return fmt.Errorf("creating the lock's fence and counter keys failed %d times", initAttempts)
	}
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.client(ctx, c, i, tokens)
		}()
	}
	wg.Wait()
	return nil
}

// record writes inv, runs do, and writes its completion.
func (w *lockWorkload) record(inv history.LockEvent, do func(comp *history.LockEvent) error) history.LockEvent {
	inv.Type, inv.ID, inv.Client, inv.Time = history.Invoke, int(w.nextID.Add(1)), history.ClientFailover, w.now()
	w.hist.Write(inv)
	comp := history.LockEvent{ID: inv.ID, Process: inv.Process, Op: inv.Op, Client: inv.Client}
	err := do(&comp)
	comp.Type, comp.Error = w.outcome(err)
	comp.Time = w.now()
	w.hist.Write(comp)
	return comp
}

// client runs one lock client: acquire, read the counter, fenced write,
// release; every step recorded.
func (w *lockWorkload) client(ctx context.Context, c lockClient, i int, tokens <-chan struct{}) {
	process := i
	for {
		select {
		case <-ctx.Done():
			return
		case <-tokens:
		}
		var token uint64
		acq := w.record(history.LockEvent{Process: process, Op: history.LockAcquire}, func(comp *history.LockEvent) error {
			actx, cancel := context.WithTimeout(ctx, acquireTimeout)
			defer cancel()
			t, lease, err := c.Acquire(actx, lockName)
			comp.Token, comp.Lease, token = t, lease, t
			return err
		})
		if acq.Type != history.OK {
			if acq.Type == history.Info {
				process += w.concurrency
			}
			continue
		}
		// Read the counter (not recorded: the write records what it read).
		octx, cancel := context.WithTimeout(context.Background(), w.opTimeout)
		v, found, err := c.Get(octx, counterKey)
		cancel()
		var n uint64
		if err == nil && found {
			n, err = checker.ParseFixed(v)
		}
		if err == nil && found {
			wr := fencedWrite{FenceKey: fenceKey, CounterKey: counterKey, Token: token, Counter: n + 1}
			w.record(history.LockEvent{Process: process, Op: history.LockWrite, Token: token, ReadCounter: n}, func(comp *history.LockEvent) error {
				octx, cancel := context.WithTimeout(context.Background(), w.opTimeout)
				defer cancel()
				rev, ok, err := c.FencedWrite(octx, wr)
				comp.Revision, comp.Succeeded = rev, ok
				return err
			})
		}
		// Always release what was acquired, even after the run's end.
		rel := w.record(history.LockEvent{Process: process, Op: history.LockRelease, Token: token}, func(*history.LockEvent) error {
			octx, cancel := context.WithTimeout(context.Background(), w.opTimeout)
			defer cancel()
			return c.Release(octx)
		})
		if rel.Type == history.Info {
			process += w.concurrency
		}
	}
}

// tokenSource hands out tokens at rate per second until ctx is done, the
// limiter of every workload; a token no client is ready for is dropped, so
// the bound holds while every client is busy.
func tokenSource(ctx context.Context, rate float64) <-chan struct{} {
	tokens := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Duration(float64(time.Second) / rate))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				select {
				case tokens <- struct{}{}:
				default:
				}
			}
		}
	}()
	return tokens
}

// coordChecks are the verdicts of the coordination checkers.
type coordChecks struct {
	Bank *checker.BankResult `json:"bank,omitempty"`
	Lock *checker.LockResult `json:"lock,omitempty"`
}

// Records of the coordination workloads, in --out.
const (
	bankFile = "bank.jsonl"
	lockFile = "lock.jsonl"
)

// coordRun is the coordination workloads of one run.
type coordRun struct {
	wg      sync.WaitGroup
	mu      sync.Mutex
	errs    []error
	writers []*history.Writer
	// counts: each running workload's recorder, by workload name.
	counts map[string]*coordRecorder
}

// progress is a summary of the ops so far, for the progress line.
func (r *coordRun) progress() string {
	var parts []string
	for _, name := range []string{workloadTxn, workloadLock} {
		if c := r.counts[name]; c != nil {
			ok, fail, info := c.ok.Load(), c.fail.Load(), c.info.Load()
			parts = append(parts, fmt.Sprintf("%s ops %d (ok %d, fail %d, info %d)", name, ok+fail+info, ok, fail, info))
		}
	}
	return strings.Join(parts, ", ")
}

// startCoord starts the selected coordination workloads (each at rate ops
// per second) until ctx is done.
func startCoord(ctx context.Context, cfg config, out string, start time.Time, nodes []endpoint, rate float64) (*coordRun, error) {
	r := &coordRun{counts: map[string]*coordRecorder{}}
	var endpoints []string
	for _, n := range nodes {
		endpoints = append(endpoints, n.addr)
	}
	var kinds []string
	if cfg.clients != clientsFailover {
		kinds = append(kinds, history.ClientPinned)
	}
	if cfg.clients != clientsPinned {
		kinds = append(kinds, history.ClientFailover)
	}
	launch := func(file string, run func(h *history.Writer) error) error {
		h, err := history.Create(filepath.Join(out, file))
		if err != nil {
			return err
		}
		r.writers = append(r.writers, h)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			if err := run(h); err != nil {
				r.mu.Lock()
				r.errs = append(r.errs, err)
				r.mu.Unlock()
			}
		}()
		return nil
	}
	if slices.Contains(cfg.workloads, workloadTxn) {
		w := &bankWorkload{coordRecorder: coordRecorder{start: start}, nodes: nodes, kinds: kinds,
			concurrency: cfg.concurrency, opTimeout: cfg.opTimeout, seed: cfg.seed, newClient: newBankClient}
		r.counts[workloadTxn] = &w.coordRecorder
		err := launch(bankFile, func(h *history.Writer) error {
			w.hist = h
			return w.run(ctx, tokenSource(ctx, rate))
		})
		if err != nil {
			return r, err
		}
	}
	if slices.Contains(cfg.workloads, workloadLock) {
		w := &lockWorkload{coordRecorder: coordRecorder{start: start}, endpoints: endpoints,
			concurrency: cfg.concurrency, opTimeout: cfg.opTimeout, newClient: newLockClient}
		r.counts[workloadLock] = &w.coordRecorder
		err := launch(lockFile, func(h *history.Writer) error {
			w.hist = h
			return w.run(ctx, tokenSource(ctx, rate))
		})
		if err != nil {
			return r, err
		}
	}
	return r, nil
}

func (r *coordRun) wait() { r.wg.Wait() }

func (r *coordRun) err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return errors.Join(r.errs...)
}

func (r *coordRun) flush() error {
	var errs []error
	for _, w := range r.writers {
		errs = append(errs, w.Flush())
	}
	return errors.Join(errs...)
}

func (r *coordRun) close() {
	for _, w := range r.writers {
		w.Close()
	}
}

// checkCoord runs the coordination checkers on the records in dir that
// exist.
func checkCoord(dir string, rp *checker.Replay, final map[string]map[string]checker.KV, windows []checker.Window, timeout time.Duration) (coordChecks, error) {
	var res coordChecks
	if evs, err := history.ReadFile[history.BankEvent](filepath.Join(dir, bankFile)); err == nil {
		r := checker.CheckBank(history.PairBank(evs), final, checker.BankOptions{Accounts: bankAccounts(), Total: bankTotal(),
			Replay: rp, Windows: windows, Timeout: timeout})
		res.Bank = &r
	} else if !os.IsNotExist(err) {
		return res, fmt.Errorf("reading %s: %w", bankFile, err)
	}
	if evs, err := history.ReadFile[history.LockEvent](filepath.Join(dir, lockFile)); err == nil {
		r := checker.CheckLock(history.PairLock(evs), final, checker.LockOptions{FenceKey: fenceKey, CounterKey: counterKey, Replay: rp})
		res.Lock = &r
	} else if !os.IsNotExist(err) {
		return res, fmt.Errorf("reading %s: %w", lockFile, err)
	}
	return res, nil
}
