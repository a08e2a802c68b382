package main

import (
	"github.com/raftwatch/raftwatch/cluster-test/checker"
	pb "github.com/raftwatch/raftwatch/proto"
)

// logOp decodes one op of a committed Chunk into the checker's form, which
// log.json keeps (so --recheck needs no proto).
func logOp(op *pb.Op) checker.LogOp {
	lo := checker.LogOp{Key: string(op.Key), Value: string(op.Value),
		CondRev: op.GetCondition().GetModRevision(), CondAbsent: op.GetCondition().GetAbsent(),
		Lease: op.Lease, TTL: op.Ttl}
	switch op.Kind {
	case pb.Op_PUT:
		lo.Kind = checker.LogPut
	case pb.Op_DELETE:
		lo.Kind = checker.LogDelete
	case pb.Op_SET_MEMBER:
		lo.Kind = checker.LogSetMember
	case pb.Op_TXN:
		lo.Kind = checker.LogTxn
		lo.Txn = logTxn(op.Txn)
	case pb.Op_LEASE_GRANT:
		lo.Kind = checker.LogLeaseGrant
	case pb.Op_LEASE_REVOKE:
		lo.Kind = checker.LogLeaseRevoke
	case pb.Op_LEASE_RENEW:
		lo.Kind = checker.LogLeaseRenew
	case pb.Op_LEASE_CHECKPOINT:
		lo.Kind = checker.LogLeaseCheckpoint
		for _, c := range op.LeaseCheckpoints {
			lo.Checkpoints = append(lo.Checkpoints, checker.LogCheckpoint{Lease: c.Lease, RemainingMS: c.RemainingMs, RenewedIndex: c.RenewedIndex})
		}
	case pb.Op_LEASE_EXPIRE:
		lo.Kind = checker.LogLeaseExpire
		for _, x := range op.LeaseExpiries {
			lo.Expiries = append(lo.Expiries, checker.LogLeaseExpiry{Lease: x.Lease, RenewedIndex: x.RenewedIndex})
		}
	default:
		lo.Kind = checker.LogUnknown
	}
	return lo
}

func logTxn(t *pb.TxnRequest) *checker.LogTxnRequest {
	if t == nil {
		return &checker.LogTxnRequest{}
	}
	out := &checker.LogTxnRequest{}
	for _, c := range t.Compares {
		out.Compares = append(out.Compares, logCompare(c))
	}
	for _, o := range t.Success {
		out.Success = append(out.Success, logTxnOp(o))
	}
	for _, o := range t.Failure {
		out.Failure = append(out.Failure, logTxnOp(o))
	}
	return out
}

func logCompare(c *pb.Compare) checker.LogCompare {
	lc := checker.LogCompare{Key: string(c.Key)}
	switch c.Result {
	case pb.Compare_EQUAL:
		lc.Result = checker.CmpEqual
	case pb.Compare_NOT_EQUAL:
		lc.Result = checker.CmpNotEqual
	case pb.Compare_LESS:
		lc.Result = checker.CmpLess
	case pb.Compare_GREATER:
		lc.Result = checker.CmpGreater
	}
	switch t := c.Target.(type) {
	case *pb.Compare_Value:
		lc.Target, lc.Value = checker.CmpValue, string(t.Value)
	case *pb.Compare_Version:
		lc.Target, lc.Rev = checker.CmpVersion, t.Version
	case *pb.Compare_CreateRevision:
		lc.Target, lc.Rev = checker.CmpCreate, t.CreateRevision
	case *pb.Compare_ModRevision:
		lc.Target, lc.Rev = checker.CmpMod, t.ModRevision
	case *pb.Compare_Lease:
		lc.Target, lc.Lease = checker.CmpLease, t.Lease
	case *pb.Compare_Exists:
		lc.Target, lc.Exists = checker.CmpExists, t.Exists
	}
	return lc
}

func logTxnOp(o *pb.TxnOp) checker.LogTxnOp {
	switch x := o.Op.(type) {
	case *pb.TxnOp_Put:
		return checker.LogTxnOp{Kind: checker.LogPut, Key: string(x.Put.Key), Value: string(x.Put.Value), Lease: x.Put.Lease}
	case *pb.TxnOp_Delete:
		return checker.LogTxnOp{Kind: checker.LogDelete, Key: string(x.Delete.Key)}
	case *pb.TxnOp_Get:
		return checker.LogTxnOp{Kind: checker.LogGet, Key: string(x.Get.Key)}
	case *pb.TxnOp_DeletePrefix:
		return checker.LogTxnOp{Kind: checker.LogDeletePrefix, Key: string(x.DeletePrefix.Prefix)}
	}
	return checker.LogTxnOp{Kind: checker.LogUnknown}
}
