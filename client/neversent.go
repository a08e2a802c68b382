package client

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// neverSentError is the error of a unary call that gRPC failed before it
// had a connection to send it on (the connection was down and could not be
// made again): the request never left this process. It is the call's
// status error unchanged in every other respect.
type neverSentError struct{ err error }

func (e *neverSentError) Error() string              { return e.err.Error() }
func (e *neverSentError) Unwrap() error              { return e.err }
func (e *neverSentError) GRPCStatus() *status.Status { return status.Convert(e.err) }

// markNeverSent is a unary interceptor that marks a call's UNAVAILABLE
// error as a neverSentError when gRPC never gave the call a transport
// stream. gRPC fills the grpc.Peer call option only from a call's transport
// stream, so an empty peer means nothing was written to any connection.
// The test is structural (no error message is read); a call that got a
// stream and failed before sending counts as maybe sent, the safe side.
func markNeverSent(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	var p peer.Peer
	err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Peer(&p))...)
	if err != nil && p.Addr == nil && status.Code(err) == codes.Unavailable {
		return &neverSentError{err: err}
	}
	return err
}

// neverSentMarker installs markNeverSent on a connection.
var neverSentMarker = grpc.WithChainUnaryInterceptor(markNeverSent)

// NeverSentMarker returns the dial option a connection made outside a
// Client needs for NotApplied to recognise its calls that never left the
// process (see NotApplied).
func NeverSentMarker() grpc.DialOption { return neverSentMarker }
