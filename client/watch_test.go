package client

import (
	"fmt"
	"testing"

	pb "github.com/raftwatch/raftwatch/proto"
)

func put(rev uint64, key string) *pb.WatchResponse {
	return &pb.WatchResponse{Type: pb.EventType_PUT, Key: []byte(key), Value: []byte(fmt.Sprint(rev)), Revision: rev}
}

func progress(rev uint64) *pb.WatchResponse {
	return &pb.WatchResponse{Type: pb.EventType_PROGRESS, Revision: rev}
}

// show is how the tests write an event: "PUT 6 /k/b", "PROGRESS 9",
// "CANCELED shutdown".
func show(r *pb.WatchResponse) string {
	switch r.Type {
	case pb.EventType_PUT, pb.EventType_DELETE:
		return fmt.Sprintf("%v %d %s", r.Type, r.Revision, r.Key)
	case pb.EventType_CANCELED:
		return "CANCELED " + r.Reason
	}
	return fmt.Sprintf("%v %d", r.Type, r.Revision)
}

func TestPosition(t *testing.T) {
	tests := []struct {
		name       string
		delivered  []*pb.WatchResponse // after a watch starting after revision 4
		next       *pb.WatchResponse
		fresh      bool
		wantResume uint64
	}{
		{"a new watch resumes after its start", nil, put(4, "/a"), false, 5},
		{"an open revision resumes at itself", []*pb.WatchResponse{put(6, "/a")}, put(6, "/b"), true, 6},
		{"a key delivered at the open revision is a repeat", []*pb.WatchResponse{put(6, "/a")}, put(6, "/a"), false, 6},
		{"a PROGRESS closes the revision", []*pb.WatchResponse{put(6, "/a"), progress(6)}, put(6, "/b"), false, 7},
		{"a later event closes the revision", []*pb.WatchResponse{put(6, "/a"), put(7, "/a")}, put(6, "/b"), false, 7},
		{"a PROGRESS below the position is stale", []*pb.WatchResponse{progress(9)}, progress(8), false, 10},
		{"a PROGRESS at the position is news", []*pb.WatchResponse{put(9, "/a")}, progress(9), true, 9},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := startingAfter(4)
			for _, r := range tc.delivered {
				if !p.fresh(r) {
					t.Fatalf("%s not fresh", show(r))
				}
				p.record(r)
			}
			if got := p.fresh(tc.next); got != tc.fresh {
				t.Fatalf("fresh(%s) = %v, want %v", show(tc.next), got, tc.fresh)
			}
			if got := p.resumeAt(); got != tc.wantResume {
				t.Fatalf("resumeAt() = %d, want %d", got, tc.wantResume)
			}
		})
	}
}
