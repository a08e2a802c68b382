package server

import (
	"testing"
	"time"

	"github.com/raftwatch/raftwatch/node"
	pb "github.com/raftwatch/raftwatch/proto"
)

// A raw stream whose creates set stream_progress gets the heartbeat as one
// PROGRESS with watch_id 0 for all its watches, after every event it
// covers; a stream without it gets one PROGRESS per watch, as before.
func TestStreamProgressOnTheWire(t *testing.T) {
	e := startEdgeNode(t, func(c *node.Config) { c.Watch.ProgressInterval = 20 * time.Millisecond })
	type seen struct {
		created     map[uint64]uint64 // watch id -> CREATED revision
		puts        int
		putRev      uint64 // the PUT a stream PROGRESS must come after
		streamProgs []uint64
		perWatch    map[uint64]int // watch id -> PROGRESS count
	}
	open := func(streamProgress bool, keys ...string) (pb.Watch_WatchClient, *seen) {
		t.Helper()
		st, err := e.watch.Watch(edgeCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		for i, k := range keys {
			c := &pb.WatchCreate{Key: []byte(k), RequestId: uint64(i + 1), StreamProgress: streamProgress}
			if err := st.Send(&pb.WatchRequest{Request: &pb.WatchRequest_Create{Create: c}}); err != nil {
				t.Fatal(err)
			}
		}
		return st, &seen{created: map[uint64]uint64{}, perWatch: map[uint64]int{}}
	}
	// read reads st until done holds for s.
	read := func(st pb.Watch_WatchClient, s *seen, done func() bool) {
		t.Helper()
		for !done() {
			b, err := st.Recv()
			if err != nil {
				t.Fatalf("watch stream: %v", err)
			}
			for _, r := range b.Responses {
				switch r.Type {
				case pb.EventType_CREATED:
					s.created[r.WatchId] = r.Revision
				case pb.EventType_PUT:
					s.puts++
				case pb.EventType_PROGRESS:
					if r.WatchId != 0 {
						s.perWatch[r.WatchId]++
						continue
					}
					if len(s.created) == 0 {
						t.Fatalf("stream PROGRESS %d before any CREATED", r.Revision)
					}
					if s.putRev != 0 && r.Revision >= s.putRev && s.puts == 0 {
						t.Fatalf("stream PROGRESS %d came before the PUT at %d", r.Revision, s.putRev)
					}
					s.streamProgs = append(s.streamProgs, r.Revision)
				default:
					t.Fatalf("unexpected %v", r)
				}
			}
		}
	}

	on, son := open(true, "/sp/a", "/sp/b", "/sp/c")
	off, soff := open(false, "/pw/a", "/pw/b")
	read(on, son, func() bool { return len(son.created) == 3 && len(son.streamProgs) >= 3 })
	if len(son.perWatch) != 0 {
		t.Fatalf("stream_progress stream got per-watch PROGRESS %v", son.perWatch)
	}
	put, err := e.kv.Put(edgeCtx(t), &pb.PutRequest{Key: []byte("/sp/b"), Value: []byte("v")})
	if err != nil {
		t.Fatal(err)
	}
	son.putRev = put.Revision
	read(on, son, func() bool { return son.streamProgs[len(son.streamProgs)-1] >= put.Revision })
	if son.puts != 1 {
		t.Fatalf("%d PUTs seen, want 1", son.puts)
	}
	for i := 1; i < len(son.streamProgs); i++ {
		if son.streamProgs[i] < son.streamProgs[i-1] {
			t.Fatalf("stream PROGRESS went down: %v", son.streamProgs)
		}
	}
	if len(son.perWatch) != 0 {
		t.Fatalf("stream_progress stream got per-watch PROGRESS %v", son.perWatch)
	}

	read(off, soff, func() bool {
		if len(soff.created) < 2 {
			return false
		}
		for id := range soff.created {
			if soff.perWatch[id] < 2 {
				return false
			}
		}
		return true
	})
	if len(soff.streamProgs) != 0 {
		t.Fatalf("a stream without stream_progress got watch_id 0 PROGRESS %v", soff.streamProgs)
	}
}
