package watch

import "sync"

// blockEvents is how many events one queueBlock holds: 30 events and
// their watchers (136 bytes each) and the link fill Go's 4 KiB size class.
const blockEvents = 30

// queueBlock is a piece of an eventQueue.
type queueBlock struct {
	ev   [blockEvents]Event
	w    [blockEvents]*Watcher // w[i] is the watcher ev[i] is for
	next *queueBlock
}

// maxFreeBlocks bounds the blocks a blockPool keeps: 1 MiB, what the
// streams of a busy node refill between two takes. A burst past it (a
// heartbeat queues a PROGRESS for every watcher) is left to the collector,
// so an idle node does not hold it. (A sync.Pool would keep a burst's
// blocks through the next collection, and a heartbeat comes every second.)
const maxFreeBlocks = 256

// blockPool recycles queue blocks between the streams of a registry: a
// stream's queue fills and drains with every batch, and its memory follows
// what it holds instead of the largest burst it saw. Its mu is taken with
// a Stream's mu held, and nothing is locked under it. The nil pool
// allocates every block and keeps none.
type blockPool struct {
	mu   sync.Mutex
	free *queueBlock // linked by next; every slot clear
	n    int
}

// get returns a clear block.
func (p *blockPool) get() *queueBlock {
	if p != nil {
		p.mu.Lock()
		b := p.free
		if b != nil {
			p.free, b.next = b.next, nil
			p.n--
		}
		p.mu.Unlock()
		if b != nil {
			return b
		}
	}
	return new(queueBlock)
}

// put takes back b, whose slots are clear, unless the pool is full.
func (p *blockPool) put(b *queueBlock) {
	if p == nil {
		return
	}
	p.mu.Lock()
	if p.n < maxFreeBlocks {
		b.next = p.free
		p.free = b
		p.n++
	}
	p.mu.Unlock()
}

// eventQueue is a FIFO of events and the watchers they are for, kept in a
// chain of fixed-size blocks from a shared pool: appending never copies
// what is queued, taking from the head never moves the rest, and an empty
// queue holds no block. The slots it frees hold no references. It is not
// safe for concurrent use (Stream guards it with its mu).
type eventQueue struct {
	pool       *blockPool
	head, tail *queueBlock
	// first is the index of the head's first event; end is one past the
	// tail's last.
	first, end int
	n          int
}

// len returns the number of events queued.
func (q *eventQueue) len() int { return q.n }

// push appends ev for w.
func (q *eventQueue) push(ev *Event, w *Watcher) {
	if q.tail == nil || q.end == blockEvents {
		b := q.pool.get()
		if q.tail == nil {
			q.head, q.first = b, 0
		} else {
			q.tail.next = b
		}
		q.tail, q.end = b, 0
	}
	q.tail.ev[q.end] = *ev
	q.tail.w[q.end] = w
	q.end++
	q.n++
}

// front returns the event at the head and its watcher; the queue must not
// be empty. The event stays owned by the queue until pop.
func (q *eventQueue) front() (*Event, *Watcher) {
	return &q.head.ev[q.first], q.head.w[q.first]
}

// pop removes the event at the head; the queue must not be empty.
func (q *eventQueue) pop() {
	b := q.head
	b.ev[q.first], b.w[q.first] = Event{}, nil
	q.first++
	q.n--
	if q.n == 0 {
		q.head, q.tail, q.first, q.end = nil, nil, 0, 0
		b.next = nil
		q.pool.put(b)
		return
	}
	if q.first == blockEvents {
		q.head, q.first = b.next, 0
		b.next = nil
		q.pool.put(b)
	}
}

// reset empties the queue, giving its blocks back.
func (q *eventQueue) reset() {
	for q.n > 0 {
		q.pop()
	}
}

// removeWatcher drops the events queued for w, keeping the others in
// order, and returns what the dropped ones counted (Event.size).
func (q *eventQueue) removeWatcher(w *Watcher) (freed int) {
	if q.n == 0 {
		return 0
	}
	// Compact in place: a write cursor trails the read cursor.
	wb, wi := q.head, q.first
	kept := 0
	rb, ri := q.head, q.first
	for range q.n {
		if ri == blockEvents {
			rb, ri = rb.next, 0
		}
		if rb.w[ri] == w {
			freed += rb.ev[ri].size()
		} else {
			if wi == blockEvents {
				wb, wi = wb.next, 0
			}
			if wb != rb || wi != ri {
				wb.ev[wi], wb.w[wi] = rb.ev[ri], rb.w[ri]
			}
			wi++
			kept++
		}
		ri++
	}
	if kept == q.n {
		return 0
	}
	if kept == 0 {
		q.reset()
		return freed
	}
	// Clear what follows the write cursor and give back the blocks past it.
	clear(wb.ev[wi:])
	clear(wb.w[wi:])
	for b := wb.next; b != nil; {
		next := b.next
		*b = queueBlock{}
		q.pool.put(b)
		b = next
	}
	wb.next = nil
	q.tail, q.end, q.n = wb, wi, kept
	return freed
}
