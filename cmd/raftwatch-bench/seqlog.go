package main

import (
	"encoding/binary"
	"fmt"
)

// A paced writer's value carries, after the send time (bytes 0-8, see
// timedValue), the put's sequence number (bytes 8-16), and its key is made
// from the same number, so a watcher can name each put it receives and a
// checker can hold it against what the writer had acknowledged.
const (
	valueSentAt = 0 // nanoseconds since epoch when the put was sent
	valueSeq    = 8 // the put's sequence number
)

// seqValue returns a valueSize value carrying the send time and seq.
func seqValue(seq int64) []byte {
	v := timedValue()
	binary.BigEndian.PutUint64(v[valueSeq:], uint64(seq))
	return v
}

// parseSeqValue returns the send time and seq a value carries.
func parseSeqValue(v []byte) (sentAt, seq int64, err error) {
	if len(v) < valueSeq+8 {
		return 0, 0, fmt.Errorf("value of %d bytes carries no sequence number", len(v))
	}
	return int64(binary.BigEndian.Uint64(v[valueSentAt:])), int64(binary.BigEndian.Uint64(v[valueSeq:])), nil
}

// ack is one put the writer had acknowledged: its seq and revision.
type ack struct {
	seq int64
	rev uint64
}

// seqLog is what one watcher delivered of a paced writer's puts. add
// checks order and uniqueness as events arrive; check then holds the log
// against the acknowledged puts. Every put writes its own key, so a seq
// names one event. Owned by one goroutine.
type seqLog struct {
	revs       []uint64 // by seq: the revision it was delivered with; 0: not delivered
	lastRev    uint64
	events     int64 // PUT events delivered, duplicates included
	outOfOrder int64 // events whose revision is below one delivered before
	duplicates int64 // events whose seq was delivered before
}

// add records one delivered PUT event.
func (l *seqLog) add(seq int64, rev uint64) {
	l.events++
	if rev < l.lastRev {
		l.outOfOrder++
	}
	l.lastRev = max(l.lastRev, rev)
	if seq < 0 {
		return // not a seq a writer hands out; counted as an event only
	}
	for int64(len(l.revs)) <= seq {
		l.revs = append(l.revs, make([]uint64, len(l.revs)+1024)...)
	}
	if l.revs[seq] != 0 {
		l.duplicates++
		return
	}
	l.revs[seq] = rev
}

// has reports whether seq was delivered.
func (l *seqLog) has(seq int64) bool { return seq >= 0 && seq < int64(len(l.revs)) && l.revs[seq] != 0 }

// check returns, of the acknowledged puts with a revision above after,
// how many were never delivered (gaps) and how many were delivered with
// another revision than the writer was told.
func (l *seqLog) check(acks []ack, after uint64) (missing, wrongRev int64) {
	for _, a := range acks {
		if a.rev <= after {
			continue
		}
		switch {
		case !l.has(a.seq):
			missing++
		case l.revs[a.seq] != a.rev:
			wrongRev++
		}
	}
	return missing, wrongRev
}
