package node

import (
	"testing"

	pb "github.com/raftwatch/raftwatch/proto"
)

func putOp(key string) *pb.Op { return &pb.Op{Kind: pb.Op_PUT, Key: []byte(key)} }

func txnOp(success ...*pb.TxnOp) *pb.Op {
	return &pb.Op{Kind: pb.Op_TXN, Txn: &pb.TxnRequest{Success: success}}
}

func txnPut(key string) *pb.TxnOp {
	return &pb.TxnOp{Op: &pb.TxnOp_Put{Put: &pb.PutRequest{Key: []byte(key)}}}
}

func txnDeletePrefix(prefix string) *pb.TxnOp {
	return &pb.TxnOp{Op: &pb.TxnOp_DeletePrefix{DeletePrefix: &pb.DeletePrefixRequest{Prefix: []byte(prefix)}}}
}

// TestChunkFootprint checks which ops may share a log entry: never two
// mutations of one key, and a lease revoke or expiry only alone.
func TestChunkFootprint(t *testing.T) {
	cases := []struct {
		name  string
		chunk []*pb.Op
		next  *pb.Op
		want  bool // conflicts
	}{
		{"distinct keys", []*pb.Op{putOp("/a")}, putOp("/b"), false},
		{"same key", []*pb.Op{putOp("/a")}, &pb.Op{Kind: pb.Op_DELETE, Key: []byte("/a")}, true},
		{"txn writes a key already in the chunk", []*pb.Op{putOp("/a")}, txnOp(txnPut("/b"), txnPut("/a")), true},
		{"txn failure branch counts too", []*pb.Op{putOp("/a")},
			&pb.Op{Kind: pb.Op_TXN, Txn: &pb.TxnRequest{Failure: []*pb.TxnOp{txnPut("/a")}}}, true},
		{"key under a prefix delete", []*pb.Op{txnOp(txnDeletePrefix("/p/"))}, putOp("/p/x"), true},
		{"prefix delete over a key", []*pb.Op{putOp("/p/x")}, txnOp(txnDeletePrefix("/p/")), true},
		{"nested prefixes", []*pb.Op{txnOp(txnDeletePrefix("/p/q/"))}, txnOp(txnDeletePrefix("/p/")), true},
		{"disjoint prefixes", []*pb.Op{txnOp(txnDeletePrefix("/p/"))}, txnOp(txnDeletePrefix("/q/")), false},
		{"renewals share", []*pb.Op{{Kind: pb.Op_LEASE_RENEW, Lease: 1}}, &pb.Op{Kind: pb.Op_LEASE_RENEW, Lease: 1}, false},
		{"revoke travels alone", []*pb.Op{putOp("/a")}, &pb.Op{Kind: pb.Op_LEASE_REVOKE, Lease: 1}, true},
		{"nothing joins an expiry", []*pb.Op{{Kind: pb.Op_LEASE_EXPIRE}}, &pb.Op{Kind: pb.Op_LEASE_RENEW, Lease: 2}, true},
	}
	for _, c := range cases {
		var fp chunkFootprint
		for _, op := range c.chunk {
			fp.add(footprintOf(op))
		}
		if got := fp.conflicts(footprintOf(c.next)); got != c.want {
			t.Errorf("%s: conflicts = %v, want %v", c.name, got, c.want)
		}
	}
}
