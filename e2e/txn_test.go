package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftwatch/raftwatch/client"
	pb "github.com/raftwatch/raftwatch/proto"
)

// TestTxn runs every txn property on one three-process cluster, started
// with small txn limits so the limits are checked through the serve flags.
func TestTxn(t *testing.T) {
	c := startCluster(t, "--max-txn-ops", "16", "--max-txn-bytes", "65536")
	t.Run("a txn reaches a follower's watcher at one revision, in op order, with prev values", func(t *testing.T) {
		txnSeenOnFollower(t, c)
	})
	t.Run("concurrent conditional transfers conserve the total at every revision", func(t *testing.T) {
		transfersConserveTheTotal(t, c)
	})
	t.Run("raftwatch txn end to end", func(t *testing.T) { cliTxn(t, c) })
	t.Run("bad txns are refused with INVALID_ARGUMENT and change nothing", func(t *testing.T) { badTxns(t, c) })
}

func txnSeenOnFollower(t *testing.T, c *testCluster) {
	f := c.followers()[0]
	wcl := c.client(f.clientAddr)
	w, err := wcl.Watch(ctxT(t, time.Minute), []byte("/w/"), client.WithPrefix(), client.WithPrevKV())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ch := collect(w)
	cl := c.client()
	for _, kv := range [][2]string{{"/w/b", "b0"}, {"/w/p/2", "p2"}, {"/w/p/1", "p1"}, {"/w/c", "c0"}} {
		if _, err := cl.Put(ctxT(t, 5*time.Second), []byte(kv[0]), []byte(kv[1])); err != nil {
			t.Fatal(err)
		}
		nextData(t, ch, 10*time.Second)
	}
	r, err := cl.Txn(ctxT(t, 5*time.Second)).
		If(client.Compare(client.Value([]byte("/w/b")), "=", "b0"), client.Absent([]byte("/w/a"))).
		Then(client.OpPut([]byte("/w/a"), []byte("a1")), client.OpDelete([]byte("/w/b"), client.WithPrevKV()),
			client.OpPut([]byte("/w/c"), []byte("c1")), client.OpGet([]byte("/w/c")),
			client.OpDeletePrefix([]byte("/w/p/"), client.WithPrevKV())).
		Commit()
	if err != nil {
		t.Fatal(err)
	}
	if !r.Succeeded || len(r.Results) != 5 {
		t.Fatalf("txn response %v, want success with 5 results", r)
	}
	if got := r.Results[1].GetDelete().GetPrevKv().GetValue(); string(got) != "b0" {
		t.Errorf("delete /w/b prev_kv %q, want b0", got)
	}
	if got := r.Results[3].GetGet().GetKv(); string(got.GetValue()) != "c1" || got.GetModRevision() != r.Revision {
		t.Errorf("get /w/c after the put in the branch: %v, want c1 at %d", got, r.Revision)
	}
	if dp := r.Results[4].GetDeletePrefix(); dp.GetDeleted() != 2 || len(dp.GetPrevKvs()) != 2 {
		t.Errorf("delete_prefix /w/p/: %v, want 2 deleted with their prev kvs", dp)
	}
	want := []struct {
		typ              pb.EventType
		key, value, prev string
	}{
		{pb.EventType_PUT, "/w/a", "a1", ""},
		{pb.EventType_DELETE, "/w/b", "", "b0"},
		{pb.EventType_PUT, "/w/c", "c1", "c0"},
		{pb.EventType_DELETE, "/w/p/1", "", "p1"},
		{pb.EventType_DELETE, "/w/p/2", "", "p2"},
	}
	for i, w := range want {
		ev := nextData(t, ch, 10*time.Second)
		if ev.Type != w.typ || string(ev.Key) != w.key || string(ev.Value) != w.value || ev.Revision != r.Revision ||
			ev.PrevValue == nil || string(ev.PrevValue) != w.prev {
			t.Fatalf("event %d: %s %s=%q prev %v rev %d, want %s %s=%q prev %q rev %d (the txn's)",
				i, ev.Type, ev.Key, ev.Value, ev.PrevValue, ev.Revision, w.typ, w.key, w.value, w.prev, r.Revision)
		}
	}
	// Nothing else came at or before the txn's revision: a marker write is
	// the next event.
	m, err := cl.Put(ctxT(t, 5*time.Second), []byte("/w/marker"), []byte("m"))
	if err != nil {
		t.Fatal(err)
	}
	if ev := nextData(t, ch, 10*time.Second); string(ev.Key) != "/w/marker" || ev.Revision != m.Revision {
		t.Fatalf("after the txn's events got %s %s at %d, want the marker at %d", ev.Type, ev.Key, ev.Revision, m.Revision)
	}
}

// transfersConserveTheTotal runs concurrent transfers between accounts,
// each a txn conditioned on both accounts' mod revisions, then checks the
// total at every revision the transfers produced, on a follower.
func transfersConserveTheTotal(t *testing.T, c *testCluster) {
	const (
		accounts  = 3
		initial   = 100
		workers   = 4
		perWorker = 15
	)
	cl := c.client()
	acct := func(i int) []byte { return []byte(fmt.Sprintf("/bank/%d", i)) }
	var first uint64
	for i := 0; i < accounts; i++ {
		r, err := cl.Put(ctxT(t, 5*time.Second), acct(i), []byte(strconv.Itoa(initial)))
		if err != nil {
			t.Fatal(err)
		}
		first = r.Revision // every account exists from the last one's creation on
	}
	var committed, conflicts atomic.Int64
	deadline := time.Now().Add(60 * time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for n := 0; n < perWorker && time.Now().Before(deadline); {
				from, to := acct((w+n)%accounts), acct((w+n+1)%accounts)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				a, err := cl.Get(ctx, from)
				var b *pb.GetResponse
				if err == nil {
					b, err = cl.Get(ctx, to)
				}
				if err != nil {
					cancel()
					errs <- err
					return
				}
				fa, _ := strconv.Atoi(string(a.Kv.Value))
				fb, _ := strconv.Atoi(string(b.Kv.Value))
				amount := 1 + (w+n)%7
				r, err := cl.Txn(ctx).
					If(client.Compare(client.ModRevision(from), "=", a.Kv.ModRevision),
						client.Compare(client.ModRevision(to), "=", b.Kv.ModRevision)).
					Then(client.OpPut(from, []byte(strconv.Itoa(fa-amount))), client.OpPut(to, []byte(strconv.Itoa(fb+amount)))).
					Commit()
				cancel()
				if err != nil {
					errs <- err
					return
				}
				if r.Succeeded {
					committed.Add(1)
					n++
				} else {
					conflicts.Add(1)
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("transfer: %v", err)
	}
	if committed.Load() == 0 {
		t.Fatal("no transfer committed")
	}
	t.Logf("%d transfers committed, %d refused by a changed mod revision", committed.Load(), conflicts.Load())
	last, err := cl.Get(ctxT(t, 5*time.Second), acct(0))
	if err != nil {
		t.Fatal(err)
	}
	f := c.followers()[0]
	kv := pb.NewKVClient(c.conn(f))
	for rev := first; rev <= last.Revision; rev++ {
		r, err := kv.List(ctxT(t, 5*time.Second), &pb.ListRequest{Prefix: []byte("/bank/"), Revision: rev, Consistency: pb.Consistency_SERIALIZABLE})
		if err != nil {
			t.Fatalf("list at %d: %v", rev, err)
		}
		sum := 0
		for _, kv := range r.Kvs {
			v, _ := strconv.Atoi(string(kv.Value))
			sum += v
		}
		if len(r.Kvs) != accounts || sum != accounts*initial {
			t.Fatalf("at revision %d the accounts %v sum to %d, want %d", rev, r.Kvs, sum, accounts*initial)
		}
	}
}

func cliTxn(t *testing.T, c *testCluster) {
	follower := c.followers()[0]
	eps := follower.clientAddr // a write through a follower follows its hint
	if _, e, code := cli(t, "put", "/cli/a", "10", "--endpoints", eps); code != 0 {
		t.Fatalf("put: %d %s", code, e)
	}
	in := `value("/cli/a") = "10"
absent("/cli/b")

put /cli/a 7 --prev-kv
put /cli/b "three and more"
get /cli/b

put /cli/failed yes
`
	o, e, code := cliIn(t, []byte(in), "txn", "--endpoints", eps)
	if code != 0 {
		t.Fatalf("txn: exit %d, %s %s", code, o, e)
	}
	for _, want := range []string{"SUCCESS (revision ", `put /cli/a 7 --prev-kv: OK (mod revision `, `previous: "10"`,
		`get /cli/b: "three and more"`} {
		if !strings.Contains(o, want) {
			t.Errorf("txn output lacks %q:\n%s", want, o)
		}
	}
	if o, _, _ := cli(t, "get", "/cli/b", "--endpoints", eps); strings.TrimSpace(o) != "three and more" {
		t.Errorf("/cli/b = %q after the txn", o)
	}
	// The same txn again: the compares fail, the failure branch runs, exit 2.
	o, e, code = cliIn(t, []byte(in), "txn", "--json", "--endpoints", eps)
	if code != 2 {
		t.Fatalf("txn whose compares fail: exit %d %s %s, want 2", code, o, e)
	}
	var resp struct {
		Revision  uint64           `json:"revision"`
		Succeeded bool             `json:"succeeded"`
		Results   []map[string]any `json:"results"`
	}
	mustJSON(t, "txn --json", strings.TrimSpace(o), &resp)
	if resp.Succeeded || len(resp.Results) != 1 || resp.Results[0]["op"] != "put" || resp.Revision == 0 {
		t.Fatalf("txn --json = %+v, want the failure branch's one put", resp)
	}
	if o, _, _ := cli(t, "get", "/cli/failed", "--endpoints", eps); strings.TrimSpace(o) != "yes" {
		t.Errorf("/cli/failed = %q, want the failure branch's write", o)
	}
	// Bad input: a clear error naming the line, exit 1, nothing applied.
	before, err := c.status(c.waitLeader())
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct{ in, want string }{
		{"mod(\"/cli/a\") >= 3\n\nput /cli/a 1\n", `txn line 1`},
		{"\nput /cli/a 1\ndel /cli/a\n", `mutates "/cli/a", which success[0] already mutates`},
		{"\nput cli/a 1\n", "(InvalidArgument)"},
	} {
		o, e, code := cliIn(t, []byte(bad.in), "txn", "--endpoints", eps)
		if code != 1 || !strings.Contains(e, bad.want) {
			t.Errorf("txn %q: exit %d, stdout %q stderr %q; want exit 1 and %q", bad.in, code, o, e, bad.want)
		}
	}
	after, err := c.status(c.waitLeader())
	if err != nil {
		t.Fatal(err)
	}
	if after.CommitIndex != before.CommitIndex {
		t.Errorf("bad txns moved the commit index from %d to %d", before.CommitIndex, after.CommitIndex)
	}
	if o, _, _ := cli(t, "txn", "--help"); !strings.Contains(o, `value("/k") = "x"`) || !strings.Contains(o, "| raftwatch txn") {
		t.Errorf("txn --help does not explain the format with an example:\n%s", o)
	}
}

func badTxns(t *testing.T, c *testCluster) {
	leader := c.waitLeader()
	kv := pb.NewKVClient(c.conn(leader))
	if _, err := kv.Put(ctxT(t, 5*time.Second), &pb.PutRequest{Key: []byte("/bad/k"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	before, err := c.status(leader)
	if err != nil {
		t.Fatal(err)
	}
	put := func(k, v string) *pb.TxnOp {
		return &pb.TxnOp{Op: &pb.TxnOp_Put{Put: &pb.PutRequest{Key: []byte(k), Value: []byte(v)}}}
	}
	delPrefix := func(p string) *pb.TxnOp {
		return &pb.TxnOp{Op: &pb.TxnOp_DeletePrefix{DeletePrefix: &pb.DeletePrefixRequest{Prefix: []byte(p)}}}
	}
	many := make([]*pb.TxnOp, 17)
	for i := range many {
		many[i] = put(fmt.Sprintf("/bad/%d", i), "v")
	}
	cases := []struct {
		name string
		req  *pb.TxnRequest
		msg  string
	}{
		{"a key put twice", &pb.TxnRequest{Success: []*pb.TxnOp{put("/bad/k", "1"), put("/bad/k", "2")}},
			`txn success[1]: mutates "/bad/k", which success[0] already mutates`},
		{"a put under a deleted prefix", &pb.TxnRequest{Failure: []*pb.TxnOp{delPrefix("/bad/"), put("/bad/k", "1")}},
			`txn failure[1]: mutates "/bad/k", under the prefix "/bad/"`},
		{"overlapping prefixes", &pb.TxnRequest{Success: []*pb.TxnOp{delPrefix("/bad/"), delPrefix("/")}}, "overlaps the prefix"},
		{"more ops than --max-txn-ops", &pb.TxnRequest{Success: many}, "txn success branch has 17 ops; at most 16 are allowed (--max-txn-ops)"},
		{"more bytes than --max-txn-bytes", &pb.TxnRequest{Success: []*pb.TxnOp{put("/bad/k", strings.Repeat("x", 70000))}},
			"exceeds the limit of 65536 bytes (--max-txn-bytes)"},
		{"a compare without a target", &pb.TxnRequest{Compares: []*pb.Compare{{Key: []byte("/bad/k")}}, Success: []*pb.TxnOp{put("/bad/k", "1")}},
			"has no target"},
		{"a put with a condition", &pb.TxnRequest{Success: []*pb.TxnOp{{Op: &pb.TxnOp_Put{Put: &pb.PutRequest{Key: []byte("/bad/k"),
			Condition: &pb.Condition{Require: &pb.Condition_Absent{Absent: true}}}}}}}, "cannot carry a condition"},
		{"a key breaking the key rule", &pb.TxnRequest{Success: []*pb.TxnOp{put("bad", "1")}}, "must start with '/'"},
		{"an empty op", &pb.TxnRequest{Success: []*pb.TxnOp{put("/bad/k", "1"), {}}}, "txn success[1]: empty op"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := kv.Txn(ctxT(t, 5*time.Second), tc.req)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.msg) {
				t.Fatalf("got %v, want INVALID_ARGUMENT containing %q", err, tc.msg)
			}
		})
	}
	after, err := c.status(leader)
	if err != nil {
		t.Fatal(err)
	}
	if after.FsmIndex != before.FsmIndex {
		t.Fatalf("refused txns changed state: fsm index %d -> %d", before.FsmIndex, after.FsmIndex)
	}
	r, err := kv.Get(ctxT(t, 5*time.Second), &pb.GetRequest{Key: []byte("/bad/k")})
	if err != nil || string(r.Kv.GetValue()) != "v" {
		t.Fatalf("/bad/k = %v (%v), want v unchanged", r, err)
	}
}
