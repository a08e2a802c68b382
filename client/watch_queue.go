package client

import pb "github.com/raftwatch/raftwatch/proto"

// responseQueue is a watch's FIFO of responses for its consumer. It reads
// from a head index instead of re-slicing from the front, so a consumer
// that keeps up reuses one small array instead of growing a new one every
// few events; once drained it drops an array grown by a burst.
type responseQueue struct {
	buf  []*pb.WatchResponse
	head int // buf[head:] are queued
}

// keepCap is the capacity a drained queue keeps.
const keepCap = 16

func (q *responseQueue) len() int { return len(q.buf) - q.head }

func (q *responseQueue) push(r *pb.WatchResponse) {
	if q.head > 0 && len(q.buf) == cap(q.buf) {
		n := copy(q.buf, q.buf[q.head:]) // room at the front: reuse it
		clear(q.buf[n:])
		q.buf, q.head = q.buf[:n], 0
	}
	q.buf = append(q.buf, r)
}

// pop removes and returns the first response; the queue is not empty.
func (q *responseQueue) pop() *pb.WatchResponse {
	r := q.buf[q.head]
	q.buf[q.head] = nil
	q.head++
	if q.head == len(q.buf) {
		if cap(q.buf) > keepCap {
			q.buf = nil
		} else {
			q.buf = q.buf[:0]
		}
		q.head = 0
	}
	return r
}

// last returns the last response queued, or nil.
func (q *responseQueue) last() *pb.WatchResponse {
	if q.len() == 0 {
		return nil
	}
	return q.buf[len(q.buf)-1]
}

// replaceLast replaces the last response queued; the queue is not empty.
func (q *responseQueue) replaceLast(r *pb.WatchResponse) { q.buf[len(q.buf)-1] = r }

// all returns the queued responses, first first, for reading only.
func (q *responseQueue) all() []*pb.WatchResponse { return q.buf[q.head:] }
