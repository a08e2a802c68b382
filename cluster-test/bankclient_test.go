package main

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftwatch/raftwatch/cluster-test/checker"
	"github.com/raftwatch/raftwatch/cluster-test/history"
	pb "github.com/raftwatch/raftwatch/proto"
)

// txnNode serves KV.Txn over real TCP: as a leader it evaluates the compares
// and ops the bank clients send on an in-memory map (one revision per Txn);
// otherwise it answers every Txn with answer() and counts the calls.
type txnNode struct {
	pb.UnimplementedKVServer
	pb.UnimplementedClusterServer
	id, addr string

	mu     sync.Mutex
	answer func(ctx context.Context) error // nil: leader
	calls  int
	rev    uint64
	data   map[string]*pb.KeyValue
}

func startTxnNode(t *testing.T, id string) *txnNode {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &txnNode{id: id, addr: lis.Addr().String(), data: map[string]*pb.KeyValue{}}
	srv := grpc.NewServer()
	pb.RegisterKVServer(srv, n)
	pb.RegisterClusterServer(srv, n)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return n
}

func (n *txnNode) set(answer func(ctx context.Context) error) {
	n.mu.Lock()
	n.answer = answer
	n.mu.Unlock()
}

func (n *txnNode) callCount() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.calls
}

func (n *txnNode) Status(context.Context, *pb.StatusRequest) (*pb.StatusResponse, error) {
	return &pb.StatusResponse{}, nil
}

func (n *txnNode) Txn(ctx context.Context, req *pb.TxnRequest) (*pb.TxnResponse, error) {
	n.mu.Lock()
	n.calls++
	answer := n.answer
	n.mu.Unlock()
	if answer != nil {
		return nil, answer(ctx)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.rev++
	holds := true
	for _, c := range req.Compares {
		kv := n.data[string(c.Key)]
		switch t := c.Target.(type) {
		case *pb.Compare_ModRevision:
			var mod uint64
			if kv != nil {
				mod = kv.ModRevision
			}
			holds = holds && c.Result == pb.Compare_EQUAL && mod == t.ModRevision
		case *pb.Compare_Exists:
			holds = holds && c.Result == pb.Compare_EQUAL && (kv != nil) == t.Exists
		default:
			return nil, status.Errorf(codes.Unimplemented, "compare %v", c)
		}
	}
	branch := req.Success
	if !holds {
		branch = req.Failure
	}
	resp := &pb.TxnResponse{Revision: n.rev, Succeeded: holds}
	for _, o := range branch {
		switch t := o.Op.(type) {
		case *pb.TxnOp_Put:
			n.data[string(t.Put.Key)] = &pb.KeyValue{Key: t.Put.Key, Value: t.Put.Value, ModRevision: n.rev}
			resp.Results = append(resp.Results, &pb.TxnOpResult{Result: &pb.TxnOpResult_Put{Put: &pb.PutResponse{Revision: n.rev, Succeeded: true}}})
		case *pb.TxnOp_Get:
			resp.Results = append(resp.Results, &pb.TxnOpResult{Result: &pb.TxnOpResult_Get{Get: &pb.GetResponse{Kv: n.data[string(t.Get.Key)], Revision: n.rev}}})
		default:
			return nil, status.Errorf(codes.Unimplemented, "op %v", o)
		}
	}
	return resp, nil
}

func notLeaderFrom(leader *txnNode) func(context.Context) error {
	return func(context.Context) error {
		st, _ := status.New(codes.FailedPrecondition, "not the leader").WithDetails(&pb.NotLeader{LeaderId: leader.id, LeaderAddr: leader.addr})
		return st.Err()
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestBankClientsRunTheBankTxns: both kinds of bank client create the
// accounts once, read them all at one revision, and transfer only when both
// accounts' mod_revisions are still the ones given, else read both back.
func TestBankClientsRunTheBankTxns(t *testing.T) {
	for _, kind := range []string{history.ClientPinned, history.ClientFailover} {
		t.Run(kind, func(t *testing.T) {
			n := startTxnNode(t, "n1")
			c, err := newTxnBankClient(kind, []endpoint{{n.id, n.addr}}, 1)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			accounts := bankAccounts()
			init := map[string]string{}
			for _, a := range accounts {
				init[a] = checker.BankValue(bankInitial, "init")
			}
			rev, ok, err := c.InitKeys(ctxT(t), init)
			if err != nil || !ok || rev != 1 {
				t.Fatalf("init: rev %d, succeeded %v, %v", rev, ok, err)
			}
			if _, ok, err := c.InitKeys(ctxT(t), init); err != nil || ok {
				t.Fatalf("second init: succeeded %v, %v; want the compares (every account absent) to fail", ok, err)
			}
			s, err := c.ReadAll(ctxT(t), accounts)
			if err != nil || len(s.Values) != len(accounts) || s.Revision != 3 {
				t.Fatalf("read: %+v, %v", s, err)
			}
			for _, a := range accounts {
				if s.Values[a] != init[a] || s.ModRevs[a] != 1 {
					t.Fatalf("read %s = %q@%d, want %q@1", a, s.Values[a], s.ModRevs[a], init[a])
				}
			}
			tr := bankTransfer{From: accounts[0], To: accounts[1], FromRev: 1, ToRev: 1,
				FromValue: checker.BankValue(90, "t1"), ToValue: checker.BankValue(110, "t1")}
			out, err := c.Transfer(ctxT(t), tr)
			if err != nil || !out.Succeeded || out.Revision != 4 {
				t.Fatalf("transfer: %+v, %v", out, err)
			}
			// The same transfer again: its compares no longer hold.
			out, err = c.Transfer(ctxT(t), tr)
			if err != nil || out.Succeeded || out.Failure.Values[tr.From] != tr.FromValue || out.Failure.ModRevs[tr.To] != 4 ||
				len(out.Failure.Values) != 2 {
				t.Fatalf("stale transfer: %+v, %v; want not succeeded, reading both accounts at revision 4", out, err)
			}
		})
	}
}

// TestBankClientErrorsAreFailOnlyWhenNotApplied: an error the workload
// records as fail must mean the Txn was certainly not applied; an answer
// that leaves it unknown is info, and the failover client does not retry it
// elsewhere.
func TestBankClientErrorsAreFailOnlyWhenNotApplied(t *testing.T) {
	notApplied := func(context.Context) error {
		st, _ := status.New(codes.Unavailable, "no leader").WithDetails(&errdetails.ErrorInfo{Reason: pb.ReasonNotApplied, Domain: pb.ErrorDomain})
		return st.Err()
	}
	cases := []struct {
		name   string
		answer func(context.Context) error
		want   string // outcome of the pinned client
	}{
		{"UNAVAILABLE with NOT_APPLIED is fail", notApplied, history.Fail},
		{"UNAVAILABLE without the marker is info (leadership lost after proposing)", func(context.Context) error {
			return status.Error(codes.Unavailable, "write outcome unknown: leadership was lost after it was proposed")
		}, history.Info},
		{"a deadline is info", func(ctx context.Context) error { <-ctx.Done(); return status.FromContextError(ctx.Err()).Err() }, history.Info},
		{"INTERNAL is info", func(context.Context) error { return status.Error(codes.Internal, "boom") }, history.Info},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := startTxnNode(t, "n1")
			n.set(tc.answer)
			for _, kind := range []string{history.ClientPinned, history.ClientFailover} {
				c, err := newTxnBankClient(kind, []endpoint{{n.id, n.addr}}, 1)
				if err != nil {
					t.Fatal(err)
				}
				before := n.callCount()
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				_, err = c.Transfer(ctx, bankTransfer{From: "/bank/a0", To: "/bank/a1", FromRev: 1, ToRev: 1, FromValue: "1/x", ToValue: "2/x"})
				cancel()
				c.Close()
				if err == nil {
					t.Fatalf("%s: transfer succeeded", kind)
				}
				got, msg := classify(err)
				if got != tc.want {
					t.Errorf("%s: %s, want %s (%s)", kind, got, tc.want, msg)
				}
				if calls := n.callCount() - before; tc.want == history.Info && calls != 1 {
					t.Errorf("%s: sent %d times; a Txn of unknown outcome must not be resent", kind, calls)
				}
			}
		})
	}
}

// TestBankClientsFollowTheLeaderHint: a NotLeader answer is a fail (nothing
// was applied); the pinned client sends its next op to the hinted node, the
// failover client follows the hint within the same call.
func TestBankClientsFollowTheLeaderHint(t *testing.T) {
	leader, follower := startTxnNode(t, "n2"), startTxnNode(t, "n1")
	follower.set(notLeaderFrom(leader))
	nodes := []endpoint{{follower.id, follower.addr}, {leader.id, leader.addr}}

	pc, err := newTxnBankClient(history.ClientPinned, nodes, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	p := pc.(*pinnedBank)
	if p.target.id != follower.id {
		t.Fatalf("pinned client starts at %s, want its home %s", p.target.id, follower.id)
	}
	_, err = pc.ReadAll(ctxT(t), bankAccounts())
	if typ, msg := classify(err); typ != history.Fail {
		t.Fatalf("NotLeader answer classified %s (%s), want fail", typ, msg)
	}
	if p.target.id != leader.id {
		t.Fatalf("after the hint the pinned client targets %s, want %s", p.target.id, leader.id)
	}
	if _, err := pc.ReadAll(ctxT(t), bankAccounts()); err != nil {
		t.Fatalf("read on the hinted leader: %v", err)
	}

	fc, err := newTxnBankClient(history.ClientFailover, nodes, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	if _, err := fc.ReadAll(ctxT(t), bankAccounts()); err != nil {
		t.Fatalf("failover read through a follower's hint: %v", err)
	}
}
