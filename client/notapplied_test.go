package client

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/raftwatch/raftwatch/proto"
)

func withDetail(t *testing.T, code codes.Code, msg string, d *errdetails.ErrorInfo) error {
	t.Helper()
	st, err := status.New(code, msg).WithDetails(d)
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}

// TestRetryDecisionComesFromCodesAndDetails: a fake server answers a write
// with each status shape; the client retries it (and NotApplied is true)
// only for the shapes that guarantee it was not applied, whatever the
// message says. A server's UNAVAILABLE whose text looks like a dial error
// came over a connection: the request was sent, and is not retried.
func TestRetryDecisionComesFromCodesAndDetails(t *testing.T) {
	for _, tc := range []struct {
		name       string
		answer     error
		notApplied bool
	}{
		{"UNAVAILABLE with NOT_APPLIED", withDetail(t, codes.Unavailable, "no leader", &errdetails.ErrorInfo{Reason: pb.ReasonNotApplied, Domain: pb.ErrorDomain}), true},
		{"UNAVAILABLE without a reason (outcome unknown)", status.Error(codes.Unavailable, "write outcome unknown"), false},
		{"UNAVAILABLE whose text reads like a dial error", status.Error(codes.Unavailable, "connection error: desc = \"transport: Error while dialing: dial tcp: connect: connection refused\""), false},
		{"UNAVAILABLE with another reason", withDetail(t, codes.Unavailable, "x", &errdetails.ErrorInfo{Reason: "SOMETHING_ELSE", Domain: pb.ErrorDomain}), false},
		{"DEADLINE_EXCEEDED", status.Error(codes.DeadlineExceeded, "the request was not applied"), false},
		{"INTERNAL", status.Error(codes.Internal, "NOT_APPLIED"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kv := &txnKV{answers: []error{tc.answer}}
			c := serveTxn(t, kv)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := c.Txn(ctx).Then(OpPut([]byte("/k"), []byte("v"))).Commit()
			want := 1
			if tc.notApplied {
				want = 2 // retried, then the fake server's success
				if err != nil {
					t.Fatalf("retried write failed: %v", err)
				}
			} else if status.Code(err) != status.Code(tc.answer) || NotApplied(err) {
				t.Fatalf("error %v (NotApplied %v), want the server's %v returned as maybe applied", err, NotApplied(err), status.Code(tc.answer))
			}
			if n := kv.received(); n != want {
				t.Fatalf("the server received %d txns, want %d", n, want)
			}
			if got := NotApplied(tc.answer); got != tc.notApplied {
				t.Fatalf("NotApplied(the server's answer) = %v, want %v", got, tc.notApplied)
			}
		})
	}
}

// TestNeverSentIsNotApplied: a call on a connection whose endpoint went
// away (the port refuses) fails fast with UNAVAILABLE before any transport
// carries it; NotApplied says so from the call's structure, not its text.
func TestNeverSentIsNotApplied(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c, err := New(Config{Endpoints: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cc, err := c.conn(addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = pb.NewKVClient(cc).Put(ctx, &pb.PutRequest{Key: []byte("/k"), Value: []byte("v")})
	if status.Code(err) != codes.Unavailable || !NotApplied(err) {
		t.Fatalf("put on a refused connection: %v (code %v, NotApplied %v), want UNAVAILABLE and not applied", err, status.Code(err), NotApplied(err))
	}
	var ns *neverSentError
	if !errors.As(err, &ns) {
		t.Fatalf("%v is not marked never sent", err)
	}
}
