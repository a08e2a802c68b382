package server

import (
	"context"
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftwatch/raftwatch/node"
	pb "github.com/raftwatch/raftwatch/proto"
	"github.com/raftwatch/raftwatch/watch"
)

// toStatus maps a node or watch error to a gRPC status error.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	if st := leaseStatus(err); st != nil {
		return st
	}
	var nl *node.NotLeaderError
	switch {
	case errors.As(err, &nl):
		st := status.New(codes.FailedPrecondition, nl.Error())
		if d, derr := st.WithDetails(&pb.NotLeader{LeaderId: nl.LeaderID, LeaderAddr: nl.LeaderAddr}); derr == nil {
			st = d
		}
		return st.Err()
	case errors.Is(err, node.ErrDataLoss):
		return status.Error(codes.DataLoss, err.Error())
	case errors.Is(err, node.ErrOutcomeUnknown):
		if errors.Is(err, context.DeadlineExceeded) {
			return status.Error(codes.DeadlineExceeded, err.Error())
		}
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, node.ErrRemoved):
		return withReason(codes.FailedPrecondition, err.Error(), pb.ReasonRemoved)
	case errors.Is(err, node.ErrQuorumAtRisk):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, node.ErrMemberRemoved): // waiting longer would not help
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, node.ErrNotCaughtUp):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, node.ErrAlreadyExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, node.ErrInvalidArgument), errors.Is(err, watch.ErrInvalidPrefix), errors.Is(err, watch.ErrInvalidKey):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, watch.ErrCompacted):
		return status.Error(codes.OutOfRange, err.Error())
	case errors.Is(err, node.ErrUnknownMember):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, watch.ErrLimitExceeded):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, node.ErrNoLeader), errors.Is(err, node.ErrNotReady), errors.Is(err, node.ErrNotApplied),
		errors.Is(err, node.ErrShuttingDown), errors.Is(err, watch.ErrClosed):
		return notApplied(codes.Unavailable, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// ReasonNotApplied marks an UNAVAILABLE error whose request was certainly not
// applied, so a client may retry it elsewhere without risking a double write.
const ReasonNotApplied = "NOT_APPLIED"

func notApplied(code codes.Code, msg string) error { return withReason(code, msg, ReasonNotApplied) }

// withReason is a status error carrying an ErrorInfo with reason.
func withReason(code codes.Code, msg, reason string) error {
	st := status.New(code, msg)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: "raftwatch"}); err == nil {
		st = d
	}
	return st.Err()
}
