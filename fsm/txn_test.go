package fsm

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"

	pb "github.com/raftwatch/raftwatch/proto"
	"github.com/raftwatch/raftwatch/watch"
)

func txnOp(t *pb.TxnRequest) *pb.Op { return &pb.Op{Kind: pb.Op_TXN, Txn: t} }

func tPut(key, value string) *pb.TxnOp {
	return &pb.TxnOp{Op: &pb.TxnOp_Put{Put: &pb.PutRequest{Key: []byte(key), Value: []byte(value), PrevKv: true}}}
}

func tDel(key string) *pb.TxnOp {
	return &pb.TxnOp{Op: &pb.TxnOp_Delete{Delete: &pb.DeleteRequest{Key: []byte(key), PrevKv: true}}}
}

func tGet(key string) *pb.TxnOp {
	return &pb.TxnOp{Op: &pb.TxnOp_Get{Get: &pb.GetRequest{Key: []byte(key)}}}
}

func tDelPrefix(prefix string, prev bool) *pb.TxnOp {
	return &pb.TxnOp{Op: &pb.TxnOp_DeletePrefix{DeletePrefix: &pb.DeletePrefixRequest{Prefix: []byte(prefix), PrevKv: prev}}}
}

func cmpMod(key string, r pb.Compare_Result, rev uint64) *pb.Compare {
	return &pb.Compare{Key: []byte(key), Result: r, Target: &pb.Compare_ModRevision{ModRevision: rev}}
}

func txnResult(t *testing.T, r interface{}, op int) *TxnResult {
	t.Helper()
	res := result(t, r).Ops[op]
	if res.Txn == nil {
		t.Fatalf("op %d: result %+v has no Txn result", op, res)
	}
	return res.Txn
}

func TestTxnMutationsShareOneRevisionAndOneBatch(t *testing.T) {
	sink := &recordingSink{wantPrev: true}
	f := openTest(t, filepath.Join(t.TempDir(), "state.db"), sink)
	f.ApplyBatch([]*raft.Log{entry(t, 1, put("/c", "old-c"), put("/b", "old-b"))})
	before := len(sink.batches)
	tx := &pb.TxnRequest{
		Compares: []*pb.Compare{cmpMod("/c", pb.Compare_EQUAL, 1)},
		Success:  []*pb.TxnOp{tPut("/b", "new-b"), tDel("/c"), tPut("/a", "new-a")},
		Failure:  []*pb.TxnOp{tPut("/failed", "x")},
	}
	// A plain put of another key shares the entry; it is the entry's first event.
	r := f.ApplyBatch([]*raft.Log{entry(t, 2, put("/z", "z"), txnOp(tx))})
	tr := txnResult(t, r[0], 1)
	if !tr.Succeeded || len(tr.Ops) != 3 {
		t.Fatalf("txn result %+v, want the success branch with 3 results", tr)
	}
	if tr.Ops[0].Kind != TxnPut || tr.Ops[0].ModRevision != 2 || tr.Ops[0].Prev == nil || string(tr.Ops[0].Prev.Value) != "old-b" {
		t.Errorf("put /b result %+v, want mod revision 2 and prev \"old-b\"", tr.Ops[0])
	}
	if tr.Ops[1].Kind != TxnDelete || !tr.Ops[1].Deleted || tr.Ops[1].Prev == nil || string(tr.Ops[1].Prev.Value) != "old-c" {
		t.Errorf("delete /c result %+v, want deleted with prev \"old-c\"", tr.Ops[1])
	}
	if tr.Ops[2].Kind != TxnPut || tr.Ops[2].Prev != nil {
		t.Errorf("put /a result %+v, want no prev (the key was absent)", tr.Ops[2])
	}
	if got := len(sink.batches) - before; got != 1 {
		t.Fatalf("the entry was published in %d batches, want 1", got)
	}
	var got []hev
	for _, e := range sink.batches[len(sink.batches)-1].Events {
		got = append(got, toHev(t, &e))
	}
	want := []hev{
		{watch.Put, "/z", "z", 2, 1, true, ""},
		{watch.Put, "/b", "new-b", 2, 2, true, "old-b"},
		{watch.Delete, "/c", "", 2, 0, true, "old-c"},
		{watch.Put, "/a", "new-a", 2, 1, true, ""},
	}
	sameEvents(t, "published events", got, want)
	sameEvents(t, "history", readHistory(t, f, 2, 2, true), want)
	if kv := mustGet(t, f, "/failed"); kv != nil {
		t.Errorf("the failure branch ran too: /failed = %+v", kv)
	}
	for _, k := range []string{"/a", "/b"} {
		if kv := mustGet(t, f, k); kv == nil || kv.ModRevision != 2 {
			t.Errorf("%s = %+v, want mod revision 2 (the txn's entry)", k, kv)
		}
	}
}

func TestTxnFailureBranchRunsWhenACompareFails(t *testing.T) {
	sink := &recordingSink{}
	f := openTest(t, filepath.Join(t.TempDir(), "state.db"), sink)
	f.ApplyBatch([]*raft.Log{entry(t, 1, put("/k", "v"))})
	tx := &pb.TxnRequest{
		// The first compare holds, the second does not: all must hold.
		Compares: []*pb.Compare{cmpMod("/k", pb.Compare_EQUAL, 1), cmpMod("/k", pb.Compare_GREATER, 1)},
		Success:  []*pb.TxnOp{tPut("/k", "success")},
		Failure:  []*pb.TxnOp{tGet("/k"), tPut("/other", "failure")},
	}
	tr := txnResult(t, f.ApplyBatch([]*raft.Log{entry(t, 2, txnOp(tx))})[0], 0)
	if tr.Succeeded || len(tr.Ops) != 2 {
		t.Fatalf("txn result %+v, want the failure branch with 2 results", tr)
	}
	if tr.Ops[0].Kind != TxnGet || tr.Ops[0].KV == nil || string(tr.Ops[0].KV.Value) != "v" {
		t.Errorf("get /k result %+v, want \"v\"", tr.Ops[0])
	}
	if kv := mustGet(t, f, "/k"); string(kv.Value) != "v" {
		t.Errorf("/k = %q, want unchanged \"v\"", kv.Value)
	}
	if kv := mustGet(t, f, "/other"); kv == nil || string(kv.Value) != "failure" {
		t.Errorf("/other = %+v, want \"failure\"", kv)
	}
}

func TestCompareSemantics(t *testing.T) {
	f := openTest(t, filepath.Join(t.TempDir(), "state.db"), &recordingSink{})
	// /k: created at 1, modified at 3, version 2, value "m".
	f.ApplyBatch([]*raft.Log{entry(t, 1, put("/k", "a")), entry(t, 2, put("/x", "x")), entry(t, 3, put("/k", "m"))})
	value := func(v string) *pb.Compare_Value { return &pb.Compare_Value{Value: []byte(v)} }
	const (
		eq = pb.Compare_EQUAL
		ne = pb.Compare_NOT_EQUAL
		lt = pb.Compare_LESS
		gt = pb.Compare_GREATER
	)
	cases := []struct {
		name   string
		key    string
		result pb.Compare_Result
		target any
		want   bool
	}{
		{"value equal", "/k", eq, value("m"), true},
		{"value not equal", "/k", ne, value("m"), false},
		{"value less is byte-wise", "/k", lt, value("n"), true},
		{"value greater is byte-wise", "/k", gt, value("l"), true},
		{"value shorter is less", "/k", gt, value("mm"), false},
		{"value of an absent key is false (equal)", "/none", eq, value(""), false},
		{"value of an absent key is false (not equal)", "/none", ne, value("m"), false},
		{"version equal", "/k", eq, &pb.Compare_Version{Version: 2}, true},
		{"version greater", "/k", gt, &pb.Compare_Version{Version: 1}, true},
		{"version of an absent key is 0", "/none", eq, &pb.Compare_Version{Version: 0}, true},
		{"create_revision equal", "/k", eq, &pb.Compare_CreateRevision{CreateRevision: 1}, true},
		{"create_revision not equal", "/k", ne, &pb.Compare_CreateRevision{CreateRevision: 3}, true},
		{"create_revision of an absent key is 0", "/none", lt, &pb.Compare_CreateRevision{CreateRevision: 1}, true},
		{"mod_revision equal", "/k", eq, &pb.Compare_ModRevision{ModRevision: 3}, true},
		{"mod_revision less", "/k", lt, &pb.Compare_ModRevision{ModRevision: 3}, false},
		{"mod_revision greater", "/k", gt, &pb.Compare_ModRevision{ModRevision: 2}, true},
		{"mod_revision of an absent key is 0", "/none", eq, &pb.Compare_ModRevision{ModRevision: 0}, true},
		{"lease of a key without one is 0", "/k", eq, &pb.Compare_Lease{Lease: 0}, true},
		{"lease of an absent key is 0", "/none", ne, &pb.Compare_Lease{Lease: 7}, true},
		{"exists", "/k", eq, &pb.Compare_Exists{Exists: true}, true},
		{"exists on an absent key", "/none", eq, &pb.Compare_Exists{Exists: true}, false},
		{"absent (exists = false)", "/none", eq, &pb.Compare_Exists{Exists: false}, true},
		{"exists != true on a present key", "/k", ne, &pb.Compare_Exists{Exists: true}, false},
		{"exists with less is false", "/k", lt, &pb.Compare_Exists{Exists: true}, false},
		{"no target is false", "/k", eq, nil, false},
	}
	index := uint64(4)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := &pb.Compare{Key: []byte(tc.key), Result: tc.result}
			switch tg := tc.target.(type) {
			case *pb.Compare_Value:
				c.Target = tg
			case *pb.Compare_Version:
				c.Target = tg
			case *pb.Compare_CreateRevision:
				c.Target = tg
			case *pb.Compare_ModRevision:
				c.Target = tg
			case *pb.Compare_Lease:
				c.Target = tg
			case *pb.Compare_Exists:
				c.Target = tg
			}
			tx := &pb.TxnRequest{Compares: []*pb.Compare{c}}
			tr := txnResult(t, f.ApplyBatch([]*raft.Log{entry(t, index, txnOp(tx))})[0], 0)
			index++
			if tr.Succeeded != tc.want {
				t.Fatalf("compare %v on %s: held = %v, want %v", c, tc.key, tr.Succeeded, tc.want)
			}
		})
	}
}

func TestConditionIsTheSameAsItsCompares(t *testing.T) {
	// Each single-key condition and the Txn that spells it out must agree on
	// every state of the key: present at mod revision 1, and absent.
	modRev := func(n uint64) *pb.Condition { return &pb.Condition{Require: &pb.Condition_ModRevision{ModRevision: n}} }
	absent := &pb.Condition{Require: &pb.Condition_Absent{Absent: true}}
	exists := func(b bool) *pb.Compare {
		return &pb.Compare{Key: []byte("/k"), Target: &pb.Compare_Exists{Exists: b}}
	}
	cases := []struct {
		name string
		cond *pb.Condition
		cmps []*pb.Compare
	}{
		{"mod_revision 1", modRev(1), []*pb.Compare{exists(true), cmpMod("/k", pb.Compare_EQUAL, 1)}},
		{"mod_revision 0 never holds", modRev(0), []*pb.Compare{exists(true), cmpMod("/k", pb.Compare_EQUAL, 0)}},
		{"absent", absent, []*pb.Compare{exists(false)}},
	}
	for _, tc := range cases {
		for _, present := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/present=%v", tc.name, present), func(t *testing.T) {
				f := openTest(t, filepath.Join(t.TempDir(), "state.db"), &recordingSink{})
				seed := put("/k", "v")
				if !present {
					seed = put("/other", "v")
				}
				f.ApplyBatch([]*raft.Log{entry(t, 1, seed)})
				op := &pb.Op{Kind: pb.Op_PUT, Key: []byte("/k"), Value: []byte("c"), Condition: tc.cond}
				tx := &pb.TxnRequest{Compares: tc.cmps}
				r := result(t, f.ApplyBatch([]*raft.Log{entry(t, 2, txnOp(tx), op)})[0])
				if r.Ops[0].Txn.Succeeded != r.Ops[1].Succeeded {
					t.Fatalf("txn held = %v but the condition held = %v", r.Ops[0].Txn.Succeeded, r.Ops[1].Succeeded)
				}
			})
		}
	}
}

func TestTxnGetSeesTheBranchsEarlierOps(t *testing.T) {
	f := openTest(t, filepath.Join(t.TempDir(), "state.db"), &recordingSink{})
	f.ApplyBatch([]*raft.Log{entry(t, 1, put("/gone", "g"))})
	tx := &pb.TxnRequest{Success: []*pb.TxnOp{
		tGet("/k"), tPut("/k", "fresh"), tGet("/k"), tDel("/gone"), tGet("/gone"),
	}}
	tr := txnResult(t, f.ApplyBatch([]*raft.Log{entry(t, 2, txnOp(tx))})[0], 0)
	if tr.Ops[0].KV != nil {
		t.Errorf("get before the put = %+v, want absent", tr.Ops[0].KV)
	}
	if kv := tr.Ops[2].KV; kv == nil || string(kv.Value) != "fresh" || kv.ModRevision != 2 || kv.Version != 1 {
		t.Errorf("get after the put = %+v, want \"fresh\" at mod revision 2, version 1", kv)
	}
	if tr.Ops[4].KV != nil {
		t.Errorf("get after the delete = %+v, want absent", tr.Ops[4].KV)
	}
}

func TestTxnDeletePrefixDeletesInKeyOrder(t *testing.T) {
	sink := &recordingSink{wantPrev: true}
	f := openTest(t, filepath.Join(t.TempDir(), "state.db"), sink)
	f.ApplyBatch([]*raft.Log{entry(t, 1, put("/p/b", "2"), put("/p/a", "1"), put("/q/x", "q"), put("/p", "not-under"), put("/p/c/d", "3"))})
	before := len(sink.batches)
	tx := &pb.TxnRequest{Success: []*pb.TxnOp{tDelPrefix("/p/", true), tDelPrefix("/empty/", true)}}
	tr := txnResult(t, f.ApplyBatch([]*raft.Log{entry(t, 2, txnOp(tx))})[0], 0)
	dp := tr.Ops[0]
	if dp.Kind != TxnDeletePrefix || dp.DeletedCount != 3 || len(dp.Prevs) != 3 {
		t.Fatalf("delete_prefix result %+v, want 3 deleted with 3 prevs", dp)
	}
	for i, k := range []string{"/p/a", "/p/b", "/p/c/d"} {
		if string(dp.Prevs[i].Key) != k {
			t.Errorf("prev %d is %s, want %s (key order)", i, dp.Prevs[i].Key, k)
		}
	}
	if tr.Ops[1].DeletedCount != 0 {
		t.Errorf("delete_prefix of an empty prefix deleted %d", tr.Ops[1].DeletedCount)
	}
	var got []hev
	for _, b := range sink.batches[before:] {
		for _, e := range b.Events {
			got = append(got, toHev(t, &e))
		}
	}
	sameEvents(t, "events", got, []hev{
		{watch.Delete, "/p/a", "", 2, 0, true, "1"},
		{watch.Delete, "/p/b", "", 2, 0, true, "2"},
		{watch.Delete, "/p/c/d", "", 2, 0, true, "3"},
	})
	for k, want := range map[string]bool{"/p/a": false, "/p/b": false, "/p/c/d": false, "/q/x": true, "/p": true} {
		if kv := mustGet(t, f, k); (kv != nil) != want {
			t.Errorf("%s present = %v, want %v", k, kv != nil, want)
		}
	}
}

// TestHistoryAndListStayRightAcrossTxns applies entries mixing plain writes,
// txns and prefix deletes, records the whole state after each, and checks
// that a List at every past revision rebuilds that state, and that history
// replays every mutation with the value and previous value the states say.
func TestHistoryAndListStayRightAcrossTxns(t *testing.T) {
	f := openTest(t, filepath.Join(t.TempDir(), "state.db"), &recordingSink{})
	entries := [][]*pb.Op{
		{put("/d/a", "a1"), put("/d/b", "b1"), put("/e", "e1")},
		{txnOp(&pb.TxnRequest{Success: []*pb.TxnOp{tPut("/d/a", "a2"), tPut("/d/c", "c1"), tDel("/e")}})},
		{put("/e", "e2"), txnOp(&pb.TxnRequest{Success: []*pb.TxnOp{tDelPrefix("/d/", false), tPut("/f", "f1")}})},
		{txnOp(&pb.TxnRequest{Compares: []*pb.Compare{cmpMod("/f", pb.Compare_EQUAL, 99)},
			Failure: []*pb.TxnOp{tPut("/d/a", "a3"), tPut("/e", "e3"), tGet("/f")}})},
		{txnOp(&pb.TxnRequest{Success: []*pb.TxnOp{tDelPrefix("/d/", true), tDel("/f"), tPut("/g/1", "g")}})},
		{put("/d/a", "a4")},
	}
	states := map[uint64]map[string]KeyValue{0: {}}
	for i, ops := range entries {
		rev := uint64(i + 1)
		f.ApplyBatch([]*raft.Log{entry(t, rev, ops...)})
		p, err := f.List([]byte("/"), ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		states[rev] = map[string]KeyValue{}
		for _, kv := range p.KVs {
			states[rev][string(kv.Key)] = kv
		}
	}
	last := uint64(len(entries))
	for rev := uint64(1); rev < last; rev++ {
		p, err := f.List([]byte("/"), ListOptions{Revision: rev})
		if err != nil {
			t.Fatalf("list at %d: %v", rev, err)
		}
		if len(p.KVs) != len(states[rev]) {
			t.Errorf("list at %d has %d keys, want %d: %+v", rev, len(p.KVs), len(states[rev]), p.KVs)
		}
		for _, kv := range p.KVs {
			want, ok := states[rev][string(kv.Key)]
			if !ok || string(kv.Value) != string(want.Value) || kv.Version != want.Version ||
				kv.CreateRevision != want.CreateRevision || kv.ModRevision != want.ModRevision {
				t.Errorf("list at %d: %s = %+v, want %+v (present %v)", rev, kv.Key, kv, want, ok)
			}
		}
	}
	events := readHistory(t, f, 1, last, true)
	if len(events) != 17 {
		t.Errorf("history holds %d events, want 17: %v", len(events), events)
	}
	for _, e := range events {
		before, after := states[e.Revision-1][e.Key], states[e.Revision][e.Key]
		if e.Prev != string(before.Value) {
			t.Errorf("event %v: prev %q, want %q (the key at revision %d)", e, e.Prev, before.Value, e.Revision-1)
		}
		if e.Type == watch.Put && (e.Value != string(after.Value) || e.Version != after.Version) {
			t.Errorf("event %v: want value %q version %d (the key at revision %d)", e, after.Value, after.Version, e.Revision)
		}
	}
}

func TestTxnIsNotAppliedTwiceAfterReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	f, err := Open(path, &recordingSink{}, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	tx := entry(t, 1, txnOp(&pb.TxnRequest{Success: []*pb.TxnOp{tPut("/a", "1"), tPut("/b", "1")}}))
	f.ApplyBatch([]*raft.Log{tx})
	f.Close()
	sink := &recordingSink{}
	f = openTest(t, path, sink)
	// raft replays the entry after a restart that lost its applied index.
	f.ApplyBatch([]*raft.Log{tx})
	if kv := mustGet(t, f, "/a"); kv.Version != 1 {
		t.Errorf("/a version %d after the replay, want 1", kv.Version)
	}
	if n := len(sink.events()); n != 0 {
		t.Errorf("the replay published %d events, want none", n)
	}
}

func tPutL(key, value string, lease int64) *pb.TxnOp {
	return &pb.TxnOp{Op: &pb.TxnOp_Put{Put: &pb.PutRequest{Key: []byte(key), Value: []byte(value), Lease: lease}}}
}

// TestTxnLeaseRefusalChangesNothing: a branch whose put names a missing
// lease, or would take a lease past its key cap, is refused as a whole,
// even when its earlier ops were fine; a lease compare and a txn get see
// the key's lease.
func TestTxnLeaseRefusalChangesNothing(t *testing.T) {
	sink := &recordingSink{}
	f := openLeases(t, filepath.Join(t.TempDir(), "state.db"), sink, LeaseLimits{MaxKeysPerLease: 2}, &fakeClock{})
	apply1(t, f, 1, grant(7, 60))
	apply1(t, f, 2, putL("/held", "v", 7))
	before := len(sink.batches)

	for i, branch := range [][]*pb.TxnOp{
		{tPut("/a", "1"), tPutL("/b", "2", 99)},                            // lease 99 does not exist
		{tPutL("/c", "3", 7), tPutL("/d", "4", 7)},                         // lease 7 would hold 3 keys, cap 2
		{tPutL("/held", "w", 7), tPutL("/c", "3", 7), tPutL("/e", "5", 7)}, // /held stays; 2 new: 3 > 2
	} {
		idx := uint64(3 + i)
		res := apply1(t, f, idx, txnOp(&pb.TxnRequest{Success: branch})).Ops[0]
		if res.Err == nil {
			t.Fatalf("txn %d: result %+v, want a refusal", i, res)
		}
		for _, k := range []string{"/a", "/b", "/c", "/d", "/e"} {
			if kv, _, err := f.Get([]byte(k)); err != nil || kv != nil {
				t.Errorf("txn %d: %s = %+v (%v) after a refused txn, want absent", i, k, kv, err)
			}
		}
		if kv, _, _ := f.Get([]byte("/held")); kv == nil || string(kv.Value) != "v" {
			t.Errorf("txn %d: /held = %+v, want the untouched \"v\"", i, kv)
		}
	}
	for _, b := range sink.batches[before:] {
		if len(b.Events) != 0 {
			t.Errorf("a refused txn published events %+v", b.Events)
		}
	}

	// The lease is visible to compares and gets.
	cmpLease := &pb.Compare{Key: []byte("/held"), Result: pb.Compare_EQUAL, Target: &pb.Compare_Lease{Lease: 7}}
	res := apply1(t, f, 10, txnOp(&pb.TxnRequest{Compares: []*pb.Compare{cmpLease}, Success: []*pb.TxnOp{tGet("/held")}})).Ops[0]
	if res.Txn == nil || !res.Txn.Succeeded || res.Txn.Ops[0].KV == nil || res.Txn.Ops[0].KV.Lease != 7 {
		t.Fatalf("lease compare + get: %+v, want success and a get showing lease 7", res.Txn)
	}
}
