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

// blocks recycles queue blocks between the streams of every registry: a
// stream's queue fills and drains with every batch, and its memory follows
// what it holds instead of the largest burst it saw.
var blocks = sync.Pool{New: func() any { return new(queueBlock) }}

// eventQueue is a FIFO of events and the watchers they are for, kept in a
// chain of fixed-size blocks from a shared pool: appending never copies
// what is queued, taking from the head never moves the rest, and an empty
// queue holds no block. The slots it frees hold no references. It is not
// safe for concurrent use (Stream guards it with its mu).
type eventQueue struct {
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
		b := blocks.Get().(*queueBlock)
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
		blocks.Put(b)
		return
	}
	if q.first == blockEvents {
		q.head, q.first = b.next, 0
		b.next = nil
		blocks.Put(b)
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
		blocks.Put(b)
		b = next
	}
	wb.next = nil
	q.tail, q.end, q.n = wb, wi, kept
	return freed
}
