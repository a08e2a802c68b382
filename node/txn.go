package node

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/raftwatch/raftwatch/fsm"
	pb "github.com/raftwatch/raftwatch/proto"
)

// TxnOpResult is the outcome of one op of a Txn branch.
type TxnOpResult = fsm.TxnOpResult

// TxnResult is the outcome of a Txn.
type TxnResult struct {
	Revision  uint64        // index of the log entry that carried the Txn
	Succeeded bool          // every compare held: the success ops ran (else the failure ops)
	Ops       []TxnOpResult // one per op of the branch that ran, in order
}

// Txn validates req and proposes it through the leader's batcher as one
// TXN op: its compares are evaluated and the branch they choose is applied
// in the one log entry, so all its mutations share that entry's revision and
// reach watchers together, in op order. A get reads the state the branch's
// earlier ops left (its consistency field is ignored).
//
// Refused before proposing, with an error wrapping ErrInvalidArgument that
// names the rule: more than MaxTxnOps compares or ops in a branch, a request
// over MaxTxnBytes, a key or prefix breaking the key rule, a value over
// MaxValueSize, a compare without a target or with an unknown result (or
// LESS/GREATER on exists), an op with nothing set, a put or delete carrying
// its own condition, and a branch that would mutate a key twice (directly,
// or under one of its delete_prefix prefixes, or two overlapping prefixes).
func (n *Node) Txn(ctx context.Context, req *pb.TxnRequest) (TxnResult, error) {
	if err := n.checkTxn(req); err != nil {
		return TxnResult{}, err
	}
	if err := n.checkTxnResponse(req); err != nil {
		return TxnResult{}, err
	}
	r, err := n.proposeOp(ctx, &pb.Op{Kind: pb.Op_TXN, Txn: req, MaxKeysPerLease: n.cfg.Leases.maxKeysPerLease()})
	if err != nil {
		return TxnResult{}, err
	}
	if r.res.Err != nil {
		return TxnResult{}, r.res.Err // refused at apply time; nothing changed
	}
	if r.res.Txn == nil {
		return TxnResult{}, errors.Join(ErrOutcomeUnknown, fmt.Errorf("entry %d applied the txn without a txn result", r.index))
	}
	return TxnResult{Revision: r.index, Succeeded: r.res.Txn.Succeeded, Ops: r.res.Txn.Ops}, nil
}

// checkTxn applies the limits and rules of Txn to req.
func (n *Node) checkTxn(req *pb.TxnRequest) error {
	if req == nil {
		return invalid("empty txn request")
	}
	maxOps := n.cfg.MaxTxnOps
	if c := len(req.Compares); c > maxOps {
		return invalid("txn has %d compares; at most %d are allowed (--max-txn-ops)", c, maxOps)
	}
	for _, b := range []struct {
		name string
		ops  []*pb.TxnOp
	}{{"success", req.Success}, {"failure", req.Failure}} {
		if len(b.ops) > maxOps {
			return invalid("txn %s branch has %d ops; at most %d are allowed (--max-txn-ops)", b.name, len(b.ops), maxOps)
		}
	}
	if size := proto.Size(req); size > n.cfg.MaxTxnBytes {
		return invalid("txn request of %d bytes exceeds the limit of %d bytes (--max-txn-bytes)", size, n.cfg.MaxTxnBytes)
	}
	for i, c := range req.Compares {
		if err := n.checkCompare(c); err != nil {
			return invalidAt(fmt.Sprintf("compares[%d]", i), err)
		}
	}
	if err := n.checkBranch("success", req.Success); err != nil {
		return err
	}
	return n.checkBranch("failure", req.Failure)
}

func (n *Node) checkCompare(c *pb.Compare) error {
	if err := n.checkKey(c.GetKey()); err != nil {
		return err
	}
	if _, known := pb.Compare_Result_name[int32(c.GetResult())]; !known {
		return invalid("unknown compare result %d: use EQUAL, NOT_EQUAL, LESS or GREATER", c.GetResult())
	}
	switch t := c.GetTarget().(type) {
	case nil:
		return invalid("compare on %q has no target: set one of value, version, create_revision, mod_revision, lease or exists", c.GetKey())
	case *pb.Compare_Exists:
		if r := c.GetResult(); r != pb.Compare_EQUAL && r != pb.Compare_NOT_EQUAL {
			return invalid("an exists compare takes EQUAL or NOT_EQUAL, not %s", r)
		}
	case *pb.Compare_Value:
		if len(t.Value) > n.cfg.MaxValueSize {
			return invalid("compare value of %d bytes exceeds the limit of %d bytes", len(t.Value), n.cfg.MaxValueSize)
		}
	}
	return nil
}

// branchFootprint is what a branch's earlier ops mutate: no later op may
// mutate any of it again.
type branchFootprint struct {
	branch   string
	keys     map[string]int // key -> index of the op that mutates it
	prefixes []claimedPrefix
}

type claimedPrefix struct {
	prefix string
	op     int
}

func (f *branchFootprint) claimKey(i int, key []byte) error {
	k := string(key)
	if j, dup := f.keys[k]; dup {
		return invalid("mutates %q, which %s[%d] already mutates: a txn branch may mutate a key once", k, f.branch, j)
	}
	for _, p := range f.prefixes {
		if strings.HasPrefix(k, p.prefix) {
			return invalid("mutates %q, under the prefix %q that %s[%d] deletes: a txn branch may mutate a key once", k, p.prefix, f.branch, p.op)
		}
	}
	f.keys[k] = i
	return nil
}

func (f *branchFootprint) claimPrefix(i int, prefix []byte) error {
	p := string(prefix)
	for _, k := range slices.Sorted(maps.Keys(f.keys)) { // sorted: the same message every time
		if strings.HasPrefix(k, p) {
			return invalid("deletes the prefix %q, which holds %q that %s[%d] mutates: a txn branch may mutate a key once", p, k, f.branch, f.keys[k])
		}
	}
	for _, q := range f.prefixes {
		if strings.HasPrefix(q.prefix, p) || strings.HasPrefix(p, q.prefix) {
			return invalid("deletes the prefix %q, which overlaps the prefix %q that %s[%d] deletes: a txn branch may mutate a key once", p, q.prefix, f.branch, q.op)
		}
	}
	f.prefixes = append(f.prefixes, claimedPrefix{p, i})
	return nil
}

// checkBranch checks each op of one branch and that no key is mutated twice.
func (n *Node) checkBranch(name string, ops []*pb.TxnOp) error {
	fp := branchFootprint{branch: name, keys: map[string]int{}}
	for i, op := range ops {
		var err error
		switch o := op.GetOp().(type) {
		case *pb.TxnOp_Put:
			err = n.checkKey(o.Put.GetKey())
			if err == nil && len(o.Put.GetValue()) > n.cfg.MaxValueSize {
				err = invalid("value of %d bytes exceeds the limit of %d bytes", len(o.Put.GetValue()), n.cfg.MaxValueSize)
			}
			if err == nil && o.Put.GetLease() < 0 {
				err = invalid("lease %d: a lease id is positive (0 = no lease)", o.Put.GetLease())
			}
			if err == nil && o.Put.GetCondition() != nil {
				err = invalid("a put inside a txn cannot carry a condition: put it in the txn's compares")
			}
			if err == nil {
				err = fp.claimKey(i, o.Put.GetKey())
			}
		case *pb.TxnOp_Delete:
			err = n.checkKey(o.Delete.GetKey())
			if err == nil && o.Delete.GetCondition() != nil {
				err = invalid("a delete inside a txn cannot carry a condition: put it in the txn's compares")
			}
			if err == nil {
				err = fp.claimKey(i, o.Delete.GetKey())
			}
		case *pb.TxnOp_Get:
			err = n.checkKey(o.Get.GetKey())
		case *pb.TxnOp_DeletePrefix:
			err = checkPrefix(o.DeletePrefix.GetPrefix(), n.cfg.MaxKeySize)
			if err == nil {
				err = fp.claimPrefix(i, o.DeletePrefix.GetPrefix())
			}
		default:
			err = invalid("empty op: set one of put, delete, get or delete_prefix")
		}
		if err != nil {
			return invalidAt(fmt.Sprintf("%s[%d]", name, i), err)
		}
	}
	return nil
}

// invalidAt says which part of a txn (e.g. "success[2]") err is about.
func invalidAt(where string, err error) error {
	msg := strings.TrimPrefix(err.Error(), ErrInvalidArgument.Error()+": ")
	return invalid("txn %s: %s", where, msg)
}

// txnResponseLimit bounds the keys and values a Txn's response may carry
// (gets and prev values): twice the configured value size, inside the
// server's send limit (which admits a watch event of two such values, its
// key and framing).
func (n *Node) txnResponseLimit() int { return 2 * n.cfg.MaxValueSize }

// txnKVOverhead is what one key-value costs in a response besides its key
// and value bytes (revisions, version, lease, framing).
const txnKVOverhead = 64

// checkTxnResponse refuses a Txn whose response could not be sent: its
// branch with the larger response reads (gets, prev values) more than
// txnResponseLimit bytes of keys and values as they are stored now, counting
// the values the branch itself puts before reading them. Without it the Txn
// would be applied and its client told only that the response failed.
func (n *Node) checkTxnResponse(req *pb.TxnRequest) error {
	for _, b := range []struct {
		name string
		ops  []*pb.TxnOp
	}{{"success", req.Success}, {"failure", req.Failure}} {
		var keys, prefixes [][]byte
		written := map[string]int{} // value sizes the branch puts, by key
		extra := 0
		for _, op := range b.ops {
			switch o := op.GetOp().(type) {
			case *pb.TxnOp_Put:
				if o.Put.GetPrevKv() {
					keys = append(keys, o.Put.GetKey())
				}
				written[string(o.Put.GetKey())] = len(o.Put.GetValue())
			case *pb.TxnOp_Delete:
				if o.Delete.GetPrevKv() {
					keys = append(keys, o.Delete.GetKey())
				}
			case *pb.TxnOp_Get:
				if v, ok := written[string(o.Get.GetKey())]; ok {
					extra += len(o.Get.GetKey()) + v + txnKVOverhead
				} else {
					keys = append(keys, o.Get.GetKey())
				}
			case *pb.TxnOp_DeletePrefix:
				if o.DeletePrefix.GetPrevKv() {
					prefixes = append(prefixes, o.DeletePrefix.GetPrefix())
				}
			}
		}
		if len(keys) == 0 && len(prefixes) == 0 && extra == 0 {
			continue
		}
		limit := n.txnResponseLimit()
		size, err := n.fsm.StoredBytes(keys, prefixes, txnKVOverhead, limit-extra)
		if err != nil {
			return err
		}
		if size+extra > limit {
			return invalid("txn %s branch would answer with more than %d bytes of keys and values (gets and prev values, as stored now), over the %d-byte response limit: read fewer or smaller keys, or without prev_kv",
				b.name, size+extra, limit)
		}
	}
	return nil
}
