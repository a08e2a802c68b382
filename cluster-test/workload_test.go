package main

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftwatch/raftwatch/cluster-test/history"
	pb "github.com/raftwatch/raftwatch/proto"
)

func withDetail(t *testing.T, code codes.Code, msg string, d ...any) error {
	t.Helper()
	st := status.New(code, msg)
	for _, x := range d {
		var err error
		switch v := x.(type) {
		case *pb.NotLeader:
			st, err = st.WithDetails(v)
		case *errdetails.ErrorInfo:
			st, err = st.WithDetails(v)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return st.Err()
}

// neverSentPut is the error of a Put through dialOptions to a port nothing
// listens on: the request never left the process.
func neverSentPut(t *testing.T) error {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cc, err := grpc.NewClient(addr, dialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = pb.NewKVClient(cc).Put(ctx, &pb.PutRequest{Key: []byte("/k"), Value: []byte("v")})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("put to a closed port: %v, want UNAVAILABLE", err)
	}
	return err
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"NotLeader (FAILED_PRECONDITION) was not applied", withDetail(t, codes.FailedPrecondition, "not leader", &pb.NotLeader{LeaderId: "n2"}), history.Fail},
		{"INVALID_ARGUMENT was not applied", status.Error(codes.InvalidArgument, "empty key"), history.Fail},
		{"UNAVAILABLE with the NOT_APPLIED marker was not applied", withDetail(t, codes.Unavailable, "no leader", &errdetails.ErrorInfo{Reason: pb.ReasonNotApplied}), history.Fail},
		{"UNAVAILABLE without the marker (leadership lost, transport) is unknown", status.Error(codes.Unavailable, "connection reset"), history.Info},
		{"UNAVAILABLE from a connection that was never made was not sent", neverSentPut(t), history.Fail},
		{"a dial error's text alone proves nothing", status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 10.77.0.11:7101: connect: connection refused"`), history.Info},
		{"UNAVAILABLE after the connection broke mid-request is unknown", status.Error(codes.Unavailable, "error reading from server: EOF"), history.Info},
		{"DEADLINE_EXCEEDED is unknown", status.Error(codes.DeadlineExceeded, "deadline"), history.Info},
		{"a non-status error is unknown", context.DeadlineExceeded, history.Info},
		{"INTERNAL is unknown", status.Error(codes.Internal, "boom"), history.Info},
		{"a plain error is unknown", errors.New("eof"), history.Info},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got, _ := classify(tc.err); got != tc.want {
				t.Fatalf("classify = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestNotLeaderHintNamesTheLeader(t *testing.T) {
	err := withDetail(t, codes.FailedPrecondition, "not leader", &pb.NotLeader{LeaderId: "n3", LeaderAddr: "10.77.0.13:7101"})
	if got := notLeaderHint(err); got != "n3" {
		t.Fatalf("hint %q", got)
	}
	if got := notLeaderHint(status.Error(codes.Unavailable, "x")); got != "" {
		t.Fatalf("hint %q from a non-NotLeader error", got)
	}
}
