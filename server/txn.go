package server

import (
	"context"

	"google.golang.org/protobuf/proto"

	"github.com/raftwatch/raftwatch/fsm"
	"github.com/raftwatch/raftwatch/node"
	pb "github.com/raftwatch/raftwatch/proto"
)

// Txn implements KV.Txn.
func (s *Server) Txn(ctx context.Context, req *pb.TxnRequest) (*pb.TxnResponse, error) {
	r, err := s.node.Txn(ctx, req)
	if err != nil {
		return nil, toStatus(err)
	}
	out := &pb.TxnResponse{Revision: r.Revision, Succeeded: r.Succeeded, Results: make([]*pb.TxnOpResult, len(r.Ops))}
	for i := range r.Ops {
		out.Results[i] = txnOpResult(r.Revision, &r.Ops[i])
	}
	if size, limit := proto.Size(out), SendLimit(s.limits); size > limit {
		// node.checkTxnResponse refused what was too large as stored when
		// the txn arrived; values written since can still make it so. The
		// txn was applied: say so, rather than let gRPC fail the send.
		return nil, responseTooLarge(
			"txn applied at revision %d (succeeded=%v), but its response of %d bytes exceeds the %d-byte message limit: read the keys separately",
			r.Revision, r.Succeeded, size, limit)
	}
	return out, nil
}

// txnOpResult is one op's result in the wire form of the request it answers.
func txnOpResult(rev uint64, o *node.TxnOpResult) *pb.TxnOpResult {
	switch o.Kind {
	case fsm.TxnPut:
		return &pb.TxnOpResult{Result: &pb.TxnOpResult_Put{Put: &pb.PutResponse{
			Revision: rev, Succeeded: true, PrevKv: toKV(o.Prev), ModRevision: o.ModRevision}}}
	case fsm.TxnDelete:
		return &pb.TxnOpResult{Result: &pb.TxnOpResult_Delete{Delete: &pb.DeleteResponse{
			Revision: rev, Succeeded: true, Deleted: o.Deleted, PrevKv: toKV(o.Prev), ModRevision: o.ModRevision}}}
	case fsm.TxnGet:
		return &pb.TxnOpResult{Result: &pb.TxnOpResult_Get{Get: &pb.GetResponse{Kv: toKV(o.KV), Revision: rev}}}
	case fsm.TxnDeletePrefix:
		dp := &pb.DeletePrefixResponse{Revision: rev, Deleted: o.DeletedCount}
		for i := range o.Prevs {
			dp.PrevKvs = append(dp.PrevKvs, toKV(&o.Prevs[i]))
		}
		return &pb.TxnOpResult{Result: &pb.TxnOpResult_DeletePrefix{DeletePrefix: dp}}
	}
	return &pb.TxnOpResult{} // an op the node did not know: nothing ran
}
