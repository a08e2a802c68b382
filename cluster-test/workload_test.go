package main

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
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

func TestClassify(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"NotLeader (FAILED_PRECONDITION) was not applied", withDetail(t, codes.FailedPrecondition, "not leader", &pb.NotLeader{LeaderId: "n2"}), history.Fail},
		{"INVALID_ARGUMENT was not applied", status.Error(codes.InvalidArgument, "empty key"), history.Fail},
		{"UNAVAILABLE with the NOT_APPLIED marker was not applied", withDetail(t, codes.Unavailable, "no leader", &errdetails.ErrorInfo{Reason: notAppliedReason}), history.Fail},
		{"UNAVAILABLE without the marker (leadership lost, transport) is unknown", status.Error(codes.Unavailable, "connection reset"), history.Info},
		{"UNAVAILABLE from a connection that was never made was not sent", status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 10.77.0.11:7101: connect: connection refused"`), history.Fail},
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
