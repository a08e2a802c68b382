package client

import (
	"bytes"
	"context"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/raftwatch/raftwatch/proto"
)

// pagingKV serves List one pair per page, from a fixed set of keys: a
// first page (revision 0) reads at the next revision of revs; a later page
// must carry that revision and the previous page's next key, and fails
// with OUT_OF_RANGE while failLater says so for its revision.
type pagingKV struct {
	pb.UnimplementedKVServer
	keys []string

	mu        sync.Mutex
	revs      []uint64
	failLater map[uint64]bool
	firsts    int
	requests  []*pb.ListRequest
}

func (s *pagingKV) List(_ context.Context, req *pb.ListRequest) (*pb.ListResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, req)
	rev := req.Revision
	if rev == 0 {
		if len(req.StartKey) != 0 {
			return nil, status.Error(codes.InvalidArgument, "a start key without a revision")
		}
		rev, s.revs = s.revs[0], s.revs[1:]
		s.firsts++
	} else if s.failLater[rev] {
		return nil, status.Errorf(codes.OutOfRange, "revision %d is no longer available", rev)
	}
	i, _ := slices.BinarySearch(s.keys, string(req.StartKey))
	if i == len(s.keys) {
		return &pb.ListResponse{Revision: rev}, nil
	}
	out := &pb.ListResponse{Revision: rev, Kvs: []*pb.KeyValue{{Key: []byte(s.keys[i]), ModRevision: rev}}}
	if i+1 < len(s.keys) {
		out.More, out.NextKey = true, []byte(s.keys[i+1])
	}
	return out, nil
}

func servePaging(t *testing.T, kv *pagingKV) *Client {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	pb.RegisterKVServer(g, kv)
	go g.Serve(l)
	t.Cleanup(g.Stop)
	c, err := New(Config{Endpoints: []string{l.Addr().String()}, RetryTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func keysOf(r *pb.ListResponse) []string {
	var out []string
	for _, kv := range r.Kvs {
		out = append(out, string(kv.Key))
	}
	return out
}

// TestListPagesAtTheFirstPagesRevision: List asks for every page with the
// previous page's next key and the first page's revision, and returns them
// as one response at that revision.
func TestListPagesAtTheFirstPagesRevision(t *testing.T) {
	kv := &pagingKV{keys: []string{"/p/a", "/p/b", "/p/c"}, revs: []uint64{10}}
	c := servePaging(t, kv)
	r, err := c.List(context.Background(), []byte("/p/"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(keysOf(r), kv.keys) || r.Revision != 10 || r.More {
		t.Fatalf("List = %q at %d more=%v, want %q at 10, no more", keysOf(r), r.Revision, r.More, kv.keys)
	}
	for i, req := range kv.requests[1:] {
		if req.Revision != 10 || !bytes.Equal(req.StartKey, []byte(kv.keys[i+1])) {
			t.Fatalf("page %d asked revision %d from %q, want 10 from %q", i+1, req.Revision, req.StartKey, kv.keys[i+1])
		}
	}
}

// TestListLimitCapsTheTotal: WithLimit bounds the keys over all pages, and
// More and NextKey say where the rest starts.
func TestListLimitCapsTheTotal(t *testing.T) {
	kv := &pagingKV{keys: []string{"/p/a", "/p/b", "/p/c"}, revs: []uint64{10}}
	r, err := servePaging(t, kv).List(context.Background(), []byte("/p/"), WithLimit(2))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(keysOf(r), kv.keys[:2]) || !r.More || string(r.NextKey) != "/p/c" {
		t.Fatalf("List limit 2 = %q more=%v next %q, want the first two, more, next /p/c", keysOf(r), r.More, r.NextKey)
	}
	if last := kv.requests[len(kv.requests)-1]; last.Limit != 1 {
		t.Fatalf("second page asked for %d keys, want the 1 left of the limit", last.Limit)
	}
}

// TestListStartsOverWhenItsRevisionIsCompacted: a later page refused with
// OUT_OF_RANGE makes List start over at a new revision, at most
// listRestarts times; then the error is returned.
func TestListStartsOverWhenItsRevisionIsCompacted(t *testing.T) {
	kv := &pagingKV{keys: []string{"/p/a", "/p/b"}, revs: []uint64{10, 20}, failLater: map[uint64]bool{10: true}}
	r, err := servePaging(t, kv).List(context.Background(), []byte("/p/"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(keysOf(r), kv.keys) || r.Revision != 20 || kv.firsts != 2 {
		t.Fatalf("List = %q at %d after %d first pages, want both keys at 20 after 2", keysOf(r), r.Revision, kv.firsts)
	}

	always := &pagingKV{keys: []string{"/p/a", "/p/b"}, revs: []uint64{1, 2, 3, 4, 5, 6},
		failLater: map[uint64]bool{1: true, 2: true, 3: true, 4: true, 5: true, 6: true}}
	_, err = servePaging(t, always).List(context.Background(), []byte("/p/"))
	if status.Code(err) != codes.OutOfRange || always.firsts != 1+listRestarts {
		t.Fatalf("List with every later page compacted: %v after %d first pages, want OUT_OF_RANGE after %d", err, always.firsts, 1+listRestarts)
	}
}
