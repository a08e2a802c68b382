package fsm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"

	pb "github.com/raftwatch/raftwatch/proto"
	"github.com/raftwatch/raftwatch/watch"
)

var (
	bucketKV      = []byte("kv")      // user keys -> record
	bucketMeta    = []byte("meta")    // bookkeeping that must commit with the data
	bucketMembers = []byte("members") // raft server ID -> client address
	keyApplied    = []byte("applied") // last applied log index
)

const (
	// initialMmapSize is reserved up front so that a long snapshot read
	// transaction rarely holds up a writer waiting to grow the mapping.
	initialMmapSize = 1 << 30
	// openTimeout bounds the wait for bbolt's file lock: a second process on
	// the same data directory fails fast instead of hanging.
	openTimeout = 2 * time.Second
)

// Sink receives the watch batch of each committed transaction. The FSM calls
// WantPrev at the start of every batch and Publish after the commit; neither
// may block. *watch.Dispatcher is the production Sink.
type Sink interface {
	WantPrev() bool
	Publish(watch.Batch)
}

// EntryResult is the response of one applied command entry, in the order of
// the Chunk's ops. It is what raft's ApplyFuture.Response() returns.
type EntryResult struct {
	Index uint64
	Ops   []OpResult
}

// OpResult is the outcome of one op.
type OpResult struct {
	// Err is why the op was refused at apply time (e.g. its lease does not
	// exist); nothing changed. The same on every node.
	Err         error
	Lease, TTL  int64      // lease ops: the lease and its granted TTL in seconds
	Succeeded   bool       // false when the op's condition did not hold
	Deleted     bool       // DELETE removed an existing key
	Prev        *KeyValue  // state before the op, when asked or a condition was set; nil if absent
	ModRevision uint64     // the key's mod revision after the op (0 = absent)
	Txn         *TxnResult // TXN: which branch ran and each op's result
}

// FSM applies committed log entries to bbolt. It implements raft.BatchingFSM
// and watch.History.
type FSM struct {
	path   string
	sink   Sink
	log    *slog.Logger
	noSync bool
	limits historyLimits
	// noHistory makes ApplyBatch write no history; only the benchmark
	// sets it, to measure what history costs.
	noHistory bool

	// applyMu is held for the whole of a batch and of a restore.
	applyMu sync.Mutex

	// dbMu guards the db pointer, which Restore swaps.
	dbMu sync.RWMutex
	db   *bolt.DB

	applied atomic.Uint64
	// committed is the ID of the last write transaction ApplyBatch
	// committed and the applied index it stored, so a read transaction of
	// that ID knows its applied index without reading meta (appliedIn).
	// Restore clears it: the new file's transaction IDs are its own.
	committed atomic.Pointer[committedTx]
	// hist is the history's stats; ApplyBatch stores them just before its
	// commit, so OldestRevision never names a revision already compacted.
	hist atomic.Pointer[histStats]

	// The buffers of a batch's transaction, reused by the next (under
	// applyMu): txBuf's bytes and the history writer's lists.
	txBuf         []byte
	histIdx       []byte
	compacted     []compactedRecord
	compactedRevs []uint64

	// notifyMu guards notify, a channel closed and replaced whenever applied
	// advances, so WaitApplied can block without polling.
	notifyMu sync.Mutex
	notify   chan struct{}

	// damage is why the state machine is damaged (damage.go); damaged is
	// closed when it is set.
	damageMu sync.Mutex
	damage   error
	damaged  chan struct{}

	scrubMu sync.Mutex
	scrub   ScrubStats

	leases leaseClocks // lease.go

	auth atomic.Pointer[Auth] // auth.go
}

// Options tune the state machine's storage.
type Options struct {
	// NoSync skips fsync on each commit. Acknowledged writes stay durable
	// through the fsynced raft log; the caller must then rebuild the state
	// (newest snapshot plus log replay) if the machine may have lost its
	// page cache — node does that after a reboot that interrupted it.
	NoSync bool

	// HistoryMaxEvents and HistoryMaxBytes bound the retained history: the
	// number of events and the sum of their key and value lengths (0 =
	// DefaultHistoryMaxEvents, DefaultHistoryMaxBytes). Each batch that
	// finds history over a bound removes its oldest revisions, at most
	// max(2 × the events the batch added, 1024) events (plus the rest of
	// the last revision it started), so at any steady write rate history
	// is back within the bounds a few batches after it crossed them.
	HistoryMaxEvents uint64
	HistoryMaxBytes  uint64

	// Leases caps the lease state (lease.go).
	Leases LeaseLimits
}

func (o Options) historyLimits() historyLimits {
	l := historyLimits{maxEvents: o.HistoryMaxEvents, maxBytes: o.HistoryMaxBytes}
	if l.maxEvents == 0 {
		l.maxEvents = DefaultHistoryMaxEvents
	}
	if l.maxBytes == 0 {
		l.maxBytes = DefaultHistoryMaxBytes
	}
	return l
}

// Open opens (or creates) the bbolt file at path.
func Open(path string, sink Sink, log *slog.Logger, opts Options) (*FSM, error) {
	if log == nil {
		log = slog.Default()
	}
	db, st, err := openDB(path, opts.NoSync, log)
	if err != nil {
		return nil, err
	}
	f := &FSM{path: path, sink: sink, log: log, db: db, noSync: opts.NoSync, limits: opts.historyLimits(),
		notify: make(chan struct{}), damaged: make(chan struct{})}
	f.leases = leaseClocks{now: time.Now, limits: opts.Leases.withDefaults()}
	if err := f.leases.rebuild(db); err != nil {
		db.Close()
		return nil, fmt.Errorf("open state machine %s: leases: %w", path, err)
	}
	auth, err := loadAuth(db)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open state machine %s: authorization: %w", path, err)
	}
	f.auth.Store(auth)
	f.applied.Store(st.applied)
	f.hist.Store(&st.hist)
	log.Info("state machine opened", "path", path, "applied_index", st.applied,
		"history_oldest_revision", st.hist.oldest, "history_events", st.hist.events)
	return f, nil
}

// dbState is what openDB reads from a database it opened.
type dbState struct {
	applied uint64
	hist    histStats
}

func openDB(path string, noSync bool, log *slog.Logger) (*bolt.DB, dbState, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:         openTimeout,
		InitialMmapSize: initialMmapSize,
		FreelistType:    bolt.FreelistMapType,
		NoFreelistSync:  true,
		NoSync:          noSync,
		// Without fsync per commit, an fsync per 16 MiB of file growth buys
		// nothing: a machine crash already means a rebuild (see Options).
		// History makes the file grow about three times faster.
		NoGrowSync: noSync,
	})
	if err != nil {
		return nil, dbState{}, fmt.Errorf("open state machine %s: %w", path, err)
	}
	var st dbState
	var filled, sealedValues int
	var upgraded bool
	err = db.Update(func(tx *bolt.Tx) error {
		var err error
		if sealedValues, err = prepareFormat(tx); err != nil {
			return err
		}
		for _, b := range [][]byte{bucketKV, bucketMembers} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if err := createLeaseBuckets(tx); err != nil {
			return err
		}
		if err := createAuthBuckets(tx); err != nil {
			return err
		}
		if st.applied, err = readApplied(tx); err != nil {
			return err
		}
		st.hist, filled, upgraded, err = initHistory(tx, st.applied)
		return err
	})
	if err != nil {
		db.Close()
		return nil, dbState{}, fmt.Errorf("init state machine %s: %w", path, err)
	}
	if sealedValues > 0 {
		log.Info("state machine upgraded: every stored value now carries a checksum",
			"path", path, "values", sealedValues, "format", formatChecksummed)
	}
	if upgraded {
		log.Info("state machine had no history: history starts after the applied index, previous values of live keys kept",
			"path", path, "history_oldest_revision", st.hist.oldest, "keys", filled)
	}
	return db, st, nil
}

// committedTx is what a write transaction stored that reads want without
// looking it up: its ID, the applied index, and whether no key is on a
// lease. A read transaction's ID is that of the last write transaction
// committed before it began, so what ApplyBatch noted for that ID is what
// the reader would find (the note is made before the commit, when no reader
// can have that ID yet).
type committedTx struct {
	id          int
	applied     uint64
	noLeaseKeys bool
}

// readApplied returns the applied index stored in tx (0 when none is).
func readApplied(tx *bolt.Tx) (uint64, error) {
	b := tx.Bucket(bucketMeta)
	if b == nil {
		return 0, nil
	}
	v, _, err := getMeta(b, keyApplied)
	return v, err
}

// Close syncs and closes the database.
func (f *FSM) Close() error {
	f.dbMu.Lock()
	defer f.dbMu.Unlock()
	return errors.Join(f.db.Sync(), f.db.Close())
}

// Applied returns the index of the last entry committed to bbolt.
func (f *FSM) Applied() uint64 { return f.applied.Load() }

// SetSink sets where committed batches are published. Call it before the
// FSM is handed to raft: the dispatcher it publishes to reads the FSM's
// history, so the two are made one after the other.
func (f *FSM) SetSink(s Sink) { f.sink = s }

// Advanced returns a channel that is closed when Applied() next advances.
// Take it before reading Applied(), so that no advance is missed.
func (f *FSM) Advanced() <-chan struct{} {
	f.notifyMu.Lock()
	defer f.notifyMu.Unlock()
	return f.notify
}

// WaitApplied blocks until Applied() >= index or the context ends.
func (f *FSM) WaitApplied(ctx context.Context, index uint64) error {
	for {
		ch := f.Advanced()
		if f.applied.Load() >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (f *FSM) advance(index uint64) {
	f.applied.Store(index)
	f.notifyMu.Lock()
	close(f.notify)
	f.notify = make(chan struct{})
	f.notifyMu.Unlock()
}

// Apply applies a single entry; raft uses ApplyBatch, this satisfies raft.FSM.
func (f *FSM) Apply(l *raft.Log) interface{} {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies committed entries in one bbolt transaction. Entries at or
// below the stored applied index are skipped (their response is nil).
//
// A batch that cannot be applied stops the process with a panic naming the
// entry and why, after logging it: a command that cannot be decoded, a stored
// value that fails its checksum (the state machine is then marked damaged,
// see MarkerPath, and rebuilt at the next start), or a failed commit.
// Skipping the entry would leave this node without writes the others have;
// going on without applying would serve ever staler data. hashicorp/raft
// stops the same way when it cannot read an entry it must apply.
func (f *FSM) ApplyBatch(logs []*raft.Log) []interface{} {
	results := make([]interface{}, len(logs))
	f.applyMu.Lock()
	defer f.applyMu.Unlock()

	applied := f.applied.Load()
	last := applied
	for _, l := range logs {
		if l.Index > last {
			last = l.Index
		}
	}
	if last == applied {
		return results // everything here was applied before a restart
	}
	wantPrev := f.sink != nil && f.sink.WantPrev()
	var events []watch.Event
	var clock []clockChange
	var auth *Auth // set when the batch changed the authorization state

	buf := &txBuf{b: f.txBuf}
	f.dbMu.RLock()
	defer f.dbMu.RUnlock()
	err := f.db.Update(func(tx *bolt.Tx) error {
		a := applier{kv: tx.Bucket(bucketKV), members: tx.Bucket(bucketMembers), wantPrev: wantPrev,
			ls: newLeaseApply(tx, f.leases.limits), auth: newAuthApply(tx), buf: buf}
		if !f.noHistory {
			h, err := f.historyWriter(tx, buf)
			if err != nil {
				return err
			}
			a.hist = h
		}
		// Decode every entry first: the batch's events then fit in one
		// allocation (a Txn or lease expiry can add more; append copes).
		chunks := make([]*pb.Chunk, len(logs))
		ops := 0
		for i, l := range logs {
			if l.Index <= applied || l.Type != raft.LogCommand {
				continue
			}
			chunk, err := decodeChunk(l.Data)
			if err != nil {
				return &undecodableError{index: l.Index, err: err}
			}
			chunks[i] = chunk
			ops += len(chunk.Ops)
		}
		a.events = make([]watch.Event, 0, ops)
		for i, chunk := range chunks {
			if chunk == nil {
				continue
			}
			res, err := a.applyChunk(logs[i].Index, chunk)
			if err != nil {
				return err
			}
			results[i] = res
		}
		events, clock = a.events, a.ls.clock
		if a.auth.changed {
			var err error
			if auth, err = readAuth(tx); err != nil {
				return err
			}
		}
		if err := putMeta(tx.Bucket(bucketMeta), keyApplied, last); err != nil {
			return err
		}
		// A commit that fails stops the process (stopApplying), so no
		// reader ever sees this ID with another applied index.
		f.committed.Store(&committedTx{id: tx.ID(), applied: last, noLeaseKeys: a.ls.noKeys})
		if a.hist == nil {
			return nil
		}
		// The history is complete up to here (see initHistory).
		if err := putMeta(tx.Bucket(bucketMeta), keyHistApplied, last); err != nil {
			return err
		}
		return f.finishHistory(tx, a.hist)
	})
	if err != nil {
		// The log is durable and the entries are committed; a state machine
		// that cannot apply them must not pretend it did, nor skip them.
		f.stopApplying(logs[0].Index, last, err)
	}
	f.txBuf = buf.reusable()
	f.leases.apply(clock)
	if auth != nil {
		f.auth.Store(auth)
	}
	f.advance(last)
	if f.sink != nil {
		f.sink.Publish(watch.Batch{Index: last, Events: events, PrevRead: wantPrev})
	}
	return results
}

// applier applies ops inside one write transaction and collects their events.
type applier struct {
	kv, members *bolt.Bucket
	hist        *historyWriter // nil: keep no history (benchmark only)
	buf         *txBuf         // the values handed to Put
	wantPrev    bool
	events      []watch.Event
	// pos is the next event's position in its entry: (revision, position)
	// orders every mutation, including the several of one Txn.
	pos  int
	ls   *leaseApply // lease.go
	auth *authApply  // auth.go
}

// mutation is one key's put or delete as the appliers see it, whatever op
// (PUT, DELETE, TXN, lease expiry) it came from.
type mutation struct {
	key, value []byte
	lease      int64         // PUT: the lease to attach the key to (0 = none)
	maxKeys    uint64        // PUT: the lease's key cap carried by the op (0 = Options.Leases)
	cond       *pb.Condition // nil: unconditional
	wantPrev   bool          // return the previous state in OpResult.Prev
}

func opMutation(op *pb.Op) mutation {
	return mutation{key: op.Key, value: op.Value, lease: op.Lease, maxKeys: op.MaxKeysPerLease, cond: op.Condition, wantPrev: op.WantPrev}
}

func (a *applier) applyChunk(index uint64, chunk *pb.Chunk) (*EntryResult, error) {
	res := &EntryResult{Index: index, Ops: make([]OpResult, len(chunk.Ops))}
	a.pos = 0
	for i, op := range chunk.Ops {
		var err error
		switch op.Kind {
		case pb.Op_PUT:
			res.Ops[i], err = a.put(index, opMutation(op))
		case pb.Op_DELETE:
			res.Ops[i], err = a.delete(index, opMutation(op))
		case pb.Op_TXN:
			res.Ops[i], err = a.txn(index, op.Txn, op.MaxKeysPerLease)
		case pb.Op_LEASE_GRANT, pb.Op_LEASE_REVOKE, pb.Op_LEASE_RENEW, pb.Op_LEASE_CHECKPOINT, pb.Op_LEASE_EXPIRE:
			res.Ops[i], err = a.applyLeaseOp(index, op)
		case pb.Op_ROLE_ADD, pb.Op_ROLE_DELETE, pb.Op_ROLE_GRANT, pb.Op_ROLE_REVOKE, pb.Op_USER_GRANT, pb.Op_USER_REVOKE:
			res.Ops[i], err = a.applyAuthOp(op)
		case pb.Op_SET_MEMBER:
			err = a.members.Put(op.Key, sealed(op.Key, op.Value))
			res.Ops[i].Succeeded = true
		default:
			// An unknown kind from a newer version: skip it the same way everywhere.
			res.Ops[i].Succeeded = false
		}
		if err != nil {
			return nil, err
		}
	}
	return res, nil
}

// current reads the key's record and its lease; found=false when absent.
func (a *applier) current(key []byte) (KeyValue, bool, error) {
	raw := a.kv.Get(key)
	if raw == nil {
		return KeyValue{}, false, nil
	}
	kv, err := decodeRecord(key, raw)
	if err != nil {
		return kv, false, err
	}
	kv.Lease, err = a.ls.leaseOfKey(key)
	return kv, err == nil, err
}

// check reads the key's current state and starts the op's result: Prev
// when asked for (or when a condition was set), and, when the condition does
// not hold, the key's mod revision with ok=false. The condition is
// evaluated as the compares it stands for, by the Txn's evaluator.
func (a *applier) check(m mutation) (cur KeyValue, found bool, res OpResult, ok bool, err error) {
	st, err := a.state(m.key)
	if err != nil {
		return cur, found, res, false, err
	}
	cur, found = st.kv, st.found
	if found && (m.wantPrev || m.cond != nil) {
		p := cur.clone()
		res.Prev = &p
	}
	for _, c := range conditionCompares(m.key, m.cond) {
		if !compareHolds(c, st) {
			res.ModRevision = cur.ModRevision
			return cur, found, res, false, nil
		}
	}
	return cur, found, res, true, nil
}

// eventBytes copies an event's key and value, in one allocation: they may
// alias the log entry (decodeChunk), and an event outlives the batch.
func eventBytes(key, value []byte) (k, v []byte) {
	b := make([]byte, len(key)+len(value))
	n := copy(b, key)
	copy(b[n:], value)
	k, v = b[:n:n], b[n:]
	if value == nil {
		v = nil
	}
	return k, v
}

// put applies a put of entry index.
func (a *applier) put(index uint64, m mutation) (OpResult, error) {
	cur, found, res, ok, err := a.check(m)
	if err != nil || !ok {
		return res, err
	}
	if refused, err := a.ls.checkAttach(cur.Lease, m.lease, m.maxKeys); err != nil || refused != nil {
		return OpResult{Err: refused}, err
	}
	create, version := index, uint64(1)
	if found {
		create, version = cur.CreateRevision, cur.Version+1
	}
	ev := watch.Event{Type: watch.Put, Revision: index, Version: version}
	ev.Key, ev.Value = eventBytes(m.key, m.value)
	if a.wantPrev {
		ev.HasPrev = true
		ev.PrevValue = []byte{}
		if found {
			ev.PrevValue = append(ev.PrevValue, cur.Value...)
		}
	}
	if err := a.kv.Put(m.key, a.buf.record(m.key, create, index, version, m.value)); err != nil {
		return OpResult{}, err
	}
	if err := a.ls.attach(m.key, cur.Lease, m.lease); err != nil {
		return OpResult{}, err
	}
	if a.hist != nil {
		if err := a.hist.record(index, a.pos, histPut, version, create, cur.ModRevision, m.key, m.value); err != nil {
			return OpResult{}, err
		}
	}
	a.pos++
	a.events = append(a.events, ev)
	res.Succeeded, res.ModRevision = true, index
	return res, nil
}

// delete applies a delete of entry index.
func (a *applier) delete(index uint64, m mutation) (OpResult, error) {
	cur, found, res, ok, err := a.check(m)
	if err != nil || !ok {
		return res, err
	}
	res.Succeeded = true
	if !found {
		return res, nil // deleting an absent key changes nothing and emits nothing
	}
	ev := watch.Event{Type: watch.Delete, Revision: index}
	ev.Key, _ = eventBytes(m.key, nil)
	if a.wantPrev {
		ev.HasPrev = true
		ev.PrevValue = append([]byte{}, cur.Value...)
	}
	if err := a.kv.Delete(m.key); err != nil {
		return OpResult{}, err
	}
	if err := a.ls.attach(m.key, cur.Lease, 0); err != nil { // a deleted key leaves its lease
		return OpResult{}, err
	}
	if a.hist != nil {
		if err := a.hist.record(index, a.pos, histDelete, cur.Version, cur.CreateRevision, cur.ModRevision, m.key, nil); err != nil {
			return OpResult{}, err
		}
	}
	a.pos++
	a.events = append(a.events, ev)
	res.Deleted = true
	return res, nil
}

// Get returns the key (nil if absent) and the revision it was read at, both
// from one read transaction. The returned Key is key itself.
func (f *FSM) Get(key []byte) (*KeyValue, uint64, error) {
	var out *KeyValue
	var rev uint64
	err := f.view(func(tx *bolt.Tx) error {
		c := f.committed.Load()
		if c != nil && c.id != tx.ID() {
			c = nil // tx is older than the last commit: read what it stored
		}
		var err error
		if c != nil {
			rev = c.applied
		} else if rev, err = readApplied(tx); err != nil {
			return err
		}
		raw := tx.Bucket(bucketKV).Get(key)
		if raw == nil {
			return nil
		}
		kv, err := decodeRecord(key, raw)
		if err != nil {
			return err
		}
		kv.Value = append([]byte{}, kv.Value...) // bbolt's memory is the transaction's
		if c == nil || !c.noLeaseKeys {
			kv.Lease, err = leaseOf(tx, key)
		}
		out = &kv
		return err
	})
	return out, rev, f.check(err)
}

// Members returns the client addresses recorded by SET_MEMBER ops.
func (f *FSM) Members() (map[string]string, error) {
	out := map[string]string{}
	err := f.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMembers).ForEach(func(k, v []byte) error {
			addr, err := openValue(bucketMembers, k, v)
			out[string(k)] = string(addr)
			return err
		})
	})
	return out, f.check(err)
}

func (f *FSM) view(fn func(*bolt.Tx) error) error {
	f.dbMu.RLock()
	defer f.dbMu.RUnlock()
	return f.db.View(fn)
}

// Snapshot captures the current state: a bbolt read transaction opened now
// and streamed out by Persist, concurrently with later applies.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.dbMu.RLock()
	tx, err := f.db.Begin(false)
	if err != nil {
		f.dbMu.RUnlock()
		return nil, fmt.Errorf("snapshot: begin read transaction: %w", err)
	}
	return &snapshot{tx: tx, release: f.dbMu.RUnlock, log: f.log, check: f.check}, nil
}

type snapshot struct {
	tx      *bolt.Tx
	release func()
	once    sync.Once
	log     *slog.Logger
	check   func(error) error
}

// Persist verifies every value of the snapshot, then writes it: a damaged
// state machine is never sent to a follower or kept as a snapshot.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := verifyAll(s.tx); err != nil {
		sink.Cancel()
		return fmt.Errorf("snapshot: %w", s.check(err))
	}
	n, err := s.tx.WriteTo(sink)
	if err != nil {
		sink.Cancel()
		return fmt.Errorf("snapshot: write: %w", err)
	}
	applied, _ := readApplied(s.tx)
	s.log.Info("snapshot persisted", "applied_index", applied, "bytes", n)
	return sink.Close()
}

func (s *snapshot) Release() {
	s.once.Do(func() {
		s.tx.Rollback()
		s.release()
	})
}

// Restore replaces the state with a snapshot streamed from the leader (or
// from the snapshot store). The new database is written beside the current
// one, checked, and swapped in with a rename, so a crash leaves either the
// old or the new file. A snapshot at or below the index already applied is
// discarded: the local state is already past it. Watchers are told through
// a Reset batch, because the events between the two states are not known.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	tmp := f.path + ".restore"
	if err := writeFileSync(tmp, rc); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	snapIndex, err := appliedIndexOf(tmp)
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("restore: %w", err)
	}

	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	if cur := f.applied.Load(); snapIndex <= cur {
		os.Remove(tmp)
		f.log.Info("snapshot not restored: state machine is already past it",
			"snapshot_index", snapIndex, "applied_index", cur)
		return nil
	}
	f.dbMu.Lock()
	if err := f.db.Close(); err != nil {
		f.dbMu.Unlock()
		return fmt.Errorf("restore: close current database: %w", err)
	}
	renameErr := os.Rename(tmp, f.path)
	if renameErr == nil {
		syncDir(filepath.Dir(f.path))
	}
	// Reopen whichever file is now in place; the node cannot go on without
	// one. History travels in the file; one from an older node gets it here.
	db, st, err := openDB(f.path, f.noSync, f.log)
	if err != nil {
		panic(fmt.Sprintf("fsm: reopen %s after restore: %v", f.path, err))
	}
	f.db = db
	f.committed.Store(nil)
	f.hist.Store(&st.hist)
	if err := f.leases.rebuild(db); err != nil {
		panic(fmt.Sprintf("fsm: read leases of %s after restore: %v", f.path, err))
	}
	auth, err := loadAuth(db)
	if err != nil {
		panic(fmt.Sprintf("fsm: read authorization of %s after restore: %v", f.path, err))
	}
	f.auth.Store(auth)
	f.dbMu.Unlock()
	applied := st.applied
	if renameErr != nil {
		os.Remove(tmp)
		return fmt.Errorf("restore: swap in snapshot: %w", renameErr)
	}
	f.advance(applied)
	f.log.Warn("state machine replaced by snapshot; watchers continue from its history", "applied_index", applied)
	if f.sink != nil {
		f.sink.Publish(watch.Batch{Index: applied, Reset: true})
	}
	return nil
}

func writeFileSync(path string, r io.Reader) error {
	out, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, r); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// appliedIndexOf opens a bbolt file read-only, verifies every value of a
// checksummed one and returns its applied index.
func appliedIndexOf(path string) (uint64, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: openTimeout})
	if err != nil {
		return 0, fmt.Errorf("snapshot is not a valid database: %w", err)
	}
	defer db.Close()
	var idx uint64
	err = db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketKV) == nil || tx.Bucket(bucketMeta) == nil {
			return errors.New("snapshot lacks raftwatch buckets")
		}
		format, _, err := getMeta(tx.Bucket(bucketMeta), keyFormat)
		if err != nil {
			return err
		}
		if format != formatChecksummed {
			// Written before checksums: read as it is, upgraded when opened.
			if v := tx.Bucket(bucketMeta).Get(keyApplied); len(v) == 8 {
				idx = bytesU64(v)
			}
			return nil
		}
		if _, err := verifyAll(tx); err != nil {
			return err
		}
		// A snapshot without history (from an older node) gets it when
		// opened; one with history must have its meta, or reopening fails.
		if tx.Bucket(bucketHistory) != nil {
			if tx.Bucket(bucketHBase) == nil || tx.Bucket(bucketHIndex) == nil {
				return errors.New("snapshot has history but no history base or index")
			}
			if _, err := readHistStats(tx); err != nil {
				return fmt.Errorf("snapshot history: %w", err)
			}
		}
		idx, err = readApplied(tx)
		return err
	})
	return idx, err
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

func bytesU64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }
