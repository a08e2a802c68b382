package server_test

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftwatch/raftwatch/client"
	"github.com/raftwatch/raftwatch/node"
	"github.com/raftwatch/raftwatch/nodetest"
	pb "github.com/raftwatch/raftwatch/proto"
	"github.com/raftwatch/raftwatch/server"
)

// single is a one-node cluster served in this process on loopback TCP.
type single struct {
	addr string
	kv   pb.KVClient
	cl   *client.Client
}

// startSingle opens a one-node cluster (tune adjusts its config), serves
// it on 127.0.0.1 and waits until it takes writes.
func startSingle(t *testing.T, tune func(*node.Config)) *single {
	t.Helper()
	n := nodetest.Start(t, tune)
	return &single{addr: n.ClientAddr, kv: pb.NewKVClient(n.Conn(t)), cl: n.Client(t)}
}

func (s *single) put(t *testing.T, key string, value []byte) uint64 {
	t.Helper()
	r, err := s.cl.Put(ctxT(t, 10*time.Second), []byte(key), value)
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	return r.Revision
}

// TestListOfMaxSizeValuesReturnsThemIntact: a prefix holding more than one
// message's worth (three 1 MiB values, the largest a node takes) is listed
// whole, every byte intact, by the Go client (e2e checks the CLI). Before
// paging, the node's one response was over gRPC's send bound:
// RESOURCE_EXHAUSTED.
func TestListOfMaxSizeValuesReturnsThemIntact(t *testing.T) {
	s := startSingle(t, nil)
	want := map[string][]byte{"/big/small": []byte("s")}
	for i, c := range []byte("abc") {
		v := bytes.Repeat([]byte{c}, node.DefaultMaxValueSize)
		v[0], v[len(v)-1] = byte(i), byte(i) // ends that tell the values apart
		want[fmt.Sprintf("/big/%d", i)] = v
	}
	for k, v := range want {
		s.put(t, k, v)
	}
	s.put(t, "/bigger", []byte("not under /big/"))

	check := func(how string, got map[string][]byte) {
		t.Helper()
		if !slices.Equal(slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want))) {
			t.Fatalf("%s: keys %q, want %q", how, slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
		}
		for k, v := range want {
			if !bytes.Equal(got[k], v) {
				t.Fatalf("%s: value of %s: %d bytes, differs from the %d put", how, k, len(got[k]), len(v))
			}
		}
	}

	r, err := s.cl.List(ctxT(t, 30*time.Second), []byte("/big/"))
	if err != nil {
		t.Fatalf("client List: %v", err)
	}
	got := map[string][]byte{}
	for _, kv := range r.Kvs {
		got[string(kv.Key)] = kv.Value
	}
	check("client List", got)
	if r.More {
		t.Fatal("client List says more keys follow")
	}
}

// writeLog records every acknowledged write with its revision, so the
// state at any revision can be replayed: the model a paged list is
// checked against.
type writeLog struct {
	mu     sync.Mutex
	writes []loggedWrite
}

type loggedWrite struct {
	rev        uint64
	key, value string
	deleted    bool
}

func (l *writeLog) add(w loggedWrite) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writes = append(l.writes, w)
}

// at returns the keys under prefix at rev as key -> value@mod_revision.
func (l *writeLog) at(prefix string, rev uint64) map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	ws := slices.Clone(l.writes)
	slices.SortStableFunc(ws, func(a, b loggedWrite) int { return cmp.Compare(a.rev, b.rev) })
	out := map[string]string{}
	for _, w := range ws {
		if w.rev > rev || !strings.HasPrefix(w.key, prefix) {
			continue
		}
		if w.deleted {
			delete(out, w.key)
		} else {
			out[w.key] = fmt.Sprintf("%s@%d", w.value, w.rev)
		}
	}
	return out
}

// kvsOf returns a list's pairs as key -> value@mod_revision.
func kvsOf(kvs []*pb.KeyValue) map[string]string {
	out := map[string]string{}
	for _, kv := range kvs {
		out[string(kv.Key)] = fmt.Sprintf("%s@%d", kv.Value, kv.ModRevision)
	}
	return out
}

// TestListPagesAreOneRevisionDespiteWritesBetweenThem: pages asked for
// with start_key and the first page's revision add up to the prefix at
// that revision (replayed from every acknowledged write), whatever is
// written, deleted or created in the range between pages and while a
// concurrent writer runs; with a small limit per page, and with pages
// bounded by size through the Go client's ListPages.
func TestListPagesAreOneRevisionDespiteWritesBetweenThem(t *testing.T) {
	s := startSingle(t, nil)
	var log writeLog
	put := func(ctx context.Context, key, value string) error {
		r, err := s.cl.Put(ctx, []byte(key), []byte(value))
		if err == nil {
			log.add(loggedWrite{rev: r.Revision, key: key, value: value})
		}
		return err
	}
	del := func(ctx context.Context, key string) error {
		r, err := s.cl.Delete(ctx, []byte(key))
		if err == nil && r.Deleted {
			log.add(loggedWrite{rev: r.Revision, key: key, deleted: true})
		}
		return err
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range 12 {
		must(put(ctxT(t, 10*time.Second), fmt.Sprintf("/pg/%02d", i), fmt.Sprint("v", i)))
	}

	// A concurrent writer on the same keys, bounded in time and count.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	writer := make(chan error, 1)
	go func() {
		for i := 0; i < 2000 && ctx.Err() == nil; i++ {
			if err := put(ctx, fmt.Sprintf("/pg/%02d", i%14), fmt.Sprint("w", i)); err != nil && ctx.Err() == nil {
				writer <- err
				return
			}
		}
		writer <- nil
	}()

	var got []*pb.KeyValue
	req := &pb.ListRequest{Prefix: []byte("/pg/"), Limit: 2}
	for page := 0; ; page++ {
		if page > 40 {
			t.Fatal("more than 40 pages of 2 for at most 14 keys")
		}
		r, err := s.kv.List(ctxT(t, 10*time.Second), req)
		if err != nil {
			t.Fatalf("page %d: %v", page, err)
		}
		if page == 0 {
			req.Revision = r.Revision
		}
		if r.Revision != req.Revision {
			t.Fatalf("page %d read at %d, asked %d", page, r.Revision, req.Revision)
		}
		got = append(got, r.Kvs...)
		if !r.More {
			break
		}
		req.StartKey = r.NextKey
		// Between pages: overwrite, delete and create in the range.
		must(put(ctxT(t, 10*time.Second), fmt.Sprintf("/pg/%02d", (page*5)%12), fmt.Sprint("between", page)))
		must(del(ctxT(t, 10*time.Second), fmt.Sprintf("/pg/%02d", (page*7+3)%12)))
		must(put(ctxT(t, 10*time.Second), fmt.Sprintf("/pg/%02d-new%d", page%12, page), "created between pages"))
	}
	cancel()
	if err := <-writer; err != nil {
		t.Fatalf("concurrent writer: %v", err)
	}
	want := log.at("/pg/", req.Revision)
	if g := kvsOf(got); !maps.Equal(g, want) || len(got) != len(g) {
		t.Fatalf("pages add up to\n %v\nwant the prefix at revision %d\n %v", g, req.Revision, want)
	}

	t.Run("pages bounded by size, through the client", func(t *testing.T) {
		// Values of 300 KiB: a page of ListPageBytes holds three.
		big := bytes.Repeat([]byte("x"), 300<<10)
		value := func(i int) []byte { return append([]byte(fmt.Sprint(i)), big...) }
		for i := range 10 {
			s.put(t, fmt.Sprintf("/pb/%02d", i), value(i))
		}
		var got []*pb.KeyValue
		var rev uint64
		pages := 0
		for page, err := range s.cl.ListPages(ctxT(t, 30*time.Second), []byte("/pb/")) {
			if err != nil {
				t.Fatal(err)
			}
			if pages == 0 {
				rev = page.Revision
			}
			if page.Revision != rev {
				t.Fatalf("page %d at revision %d, the first at %d", pages, page.Revision, rev)
			}
			size := 0
			for _, kv := range page.Kvs {
				size += len(kv.Key) + len(kv.Value)
			}
			if size > server.ListPageBytes {
				t.Fatalf("page %d holds %d bytes of keys and values, over %d", pages, size, server.ListPageBytes)
			}
			pages++
			got = append(got, page.Kvs...)
			// Between pages: overwrite, delete and create in the range.
			s.put(t, fmt.Sprintf("/pb/%02d", 9-pages), []byte("small now"))
			if _, err := s.cl.Delete(ctxT(t, 10*time.Second), []byte(fmt.Sprintf("/pb/%02d", 9-pages+1))); err != nil {
				t.Fatal(err)
			}
			s.put(t, fmt.Sprintf("/pb/%02d-new", pages), []byte("new"))
		}
		if pages < 4 {
			t.Fatalf("%d pages for 3 MiB of values, want at least 4", pages)
		}
		// Nothing was written under /pb/ between the last put above and
		// the first page: the prefix at rev is the ten values.
		if len(got) != 10 {
			t.Fatalf("pages hold %d keys, want the 10 at revision %d", len(got), rev)
		}
		for i, kv := range got {
			if string(kv.Key) != fmt.Sprintf("/pb/%02d", i) || !bytes.Equal(kv.Value, value(i)) {
				t.Fatalf("key %d of the pages: %s (%d bytes), not as at revision %d", i, kv.Key, len(kv.Value), rev)
			}
		}
	})
}

// TestListAtRevisionBeyondHistoryIsOutOfRange: a page pinned to a revision
// whose history has been compacted away is refused with OUT_OF_RANGE and a
// message saying to restart, not served from newer data.
func TestListAtRevisionBeyondHistoryIsOutOfRange(t *testing.T) {
	s := startSingle(t, func(c *node.Config) { c.HistoryMaxEvents = 8 })
	for i := range 4 {
		s.put(t, fmt.Sprintf("/h/%d", i), []byte("1"))
	}
	r, err := s.kv.List(ctxT(t, 10*time.Second), &pb.ListRequest{Prefix: []byte("/h/"), Limit: 1})
	if err != nil || !r.More {
		t.Fatalf("first page: %v, more=%v", err, r.GetMore())
	}
	for i := range 40 {
		s.put(t, fmt.Sprintf("/h/%d", i%4), []byte(fmt.Sprint(i)))
	}
	_, err = s.kv.List(ctxT(t, 10*time.Second), &pb.ListRequest{Prefix: []byte("/h/"), Limit: 1, StartKey: r.NextKey, Revision: r.Revision})
	want := fmt.Sprintf("revision %d is no longer available", r.Revision)
	if status.Code(err) != codes.OutOfRange || !strings.Contains(status.Convert(err).Message(), want) ||
		!strings.Contains(status.Convert(err).Message(), "restart the list") {
		t.Fatalf("page at compacted revision %d: %v, want OUT_OF_RANGE %q ... restart the list", r.Revision, err, want)
	}
	// A revision no page was read at (past the commit index) is refused.
	_, err = s.kv.List(ctxT(t, 10*time.Second), &pb.ListRequest{Prefix: []byte("/h/"), Revision: r.Revision + 1_000_000})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "past the commit index") {
		t.Fatalf("page at a future revision: %v, want INVALID_ARGUMENT ... past the commit index", err)
	}
	// The client starts over at a revision history still holds.
	all, err := s.cl.List(ctxT(t, 10*time.Second), []byte("/h/"))
	if err != nil || len(all.Kvs) != 4 {
		t.Fatalf("client List after compaction: %v, %d keys", err, len(all.GetKvs()))
	}
}

// TestKeyRuleIsTheSameForEveryCall: one rule for keys (start with '/') and
// prefixes (start and end with '/'), refused with INVALID_ARGUMENT and the
// same message by Put, conditional Put, Get, Delete, conditional Delete,
// List and Watch, through the Go client (e2e checks the CLI's message).
func TestKeyRuleIsTheSameForEveryCall(t *testing.T) {
	s := startSingle(t, nil)
	long := "/" + strings.Repeat("k", node.DefaultMaxKeySize)
	keyCalls := map[string]func(ctx context.Context, key []byte) error{
		"put": func(ctx context.Context, k []byte) error { _, err := s.cl.Put(ctx, k, []byte("v")); return err },
		"put --if-absent": func(ctx context.Context, k []byte) error {
			_, err := s.cl.Put(ctx, k, []byte("v"), client.WithAbsent())
			return err
		},
		"get": func(ctx context.Context, k []byte) error { _, err := s.cl.Get(ctx, k); return err },
		"get serializable": func(ctx context.Context, k []byte) error {
			_, err := s.cl.Get(ctx, k, client.WithSerializable())
			return err
		},
		"del": func(ctx context.Context, k []byte) error { _, err := s.cl.Delete(ctx, k); return err },
		"del --if-mod-revision": func(ctx context.Context, k []byte) error {
			_, err := s.cl.Delete(ctx, k, client.WithModRevision(1))
			return err
		},
		"watch key": func(ctx context.Context, k []byte) error { _, err := s.cl.Watch(ctx, k); return err },
		"txn put": func(ctx context.Context, k []byte) error {
			_, err := s.cl.Txn(ctx).Then(client.OpPut(k, []byte("v"))).Commit()
			return err
		},
	}
	prefixCalls := map[string]func(ctx context.Context, prefix []byte) error{
		"list": func(ctx context.Context, p []byte) error { _, err := s.cl.List(ctx, p); return err },
		"list serializable": func(ctx context.Context, p []byte) error {
			_, err := s.cl.List(ctx, p, client.WithSerializable())
			return err
		},
		"watch prefix": func(ctx context.Context, p []byte) error {
			_, err := s.cl.Watch(ctx, p, client.WithPrefix())
			return err
		},
		"txn delete_prefix": func(ctx context.Context, p []byte) error {
			_, err := s.cl.Txn(ctx).Then(client.OpDeletePrefix(p)).Commit()
			return err
		},
	}
	cases := []struct {
		name, input string
		prefix      bool
		msg         string // "" = accepted
	}{
		{"a key must start with '/'", "probe", false, `invalid key "probe": a key must start with '/' (try "/probe")`},
		{"a key must not be empty", "", false, `invalid key "": a key must not be empty and must start with '/'`},
		{"a key is at most 4096 bytes", long, false, fmt.Sprintf(`invalid key "%s"...: 4097 bytes, a key is at most 4096`, long[:64])},
		{"a key starting with '/' is accepted", "/probe", false, ""},
		{"a prefix must start with '/'", "probe", true, `invalid prefix "probe": a prefix must start and end with '/' (try "/probe/")`},
		{"a prefix must end with '/'", "/probe", true, `invalid prefix "/probe": a prefix must start and end with '/' (try "/probe/")`},
		{"a prefix must not be empty", "", true, `invalid prefix "": a prefix must start and end with '/' (try "/")`},
		{"a prefix starting and ending with '/' is accepted", "/probe/", true, ""},
	}
	for _, tc := range cases {
		calls := keyCalls
		if tc.prefix {
			calls = prefixCalls
		}
		for _, name := range slices.Sorted(maps.Keys(calls)) {
			t.Run(tc.name+"/"+name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				err := calls[name](ctx, []byte(tc.input))
				if tc.msg == "" {
					if err != nil {
						t.Fatalf("%s %.80q: %v, want accepted", name, tc.input, err)
					}
					return
				}
				want := tc.msg
				if strings.HasPrefix(name, "txn ") {
					want = "invalid argument: txn success[0]: " + want // the same message, after the op it is about
				}
				if status.Code(err) != codes.InvalidArgument || status.Convert(err).Message() != want {
					t.Fatalf("%s %.80q: %v\nwant INVALID_ARGUMENT %q", name, tc.input, err, want)
				}
			})
		}
	}
	if r, err := s.cl.List(ctxT(t, 10*time.Second), []byte("/")); err != nil || len(r.Kvs) != 2 {
		t.Fatalf("after the refused writes, / holds %v (%v), want /ready and /probe only", r.GetKvs(), err)
	}
}
