package server

import (
	"sync"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/raftwatch/raftwatch/proto"
	"github.com/raftwatch/raftwatch/watch"
)

// A put seen by N watches of one stream is N events that differ only in
// their watch id, queued one after the other. Marshalling a pb.WatchBatch
// of N pb.WatchResponses encodes (and copies) the key, value and previous
// value N times; batchEncoder writes the same wire bytes by hand and
// encodes the fields an event shares with the one before it once, copying
// their bytes for the next watch and appending only its watch_id.
//
// The bytes reach gRPC as the unknown fields of an otherwise empty
// pb.WatchBatch, which the standard proto codec writes out verbatim: the
// stream keeps its generated types and codec, and the client decodes the
// same bytes proto.Marshal would have produced (watchwire_test.go checks
// both).

// Field numbers of pb.WatchBatch and pb.WatchResponse (proto/raftwatch.proto).
// proto.Marshal writes fields in number order; so does batchEncoder, so
// that a response's shared fields (1-7) form one run followed by its own
// (8-11).
const (
	fieldResponses       protowire.Number = 1 // WatchBatch.responses
	fieldType            protowire.Number = 1
	fieldKey             protowire.Number = 2
	fieldValue           protowire.Number = 3
	fieldPrevValue       protowire.Number = 4
	fieldRevision        protowire.Number = 5
	fieldVersion         protowire.Number = 6
	fieldReason          protowire.Number = 7
	fieldWatchID         protowire.Number = 8
	fieldCode            protowire.Number = 10
	fieldCompactRevision protowire.Number = 11
)

// wireBufs holds the byte slices batches are encoded into between
// flushes, so an idle stream holds none.
var wireBufs = sync.Pool{New: func() any { b := make([]byte, 0, maxBatchBytes); return &b }}

// maxPooledWire is the largest buffer returned to wireBufs: one grown by a
// single large event is left to the collector.
const maxPooledWire = 2 * maxBatchBytes

// batchEncoder appends pb.WatchResponses to the wire bytes of one
// pb.WatchBatch. Use it as start, (reset, add..., message)..., release;
// the zero value is ready for start.
type batchEncoder struct {
	pooled *[]byte // what wireBufs gave, b's home when released
	b      []byte
	// last is the event whose shared fields are b[bodyStart:bodyEnd]; it
	// holds references into the event's payload until reset.
	last               watch.Event
	hasLast            bool
	bodyStart, bodyEnd int
}

// start takes a buffer from the pool.
func (e *batchEncoder) start() {
	e.pooled = wireBufs.Get().(*[]byte)
	e.b = (*e.pooled)[:0]
}

// release gives the buffer back; start again before the next use.
func (e *batchEncoder) release() {
	e.reset()
	if cap(e.b) <= maxPooledWire {
		*e.pooled = e.b
		wireBufs.Put(e.pooled)
	}
	e.pooled, e.b = nil, nil
}

// reset starts a new, empty batch.
func (e *batchEncoder) reset() {
	e.b = e.b[:0]
	e.last, e.hasLast = watch.Event{}, false
}

// empty reports whether no response was added since reset.
func (e *batchEncoder) empty() bool { return len(e.b) == 0 }

// message returns the batch as a message for Send. It aliases the
// encoder's buffer, so it must be sent (marshalled) before the next reset.
// That relies on grpc-go marshalling the message inside SendMsg and
// keeping no reference to it afterwards, true while the server has no
// stats handler and tracing is off (grpc-go's contract says a message must
// not be modified after SendMsg because those may read it later): adding
// one means copying the bytes here.
func (e *batchEncoder) message() *pb.WatchBatch {
	m := &pb.WatchBatch{}
	m.ProtoReflect().SetUnknown(protoreflect.RawFields(e.b))
	return m
}

// add appends the response for ev, encoded as proto.Marshal encodes the
// pb.WatchResponse of ev (wantResponse in watchwire_test.go).
func (e *batchEncoder) add(ev *watch.Event) {
	own := ownSize(ev)
	if e.hasLast && sameBody(&e.last, ev) {
		body := e.bodyEnd - e.bodyStart
		e.b = protowire.AppendTag(e.b, fieldResponses, protowire.BytesType)
		e.b = protowire.AppendVarint(e.b, uint64(body+own))
		// Appending from b's own array: the source ends before the
		// destination starts, and a reallocation copies the source first.
		e.b = append(e.b, e.b[e.bodyStart:e.bodyEnd]...)
		e.b = appendOwn(e.b, ev)
		return
	}
	body := bodySize(ev)
	e.b = protowire.AppendTag(e.b, fieldResponses, protowire.BytesType)
	e.b = protowire.AppendVarint(e.b, uint64(body+own))
	e.bodyStart = len(e.b)
	e.b = appendBody(e.b, ev)
	e.bodyEnd = len(e.b)
	e.b = appendOwn(e.b, ev)
	e.last, e.hasLast = *ev, true
}

// sameBody reports whether a and b encode the same shared fields. Byte
// slices compare by identity: the events of one put share its key, value
// and previous value, and anything else is simply encoded again.
func sameBody(a, b *watch.Event) bool {
	return a.Type == b.Type && a.HasPrev == b.HasPrev && a.Revision == b.Revision && a.Version == b.Version &&
		a.Reason == b.Reason && sameBytes(a.Key, b.Key) && sameBytes(a.Value, b.Value) &&
		(!a.HasPrev || sameBytes(a.PrevValue, b.PrevValue))
}

// sameBytes reports whether a and b are the same bytes in memory (an empty
// slice is the same as any other).
func sameBytes(a, b []byte) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// bodySize is the encoded size of ev's shared fields, 1 to 7.
func bodySize(ev *watch.Event) int {
	n := 0
	if t := eventType(ev.Type); t != 0 {
		n += protowire.SizeTag(fieldType) + protowire.SizeVarint(uint64(t))
	}
	if len(ev.Key) > 0 {
		n += protowire.SizeTag(fieldKey) + protowire.SizeBytes(len(ev.Key))
	}
	if len(ev.Value) > 0 {
		n += protowire.SizeTag(fieldValue) + protowire.SizeBytes(len(ev.Value))
	}
	if ev.HasPrev { // optional: present even when empty
		n += protowire.SizeTag(fieldPrevValue) + protowire.SizeBytes(len(ev.PrevValue))
	}
	if ev.Revision != 0 {
		n += protowire.SizeTag(fieldRevision) + protowire.SizeVarint(ev.Revision)
	}
	if ev.Version != 0 {
		n += protowire.SizeTag(fieldVersion) + protowire.SizeVarint(ev.Version)
	}
	if ev.Reason != "" {
		n += protowire.SizeTag(fieldReason) + protowire.SizeBytes(len(ev.Reason))
	}
	return n
}

func appendBody(b []byte, ev *watch.Event) []byte {
	if t := eventType(ev.Type); t != 0 {
		b = protowire.AppendTag(b, fieldType, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(t))
	}
	if len(ev.Key) > 0 {
		b = protowire.AppendTag(b, fieldKey, protowire.BytesType)
		b = protowire.AppendBytes(b, ev.Key)
	}
	if len(ev.Value) > 0 {
		b = protowire.AppendTag(b, fieldValue, protowire.BytesType)
		b = protowire.AppendBytes(b, ev.Value)
	}
	if ev.HasPrev {
		b = protowire.AppendTag(b, fieldPrevValue, protowire.BytesType)
		b = protowire.AppendBytes(b, ev.PrevValue)
	}
	if ev.Revision != 0 {
		b = protowire.AppendTag(b, fieldRevision, protowire.VarintType)
		b = protowire.AppendVarint(b, ev.Revision)
	}
	if ev.Version != 0 {
		b = protowire.AppendTag(b, fieldVersion, protowire.VarintType)
		b = protowire.AppendVarint(b, ev.Version)
	}
	if ev.Reason != "" {
		b = protowire.AppendTag(b, fieldReason, protowire.BytesType)
		b = protowire.AppendString(b, ev.Reason)
	}
	return b
}

// ownSize is the encoded size of the fields ev has for its watch alone,
// 8 to 11 (request_id, 9, is only set on CREATED and refusals, which are
// not events).
func ownSize(ev *watch.Event) int {
	n := 0
	if ev.WatchID != 0 {
		n += protowire.SizeTag(fieldWatchID) + protowire.SizeVarint(ev.WatchID)
	}
	if ev.Type == watch.Canceled {
		if c := cancelCode(ev.Cause); c != 0 {
			n += protowire.SizeTag(fieldCode) + protowire.SizeVarint(uint64(int64(int32(c))))
		}
		if ev.CompactRevision != 0 {
			n += protowire.SizeTag(fieldCompactRevision) + protowire.SizeVarint(ev.CompactRevision)
		}
	}
	return n
}

func appendOwn(b []byte, ev *watch.Event) []byte {
	if ev.WatchID != 0 {
		b = protowire.AppendTag(b, fieldWatchID, protowire.VarintType)
		b = protowire.AppendVarint(b, ev.WatchID)
	}
	if ev.Type == watch.Canceled {
		if c := cancelCode(ev.Cause); c != 0 {
			b = protowire.AppendTag(b, fieldCode, protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(int64(int32(c)))) // int32: sign-extended
		}
		if ev.CompactRevision != 0 {
			b = protowire.AppendTag(b, fieldCompactRevision, protowire.VarintType)
			b = protowire.AppendVarint(b, ev.CompactRevision)
		}
	}
	return b
}

// eventType is the wire type of an event of type t.
func eventType(t watch.EventType) pb.EventType {
	switch t {
	case watch.Put:
		return pb.EventType_PUT
	case watch.Delete:
		return pb.EventType_DELETE
	case watch.Progress:
		return pb.EventType_PROGRESS
	case watch.Canceled:
		return pb.EventType_CANCELED
	}
	return pb.EventType_EVENT_UNSPECIFIED
}
