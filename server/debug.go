package server

import (
	"fmt"

	"github.com/raftwatch/raftwatch/node"
	pb "github.com/raftwatch/raftwatch/proto"
)

// debugServer implements the Debug service: reads for test tools, kept
// out of the client services because they show every value.
type debugServer struct {
	pb.UnimplementedDebugServer
	node *node.Node
}

// Log implements Debug.Log.
//
// Authorization: with roles enforced (serve --auth) only admins may call
// it, like Maintenance.Snapshot (auth.go's methodRules); without, anyone
// who reaches the client API may, as every other call.
func (d *debugServer) Log(req *pb.LogRequest, stream pb.Debug_LogServer) error {
	first := true
	oldest, err := d.node.CommittedLog(req.FromIndex, func(oldest uint64, e node.LogEntry) error {
		msg := &pb.LogEntry{Index: e.Index, Term: e.Term, Type: e.Type, Chunk: e.Chunk}
		if first {
			msg.FirstIndex, first = oldest, false
		}
		return stream.Send(msg)
	})
	if err != nil {
		return toStatus(fmt.Errorf("read committed log (oldest index held %d): %w", oldest, err))
	}
	return nil
}
