package main

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/raftwatch/raftwatch/client"
	pb "github.com/raftwatch/raftwatch/proto"
)

// captureKV records the Txn requests it receives.
type captureKV struct {
	pb.UnimplementedKVServer
	mu  sync.Mutex
	got *pb.TxnRequest
}

func (s *captureKV) Txn(_ context.Context, req *pb.TxnRequest) (*pb.TxnResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = req
	return &pb.TxnResponse{}, nil
}

// wire returns the request a parsed spec becomes on the wire.
func wire(t *testing.T, spec *txnSpec) *pb.TxnRequest {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	kv := &captureKV{}
	g := grpc.NewServer()
	pb.RegisterKVServer(g, kv)
	go g.Serve(l)
	defer g.Stop()
	c, err := client.New(client.Config{Endpoints: []string{l.Addr().String()}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Txn(ctx).If(spec.compares...).Then(spec.success.ops...).Else(spec.failure.ops...).Commit(); err != nil {
		t.Fatal(err)
	}
	kv.mu.Lock()
	defer kv.mu.Unlock()
	return kv.got
}

func TestParseTxnFormat(t *testing.T) {
	in := `# move 3 from a to b
value("/acct/a") = "10"
mod(/acct/b) > 0
version("/v") != '5'
create("/c") < "7"
lease("/l") = 0
lease("/m") = 1f
exists("/e")
absent("/x y")

put /acct/a 7 --prev-kv
put "/acct/b" "three words here"
del	/d --prev-kv
get /acct/a
delprefix /tmp/

put /acct/a 10 --lease=42


`
	// '5' is not a Go string, so it is a bare word: the parse must fail.
	if _, err := parseTxn([]byte(in)); err == nil || !strings.Contains(err.Error(), "line 4") {
		t.Fatalf("error %v, want one naming line 4 (a single-quoted number)", err)
	}
	in = strings.Replace(in, "'5'", `"5"`, 1)
	spec, err := parseTxn([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	k := func(s string) []byte { return []byte(s) }
	want := &pb.TxnRequest{
		Compares: []*pb.Compare{
			{Key: k("/acct/a"), Result: pb.Compare_EQUAL, Target: &pb.Compare_Value{Value: k("10")}},
			{Key: k("/acct/b"), Result: pb.Compare_GREATER, Target: &pb.Compare_ModRevision{ModRevision: 0}},
			{Key: k("/v"), Result: pb.Compare_NOT_EQUAL, Target: &pb.Compare_Version{Version: 5}},
			{Key: k("/c"), Result: pb.Compare_LESS, Target: &pb.Compare_CreateRevision{CreateRevision: 7}},
			{Key: k("/l"), Result: pb.Compare_EQUAL, Target: &pb.Compare_Lease{Lease: 0}},
			{Key: k("/m"), Result: pb.Compare_EQUAL, Target: &pb.Compare_Lease{Lease: 0x1f}},
			{Key: k("/e"), Result: pb.Compare_EQUAL, Target: &pb.Compare_Exists{Exists: true}},
			{Key: k("/x y"), Result: pb.Compare_EQUAL, Target: &pb.Compare_Exists{Exists: false}},
		},
		Success: []*pb.TxnOp{
			{Op: &pb.TxnOp_Put{Put: &pb.PutRequest{Key: k("/acct/a"), Value: k("7"), PrevKv: true}}},
			{Op: &pb.TxnOp_Put{Put: &pb.PutRequest{Key: k("/acct/b"), Value: k("three words here")}}},
			{Op: &pb.TxnOp_Delete{Delete: &pb.DeleteRequest{Key: k("/d"), PrevKv: true}}},
			{Op: &pb.TxnOp_Get{Get: &pb.GetRequest{Key: k("/acct/a")}}},
			{Op: &pb.TxnOp_DeletePrefix{DeletePrefix: &pb.DeletePrefixRequest{Prefix: k("/tmp/")}}},
		},
		Failure: []*pb.TxnOp{
			{Op: &pb.TxnOp_Put{Put: &pb.PutRequest{Key: k("/acct/a"), Value: k("10"), Lease: 0x42}}},
		},
	}
	if got := wire(t, spec); !proto.Equal(got, want) {
		t.Fatalf("parsed into\n%v\nwant\n%v", got, want)
	}
	if len(spec.success.lines) != 5 || spec.success.lines[1] != `put "/acct/b" "three words here"` {
		t.Fatalf("success lines %q", spec.success.lines)
	}
}

func TestParseTxnRejectsBadInput(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"unknown target", `size("/k") = 1`, `line 1 "size(\"/k\") = 1": unknown compare target "size"`},
		{"unknown operator", `mod("/k") >= 1`, `unknown operator ">="`},
		{"missing operand", `mod("/k") =`, "missing operand"},
		{"number expected", `version("/k") = abc`, `version operand "abc" is not a non-negative number`},
		{"exists with an operand", `exists("/k") = 1`, "takes no operator or operand"},
		{"missing paren", `value("/k" = "x"`, "missing ) after the key"},
		{"not a compare", `put /k v`, "not a compare"},
		{"unknown op", "\nset /k v", `unknown op "set"`},
		{"put without a value", "\nput /k", "put takes 2 operand(s), got 1"},
		{"unquoted value with spaces", "\nput /k two words", "put takes 2 operand(s), got 3"},
		{"bad quoting", "\nput /k \"open", "bad quoted string"},
		{"unknown option", "\ndel /k --force", "unknown option --force"},
		{"lease on del", "\ndel /k --lease=3", "--lease is for put only"},
		{"bad lease", "\nput /k v --lease=x", "want a positive hexadecimal id"},
		{"bad lease compare", `lease("/k") = zz`, "want a positive hexadecimal id"},
		{"empty txn", "# nothing\n\n", "empty txn"},
		{"a fourth section", "\nput /k v\n\nput /k w\n\nput /k x", "line 6"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseTxn([]byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
