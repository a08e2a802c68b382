package main

import "testing"

// The checker of the slow-watchers and watch-resume workloads must report
// each planted anomaly, and nothing in a clean log.
func TestSeqLogCatchesEachAnomaly(t *testing.T) {
	acks := []ack{{0, 10}, {1, 10}, {2, 11}, {3, 12}}
	type delivery struct {
		seq int64
		rev uint64
	}
	tests := []struct {
		name                                 string
		after                                uint64
		got                                  []delivery
		missing, wrongRev, outOfOrder, dupes int64
	}{
		{name: "every acknowledged put once, in order, is clean",
			got: []delivery{{0, 10}, {1, 10}, {2, 11}, {3, 12}}},
		{name: "two puts of one revision in either order are in order",
			got: []delivery{{1, 10}, {0, 10}, {2, 11}, {3, 12}}},
		{name: "a put never delivered is a gap",
			got: []delivery{{0, 10}, {1, 10}, {3, 12}}, missing: 1},
		{name: "puts at or below the start revision are not expected",
			after: 10, got: []delivery{{2, 11}, {3, 12}}},
		{name: "a put delivered twice is a duplicate",
			got: []delivery{{0, 10}, {1, 10}, {2, 11}, {2, 11}, {3, 12}}, dupes: 1},
		{name: "a revision lower than one delivered before is out of order",
			got: []delivery{{0, 10}, {2, 11}, {1, 10}, {3, 12}}, outOfOrder: 1},
		{name: "a put delivered with another revision than acknowledged is wrong",
			got: []delivery{{0, 10}, {1, 10}, {2, 12}, {3, 12}}, wrongRev: 1},
		{name: "a put the writer never had acknowledged is allowed",
			got: []delivery{{0, 10}, {1, 10}, {2, 11}, {3, 12}, {4, 13}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var l seqLog
			for _, d := range tc.got {
				l.add(d.seq, d.rev)
			}
			missing, wrongRev := l.check(acks, tc.after)
			if missing != tc.missing || wrongRev != tc.wrongRev || l.outOfOrder != tc.outOfOrder || l.duplicates != tc.dupes {
				t.Errorf("missing %d, wrong revision %d, out of order %d, duplicates %d; want %d, %d, %d, %d",
					missing, wrongRev, l.outOfOrder, l.duplicates, tc.missing, tc.wrongRev, tc.outOfOrder, tc.dupes)
			}
		})
	}
}

func TestSeqValueRoundTrip(t *testing.T) {
	v := seqValue(123456)
	if len(v) != valueSize {
		t.Fatalf("value of %d bytes, want %d", len(v), valueSize)
	}
	sent, seq, err := parseSeqValue(v)
	if err != nil || seq != 123456 || sent <= 0 {
		t.Fatalf("parseSeqValue = %d, %d, %v; want a send time, 123456, nil", sent, seq, err)
	}
	if _, _, err := parseSeqValue(v[:10]); err == nil {
		t.Fatal("a 10-byte value parsed without error")
	}
}
