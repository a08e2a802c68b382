package client

import (
	"testing"

	pb "github.com/raftwatch/raftwatch/proto"
)

// The queue is FIFO across reuse of its front, replaces only its last
// response, and a consumer that keeps up allocates no new array.
func TestResponseQueue(t *testing.T) {
	var q responseQueue
	next, want := uint64(1), uint64(1)
	pushN := func(n int) {
		for range n {
			q.push(&pb.WatchResponse{Revision: next})
			next++
		}
	}
	popN := func(n int) {
		for range n {
			if got := q.pop().Revision; got != want {
				t.Fatalf("popped revision %d, want %d", got, want)
			}
			want++
		}
	}
	pushN(5)
	popN(3)
	pushN(20) // reuses the front, then grows
	if q.len() != 22 {
		t.Fatalf("len %d, want 22", q.len())
	}
	q.replaceLast(&pb.WatchResponse{Revision: 100})
	popN(21)
	if got := q.pop().Revision; got != 100 {
		t.Fatalf("last popped %d, want the replacement 100", got)
	}
	if q.len() != 0 || q.last() != nil || q.buf != nil {
		t.Fatalf("drained queue holds %d, last %v, array %d", q.len(), q.last(), cap(q.buf))
	}
	next, want = 1, 1
	pushN(2)
	popN(1)
	if allocs := testing.AllocsPerRun(100, func() { pushN(1); popN(1) }); allocs > 1 {
		// one: the response itself
		t.Fatalf("a kept-up consumer costs %.1f allocations per response, want 1", allocs)
	}
}
