// Command raftwatch runs a raftwatch node (serve) and talks to a cluster
// (put, get, del, list, txn, watch, lease, lock, elect, snapshot, status,
// members, member, role, user).
package main

import (
	"errors"
	"fmt"
	"os"

	"google.golang.org/grpc/status"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		var ec exitCode
		if errors.As(err, &ec) {
			if ec.msg != "" {
				fmt.Fprintln(os.Stderr, "error:", ec.msg)
			}
			os.Exit(ec.code)
		}
		fmt.Fprintln(os.Stderr, "error:", describe(err))
		os.Exit(exitError)
	}
}

// exitCode ends the program with code, after printing msg (if any) to
// stderr. Results are printed before it is returned, in either format.
type exitCode struct {
	code int
	msg  string
}

func (e exitCode) Error() string { return e.msg }

// describe turns a gRPC error into "message (Code)".
func describe(err error) string {
	if st, ok := status.FromError(err); ok {
		return fmt.Sprintf("%s (%s)%s", st.Message(), st.Code(), tlsHint(st))
	}
	return err.Error()
}
