package server

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftwatch/raftwatch/fsm"
	"github.com/raftwatch/raftwatch/node"
	pb "github.com/raftwatch/raftwatch/proto"
	"github.com/raftwatch/raftwatch/watch"
)

// TestToStatusMapping pins the one error-to-status mapping: each node, fsm
// or watch error (also wrapped) gets its code and ErrorInfo reason, and
// keeps its message.
func TestToStatusMapping(t *testing.T) {
	for _, tc := range []struct {
		err    error
		code   codes.Code
		reason string
	}{
		{node.ErrNoLeader, codes.Unavailable, pb.ReasonNotApplied},
		{node.ErrNotReady, codes.Unavailable, pb.ReasonNotApplied},
		{node.ErrNotApplied, codes.Unavailable, pb.ReasonNotApplied},
		{node.ErrShuttingDown, codes.Unavailable, pb.ReasonNotApplied},
		{watch.ErrClosed, codes.Unavailable, pb.ReasonNotApplied},
		{node.ErrOutcomeUnknown, codes.Unavailable, ""},
		{fmt.Errorf("%w: %w", node.ErrOutcomeUnknown, context.DeadlineExceeded), codes.DeadlineExceeded, ""},
		{node.ErrRemoved, codes.FailedPrecondition, pb.ReasonRemoved},
		{node.ErrQuorumAtRisk, codes.FailedPrecondition, ""},
		{node.ErrMemberRemoved, codes.FailedPrecondition, ""},
		{node.ErrNotCaughtUp, codes.DeadlineExceeded, ""},
		{node.ErrAlreadyExists, codes.AlreadyExists, ""},
		{node.ErrInvalidArgument, codes.InvalidArgument, ""},
		{watch.ErrInvalidPrefix, codes.InvalidArgument, ""},
		{watch.ErrInvalidKey, codes.InvalidArgument, ""},
		{watch.ErrCompacted, codes.OutOfRange, ""},
		{node.ErrUnknownMember, codes.NotFound, ""},
		{watch.ErrLimitExceeded, codes.ResourceExhausted, ""},
		{node.ErrDataLoss, codes.DataLoss, ""},
		{fsm.ErrLeaseNotFound, codes.NotFound, ""},
		{fsm.ErrLeaseExists, codes.AlreadyExists, ""},
		{fsm.ErrLeaseLimit, codes.ResourceExhausted, ""},
		{context.DeadlineExceeded, codes.DeadlineExceeded, ""},
		{context.Canceled, codes.Canceled, ""},
		{errors.New("disk on fire"), codes.Internal, ""},
	} {
		for _, err := range []error{tc.err, fmt.Errorf("put /k: %w", tc.err)} {
			st := status.Convert(toStatus(err))
			if st.Code() != tc.code || reasonOf(st) != tc.reason || st.Message() != err.Error() {
				t.Errorf("toStatus(%q) = %v %q reason %q; want %v reason %q, the error's message",
					err, st.Code(), st.Message(), reasonOf(st), tc.code, tc.reason)
			}
		}
	}
}

func TestToStatusNotLeaderCarriesTheHint(t *testing.T) {
	nl := &node.NotLeaderError{LeaderID: "n2", LeaderAddr: "127.0.0.1:7102"}
	st := status.Convert(toStatus(fmt.Errorf("put: %w", nl)))
	var hint *pb.NotLeader
	for _, d := range st.Details() {
		if h, ok := d.(*pb.NotLeader); ok {
			hint = h
		}
	}
	if st.Code() != codes.FailedPrecondition || hint == nil || hint.LeaderId != "n2" || hint.LeaderAddr != "127.0.0.1:7102" || st.Message() != nl.Error() {
		t.Fatalf("NotLeaderError became %v %q details %v", st.Code(), st.Message(), st.Details())
	}
}

func TestToStatusPassesStatusesThrough(t *testing.T) {
	in := invalidRequest("limit %d is too large", 7)
	if out := toStatus(in); out != in || status.Code(out) != codes.InvalidArgument {
		t.Fatalf("toStatus changed a status error: %v", out)
	}
}

func reasonOf(st *status.Status) string {
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			if ei.Domain != pb.ErrorDomain {
				return "wrong domain " + ei.Domain
			}
			return ei.Reason
		}
	}
	return ""
}
