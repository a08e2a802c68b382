package main

import (
	"reflect"
	"testing"

	"github.com/raftwatch/raftwatch/cluster-test/checker"
	pb "github.com/raftwatch/raftwatch/proto"
)

// TestLogOpDecodesEveryKind: every field the replay needs survives decoding,
// and a decoded TXN replays as the design says.
func TestLogOpDecodesEveryKind(t *testing.T) {
	txn := &pb.Op{Kind: pb.Op_TXN, Txn: &pb.TxnRequest{
		Compares: []*pb.Compare{
			{Key: []byte("/a"), Result: pb.Compare_EQUAL, Target: &pb.Compare_ModRevision{ModRevision: 1}},
			{Key: []byte("/b"), Result: pb.Compare_NOT_EQUAL, Target: &pb.Compare_Exists{Exists: true}},
			{Key: []byte("/a"), Result: pb.Compare_LESS, Target: &pb.Compare_Value{Value: []byte("z")}},
			{Key: []byte("/a"), Result: pb.Compare_GREATER, Target: &pb.Compare_Lease{Lease: -1}},
		},
		Success: []*pb.TxnOp{
			{Op: &pb.TxnOp_Put{Put: &pb.PutRequest{Key: []byte("/b"), Value: []byte("B"), Lease: 1}}},
			{Op: &pb.TxnOp_Get{Get: &pb.GetRequest{Key: []byte("/b")}}},
			{Op: &pb.TxnOp_DeletePrefix{DeletePrefix: &pb.DeletePrefixRequest{Prefix: []byte("/a")}}},
		},
		Failure: []*pb.TxnOp{{Op: &pb.TxnOp_Delete{Delete: &pb.DeleteRequest{Key: []byte("/a")}}}},
	}}
	got := logOp(txn)
	want := checker.LogOp{Kind: checker.LogTxn, Txn: &checker.LogTxnRequest{
		Compares: []checker.LogCompare{
			{Key: "/a", Result: checker.CmpEqual, Target: checker.CmpMod, Rev: 1},
			{Key: "/b", Result: checker.CmpNotEqual, Target: checker.CmpExists, Exists: true},
			{Key: "/a", Result: checker.CmpLess, Target: checker.CmpValue, Value: "z"},
			{Key: "/a", Result: checker.CmpGreater, Target: checker.CmpLease, Lease: -1},
		},
		Success: []checker.LogTxnOp{{Kind: checker.LogPut, Key: "/b", Value: "B", Lease: 1},
			{Kind: checker.LogGet, Key: "/b"}, {Kind: checker.LogDeletePrefix, Key: "/a"}},
		Failure: []checker.LogTxnOp{{Kind: checker.LogDelete, Key: "/a"}},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("txn decoded as\n%+v\nwant\n%+v", got.Txn, want.Txn)
	}
	for _, tc := range []struct {
		op   *pb.Op
		want checker.LogOp
	}{
		{&pb.Op{Kind: pb.Op_PUT, Key: []byte("/a"), Value: []byte("v"), Lease: 7, Condition: &pb.Condition{Require: &pb.Condition_ModRevision{ModRevision: 3}}},
			checker.LogOp{Kind: checker.LogPut, Key: "/a", Value: "v", Lease: 7, CondRev: 3}},
		{&pb.Op{Kind: pb.Op_DELETE, Key: []byte("/a"), Condition: &pb.Condition{Require: &pb.Condition_Absent{Absent: true}}},
			checker.LogOp{Kind: checker.LogDelete, Key: "/a", CondAbsent: true}},
		{&pb.Op{Kind: pb.Op_LEASE_GRANT, Lease: 0, Ttl: 5}, checker.LogOp{Kind: checker.LogLeaseGrant, TTL: 5}},
		{&pb.Op{Kind: pb.Op_LEASE_REVOKE, Lease: 9}, checker.LogOp{Kind: checker.LogLeaseRevoke, Lease: 9}},
		{&pb.Op{Kind: pb.Op_LEASE_RENEW, Lease: 9}, checker.LogOp{Kind: checker.LogLeaseRenew, Lease: 9}},
		{&pb.Op{Kind: pb.Op_LEASE_CHECKPOINT, LeaseCheckpoints: []*pb.LeaseCheckpoint{{Lease: 9, RemainingMs: 1500, RenewedIndex: 4}}},
			checker.LogOp{Kind: checker.LogLeaseCheckpoint, Checkpoints: []checker.LogCheckpoint{{Lease: 9, RemainingMS: 1500, RenewedIndex: 4}}}},
		{&pb.Op{Kind: pb.Op_LEASE_EXPIRE, LeaseExpiries: []*pb.LeaseExpiry{{Lease: 9, RenewedIndex: 4}, {Lease: 10, RenewedIndex: 6}}},
			checker.LogOp{Kind: checker.LogLeaseExpire, Expiries: []checker.LogLeaseExpiry{{Lease: 9, RenewedIndex: 4}, {Lease: 10, RenewedIndex: 6}}}},
		{&pb.Op{Kind: pb.Op_Kind(99)}, checker.LogOp{Kind: checker.LogUnknown}},
	} {
		if got := logOp(tc.op); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%v decoded as %+v, want %+v", tc.op.Kind, got, tc.want)
		}
	}

	// Decoded and replayed: /a exists at 1 with lease 0, lease 1 granted at
	// 2, so every compare holds: /b is put on lease 1, /a deleted by prefix.
	log := &checker.Log{FirstIndex: 1, Entries: []checker.LogEntry{
		{Index: 1, Ops: []checker.LogOp{logOp(&pb.Op{Kind: pb.Op_PUT, Key: []byte("/a"), Value: []byte("A")})}},
		{Index: 2, Ops: []checker.LogOp{logOp(&pb.Op{Kind: pb.Op_LEASE_GRANT, Ttl: 5})}},
		{Index: 3, Ops: []checker.LogOp{got}},
	}}
	rp, err := checker.NewReplay(log)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := rp.Final["/a"]; ok || rp.Final["/b"] != (checker.KV{Value: "B", ModRev: 3, CreateRev: 3, Version: 1, Lease: 1}) {
		t.Fatalf("final state %+v", rp.Final)
	}
}
