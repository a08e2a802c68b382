package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	pb "github.com/raftwatch/raftwatch/proto"
)

// Leases are replicated in three buckets, written in the same transaction
// as the data (so they travel in snapshots), every value sealed:
//
//	leases:    id (8)        ->  granted TTL s (8) | renewed index (8) | remaining ms (8) | keys (8)
//	leasekeys: key           ->  id (8)
//	leaseidx:  id (8) | key  ->  (empty)
//	meta:      lease_next_id, lease_count
//
// The renewed index is the entry of the lease's GRANT or last RENEW; the
// remaining ms is the last checkpoint (a RENEW resets it to the full TTL).
// Deadlines are not replicated: each node keeps a monotonic deadline per
// lease in memory, set when it applies a GRANT, RENEW or matching
// CHECKPOINT, and rebuilt from the remaining ms at open and after Restore.
var (
	bucketLeases    = []byte("leases")
	bucketLeaseKeys = []byte("leasekeys")
	bucketLeaseIdx  = []byte("leaseidx")

	keyLeaseNextID = []byte("lease_next_id")
	keyLeaseCount  = []byte("lease_count")
)

const leaseRecordLen = 32

// Default caps on leases, checked at apply time so every node agrees.
const (
	DefaultMaxLeases       = 100_000
	DefaultMaxKeysPerLease = 10_000
)

var (
	// ErrLeaseNotFound: the lease does not exist (never granted, revoked or
	// expired).
	ErrLeaseNotFound = errors.New("lease not found")
	// ErrLeaseExists: a grant asked for an id already in use.
	ErrLeaseExists = errors.New("lease already exists")
	// ErrLeaseLimit: a cap on leases or on keys per lease was reached.
	ErrLeaseLimit = errors.New("lease limit reached")
)

// LeaseLimits cap the replicated lease state. Every node must use the same
// values: they are checked at apply time.
type LeaseLimits struct {
	MaxLeases       uint64 // 0 = DefaultMaxLeases
	MaxKeysPerLease uint64 // 0 = DefaultMaxKeysPerLease
}

func (l LeaseLimits) withDefaults() LeaseLimits {
	if l.MaxLeases == 0 {
		l.MaxLeases = DefaultMaxLeases
	}
	if l.MaxKeysPerLease == 0 {
		l.MaxKeysPerLease = DefaultMaxKeysPerLease
	}
	return l
}

// leaseRecord is one lease's replicated state.
type leaseRecord struct {
	ttl          int64 // seconds
	renewedIndex uint64
	remainingMs  int64
	keys         uint64
}

func leaseID(id int64) []byte { return u64(uint64(id)) }

func encodeLease(id int64, r leaseRecord) []byte {
	b := make([]byte, 0, leaseRecordLen+sumLen)
	b = binary.BigEndian.AppendUint64(b, uint64(r.ttl))
	b = binary.BigEndian.AppendUint64(b, r.renewedIndex)
	b = binary.BigEndian.AppendUint64(b, uint64(r.remainingMs))
	b = binary.BigEndian.AppendUint64(b, r.keys)
	return sealValue(b, 0, leaseID(id))
}

func decodeLease(key, stored []byte) (leaseRecord, error) {
	b, err := openValue(bucketLeases, key, stored)
	if err != nil {
		return leaseRecord{}, err
	}
	if len(b) != leaseRecordLen || len(key) != 8 {
		return leaseRecord{}, &CorruptError{Bucket: string(bucketLeases), Key: clone(key),
			Detail: fmt.Sprintf("lease record of %d bytes under a %d-byte id, want %d and 8", len(b), len(key), leaseRecordLen)}
	}
	return leaseRecord{
		ttl:          int64(binary.BigEndian.Uint64(b[0:])),
		renewedIndex: binary.BigEndian.Uint64(b[8:]),
		remainingMs:  int64(binary.BigEndian.Uint64(b[16:])),
		keys:         binary.BigEndian.Uint64(b[24:]),
	}, nil
}

// decodeLeaseOf verifies a leasekeys value and returns the lease id.
func decodeLeaseOf(key, stored []byte) (int64, error) {
	b, err := openValue(bucketLeaseKeys, key, stored)
	if err != nil {
		return 0, err
	}
	if len(b) != 8 {
		return 0, &CorruptError{Bucket: string(bucketLeaseKeys), Key: clone(key),
			Detail: fmt.Sprintf("lease id of %d bytes, want 8", len(b))}
	}
	return int64(binary.BigEndian.Uint64(b)), nil
}

// createLeaseBuckets runs in the transaction that opens a file.
func createLeaseBuckets(tx *bolt.Tx) error {
	for _, b := range [][]byte{bucketLeases, bucketLeaseKeys, bucketLeaseIdx} {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return err
		}
	}
	return nil
}

// leaseOf returns the lease key is attached to (0: none) in tx.
func leaseOf(tx *bolt.Tx, key []byte) (int64, error) {
	b := tx.Bucket(bucketLeaseKeys)
	if b == nil {
		return 0, nil
	}
	raw := b.Get(key)
	if raw == nil {
		return 0, nil
	}
	return decodeLeaseOf(key, raw)
}

// ---------------------------------------------------------------- apply

// leaseApply is the lease part of one applying transaction.
type leaseApply struct {
	leases, keys, idx, meta *bolt.Bucket
	limits                  LeaseLimits
	// noKeys is true while no key is on a lease (keys is empty): a put
	// then needs no lookup to know its key has none. Only attach adds to
	// keys, and it clears noKeys.
	noKeys bool
	// clock is what the transaction did to the in-memory deadlines, applied
	// after the commit, in order.
	clock []clockChange
}

// clockChange sets (or, with del, removes) a lease's in-memory deadline to
// the apply time + after.
type clockChange struct {
	id           int64
	del          bool
	after        time.Duration
	renewedIndex uint64
	renewed      bool // a GRANT or RENEW (not a checkpoint)
	ttl          int64
}

func newLeaseApply(tx *bolt.Tx, limits LeaseLimits) *leaseApply {
	l := &leaseApply{leases: tx.Bucket(bucketLeases), keys: tx.Bucket(bucketLeaseKeys),
		idx: tx.Bucket(bucketLeaseIdx), meta: tx.Bucket(bucketMeta), limits: limits.withDefaults()}
	first, _ := l.keys.Cursor().First()
	l.noKeys = first == nil
	return l
}

func (l *leaseApply) get(id int64) (leaseRecord, bool, error) {
	k := leaseID(id)
	raw := l.leases.Get(k)
	if raw == nil {
		return leaseRecord{}, false, nil
	}
	r, err := decodeLease(k, raw)
	return r, err == nil, err
}

func (l *leaseApply) put(id int64, r leaseRecord) error {
	return l.leases.Put(leaseID(id), encodeLease(id, r))
}

func (l *leaseApply) addCount(delta int64) error {
	n, _, err := getMeta(l.meta, keyLeaseCount)
	if err != nil {
		return err
	}
	return putMeta(l.meta, keyLeaseCount, uint64(int64(n)+delta))
}

// keyCap is the keys-per-lease cap an op carries, or the configured one for
// an op that carries none (tests and hand-built logs: the node always sets
// it, so every node applies the same cap).
func (l *leaseApply) keyCap(carried uint64) uint64 {
	if carried != 0 {
		return carried
	}
	return l.limits.MaxKeysPerLease
}

// checkAttach reports why a key now on lease cur (0: none) cannot be
// attached to lease (nil: it can), under a cap of maxKeys keys per lease
// (0: see keyCap).
func (l *leaseApply) checkAttach(cur, lease int64, maxKeys uint64) (refused, err error) {
	if lease == 0 {
		return nil, nil
	}
	r, ok, err := l.get(lease)
	if err != nil || !ok {
		if err == nil {
			return fmt.Errorf("%w: %x (a put with a lease needs the lease to exist)", ErrLeaseNotFound, lease), nil
		}
		return nil, err
	}
	if limit := l.keyCap(maxKeys); cur != lease && r.keys >= limit {
		return fmt.Errorf("%w: lease %x already has %d keys (--max-keys-per-lease %d)",
			ErrLeaseLimit, lease, r.keys, limit), nil
	}
	return nil, nil
}

func (l *leaseApply) leaseOfKey(key []byte) (int64, error) {
	if l.noKeys {
		return 0, nil
	}
	raw := l.keys.Get(key)
	if raw == nil {
		return 0, nil
	}
	return decodeLeaseOf(key, raw)
}

// attach makes lease (0: none) the lease of key, which is now on lease cur
// (0: none), detaching it from cur.
func (l *leaseApply) attach(key []byte, cur, lease int64) error {
	if cur == lease {
		return nil
	}
	if cur != 0 {
		if err := l.detach(key, cur); err != nil {
			return err
		}
	}
	if lease == 0 {
		return nil
	}
	r, ok, err := l.get(lease)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("attach key %q: lease %x vanished", key, lease)
	}
	r.keys++
	l.noKeys = false
	ik := append(leaseID(lease), key...)
	return errors.Join(l.put(lease, r), l.keys.Put(key, sealed(key, leaseID(lease))), l.idx.Put(ik, sealed(ik, nil)))
}

func (l *leaseApply) detach(key []byte, lease int64) error {
	ik := append(leaseID(lease), key...)
	if err := errors.Join(l.keys.Delete(key), l.idx.Delete(ik)); err != nil {
		return err
	}
	r, ok, err := l.get(lease)
	if err != nil || !ok {
		return err
	}
	if r.keys > 0 {
		r.keys--
	}
	return l.put(lease, r)
}

// keysOf returns the keys attached to lease, in key order.
func keysOf(idx *bolt.Bucket, lease int64) [][]byte {
	var out [][]byte
	p := leaseID(lease)
	c := idx.Cursor()
	for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
		out = append(out, clone(k[8:]))
	}
	return out
}

// grant applies LEASE_GRANT.
func (a *applier) leaseGrant(index uint64, op *pb.Op) (OpResult, error) {
	l := a.ls
	id := op.Lease
	if id < 0 {
		return OpResult{Err: fmt.Errorf("%w: lease id %d is negative", ErrLeaseNotFound, id)}, nil
	}
	n, _, err := getMeta(l.meta, keyLeaseCount)
	if err != nil {
		return OpResult{}, err
	}
	limit := l.limits.MaxLeases
	if op.MaxLeases != 0 {
		limit = op.MaxLeases // the proposing leader's cap, the same on every node
	}
	if n >= limit {
		return OpResult{Err: fmt.Errorf("%w: %d leases exist (--max-leases %d)", ErrLeaseLimit, n, limit)}, nil
	}
	if id == 0 {
		next, _, err := getMeta(l.meta, keyLeaseNextID)
		if err != nil {
			return OpResult{}, err
		}
		for next == 0 || l.leases.Get(leaseID(int64(next))) != nil || int64(next) <= 0 {
			next++
			if int64(next) <= 0 {
				next = 1
			}
		}
		id = int64(next)
		if err := putMeta(l.meta, keyLeaseNextID, next+1); err != nil {
			return OpResult{}, err
		}
	} else if l.leases.Get(leaseID(id)) != nil {
		return OpResult{Err: fmt.Errorf("%w: %x", ErrLeaseExists, id)}, nil
	}
	r := leaseRecord{ttl: op.Ttl, renewedIndex: index, remainingMs: op.Ttl * 1000}
	if err := errors.Join(l.put(id, r), l.addCount(1)); err != nil {
		return OpResult{}, err
	}
	l.clock = append(l.clock, clockChange{id: id, after: time.Duration(op.Ttl) * time.Second,
		renewedIndex: index, renewed: true, ttl: op.Ttl})
	return OpResult{Succeeded: true, Lease: id, TTL: op.Ttl}, nil
}

// leaseRenew applies LEASE_RENEW: the lease's full TTL starts again.
func (a *applier) leaseRenew(index uint64, op *pb.Op) (OpResult, error) {
	l := a.ls
	r, ok, err := l.get(op.Lease)
	if err != nil {
		return OpResult{}, err
	}
	if !ok {
		return OpResult{Err: fmt.Errorf("%w: %x", ErrLeaseNotFound, op.Lease)}, nil
	}
	r.renewedIndex, r.remainingMs = index, r.ttl*1000
	if err := l.put(op.Lease, r); err != nil {
		return OpResult{}, err
	}
	l.clock = append(l.clock, clockChange{id: op.Lease, after: time.Duration(r.ttl) * time.Second,
		renewedIndex: index, renewed: true, ttl: r.ttl})
	return OpResult{Succeeded: true, Lease: op.Lease, TTL: r.ttl}, nil
}

// leaseCheckpoint applies LEASE_CHECKPOINT: each lease whose last renewal
// is still the one the leader saw records its remaining TTL.
func (a *applier) leaseCheckpoint(op *pb.Op) (OpResult, error) {
	l := a.ls
	for _, cp := range op.LeaseCheckpoints {
		r, ok, err := l.get(cp.Lease)
		if err != nil {
			return OpResult{}, err
		}
		if !ok || r.renewedIndex != cp.RenewedIndex {
			continue
		}
		rem := max(cp.RemainingMs, 0)
		r.remainingMs = rem
		if err := l.put(cp.Lease, r); err != nil {
			return OpResult{}, err
		}
		l.clock = append(l.clock, clockChange{id: cp.Lease, after: time.Duration(rem) * time.Millisecond,
			renewedIndex: r.renewedIndex, ttl: r.ttl})
	}
	return OpResult{Succeeded: true}, nil
}

// leaseRevoke applies LEASE_REVOKE.
func (a *applier) leaseRevoke(index uint64, op *pb.Op) (OpResult, error) {
	_, ok, err := a.ls.get(op.Lease)
	if err != nil {
		return OpResult{}, err
	}
	if !ok {
		return OpResult{Err: fmt.Errorf("%w: %x", ErrLeaseNotFound, op.Lease)}, nil
	}
	if err := a.dropLease(index, op.Lease); err != nil {
		return OpResult{}, err
	}
	return OpResult{Succeeded: true, Lease: op.Lease}, nil
}

// leaseExpire applies LEASE_EXPIRE: each lease not renewed since the leader
// decided is deleted with its keys. Succeeded says whether any was.
func (a *applier) leaseExpire(index uint64, op *pb.Op) (OpResult, error) {
	var res OpResult
	for _, e := range op.LeaseExpiries {
		r, ok, err := a.ls.get(e.Lease)
		if err != nil {
			return OpResult{}, err
		}
		if !ok || r.renewedIndex != e.RenewedIndex {
			continue
		}
		if err := a.dropLease(index, e.Lease); err != nil {
			return OpResult{}, err
		}
		res.Succeeded = true
	}
	return res, nil
}

// dropLease deletes every key of the lease (each its own event of entry
// index, in key order) and then the lease.
func (a *applier) dropLease(index uint64, id int64) error {
	for _, k := range keysOf(a.ls.idx, id) {
		if _, err := a.delete(index, mutation{key: k}); err != nil {
			return err
		}
	}
	l := a.ls
	if err := errors.Join(l.leases.Delete(leaseID(id)), l.addCount(-1)); err != nil {
		return err
	}
	l.clock = append(l.clock, clockChange{id: id, del: true})
	return nil
}

// applyLeaseOp applies one lease op (applyChunk's hook).
func (a *applier) applyLeaseOp(index uint64, op *pb.Op) (OpResult, error) {
	switch op.Kind {
	case pb.Op_LEASE_GRANT:
		return a.leaseGrant(index, op)
	case pb.Op_LEASE_REVOKE:
		return a.leaseRevoke(index, op)
	case pb.Op_LEASE_RENEW:
		return a.leaseRenew(index, op)
	case pb.Op_LEASE_CHECKPOINT:
		return a.leaseCheckpoint(op)
	case pb.Op_LEASE_EXPIRE:
		return a.leaseExpire(index, op)
	}
	return OpResult{}, fmt.Errorf("not a lease op: %v", op.Kind)
}

// ---------------------------------------------------------------- time

// leaseClocks is each lease's in-memory deadline on this node.
type leaseClocks struct {
	mu     sync.Mutex
	now    func() time.Time
	limits LeaseLimits
	m      map[int64]*leaseClock
}

type leaseClock struct {
	deadline     time.Time
	renewedAt    time.Time // apply time of the GRANT or last RENEW (or of the rebuild)
	renewedIndex uint64
	ttl          int64
}

func (c *leaseClocks) apply(changes []clockChange) {
	if len(changes) == 0 {
		return
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ch := range changes {
		if ch.del {
			delete(c.m, ch.id)
			continue
		}
		lc := c.m[ch.id]
		deadline := now.Add(ch.after)
		switch {
		case lc == nil:
			lc = &leaseClock{renewedAt: now}
			c.m[ch.id] = lc
		case !ch.renewed && lc.deadline.Before(deadline):
			// A checkpoint never moves a deadline later: both are at or
			// after (the last acknowledged keepalive's send time + TTL),
			// and taking the later one would add the checkpoint's commit
			// latency to the lease at every interval.
			deadline = lc.deadline
		}
		lc.deadline, lc.renewedIndex, lc.ttl = deadline, ch.renewedIndex, ch.ttl
		if ch.renewed {
			lc.renewedAt = now
		}
	}
}

// rebuild sets every lease's deadline to now + its remaining ms.
func (c *leaseClocks) rebuild(db *bolt.DB) error {
	now := c.now()
	m := map[int64]*leaseClock{}
	err := db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLeases).ForEach(func(k, v []byte) error {
			r, err := decodeLease(k, v)
			if err != nil {
				return err
			}
			m[int64(binary.BigEndian.Uint64(k))] = &leaseClock{deadline: now.Add(time.Duration(r.remainingMs) * time.Millisecond),
				renewedAt: now, renewedIndex: r.renewedIndex, ttl: r.ttl}
			return nil
		})
	})
	c.mu.Lock()
	c.m = m
	c.mu.Unlock()
	return err
}

// ExpiredLeases returns the leases whose deadline on this node has passed,
// each with the renewal it was decided on, in id order.
func (f *FSM) ExpiredLeases() []*pb.LeaseExpiry {
	c := &f.leases
	now := c.now()
	c.mu.Lock()
	var out []*pb.LeaseExpiry
	for id, lc := range c.m {
		if !now.Before(lc.deadline) {
			out = append(out, &pb.LeaseExpiry{Lease: id, RenewedIndex: lc.renewedIndex})
		}
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b *pb.LeaseExpiry) int { return cmpInt(a.Lease, b.Lease) })
	return out
}

// LeaseCheckpoints returns the remaining TTL of every lease not renewed
// within the last interval, in id order: what the leader's checkpoint
// records so a restarted node does not restart the lease at full TTL.
func (f *FSM) LeaseCheckpoints(interval time.Duration) []*pb.LeaseCheckpoint {
	c := &f.leases
	now := c.now()
	c.mu.Lock()
	var out []*pb.LeaseCheckpoint
	for id, lc := range c.m {
		if now.Sub(lc.renewedAt) >= interval {
			out = append(out, &pb.LeaseCheckpoint{Lease: id, RenewedIndex: lc.renewedIndex,
				RemainingMs: max(lc.deadline.Sub(now).Milliseconds(), 0)})
		}
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b *pb.LeaseCheckpoint) int { return cmpInt(a.Lease, b.Lease) })
	return out
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// LeaseInfo is one lease as this node sees it.
type LeaseInfo struct {
	ID         int64
	GrantedTTL int64         // seconds
	Remaining  time.Duration // until this node's deadline (>= 0)
	Keys       [][]byte      // attached keys, in key order, when asked
	KeyCount   uint64        // how many keys are attached
	Revision   uint64        // the applied index it was read at
}

// LeaseTimeToLive returns the lease (found=false when it does not exist)
// and, with keys, the keys attached to it.
func (f *FSM) LeaseTimeToLive(id int64, keys bool) (info LeaseInfo, found bool, err error) {
	err = f.view(func(tx *bolt.Tx) error {
		var err error
		if info.Revision, err = readApplied(tx); err != nil {
			return err
		}
		k := leaseID(id)
		raw := tx.Bucket(bucketLeases).Get(k)
		if raw == nil {
			return nil
		}
		r, err := decodeLease(k, raw)
		if err != nil {
			return err
		}
		found = true
		info.ID, info.GrantedTTL, info.KeyCount = id, r.ttl, r.keys
		info.Remaining = time.Duration(r.remainingMs) * time.Millisecond
		c := &f.leases
		c.mu.Lock()
		if lc := c.m[id]; lc != nil {
			info.Remaining = max(lc.deadline.Sub(c.now()), 0)
		}
		c.mu.Unlock()
		if keys {
			info.Keys = keysOf(tx.Bucket(bucketLeaseIdx), id)
		}
		return nil
	})
	return info, found, f.check(err)
}

// Leases returns the ids of every lease, in id order, and the applied index
// they were read at.
func (f *FSM) Leases() ([]int64, uint64, error) {
	var ids []int64
	var rev uint64
	err := f.view(func(tx *bolt.Tx) error {
		var err error
		if rev, err = readApplied(tx); err != nil {
			return err
		}
		return tx.Bucket(bucketLeases).ForEach(func(k, v []byte) error {
			if _, err := decodeLease(k, v); err != nil {
				return err
			}
			ids = append(ids, int64(binary.BigEndian.Uint64(k)))
			return nil
		})
	})
	slices.Sort(ids)
	return ids, rev, f.check(err)
}
