package server_test

import (
	"errors"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/raftwatch/raftwatch/proto"
)

// TestDebugLogStreamsTheCommittedWrite: Debug.Log streams the committed
// log up to the commit index, the put among it with its key and value, the
// first message saying where the log starts; the Cluster service no longer
// offers Log (it moved to Debug, which authorization keeps to admins).
func TestDebugLogStreamsTheCommittedWrite(t *testing.T) {
	s := startSingle(t, nil)
	rev := s.put(t, "/debug/k", []byte("v1"))

	cc, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	stream, err := pb.NewDebugClient(cc).Log(ctxT(t, 10*time.Second), &pb.LogRequest{FromIndex: 1})
	if err != nil {
		t.Fatal(err)
	}
	var got []*pb.LogEntry
	for {
		e, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("Debug.Log after %d entries: %v", len(got), err)
		}
		got = append(got, e)
	}
	if len(got) == 0 || got[0].Index != 1 || got[0].FirstIndex != 1 {
		t.Fatalf("Debug.Log from 1 starts with %v, want index 1 with first_index 1", got[:min(1, len(got))])
	}
	found := false
	for i, e := range got {
		if e.Index != uint64(i+1) {
			t.Fatalf("entry %d has index %d: the stream skipped or repeated one", i, e.Index)
		}
		if e.Index != rev {
			continue
		}
		for _, op := range e.Chunk.GetOps() {
			found = found || op.Kind == pb.Op_PUT && string(op.Key) == "/debug/k" && string(op.Value) == "v1"
		}
	}
	if !found || got[len(got)-1].Index < rev {
		t.Fatalf("Debug.Log streamed %d entries, none at revision %d putting /debug/k=v1", len(got), rev)
	}

	desc := &grpc.StreamDesc{ServerStreams: true}
	old, err := cc.NewStream(ctxT(t, 10*time.Second), desc, "/raftwatch.v1.Cluster/Log")
	if err == nil {
		err = old.SendMsg(&pb.LogRequest{FromIndex: 1})
	}
	if err == nil {
		err = old.RecvMsg(new(pb.LogEntry))
	}
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("the old Cluster.Log: %v, want UNIMPLEMENTED", err)
	}
}
