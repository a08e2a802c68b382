package main

import (
	"strings"
	"testing"
	"time"

	pb "github.com/raftwatch/raftwatch/proto"
)

// The status line shows the raft log's scrub beside the state machine's.
func TestHealthLineShowsBothScrubs(t *testing.T) {
	end := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	s := &pb.StatusResponse{Healthy: false, UnhealthyReason: "raft log entry 7 in raft.db is damaged",
		ScrubPasses: 3, ScrubMismatches: 0, ScrubLastPassUnixMs: end.UnixMilli(), ScrubLastPassValues: 40,
		LogScrubPasses: 2, LogScrubMismatches: 1, LogScrubLastPassUnixMs: end.Add(time.Second).UnixMilli(), LogScrubLastPassEntries: 12}
	got := healthLine(s)
	for _, want := range []string{"healthy=false", "scrub_passes=3 scrub_mismatches=0 scrub_last=2026-12-01T10:00:00Z scrub_values=40",
		"log_scrub_passes=2 log_scrub_mismatches=1 log_scrub_last=2026-12-01T10:00:01Z log_scrub_entries=12",
		`unhealthy_reason="raft log entry 7 in raft.db is damaged"`} {
		if !strings.Contains(got, want) {
			t.Errorf("health line %q lacks %q", got, want)
		}
	}
	if got := healthLine(&pb.StatusResponse{Healthy: true}); got != "healthy=true scrub_passes=0 scrub_mismatches=0 log_scrub_passes=0 log_scrub_mismatches=0" {
		t.Errorf("health line before any pass: %q", got)
	}
}
