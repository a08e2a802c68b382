package server

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"

	"github.com/raftwatch/raftwatch/fsm"
	"github.com/raftwatch/raftwatch/node"
	pb "github.com/raftwatch/raftwatch/proto"
	"github.com/raftwatch/raftwatch/watch"
)

// This file is the one place the services build their gRPC errors: toStatus
// maps node, fsm and watch errors; invalidRequest and responseTooLarge are
// the server's own refusals, as are permissionDenied, unauthenticated
// (auth.go) and rolesNotEnforced (authservice.go); cancelCode is the code a watch's CANCELED
// carries. Every status goes through newStatus.

// newStatus returns a status error with code and msg; a non-empty reason
// adds a google.rpc.ErrorInfo in pb.ErrorDomain (the reasons are the
// constants of package proto), and details follow it.
func newStatus(code codes.Code, msg, reason string, details ...protoadapt.MessageV1) error {
	st := status.New(code, msg)
	if reason != "" {
		details = append([]protoadapt.MessageV1{&errdetails.ErrorInfo{Reason: reason, Domain: pb.ErrorDomain}}, details...)
	}
	if len(details) > 0 {
		if d, err := st.WithDetails(details...); err == nil {
			st = d
		}
	}
	return st.Err()
}

// toStatus maps a node, fsm or watch error to a gRPC status error; an
// error that already is one passes unchanged.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code, reason := codeOf(err)
	var nl *node.NotLeaderError
	if code == codes.FailedPrecondition && errors.As(err, &nl) {
		return newStatus(code, nl.Error(), reason, &pb.NotLeader{LeaderId: nl.LeaderID, LeaderAddr: nl.LeaderAddr})
	}
	return newStatus(code, err.Error(), reason)
}

// codeOf is the code, and the ErrorInfo reason if any, of err. The order
// matters where one error wraps several: the first case that matches wins.
func codeOf(err error) (codes.Code, string) {
	var nl *node.NotLeaderError
	switch {
	case errors.Is(err, fsm.ErrLeaseNotFound):
		return codes.NotFound, ""
	case errors.Is(err, fsm.ErrLeaseExists):
		return codes.AlreadyExists, ""
	case errors.Is(err, fsm.ErrLeaseLimit):
		return codes.ResourceExhausted, ""
	case errors.Is(err, fsm.ErrRoleNotFound), errors.Is(err, fsm.ErrNotGranted):
		return codes.NotFound, ""
	case errors.Is(err, fsm.ErrRoleExists):
		return codes.AlreadyExists, ""
	case errors.Is(err, fsm.ErrBuiltinRole):
		return codes.InvalidArgument, ""
	case errors.As(err, &nl):
		return codes.FailedPrecondition, "" // with a NotLeader detail (toStatus)
	case errors.Is(err, node.ErrDataLoss):
		return codes.DataLoss, ""
	case errors.Is(err, node.ErrOutcomeUnknown):
		if errors.Is(err, context.DeadlineExceeded) {
			return codes.DeadlineExceeded, ""
		}
		return codes.Unavailable, ""
	case errors.Is(err, node.ErrRemoved):
		return codes.FailedPrecondition, pb.ReasonRemoved
	case errors.Is(err, node.ErrQuorumAtRisk):
		return codes.FailedPrecondition, ""
	case errors.Is(err, node.ErrMemberRemoved): // waiting longer would not help
		return codes.FailedPrecondition, ""
	case errors.Is(err, node.ErrNotCaughtUp):
		return codes.DeadlineExceeded, ""
	case errors.Is(err, node.ErrAlreadyExists):
		return codes.AlreadyExists, ""
	case errors.Is(err, node.ErrInvalidArgument), errors.Is(err, watch.ErrInvalidPrefix), errors.Is(err, watch.ErrInvalidKey):
		return codes.InvalidArgument, ""
	case errors.Is(err, watch.ErrCompacted):
		return codes.OutOfRange, ""
	case errors.Is(err, node.ErrUnknownMember):
		return codes.NotFound, ""
	case errors.Is(err, watch.ErrLimitExceeded):
		return codes.ResourceExhausted, ""
	case errors.Is(err, node.ErrNoLeader), errors.Is(err, node.ErrNotReady), errors.Is(err, node.ErrNotApplied),
		errors.Is(err, node.ErrShuttingDown), errors.Is(err, watch.ErrClosed):
		return codes.Unavailable, pb.ReasonNotApplied
	case errors.Is(err, node.ErrLogCorrupt): // a committed-log read hit a damaged entry
		// After the write outcomes above: DATA_LOSS tells a client to try
		// another node, which must never be said of a write that may apply.
		return codes.DataLoss, ""
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded, ""
	case errors.Is(err, context.Canceled):
		return codes.Canceled, ""
	}
	return codes.Internal, ""
}

// invalidRequest is the INVALID_ARGUMENT of a request the server refuses
// before it reaches the node.
func invalidRequest(format string, args ...any) error {
	return newStatus(codes.InvalidArgument, fmt.Sprintf(format, args...), "")
}

// permissionDenied is the PERMISSION_DENIED of a call the caller's roles do
// not allow; nothing was done.
func permissionDenied(format string, args ...any) error {
	return newStatus(codes.PermissionDenied, "permission denied: "+fmt.Sprintf(format, args...), "")
}

// rolesNotEnforced is the FAILED_PRECONDITION of a role or user change on
// a node that does not enforce roles: anyone could make it there, so
// nobody may.
func rolesNotEnforced(method string) error {
	return newStatus(codes.FailedPrecondition, fmt.Sprintf("%s: roles are managed only on nodes that enforce them: "+
		"restart the nodes with serve --auth, then set the roles up as the admin identity (--auth-admin-identity, default root)", method), "")
}

// unauthenticated is the UNAUTHENTICATED of a call without an identity on
// a node that enforces roles.
func unauthenticated(format string, args ...any) error {
	return newStatus(codes.Unauthenticated, fmt.Sprintf(format, args...), "")
}

// responseTooLarge is the RESOURCE_EXHAUSTED of a response over the send
// limit.
func responseTooLarge(format string, args ...any) error {
	return newStatus(codes.ResourceExhausted, fmt.Sprintf(format, args...), "")
}

// cancelCode is the gRPC code a CANCELED carries: OUT_OF_RANGE when history
// was compacted (re-list; resuming cannot help), UNAVAILABLE when the node
// cannot serve the watch any more (resume on another node),
// FAILED_PRECONDITION when the node was removed from the cluster (resume on
// a member; never come back here).
func cancelCode(c watch.CancelCause) codes.Code {
	switch c {
	case watch.CauseCompacted:
		return codes.OutOfRange
	case watch.CauseRemoved:
		return codes.FailedPrecondition
	case watch.CauseShutdown, watch.CauseNoLeader, watch.CauseInternal:
		return codes.Unavailable
	}
	return codes.OK
}
