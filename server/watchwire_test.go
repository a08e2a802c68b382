package server

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/encoding"
	"google.golang.org/protobuf/proto"

	pb "github.com/raftwatch/raftwatch/proto"
	"github.com/raftwatch/raftwatch/watch"
)

// wantResponse is the pb.WatchResponse an event stands for: the
// conversion flush made, one message per event, before batchEncoder.
func wantResponse(ev watch.Event) *pb.WatchResponse {
	r := &pb.WatchResponse{Type: eventType(ev.Type), Key: ev.Key, Value: ev.Value, Revision: ev.Revision, Version: ev.Version,
		Reason: ev.Reason, WatchId: ev.WatchID}
	if ev.Type == watch.Canceled {
		r.Code = int32(cancelCode(ev.Cause))
		r.CompactRevision = ev.CompactRevision
	}
	if ev.HasPrev {
		prev := ev.PrevValue
		if prev == nil {
			prev = []byte{}
		}
		r.PrevValue = prev
	}
	return r
}

// toWatchResponse encodes ev alone with batchEncoder and decodes the
// response with the generated types, as a client does.
func toWatchResponse(ev watch.Event) *pb.WatchResponse {
	var enc batchEncoder
	enc.start()
	defer enc.release()
	enc.add(&ev)
	var b pb.WatchBatch
	if err := proto.Unmarshal(enc.b, &b); err != nil || len(b.Responses) != 1 {
		panic(fmt.Sprintf("decoding one encoded event: %d responses, %v", len(b.Responses), err))
	}
	return b.Responses[0]
}

// encodeWire returns the bytes gRPC's proto codec sends for the batch
// batchEncoder builds of evs.
func encodeWire(t *testing.T, evs []watch.Event) []byte {
	t.Helper()
	var enc batchEncoder
	enc.start()
	defer enc.release()
	for i := range evs {
		enc.add(&evs[i])
	}
	data, err := encoding.GetCodecV2("proto").Marshal(enc.message())
	if err != nil {
		t.Fatalf("marshalling the encoded batch: %v", err)
	}
	return data.Materialize()
}

// TestBatchEncoderMatchesProtoMarshal: what the watch stream sends for a
// batch of events is, byte for byte, what marshalling one pb.WatchResponse
// per event used to send, whether consecutive events share their key,
// value and previous value (the watches of one stream seeing one put) or
// not, and a client's generated types decode it to the same responses.
func TestBatchEncoderMatchesProtoMarshal(t *testing.T) {
	key, value, prev := []byte("/app/config"), []byte("v2"), []byte("v1")
	big := bytes.Repeat([]byte("x"), 300) // multi-byte length prefixes
	put := func(id uint64) watch.Event {
		return watch.Event{Type: watch.Put, WatchID: id, Key: key, Value: value, Revision: 41, Version: 3}
	}
	putPrev := func(id uint64, p []byte) watch.Event {
		ev := put(id)
		ev.HasPrev, ev.PrevValue = true, p
		return ev
	}
	cases := []struct {
		name string
		evs  []watch.Event
	}{
		{"empty batch", nil},
		{"one put", []watch.Event{put(1)}},
		{"one put seen by many watches", []watch.Event{put(1), put(2), put(300), put(1 << 40), put(5)}},
		{"prev_kv", []watch.Event{putPrev(1, prev), putPrev(2, prev), put(3), putPrev(4, prev)}},
		{"prev_kv of a created key (empty, not absent)", []watch.Event{putPrev(1, nil), putPrev(2, []byte{}), putPrev(3, nil)}},
		{"delete", []watch.Event{
			{Type: watch.Delete, WatchID: 7, Key: key, Revision: 42},
			{Type: watch.Delete, WatchID: 8, Key: key, Revision: 42, HasPrev: true, PrevValue: value},
			{Type: watch.Delete, WatchID: 9, Key: key, Revision: 42},
		}},
		{"same bytes in other slices", []watch.Event{put(1),
			{Type: watch.Put, WatchID: 2, Key: []byte("/app/config"), Value: []byte("v2"), Revision: 41, Version: 3}}},
		{"events of several puts interleaved", []watch.Event{put(1),
			{Type: watch.Put, WatchID: 1, Key: key, Value: big, Revision: 43, Version: 4},
			put(2),
			{Type: watch.Put, WatchID: 2, Key: key, Value: big, Revision: 43, Version: 4},
			{Type: watch.Put, WatchID: 3, Key: key, Value: big, Revision: 43, Version: 4},
		}},
		{"progress", []watch.Event{
			{Type: watch.Progress, WatchID: 1, Revision: 50}, {Type: watch.Progress, WatchID: 2, Revision: 50},
			{Type: watch.Progress, WatchID: 3, Revision: 0},
		}},
		{"canceled", []watch.Event{
			{Type: watch.Canceled, WatchID: 1, Revision: 50, Cause: watch.CauseCompacted, CompactRevision: 45, Reason: "compacted"},
			{Type: watch.Canceled, WatchID: 2, Revision: 50, Cause: watch.CauseCompacted, CompactRevision: 46, Reason: "compacted"},
			{Type: watch.Canceled, WatchID: 3, Revision: 50, Cause: watch.CauseShutdown, Reason: "shutting down"},
			{Type: watch.Canceled, WatchID: 4, Revision: 50, Cause: watch.CauseRemoved, Reason: strings.Repeat("r", 200)},
			{Type: watch.Canceled, WatchID: 5, Cause: watch.CauseNoLeader, Reason: "no leader"},
		}},
		{"a mix, as after a filter dropped some", []watch.Event{put(1), put(3),
			{Type: watch.Progress, WatchID: 2, Revision: 41}, put(4), putPrev(5, prev), put(6),
			{Type: watch.Canceled, WatchID: 6, Revision: 41, Cause: watch.CauseInternal, Reason: "read failed"}, put(7)}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := &pb.WatchBatch{}
			for _, ev := range c.evs {
				want.Responses = append(want.Responses, wantResponse(ev))
			}
			wantWire, err := proto.Marshal(want)
			if err != nil {
				t.Fatal(err)
			}
			got := encodeWire(t, c.evs)
			if !bytes.Equal(got, wantWire) {
				t.Fatalf("wire bytes differ from proto.Marshal's:\n got %x\nwant %x", got, wantWire)
			}
			var decoded pb.WatchBatch
			if err := proto.Unmarshal(got, &decoded); err != nil {
				t.Fatalf("the generated types cannot decode the batch: %v", err)
			}
			if !proto.Equal(&decoded, want) {
				t.Fatalf("decoded %v\nwant %v", &decoded, want)
			}
			for i, r := range decoded.Responses {
				if (r.PrevValue != nil) != c.evs[i].HasPrev {
					t.Fatalf("response %d: prev_value present = %v, want %v (HasPrev)", i, r.PrevValue != nil, c.evs[i].HasPrev)
				}
			}
		})
	}
}

// TestBatchEncoderResetStartsOver: after reset, a batch holds only what
// was added since, even an event sharing the body encoded before.
func TestBatchEncoderResetStartsOver(t *testing.T) {
	key, value := []byte("/k"), []byte("v")
	ev := func(id uint64) watch.Event {
		return watch.Event{Type: watch.Put, WatchID: id, Key: key, Value: value, Revision: 9, Version: 1}
	}
	var enc batchEncoder
	enc.start()
	defer enc.release()
	for _, e := range []watch.Event{ev(1), ev(2)} {
		enc.add(&e)
	}
	enc.reset()
	if !enc.empty() {
		t.Fatal("encoder not empty after reset")
	}
	e3 := ev(3)
	enc.add(&e3)
	want, _ := proto.Marshal(&pb.WatchBatch{Responses: []*pb.WatchResponse{wantResponse(e3)}})
	if !bytes.Equal(enc.b, want) {
		t.Fatalf("after reset: %x, want %x", enc.b, want)
	}
}

// TestBatchEncoderReusesItsBuffer: a released encoder's buffer serves the
// next one, so a flush allocates no buffer of its own.
func TestBatchEncoderReusesItsBuffer(t *testing.T) {
	ev := watch.Event{Type: watch.Put, WatchID: 1, Key: []byte("/k"), Value: []byte("v"), Revision: 9, Version: 1}
	allocs := testing.AllocsPerRun(100, func() {
		var enc batchEncoder // as flush uses it
		enc.start()
		for range 100 {
			enc.add(&ev)
		}
		enc.release()
	})
	// Growing a buffer from empty for 100 events would take several
	// allocations each time; a collection during the run empties the pool
	// and costs one.
	if allocs >= 1 {
		t.Fatalf("%.1f allocations per encoder of 100 events; want its buffer reused", allocs)
	}
}
