package checker

import (
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func entry(idx uint64, ops ...LogOp) LogEntry { return LogEntry{Index: idx, Type: "command", Ops: ops} }

func txnOp(cs []LogCompare, success, failure []LogTxnOp) LogOp {
	return LogOp{Kind: LogTxn, Txn: &LogTxnRequest{Compares: cs, Success: success, Failure: failure}}
}

func tput(key, v string) LogTxnOp { return LogTxnOp{Kind: LogPut, Key: key, Value: v} }

// events lists the replay's mutations as "rev kind key[=value]".
func events(rp *Replay) string {
	var out []string
	for _, m := range rp.Mutations {
		s := m.Kind + " " + m.Key
		if m.Kind == LogPut {
			s += "=" + m.Value
		}
		if m.Uncertain {
			s += "?"
		}
		out = append(out, strings.TrimSpace(s)+"@"+itoa(m.Rev))
	}
	return strings.Join(out, ", ")
}

func itoa(u uint64) string { return strconv.FormatUint(u, 10) }

func TestReplayTxnCompares(t *testing.T) {
	// /x exists (value "m", create 1, mod 1, version 1, no lease); /none is absent.
	base := entry(1, LogOp{Kind: LogPut, Key: "/x", Value: "m"})
	tests := []struct {
		name string
		c    LogCompare
		want bool
	}{
		{"absent key: version is 0", LogCompare{Key: "/none", Target: CmpVersion, Result: CmpEqual, Rev: 0}, true},
		{"absent key: create_revision is 0", LogCompare{Key: "/none", Target: CmpCreate, Result: CmpEqual, Rev: 0}, true},
		{"absent key: mod_revision is 0", LogCompare{Key: "/none", Target: CmpMod, Result: CmpLess, Rev: 1}, true},
		{"absent key: lease is 0", LogCompare{Key: "/none", Target: CmpLease, Result: CmpEqual, Lease: 0}, true},
		{"absent key: a value compare is false, even NOT_EQUAL", LogCompare{Key: "/none", Target: CmpValue, Result: CmpNotEqual, Value: "m"}, false},
		{"absent key: a value compare is false, even LESS than anything", LogCompare{Key: "/none", Target: CmpValue, Result: CmpLess, Value: "zzz"}, false},
		{"exists EQUAL false on an absent key", LogCompare{Key: "/none", Target: CmpExists, Result: CmpEqual, Exists: false}, true},
		{"exists NOT_EQUAL true on an absent key", LogCompare{Key: "/none", Target: CmpExists, Result: CmpNotEqual, Exists: true}, true},
		{"exists EQUAL true on a present key", LogCompare{Key: "/x", Target: CmpExists, Result: CmpEqual, Exists: true}, true},
		{"exists with LESS never holds (the node refuses it)", LogCompare{Key: "/x", Target: CmpExists, Result: CmpLess, Exists: true}, false},
		{"value LESS is byte-wise", LogCompare{Key: "/x", Target: CmpValue, Result: CmpLess, Value: "n"}, true},
		{"value GREATER is byte-wise", LogCompare{Key: "/x", Target: CmpValue, Result: CmpGreater, Value: "mm"}, false},
		{"mod_revision EQUAL", LogCompare{Key: "/x", Target: CmpMod, Result: CmpEqual, Rev: 1}, true},
		{"version GREATER", LogCompare{Key: "/x", Target: CmpVersion, Result: CmpGreater, Rev: 0}, true},
		{"lease NOT_EQUAL", LogCompare{Key: "/x", Target: CmpLease, Result: CmpNotEqual, Lease: 3}, true},
		{"no target never holds", LogCompare{Key: "/x", Result: CmpEqual}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rp := mustReplay(t, base, entry(2, txnOp([]LogCompare{tc.c}, []LogTxnOp{tput("/s", "ok")}, []LogTxnOp{tput("/f", "no")})))
			_, success := rp.Final["/s"]
			_, failure := rp.Final["/f"]
			if success != tc.want || failure == tc.want {
				t.Fatalf("success branch ran: %v, failure branch ran: %v; want the compare to be %v", success, failure, tc.want)
			}
		})
	}
}

func TestReplayTxnOpsInOrderAtOneRevision(t *testing.T) {
	rp := mustReplay(t,
		entry(1, LogOp{Kind: LogPut, Key: "/p/b", Value: "1"}, LogOp{Kind: LogPut, Key: "/p/a", Value: "2"}, LogOp{Kind: LogPut, Key: "/q", Value: "3"}),
		// Every compare must hold (one false one picks the failure branch).
		entry(2, txnOp([]LogCompare{
			{Key: "/q", Target: CmpValue, Result: CmpEqual, Value: "3"},
			{Key: "/p/a", Target: CmpMod, Result: CmpEqual, Rev: 1},
		}, []LogTxnOp{tput("/z", "z"), {Kind: LogGet, Key: "/z"}, {Kind: LogDeletePrefix, Key: "/p/"}, tput("/c", "c")}, nil)),
		entry(3, txnOp([]LogCompare{
			{Key: "/q", Target: CmpValue, Result: CmpEqual, Value: "3"},
			{Key: "/z", Target: CmpVersion, Result: CmpEqual, Rev: 7},
		}, []LogTxnOp{tput("/never", "x")}, []LogTxnOp{{Kind: LogDelete, Key: "/q"}, {Kind: LogDelete, Key: "/absent"}})),
	)
	want := "put /p/b=1@1, put /p/a=2@1, put /q=3@1, put /z=z@2, delete /p/a@2, delete /p/b@2, put /c=c@2, delete /q@3"
	if got := events(rp); got != want {
		t.Fatalf("mutations\n %s\nwant\n %s", got, want)
	}
	if !rp.Proposed["/never"]["x"] || rp.Applied["/never"] != nil {
		t.Fatal("a put of the branch that did not run is proposed, not applied")
	}
	if len(rp.Anomalies) != 0 {
		t.Fatalf("anomalies %v", rp.Anomalies)
	}
}

func TestReplayConditionsAreCompares(t *testing.T) {
	// The single-key Condition goes through the same evaluator: a delete
	// with mod_revision holds only on that revision.
	rp := mustReplay(t,
		entry(1, LogOp{Kind: LogPut, Key: "/k", Value: "a"}),
		entry(2, LogOp{Kind: LogDelete, Key: "/k", CondRev: 9}),
		entry(3, LogOp{Kind: LogDelete, Key: "/k", CondAbsent: true}),
		entry(4, LogOp{Kind: LogDelete, Key: "/k", CondRev: 1}),
	)
	if got, want := events(rp), "put /k=a@1, delete /k@4"; got != want {
		t.Fatalf("mutations %s, want %s", got, want)
	}
}

func TestReplayLeaseIDs(t *testing.T) {
	// The same sequence as fsm's TestLeaseAutoIDs: the state machine's
	// counter starts at 1, skips ids in use, and explicit ids do not move it.
	rp := mustReplay(t,
		entry(1, LogOp{Kind: LogLeaseGrant, TTL: 5}),           // 1
		entry(2, LogOp{Kind: LogLeaseGrant, Lease: 5, TTL: 5}), // explicit 5
		entry(3, LogOp{Kind: LogLeaseGrant, TTL: 5}),           // 2
		entry(4, LogOp{Kind: LogLeaseGrant, Lease: 5, TTL: 9}), // in use: ALREADY_EXISTS
		entry(5, LogOp{Kind: LogLeaseRevoke, Lease: 2}),        // the counter stays at 3
		entry(6, LogOp{Kind: LogLeaseGrant, Lease: 3, TTL: 5}), // explicit 3
		entry(7, LogOp{Kind: LogLeaseGrant, TTL: 5}),           // 3 in use: 4
		entry(8, LogOp{Kind: LogLeaseGrant, TTL: 5}),           // 5 in use: 6
	)
	want := map[int64]uint64{1: 1, 5: 2, 2: 3, 3: 6, 4: 7, 6: 8}
	if !reflect.DeepEqual(rp.Granted, want) {
		t.Fatalf("granted %v, want %v", rp.Granted, want)
	}
	if !reflect.DeepEqual(rp.Leases, map[int64]bool{1: true, 5: true, 3: true, 4: true, 6: true}) {
		t.Fatalf("leases at the end %v", rp.Leases)
	}
}

func TestReplayLeaseKeys(t *testing.T) {
	lput := func(key, v string, lease int64) LogOp { return LogOp{Kind: LogPut, Key: key, Value: v, Lease: lease} }
	rp := mustReplay(t,
		entry(1, LogOp{Kind: LogLeaseGrant, TTL: 5}), // lease 1
		entry(2, lput("/s/b", "b", 1), lput("/s/a", "a", 1), lput("/s/c", "c", 1), lput("/s/d", "d", 1)),
		entry(3, lput("/s/c", "c2", 0)),               // a put without the lease detaches
		entry(4, LogOp{Kind: LogDelete, Key: "/s/d"}), // a delete detaches
		entry(5, lput("/s/d", "d2", 0)),
		entry(6, lput("/s/x", "x", 42)), // lease 42 does not exist: refused, nothing changes
		entry(7, txnOp(nil, []LogTxnOp{tput("/s/y", "y"), {Kind: LogPut, Key: "/s/z", Value: "z", Lease: 42}}, nil)), // the whole Txn refused
		entry(8, LogOp{Kind: LogLeaseCheckpoint, Checkpoints: []LogCheckpoint{{Lease: 1, RemainingMS: 1, RenewedIndex: 1}}}),
		entry(9, LogOp{Kind: LogLeaseRevoke, Lease: 1}),
		entry(10, LogOp{Kind: LogLeaseRevoke, Lease: 1}), // NOT_FOUND: nothing
	)
	want := "put /s/b=b@2, put /s/a=a@2, put /s/c=c@2, put /s/d=d@2, put /s/c=c2@3, delete /s/d@4, put /s/d=d2@5, delete /s/a@9, delete /s/b@9"
	if got := events(rp); got != want {
		t.Fatalf("mutations\n %s\nwant\n %s", got, want)
	}
	if rp.Proposed["/s/x"]["x"] != true || rp.Applied["/s/x"] != nil || rp.Applied["/s/y"] != nil {
		t.Fatal("puts to a missing lease must be proposed, not applied")
	}
	if end := rp.Ended[1]; end.Rev != 9 || end.Kind != LogLeaseRevoke {
		t.Fatalf("lease 1 ended %+v", end)
	}
	if kv := rp.Final["/s/c"]; kv.Lease != 0 || kv.Value != "c2" {
		t.Fatalf("/s/c %+v", kv)
	}
}

func TestReplayLeaseExpiryNeedsTheRenewedIndex(t *testing.T) {
	lput := func(key string, lease int64) LogOp { return LogOp{Kind: LogPut, Key: key, Value: "v", Lease: lease} }
	rp := mustReplay(t,
		entry(1, LogOp{Kind: LogLeaseGrant, TTL: 5}, LogOp{Kind: LogLeaseGrant, TTL: 5}), // leases 1 and 2, renewed_index 1
		entry(2, lput("/e/1", 1), lput("/e/2", 2)),
		entry(3, LogOp{Kind: LogLeaseRenew, Lease: 1}), // lease 1 renewed_index 3
		entry(4, LogOp{Kind: LogLeaseRenew, Lease: 9}), // unknown: refused
		// The leader decided both were due as of renewed_index 1: lease 1 was
		// renewed since (no-op), lease 2 expires.
		entry(5, LogOp{Kind: LogLeaseExpire, Expiries: []LogLeaseExpiry{{Lease: 1, RenewedIndex: 1}, {Lease: 2, RenewedIndex: 1}}}),
		entry(6, LogOp{Kind: LogLeaseExpire, Expiries: []LogLeaseExpiry{{Lease: 1, RenewedIndex: 3}}}),
	)
	want := "put /e/1=v@2, put /e/2=v@2, delete /e/2@5, delete /e/1@6"
	if got := events(rp); got != want {
		t.Fatalf("mutations\n %s\nwant\n %s", got, want)
	}
	if rp.Ended[2].Kind != LogLeaseExpire || rp.Ended[1].Rev != 6 || len(rp.Leases) != 0 {
		t.Fatalf("ended %+v, leases %v", rp.Ended, rp.Leases)
	}
}

func TestReplayReportsAKeyMutatedTwiceInAnEntry(t *testing.T) {
	rp := mustReplay(t, entry(1, txnOp(nil, []LogTxnOp{tput("/k", "a"), tput("/k", "b")}, nil)))
	if len(rp.Anomalies) != 1 {
		t.Fatalf("anomalies %v", rp.Anomalies)
	}
	res := CheckConvergence(map[string]NodeFinal{"n1": {FSMIndex: 1, Data: map[string]KV{"/k": {Value: "b", ModRev: 1}}}}, rp)
	if res.Valid {
		t.Fatal("convergence must report the anomaly")
	}
}

func TestReplayCompactedLeaseExpiryIsUncertain(t *testing.T) {
	// The log starts at 10: lease 3 and its keys are older. A watcher's
	// DELETE of a key the log never named, at the expiry, is possible; the
	// same at a plain put's revision is not.
	rp, err := NewReplay(&Log{FirstIndex: 10, Entries: []LogEntry{
		entry(10, LogOp{Kind: LogPut, Key: "/seen", Value: "v"}),
		entry(11, LogOp{Kind: LogLeaseExpire, Expiries: []LogLeaseExpiry{{Lease: 3, RenewedIndex: 2}}}),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if m, ok := rp.MutationAt("/old", 11); !ok || !m.Uncertain || m.Kind != LogDelete {
		t.Fatalf("MutationAt(/old, 11) = %+v, %v", m, ok)
	}
	if _, ok := rp.MutationAt("/old", 10); ok {
		t.Fatal("no change of /old at 10")
	}
	if _, ok := rp.MutationAt("/seen", 11); ok {
		t.Fatal("/seen was known (no lease) before the expiry: it was not deleted")
	}
}
