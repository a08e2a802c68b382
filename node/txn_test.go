package node

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	pb "github.com/raftwatch/raftwatch/proto"
)

func tPut(key, value string) *pb.TxnOp {
	return &pb.TxnOp{Op: &pb.TxnOp_Put{Put: &pb.PutRequest{Key: []byte(key), Value: []byte(value)}}}
}

func tDel(key string) *pb.TxnOp {
	return &pb.TxnOp{Op: &pb.TxnOp_Delete{Delete: &pb.DeleteRequest{Key: []byte(key)}}}
}

func tGet(key string) *pb.TxnOp {
	return &pb.TxnOp{Op: &pb.TxnOp_Get{Get: &pb.GetRequest{Key: []byte(key)}}}
}

func tDelPrefix(prefix string) *pb.TxnOp {
	return &pb.TxnOp{Op: &pb.TxnOp_DeletePrefix{DeletePrefix: &pb.DeletePrefixRequest{Prefix: []byte(prefix)}}}
}

func cmpVersion(key string, r pb.Compare_Result, v uint64) *pb.Compare {
	return &pb.Compare{Key: []byte(key), Result: r, Target: &pb.Compare_Version{Version: v}}
}

func repeatOps(n int, op func(i int) *pb.TxnOp) []*pb.TxnOp {
	out := make([]*pb.TxnOp, n)
	for i := range out {
		out[i] = op(i)
	}
	return out
}

func TestTxnValidation(t *testing.T) {
	n := &Node{cfg: DefaultConfig()}
	n.cfg.MaxTxnOps = 4
	n.cfg.MaxTxnBytes = 2048
	n.cfg.MaxValueSize = 512
	key := func(i int) string { return "/k/" + string(rune('a'+i)) }
	cases := []struct {
		name    string
		req     *pb.TxnRequest
		wantMsg string // "" = valid
	}{
		{"a txn with a compare per target and every op kind is valid", &pb.TxnRequest{
			Compares: []*pb.Compare{cmpVersion("/a", pb.Compare_GREATER, 0),
				{Key: []byte("/a"), Target: &pb.Compare_Exists{Exists: true}, Result: pb.Compare_NOT_EQUAL}},
			Success: []*pb.TxnOp{tPut("/a", "1"), tDel("/b"), tGet("/a"), tDelPrefix("/p/")},
			Failure: []*pb.TxnOp{tPut("/a", "2")}, // the other branch may touch the same key
		}, ""},
		{"an empty txn is valid", &pb.TxnRequest{}, ""},
		{"too many compares", &pb.TxnRequest{Compares: []*pb.Compare{cmpVersion("/a", 0, 0), cmpVersion("/a", 0, 0),
			cmpVersion("/a", 0, 0), cmpVersion("/a", 0, 0), cmpVersion("/a", 0, 0)}}, "txn has 5 compares; at most 4 are allowed (--max-txn-ops)"},
		{"too many success ops", &pb.TxnRequest{Success: repeatOps(5, func(i int) *pb.TxnOp { return tPut(key(i), "v") })},
			"txn success branch has 5 ops; at most 4 are allowed (--max-txn-ops)"},
		{"too many failure ops", &pb.TxnRequest{Failure: repeatOps(5, func(i int) *pb.TxnOp { return tGet("/a") })},
			"txn failure branch has 5 ops; at most 4 are allowed (--max-txn-ops)"},
		{"too many bytes", &pb.TxnRequest{Success: repeatOps(4, func(i int) *pb.TxnOp { return tPut(key(i), strings.Repeat("x", 500)) })},
			"exceeds the limit of 2048 bytes (--max-txn-bytes)"},
		{"value over the value limit", &pb.TxnRequest{Success: []*pb.TxnOp{tPut("/a", strings.Repeat("x", 513))}},
			"txn success[0]: value of 513 bytes exceeds the limit of 512 bytes"},
		{"compare value over the value limit", &pb.TxnRequest{Compares: []*pb.Compare{{Key: []byte("/a"),
			Target: &pb.Compare_Value{Value: bytes.Repeat([]byte("x"), 513)}}}}, "txn compares[0]: compare value of 513 bytes"},
		{"compare key breaking the key rule", &pb.TxnRequest{Compares: []*pb.Compare{cmpVersion("nokey", 0, 0)}}, "txn compares[0]: "},
		{"compare without a target", &pb.TxnRequest{Compares: []*pb.Compare{{Key: []byte("/a")}}}, "has no target"},
		{"exists with LESS", &pb.TxnRequest{Compares: []*pb.Compare{{Key: []byte("/a"), Result: pb.Compare_LESS,
			Target: &pb.Compare_Exists{Exists: true}}}}, "an exists compare takes EQUAL or NOT_EQUAL, not LESS"},
		{"unknown compare result", &pb.TxnRequest{Compares: []*pb.Compare{cmpVersion("/a", 9, 0)}}, "unknown compare result 9"},
		{"empty op", &pb.TxnRequest{Success: []*pb.TxnOp{{}}}, "txn success[0]: empty op"},
		{"put key breaking the key rule", &pb.TxnRequest{Failure: []*pb.TxnOp{tPut("/a", "1"), tPut("a", "1")}}, "txn failure[1]: "},
		{"delete_prefix breaking the prefix rule", &pb.TxnRequest{Success: []*pb.TxnOp{tDelPrefix("/p")}}, "txn success[0]: "},
		{"put with a condition", &pb.TxnRequest{Success: []*pb.TxnOp{{Op: &pb.TxnOp_Put{Put: &pb.PutRequest{Key: []byte("/a"),
			Condition: &pb.Condition{Require: &pb.Condition_Absent{Absent: true}}}}}}}, "a put inside a txn cannot carry a condition"},
		{"delete with a condition", &pb.TxnRequest{Success: []*pb.TxnOp{{Op: &pb.TxnOp_Delete{Delete: &pb.DeleteRequest{Key: []byte("/a"),
			Condition: &pb.Condition{Require: &pb.Condition_ModRevision{ModRevision: 3}}}}}}}, "a delete inside a txn cannot carry a condition"},
		{"a key mutated twice", &pb.TxnRequest{Success: []*pb.TxnOp{tPut("/a", "1"), tGet("/a"), tDel("/a")}},
			`txn success[2]: mutates "/a", which success[0] already mutates`},
		{"a key under a deleted prefix", &pb.TxnRequest{Success: []*pb.TxnOp{tDelPrefix("/p/"), tPut("/p/x", "1")}},
			`txn success[1]: mutates "/p/x", under the prefix "/p/" that success[0] deletes`},
		{"a prefix holding a mutated key", &pb.TxnRequest{Failure: []*pb.TxnOp{tPut("/p/q/x", "1"), tDelPrefix("/p/")}},
			`txn failure[1]: deletes the prefix "/p/", which holds "/p/q/x" that failure[0] mutates`},
		{"overlapping prefixes", &pb.TxnRequest{Success: []*pb.TxnOp{tDelPrefix("/p/q/"), tDelPrefix("/p/")}},
			`txn success[1]: deletes the prefix "/p/", which overlaps the prefix "/p/q/" that success[0] deletes`},
		{"a get under a deleted prefix is fine", &pb.TxnRequest{Success: []*pb.TxnOp{tDelPrefix("/p/"), tGet("/p/x")}}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := n.checkTxn(tc.req)
			if tc.wantMsg == "" {
				if err != nil {
					t.Fatalf("refused a valid txn: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted; want an error containing %q", tc.wantMsg)
			}
			if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("error %q (invalid argument: %v), want INVALID_ARGUMENT containing %q", err, errors.Is(err, ErrInvalidArgument), tc.wantMsg)
			}
		})
	}
}

func TestTxnAppliesThroughTheLog(t *testing.T) {
	n := openSingle(t, t.TempDir(), freeAddr(t))
	defer n.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := n.Put(ctx, []byte("/acct/a"), []byte("10"), WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	before := n.fsm.Applied()
	if _, err := n.Txn(ctx, &pb.TxnRequest{Success: []*pb.TxnOp{tPut("/acct/a", "1"), tDel("/acct/a")}}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("txn mutating a key twice: %v, want invalid argument", err)
	}
	if got := n.fsm.Applied(); got != before {
		t.Fatalf("a refused txn moved the applied index from %d to %d", before, got)
	}
	r, err := n.Txn(ctx, &pb.TxnRequest{
		Compares: []*pb.Compare{{Key: []byte("/acct/a"), Target: &pb.Compare_Value{Value: []byte("10")}}},
		Success:  []*pb.TxnOp{tPut("/acct/a", "7"), tPut("/acct/b", "3"), tGet("/acct/b")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Succeeded || len(r.Ops) != 3 || r.Ops[2].KV == nil || string(r.Ops[2].KV.Value) != "3" {
		t.Fatalf("txn result %+v, want success with the get seeing \"3\"", r)
	}
	for _, k := range []string{"/acct/a", "/acct/b"} {
		kv, _, err := n.Get(ctx, []byte(k), Linearizable)
		if err != nil || kv == nil || kv.ModRevision != r.Revision {
			t.Fatalf("%s = %+v (%v), want mod revision %d", k, kv, err, r.Revision)
		}
	}
}

// TestTxnResponseTooLargeIsRefused: a Txn whose gets and prev values could
// not fit in a response is refused before proposing (before, it was applied
// and its client told only that the response failed).
func TestTxnResponseTooLargeIsRefused(t *testing.T) {
	n := openSingle(t, t.TempDir(), freeAddr(t))
	defer n.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	big := strings.Repeat("x", 900<<10)
	for _, k := range []string{"/big/1", "/big/2", "/big/3"} {
		if _, err := n.Put(ctx, []byte(k), []byte(big), WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	prevPut := func(k string) *pb.TxnOp {
		return &pb.TxnOp{Op: &pb.TxnOp_Put{Put: &pb.PutRequest{Key: []byte(k), Value: []byte("a"), PrevKv: true}}}
	}
	prevPrefix := &pb.TxnOp{Op: &pb.TxnOp_DeletePrefix{DeletePrefix: &pb.DeletePrefixRequest{Prefix: []byte("/big/"), PrevKv: true}}}
	for name, req := range map[string]*pb.TxnRequest{
		"three gets":                 {Success: []*pb.TxnOp{tGet("/big/1"), tGet("/big/2"), tGet("/big/3")}},
		"three prev values":          {Failure: []*pb.TxnOp{prevPut("/big/1"), prevPut("/big/2"), prevPut("/big/3")}},
		"a prefix delete with prevs": {Success: []*pb.TxnOp{prevPrefix}},
		"gets of what it puts":       {Success: []*pb.TxnOp{tGet("/big/1"), tGet("/big/2"), tPut("/new/1", big[:500<<10]), tGet("/new/1")}},
	} {
		before := n.fsm.Applied()
		if _, err := n.Txn(ctx, req); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "response limit") {
			t.Errorf("%s: %v, want INVALID_ARGUMENT naming the response limit", name, err)
		}
		if got := n.fsm.Applied(); got != before {
			t.Errorf("%s: the refused txn moved the applied index from %d to %d", name, before, got)
		}
	}
	if _, err := n.Txn(ctx, &pb.TxnRequest{Success: []*pb.TxnOp{tGet("/big/1"), tGet("/big/2")}}); err != nil {
		t.Fatalf("two gets of 900 KiB: %v, want them served", err)
	}
}
