package watch

import (
	"fmt"
	"testing"
)

// drain pops every event of q and returns their revisions and watchers.
func drain(q *eventQueue) (revs []uint64, ws []*Watcher) {
	for q.len() > 0 {
		ev, w := q.front()
		revs = append(revs, ev.Revision)
		ws = append(ws, w)
		q.pop()
	}
	return revs, ws
}

// blocksOf returns the number of blocks q holds, checking that the slots
// outside its events hold no references.
func blocksOf(t *testing.T, q *eventQueue) int {
	t.Helper()
	n, seen := 0, 0
	for b := q.head; b != nil; b = b.next {
		for i := range blockEvents {
			in := (b != q.head || i >= q.first) && (b != q.tail || i < q.end)
			if in {
				seen++
				continue
			}
			if b.w[i] != nil || b.ev[i].Key != nil || b.ev[i].Type != 0 {
				t.Fatalf("block %d slot %d is outside the queue but holds %+v for %p", n, i, b.ev[i], b.w[i])
			}
		}
		n++
	}
	if seen != q.len() {
		t.Fatalf("blocks hold %d events, len says %d", seen, q.len())
	}
	return n
}

// The queue is first in, first out across block boundaries, holds as many
// blocks as its events need, and none once empty.
func TestEventQueueOrderAndBlocks(t *testing.T) {
	var q eventQueue
	w := &Watcher{}
	for _, n := range []int{1, blockEvents - 1, blockEvents, blockEvents + 1, 3*blockEvents + 7} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			for i := range n {
				ev := Event{Type: Put, Key: []byte("/k"), Revision: uint64(i + 1)}
				q.push(&ev, w)
			}
			if got, want := blocksOf(t, &q), (n+blockEvents-1)/blockEvents; got != want {
				t.Fatalf("%d events in %d blocks, want %d", n, got, want)
			}
			// Take a few from the head, then push more: order holds.
			for range min(n, 5) {
				q.pop()
			}
			ev := Event{Type: Put, Key: []byte("/k"), Revision: uint64(n + 1)}
			q.push(&ev, w)
			blocksOf(t, &q)
			revs, _ := drain(&q)
			for i, r := range revs {
				if want := uint64(min(n, 5) + i + 1); r != want {
					t.Fatalf("event %d has revision %d, want %d (revisions %v)", i, r, want, revs)
				}
			}
			if q.head != nil || q.tail != nil || q.len() != 0 {
				t.Fatal("an empty queue holds a block")
			}
		})
	}
}

// removeWatcher drops exactly one watcher's events wherever they are,
// keeps the others in order, returns their size, and gives back the blocks
// no longer needed.
func TestEventQueueRemoveWatcher(t *testing.T) {
	a, b := &Watcher{id: 1}, &Watcher{id: 2}
	for _, pattern := range []string{"", "a", "b", "ab", "aab", "abbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbba", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbba",
		"abababababababababababababababababababababababababababababababababababab"} {
		for _, skip := range []int{0, 3} {
			t.Run(fmt.Sprintf("%s-skip%d", pattern, skip), func(t *testing.T) {
				var q eventQueue
				var want []uint64
				wantFreed := 0
				for i, c := range pattern {
					w := a
					if c == 'b' {
						w = b
					}
					ev := Event{Type: Put, Key: []byte("/k"), Value: make([]byte, i), Revision: uint64(i + 1)}
					q.push(&ev, w)
					if i < skip {
						continue
					}
					if w == a {
						want = append(want, ev.Revision)
					} else {
						wantFreed += ev.size()
					}
				}
				for range min(skip, len(pattern)) {
					q.pop()
				}
				freed := q.removeWatcher(b)
				if freed != wantFreed {
					t.Fatalf("freed %d bytes, want %d", freed, wantFreed)
				}
				if got, need := blocksOf(t, &q), (len(want)+q.first+blockEvents-1)/blockEvents; got != need {
					t.Fatalf("%d events left in %d blocks, want %d", len(want), got, need)
				}
				revs, ws := drain(&q)
				if fmt.Sprint(revs) != fmt.Sprint(want) {
					t.Fatalf("left %v, want %v", revs, want)
				}
				for _, w := range ws {
					if w != a {
						t.Fatalf("an event of watcher %d was left", w.id)
					}
				}
			})
		}
	}
}

// A queue on a pool takes its blocks back from it, and the pool keeps at
// most maxFreeBlocks of a drained burst, each clear.
func TestBlockPoolBounded(t *testing.T) {
	var p blockPool
	q := eventQueue{pool: &p}
	w := &Watcher{}
	n := (maxFreeBlocks + 10) * blockEvents
	for i := range n {
		ev := Event{Type: Put, Key: []byte("/k"), Revision: uint64(i + 1)}
		q.push(&ev, w)
	}
	q.reset()
	if p.n != maxFreeBlocks {
		t.Fatalf("pool keeps %d blocks after a burst of %d, want %d", p.n, maxFreeBlocks+10, maxFreeBlocks)
	}
	for b := p.free; b != nil; b = b.next {
		for i := range blockEvents {
			if b.w[i] != nil || b.ev[i].Key != nil {
				t.Fatalf("a pooled block holds %+v in slot %d", b.ev[i], i)
			}
		}
	}
	ev := Event{Type: Put, Key: []byte("/k"), Revision: 1}
	q.push(&ev, w)
	if p.n != maxFreeBlocks-1 {
		t.Fatalf("pool has %d blocks after a push, want %d (one reused)", p.n, maxFreeBlocks-1)
	}
}
