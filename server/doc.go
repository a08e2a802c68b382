// Package server is the gRPC edge of a raftwatch node: it validates and
// converts protobuf requests into calls on node.Node, converts watch.Event
// values into WatchResponse messages, and maps errors to gRPC codes in one
// place (status.go).
//
// Invariant: every error leaving this package carries a gRPC code that says
// whether the request could have been applied (FAILED_PRECONDITION,
// UNAVAILABLE from "no leader", INVALID_ARGUMENT, RESOURCE_EXHAUSTED: it was
// not) and a message a person can act on.
package server
