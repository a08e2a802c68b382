package client

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/raftwatch/raftwatch/proto"
)

// Txn is a transaction being built: compares (If), the ops to apply when
// they all hold (Then) and the ops to apply otherwise (Else). Commit sends
// it; the node applies the chosen branch in one log entry, so its
// mutations share one revision and watchers receive them together, in op
// order.
//
//	resp, err := c.Txn(ctx).
//		If(client.Compare(client.Value(from), "=", "10")).
//		Then(client.OpPut(from, []byte("7")), client.OpPut(to, []byte("3"))).
//		Commit()
type Txn struct {
	c   *Client
	ctx context.Context
	req *pb.TxnRequest
	err error
}

// Txn starts a transaction that Commit sends within ctx.
func (c *Client) Txn(ctx context.Context) *Txn {
	return &Txn{c: c, ctx: ctx, req: &pb.TxnRequest{}}
}

// If adds compares; all of them must hold for Then's ops to run.
func (t *Txn) If(cs ...Cmp) *Txn {
	for _, c := range cs {
		if c.err != nil && t.err == nil {
			t.err = c.err
		}
		t.req.Compares = append(t.req.Compares, c.cmp)
	}
	return t
}

// Then adds ops to the success branch.
func (t *Txn) Then(ops ...Op) *Txn {
	for _, o := range ops {
		t.req.Success = append(t.req.Success, o.op)
	}
	return t
}

// Else adds ops to the failure branch.
func (t *Txn) Else(ops ...Op) *Txn {
	for _, o := range ops {
		t.req.Failure = append(t.req.Failure, o.op)
	}
	return t
}

// Commit sends the transaction to the leader. Like Put, it is retried only
// when it was certainly not applied; any other failure (e.g. UNAVAILABLE
// after leadership was lost, or DEADLINE_EXCEEDED) leaves its outcome
// unknown. A malformed compare fails here with INVALID_ARGUMENT, unsent.
func (t *Txn) Commit() (*pb.TxnResponse, error) {
	if t.err != nil {
		return nil, t.err
	}
	var resp *pb.TxnResponse
	err := t.c.onLeader(t.ctx, func(ctx context.Context, cc *grpc.ClientConn) (err error) {
		resp, err = pb.NewKVClient(cc).Txn(ctx, t.req)
		return err
	})
	return resp, err
}

// Cmp is one compare of a Txn: build it with Compare, Exists or Absent.
type Cmp struct {
	cmp *pb.Compare
	err error
}

// CmpTarget is what of a key a compare looks at: Value, Version,
// CreateRevision, ModRevision or LeaseValue.
type CmpTarget struct {
	key  []byte
	kind cmpKind
}

type cmpKind int

const (
	cmpValue cmpKind = iota
	cmpVersion
	cmpCreate
	cmpMod
	cmpLease
)

// Value compares the key's value, byte-wise (operand []byte or string). A
// value compare on an absent key is false, whatever the operator.
func Value(key []byte) CmpTarget { return CmpTarget{key, cmpValue} }

// Version compares the key's version (operand uint64 or int; 0 = absent).
func Version(key []byte) CmpTarget { return CmpTarget{key, cmpVersion} }

// CreateRevision compares the revision that created the key (operand
// uint64 or int; 0 = absent).
func CreateRevision(key []byte) CmpTarget { return CmpTarget{key, cmpCreate} }

// ModRevision compares the revision that last changed the key (operand
// uint64 or int; 0 = absent).
func ModRevision(key []byte) CmpTarget { return CmpTarget{key, cmpMod} }

// LeaseValue compares the lease the key is attached to (operand int64 or
// int; 0 = none or absent).
func LeaseValue(key []byte) CmpTarget { return CmpTarget{key, cmpLease} }

// cmpResults are Compare's operators.
var cmpResults = map[string]pb.Compare_Result{
	"=": pb.Compare_EQUAL, "==": pb.Compare_EQUAL, "!=": pb.Compare_NOT_EQUAL,
	"<": pb.Compare_LESS, ">": pb.Compare_GREATER,
}

// Compare is a compare of target against operand with op "=", "!=", "<" or
// ">", e.g. Compare(ModRevision(k), "=", rev). An unknown op or an operand
// of the wrong type makes Commit fail with INVALID_ARGUMENT.
func Compare(target CmpTarget, op string, operand any) Cmp {
	c := &pb.Compare{Key: target.key}
	r, ok := cmpResults[op]
	if !ok {
		return Cmp{c, status.Errorf(codes.InvalidArgument, "compare on %q: unknown operator %q (use =, !=, < or >)", target.key, op)}
	}
	c.Result = r
	bad := func(want string) Cmp {
		return Cmp{c, status.Errorf(codes.InvalidArgument, "compare on %q: operand %v is a %T, want %s", target.key, operand, operand, want)}
	}
	switch target.kind {
	case cmpValue:
		switch v := operand.(type) {
		case []byte:
			c.Target = &pb.Compare_Value{Value: v}
		case string:
			c.Target = &pb.Compare_Value{Value: []byte(v)}
		default:
			return bad("[]byte or string")
		}
	case cmpLease:
		switch v := operand.(type) {
		case int64:
			c.Target = &pb.Compare_Lease{Lease: v}
		case int:
			c.Target = &pb.Compare_Lease{Lease: int64(v)}
		default:
			return bad("int64")
		}
	default:
		var n uint64
		switch v := operand.(type) {
		case uint64:
			n = v
		case int:
			if v < 0 {
				return bad("a non-negative number")
			}
			n = uint64(v)
		case int64:
			if v < 0 {
				return bad("a non-negative number")
			}
			n = uint64(v)
		default:
			return bad("uint64")
		}
		switch target.kind {
		case cmpVersion:
			c.Target = &pb.Compare_Version{Version: n}
		case cmpCreate:
			c.Target = &pb.Compare_CreateRevision{CreateRevision: n}
		case cmpMod:
			c.Target = &pb.Compare_ModRevision{ModRevision: n}
		}
	}
	return Cmp{cmp: c}
}

// Exists holds when the key exists.
func Exists(key []byte) Cmp {
	return Cmp{cmp: &pb.Compare{Key: key, Result: pb.Compare_EQUAL, Target: &pb.Compare_Exists{Exists: true}}}
}

// Absent holds when the key does not exist.
func Absent(key []byte) Cmp {
	return Cmp{cmp: &pb.Compare{Key: key, Result: pb.Compare_EQUAL, Target: &pb.Compare_Exists{Exists: false}}}
}

// Op is one operation of a Txn branch: build it with OpPut, OpDelete, OpGet
// or OpDeletePrefix.
type Op struct{ op *pb.TxnOp }

// OpPut writes key=value; WithPrevKV asks for the previous state in its
// result, WithLease attaches the key to a lease. A condition option is
// refused by the node (a Txn's compares are its condition).
func OpPut(key, value []byte, opts ...OpOption) Op {
	o := buildOps(opts)
	return Op{&pb.TxnOp{Op: &pb.TxnOp_Put{Put: &pb.PutRequest{Key: key, Value: value, PrevKv: o.prevKV,
		Condition: o.condition(), Lease: o.lease}}}}
}

// OpDelete deletes key; WithPrevKV asks for its previous state.
func OpDelete(key []byte, opts ...OpOption) Op {
	o := buildOps(opts)
	return Op{&pb.TxnOp{Op: &pb.TxnOp_Delete{Delete: &pb.DeleteRequest{Key: key, PrevKv: o.prevKV, Condition: o.condition()}}}}
}

// OpGet reads key as the branch's earlier ops left it.
func OpGet(key []byte) Op {
	return Op{&pb.TxnOp{Op: &pb.TxnOp_Get{Get: &pb.GetRequest{Key: key}}}}
}

// OpDeletePrefix deletes every key under prefix (which starts and ends with
// '/'), in key order; WithPrevKV asks for their last states.
func OpDeletePrefix(prefix []byte, opts ...OpOption) Op {
	o := buildOps(opts)
	return Op{&pb.TxnOp{Op: &pb.TxnOp_DeletePrefix{DeletePrefix: &pb.DeletePrefixRequest{Prefix: prefix, PrevKv: o.prevKV}}}}
}
