package fsm

import (
	"bytes"
	"cmp"
	"fmt"

	bolt "go.etcd.io/bbolt"

	pb "github.com/raftwatch/raftwatch/proto"
)

// TxnResult is the outcome of a TXN op (OpResult.Txn).
type TxnResult struct {
	Succeeded bool          // every compare held: the success ops ran (else the failure ops)
	Ops       []TxnOpResult // one per op of the branch that ran, in order
}

// TxnOpKind says which kind of op a TxnOpResult answers.
type TxnOpKind int

const (
	// TxnUnknown answers an op with no kind set (the node refuses those
	// before proposing; the state machine skips one the same way everywhere).
	TxnUnknown TxnOpKind = iota
	TxnPut
	TxnDelete
	TxnGet
	TxnDeletePrefix
)

// TxnOpResult is the outcome of one op of a Txn branch.
type TxnOpResult struct {
	Kind TxnOpKind
	// Put and Delete: the key's previous state when prev_kv was asked (nil:
	// absent) and its mod revision afterwards (0: absent). Delete: Deleted
	// says whether a key was removed.
	Prev        *KeyValue
	ModRevision uint64
	Deleted     bool
	// Get: the key as the branch's earlier ops left it (nil: absent).
	KV *KeyValue
	// DeletePrefix: how many keys were deleted, and their last states in key
	// order when prev_kv was asked.
	DeletedCount uint64
	Prevs        []KeyValue
}

// keyState is what a compare reads of one key: its record (when found) and
// the lease it is attached to (0 = none).
type keyState struct {
	kv    KeyValue
	found bool
	lease int64
}

// compareHolds is the one evaluator of conditions: a Txn's compares and the
// single-key Condition of a PUT or DELETE (see conditionCompares) both go
// through it. For an absent key, version, create_revision, mod_revision and
// lease are 0 and a value compare is false whatever its result (etcd's
// rule). A compare without a target, or exists with LESS or GREATER (the
// node refuses both), is false.
func compareHolds(c *pb.Compare, st keyState) bool {
	var order int
	switch t := c.GetTarget().(type) {
	case *pb.Compare_Value:
		if !st.found {
			return false
		}
		order = bytes.Compare(st.kv.Value, t.Value)
	case *pb.Compare_Version:
		order = cmp.Compare(st.kv.Version, t.Version)
	case *pb.Compare_CreateRevision:
		order = cmp.Compare(st.kv.CreateRevision, t.CreateRevision)
	case *pb.Compare_ModRevision:
		order = cmp.Compare(st.kv.ModRevision, t.ModRevision)
	case *pb.Compare_Lease:
		order = cmp.Compare(st.lease, t.Lease)
	case *pb.Compare_Exists:
		switch c.GetResult() {
		case pb.Compare_EQUAL:
			return st.found == t.Exists
		case pb.Compare_NOT_EQUAL:
			return st.found != t.Exists
		}
		return false
	default:
		return false
	}
	switch c.GetResult() {
	case pb.Compare_EQUAL:
		return order == 0
	case pb.Compare_NOT_EQUAL:
		return order != 0
	case pb.Compare_LESS:
		return order < 0
	case pb.Compare_GREATER:
		return order > 0
	}
	return false
}

// conditionCompares turns a PUT's or DELETE's single-key condition into the
// compares that mean the same: mod_revision N is "exists and mod_revision =
// N", absent is "not exists". Nil or an empty condition: no compares.
func conditionCompares(key []byte, cond *pb.Condition) []*pb.Compare {
	switch r := cond.GetRequire().(type) {
	case *pb.Condition_ModRevision:
		return []*pb.Compare{
			{Key: key, Result: pb.Compare_EQUAL, Target: &pb.Compare_Exists{Exists: true}},
			{Key: key, Result: pb.Compare_EQUAL, Target: &pb.Compare_ModRevision{ModRevision: r.ModRevision}},
		}
	case *pb.Condition_Absent:
		if r.Absent {
			return []*pb.Compare{{Key: key, Result: pb.Compare_EQUAL, Target: &pb.Compare_Exists{Exists: false}}}
		}
	}
	return nil
}

// state reads what compares see of key.
func (a *applier) state(key []byte) (keyState, error) {
	kv, found, err := a.current(key)
	return keyState{kv: kv, found: found, lease: kv.Lease}, err
}

// evaluate reports whether every compare holds on the current state.
func (a *applier) evaluate(cs []*pb.Compare) (bool, error) {
	for _, c := range cs {
		st, err := a.state(c.GetKey())
		if err != nil {
			return false, err
		}
		if !compareHolds(c, st) {
			return false, nil
		}
	}
	return true, nil
}

// txn applies a TXN op of entry index: it evaluates the compares, then runs
// the branch they chose, op by op, each on the state the previous ones left.
// Every mutation is an event of the entry, in op order, so they share the
// entry's revision and reach watchers in one batch.
func (a *applier) txn(index uint64, t *pb.TxnRequest, maxKeys uint64) (OpResult, error) {
	ok, err := a.evaluate(t.GetCompares())
	if err != nil {
		return OpResult{}, err
	}
	branch := t.GetFailure()
	if ok {
		branch = t.GetSuccess()
	}
	if refused, err := a.leaseRefusal(branch, maxKeys); err != nil || refused != nil {
		return OpResult{Err: refused}, err
	}
	tr := &TxnResult{Succeeded: ok, Ops: make([]TxnOpResult, len(branch))}
	for i, op := range branch {
		if tr.Ops[i], err = a.txnOp(index, op, maxKeys); err != nil {
			return OpResult{}, err
		}
	}
	return OpResult{Succeeded: ok, Txn: tr}, nil
}

// txnOp applies one op of a Txn branch. Its put or delete carries no
// condition: the Txn's compares are its condition.
func (a *applier) txnOp(index uint64, op *pb.TxnOp, maxKeys uint64) (TxnOpResult, error) {
	switch o := op.GetOp().(type) {
	case *pb.TxnOp_Put:
		r, err := a.put(index, mutation{key: o.Put.GetKey(), value: o.Put.GetValue(), lease: o.Put.GetLease(), maxKeys: maxKeys, wantPrev: o.Put.GetPrevKv()})
		return TxnOpResult{Kind: TxnPut, Prev: r.Prev, ModRevision: r.ModRevision}, err
	case *pb.TxnOp_Delete:
		r, err := a.delete(index, mutation{key: o.Delete.GetKey(), wantPrev: o.Delete.GetPrevKv()})
		return TxnOpResult{Kind: TxnDelete, Prev: r.Prev, ModRevision: r.ModRevision, Deleted: r.Deleted}, err
	case *pb.TxnOp_Get:
		kv, found, err := a.current(o.Get.GetKey())
		if err != nil || !found {
			return TxnOpResult{Kind: TxnGet}, err
		}
		kv = kv.clone()
		return TxnOpResult{Kind: TxnGet, KV: &kv}, nil
	case *pb.TxnOp_DeletePrefix:
		return a.deletePrefix(index, o.DeletePrefix.GetPrefix(), o.DeletePrefix.GetPrevKv())
	}
	return TxnOpResult{Kind: TxnUnknown}, nil
}

// deletePrefix deletes every key under prefix, in key order, each its own
// event of the entry.
func (a *applier) deletePrefix(index uint64, prefix []byte, wantPrev bool) (TxnOpResult, error) {
	res := TxnOpResult{Kind: TxnDeletePrefix}
	if len(prefix) == 0 {
		return res, nil // the node refuses an empty prefix; never "every key" by accident
	}
	// Collect first: deleting under a live cursor may skip keys.
	var keys [][]byte
	c := a.kv.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		keys = append(keys, bytes.Clone(k))
	}
	for _, k := range keys {
		r, err := a.delete(index, mutation{key: k, wantPrev: wantPrev})
		if err != nil {
			return TxnOpResult{}, err
		}
		if r.Deleted {
			res.DeletedCount++
			if r.Prev != nil {
				res.Prevs = append(res.Prevs, *r.Prev)
			}
		}
	}
	return res, nil
}

// leaseRefusal says why the branch's puts could not all attach their keys
// to their leases (nil: they can), before any op runs, so that a refused
// Txn changes nothing. It counts every key the branch attaches anew against
// its lease's cap, ignoring keys the branch's own deletes would detach
// first: at the exact cap such a Txn is refused.
func (a *applier) leaseRefusal(branch []*pb.TxnOp, maxKeys uint64) (refused, err error) {
	added := map[int64]uint64{}
	for _, op := range branch {
		p := op.GetPut()
		if p.GetLease() == 0 {
			continue
		}
		cur, err := a.ls.leaseOfKey(p.GetKey())
		if err != nil {
			return nil, err
		}
		if refused, err := a.ls.checkAttach(cur, p.GetLease(), maxKeys); err != nil || refused != nil {
			return refused, err
		}
		if cur == p.GetLease() {
			continue
		}
		added[p.GetLease()]++
		r, _, err := a.ls.get(p.GetLease())
		if err != nil {
			return nil, err
		}
		if limit := a.ls.keyCap(maxKeys); r.keys+added[p.GetLease()] > limit {
			return fmt.Errorf("%w: the txn would give lease %x %d keys (--max-keys-per-lease %d)",
				ErrLeaseLimit, p.GetLease(), r.keys+added[p.GetLease()], limit), nil
		}
	}
	return nil, nil
}

// StoredBytes sums the key and value lengths, plus perKV each, of the keys
// that exist and of every key under prefixes, as stored now; it stops
// counting once the sum passes stopAt. The node uses it to bound a Txn's
// response before proposing it.
func (f *FSM) StoredBytes(keys, prefixes [][]byte, perKV, stopAt int) (int, error) {
	sum := 0
	err := f.view(func(tx *bolt.Tx) error {
		kv := tx.Bucket(bucketKV)
		for _, k := range keys {
			if v := kv.Get(k); v != nil {
				sum += len(k) + len(v) + perKV
			}
			if sum > stopAt {
				return nil
			}
		}
		for _, p := range prefixes {
			c := kv.Cursor()
			for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
				sum += len(k) + len(v) + perKV
				if sum > stopAt {
					return nil
				}
			}
		}
		return nil
	})
	return sum, err
}
