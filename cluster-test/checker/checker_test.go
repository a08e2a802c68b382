package checker

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/raftwatch/raftwatch/cluster-test/history"
)

// hb builds a history: each call appends an invocation and its completion.
type hb struct {
	events []history.Event
	id     int
}

// op records an operation by process p over [call, ret]; complete fills the
// completion (Type defaults to ok). ret < 0 leaves it without a completion.
func (h *hb) op(p int, kind, key, value string, call, ret int64, complete history.Event) {
	h.id++
	inv := history.Event{Type: history.Invoke, ID: h.id, Process: p, Op: kind, Key: key, Value: value,
		CondRev: complete.CondRev, CondAbsent: complete.CondAbsent, Node: "n1", Time: call}
	h.events = append(h.events, inv)
	if ret < 0 {
		return
	}
	c := complete
	c.ID, c.Process, c.Op, c.Key, c.Node, c.Time = h.id, p, kind, key, "n1", ret
	c.CondRev, c.CondAbsent = 0, false
	if c.Type == "" {
		c.Type = history.OK
	}
	h.events = append(h.events, c)
}

func (h *hb) ops() []history.Op { return history.Pair(h.events) }

func absentPrev() history.Event { return history.Event{PrevKnown: true} }
func prev(v string) history.Event {
	return history.Event{PrevKnown: true, PrevFound: true, PrevValue: v}
}
func withRev(e history.Event, rev uint64) history.Event { e.Revision = rev; e.ModRev = rev; return e }
func read(v string, rev uint64) history.Event {
	return history.Event{Found: true, ReadValue: v, ModRev: rev}
}

const k = "/jepsen/k0"

func TestLinearizable(t *testing.T) {
	tests := []struct {
		name  string
		build func(h *hb)
		valid bool
	}{
		{"sequential put then read of that value is linearizable", func(h *hb) {
			h.op(0, history.OpPut, k, "a", 0, 10, withRev(absentPrev(), 5))
			h.op(1, history.OpGet, k, "", 20, 30, read("a", 5))
		}, true},
		{"stale read: a get after an acknowledged put returns the older value", func(h *hb) {
			h.op(0, history.OpPut, k, "a", 0, 10, withRev(absentPrev(), 5))
			h.op(0, history.OpPut, k, "b", 20, 30, withRev(prev("a"), 6))
			h.op(1, history.OpGet, k, "", 40, 50, read("a", 5))
		}, false},
		{"stale read: get returns absent after an acknowledged put", func(h *hb) {
			h.op(0, history.OpPut, k, "a", 0, 10, withRev(absentPrev(), 5))
			h.op(1, history.OpGet, k, "", 40, 50, history.Event{})
		}, false},
		{"concurrent put and get may see either value", func(h *hb) {
			h.op(0, history.OpPut, k, "a", 0, 10, withRev(absentPrev(), 5))
			h.op(0, history.OpPut, k, "b", 20, 50, withRev(prev("a"), 6))
			h.op(1, history.OpGet, k, "", 25, 30, read("a", 5))
			h.op(2, history.OpGet, k, "", 26, 31, read("b", 6))
		}, true},
		{"a read may not go back in time between two concurrent reads", func(h *hb) {
			h.op(0, history.OpPut, k, "a", 0, 10, withRev(absentPrev(), 5))
			h.op(0, history.OpPut, k, "b", 20, 100, withRev(prev("a"), 6))
			h.op(1, history.OpGet, k, "", 25, 30, read("b", 6))
			h.op(2, history.OpGet, k, "", 40, 50, read("a", 5))
		}, false},
		{"a read reporting the wrong mod_revision is not linearizable", func(h *hb) {
			h.op(0, history.OpPut, k, "a", 0, 10, withRev(absentPrev(), 5))
			h.op(1, history.OpGet, k, "", 20, 30, read("a", 7))
		}, false},
		{"put with unknown outcome may be seen by a later read", func(h *hb) {
			h.op(0, history.OpPut, k, "a", 0, 10, withRev(absentPrev(), 5))
			h.op(0, history.OpPut, k, "b", 20, 30, history.Event{Type: history.Info, Error: "deadline"})
			h.op(1, history.OpGet, k, "", 40, 50, read("b", 9))
			h.op(1, history.OpGet, k, "", 60, 70, read("b", 9))
		}, true},
		{"put with unknown outcome may never apply", func(h *hb) {
			h.op(0, history.OpPut, k, "a", 0, 10, withRev(absentPrev(), 5))
			h.op(0, history.OpPut, k, "b", 20, 30, history.Event{Type: history.Info})
			h.op(1, history.OpGet, k, "", 40, 50, read("a", 5))
		}, true},
		{"put with unknown outcome cannot apply before it was invoked", func(h *hb) {
			h.op(0, history.OpPut, k, "a", 0, 10, withRev(absentPrev(), 5))
			h.op(1, history.OpGet, k, "", 20, 30, read("b", 9))
			h.op(0, history.OpPut, k, "b", 40, 50, history.Event{Type: history.Info})
		}, false},
		{"a failed put is not applied", func(h *hb) {
			h.op(0, history.OpPut, k, "a", 0, 10, withRev(absentPrev(), 5))
			h.op(0, history.OpPut, k, "b", 20, 30, history.Event{Type: history.Fail, Error: "not leader"})
			h.op(1, history.OpGet, k, "", 40, 50, read("b", 9))
		}, false},
		{"cas on the current mod_revision succeeds", func(h *hb) {
			h.op(0, history.OpPut, k, "a", 0, 10, withRev(absentPrev(), 5))
			e := withRev(prev("a"), 6)
			e.Succeeded, e.CondRev = true, 5
			h.op(0, history.OpCAS, k, "b", 20, 30, e)
			h.op(1, history.OpGet, k, "", 40, 50, read("b", 6))
		}, true},
		{"cas on a stale mod_revision that reports success is not linearizable", func(h *hb) {
			h.op(0, history.OpPut, k, "a", 0, 10, withRev(absentPrev(), 5))
			h.op(0, history.OpPut, k, "b", 20, 30, withRev(prev("a"), 6))
			e := withRev(prev("b"), 7)
			e.Succeeded, e.CondRev = true, 5
			h.op(1, history.OpCAS, k, "c", 40, 50, e)
		}, false},
		{"cas on a stale mod_revision that reports failure is a valid observation", func(h *hb) {
			h.op(0, history.OpPut, k, "a", 0, 10, withRev(absentPrev(), 5))
			h.op(0, history.OpPut, k, "b", 20, 30, withRev(prev("a"), 6))
			e := prev("b")
			e.Revision, e.ModRev, e.CondRev = 7, 6, 5
			h.op(1, history.OpCAS, k, "c", 40, 50, e)
			h.op(1, history.OpGet, k, "", 60, 70, read("b", 6))
		}, true},
		{"cas on the current mod_revision that reports failure is not linearizable", func(h *hb) {
			h.op(0, history.OpPut, k, "a", 0, 10, withRev(absentPrev(), 5))
			e := prev("a")
			e.Revision, e.ModRev, e.CondRev = 7, 5, 5
			h.op(1, history.OpCAS, k, "c", 40, 50, e)
		}, false},
		{"cas if absent succeeds on a missing key and fails after a put", func(h *hb) {
			e := withRev(absentPrev(), 3)
			e.Succeeded, e.CondAbsent = true, true
			h.op(0, history.OpCAS, k, "a", 0, 10, e)
			f := prev("a")
			f.Revision, f.ModRev, f.CondAbsent = 4, 3, true
			h.op(0, history.OpCAS, k, "b", 20, 30, f)
		}, true},
		{"delete then read absent; delete of a missing key deletes nothing", func(h *hb) {
			h.op(0, history.OpPut, k, "a", 0, 10, withRev(absentPrev(), 5))
			d := prev("a")
			d.Deleted, d.Revision = true, 6
			h.op(0, history.OpDelete, k, "", 20, 30, d)
			h.op(1, history.OpGet, k, "", 40, 50, history.Event{})
			h.op(1, history.OpDelete, k, "", 60, 70, absentPrev())
		}, true},
		{"delete reporting deleted=true on a missing key is not linearizable", func(h *hb) {
			d := absentPrev()
			d.Deleted = true
			h.op(0, history.OpDelete, k, "", 20, 30, d)
		}, false},
		{"a put's prev_kv must be the value it overwrote", func(h *hb) {
			h.op(0, history.OpPut, k, "a", 0, 10, withRev(absentPrev(), 5))
			h.op(0, history.OpPut, k, "b", 20, 30, withRev(absentPrev(), 6))
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := &hb{}
			tc.build(h)
			html := filepath.Join(t.TempDir(), "lin.html")
			res := CheckLinearizable(h.ops(), LinearizableOptions{HTMLPath: html})
			if res.Valid != tc.valid || res.Undecided {
				t.Fatalf("valid=%v undecided=%v, want valid=%v: %s", res.Valid, res.Undecided, tc.valid, res.Detail)
			}
			if !tc.valid {
				if _, err := os.Stat(html); err != nil {
					t.Errorf("no visualisation written: %v", err)
				}
			}
		})
	}
}

func TestLinearizableUsesLogToDropUnappliedInfoWrites(t *testing.T) {
	h := &hb{}
	h.op(0, history.OpPut, k, "a", 0, 10, withRev(absentPrev(), 1))
	h.op(0, history.OpPut, k, "b", 20, 30, history.Event{Type: history.Info})
	h.op(1, history.OpGet, k, "", 40, 50, read("a", 1))
	log := &Log{FirstIndex: 1, Entries: []LogEntry{{Index: 1, Ops: []LogOp{{Kind: LogPut, Key: k, Value: "a"}}}}}
	rp, err := NewReplay(log)
	if err != nil {
		t.Fatal(err)
	}
	res := CheckLinearizable(h.ops(), LinearizableOptions{Replay: rp})
	if !res.Valid || res.DroppedByLog != 1 {
		t.Fatalf("valid=%v dropped=%d: %s", res.Valid, res.DroppedByLog, res.Detail)
	}
}

func mustReplay(t *testing.T, entries ...LogEntry) *Replay {
	t.Helper()
	rp, err := NewReplay(&Log{FirstIndex: 1, Entries: entries})
	if err != nil {
		t.Fatal(err)
	}
	return rp
}

func put(idx uint64, key, v string) LogEntry {
	return LogEntry{Index: idx, Type: "command", Ops: []LogOp{{Kind: LogPut, Key: key, Value: v}}}
}

func del(idx uint64, key string) LogEntry {
	return LogEntry{Index: idx, Type: "command", Ops: []LogOp{{Kind: LogDelete, Key: key}}}
}

func TestReplayAppliesConditionsLikeTheFSM(t *testing.T) {
	rp := mustReplay(t,
		put(1, k, "a"),
		LogEntry{Index: 2, Ops: []LogOp{{Kind: LogPut, Key: k, Value: "b", CondRev: 9}}},       // fails: rev is 1
		LogEntry{Index: 3, Ops: []LogOp{{Kind: LogPut, Key: k, Value: "c", CondRev: 1}}},       // holds
		LogEntry{Index: 4, Ops: []LogOp{{Kind: LogPut, Key: k, Value: "d", CondAbsent: true}}}, // fails
		del(5, k),
		del(6, k), // absent: no event
		LogEntry{Index: 7, Ops: []LogOp{{Kind: LogPut, Key: k, Value: "e", CondAbsent: true}}}, // holds
	)
	var got []string
	for _, m := range rp.Mutations {
		got = append(got, m.Kind+":"+m.Value)
	}
	want := "put:a put:c delete: put:e"
	if strings.Join(got, " ") != want {
		t.Fatalf("mutations %v, want %s", got, want)
	}
	if kv := rp.Final[k]; kv.Value != "e" || kv.ModRev != 7 || kv.CreateRev != 7 || kv.Version != 1 {
		t.Fatalf("final %+v", kv)
	}
	if !rp.Proposed[k]["b"] || rp.Applied[k]["b"] != 0 {
		t.Fatalf("b should be proposed but not applied")
	}
}

func TestNoLostWrites(t *testing.T) {
	tests := []struct {
		name  string
		log   []LogEntry
		final map[string]KV
		valid bool
	}{
		{"acknowledged put present on every node is kept", []LogEntry{put(5, k, "a")},
			map[string]KV{k: {Value: "a", ModRev: 5}}, true},
		{"acknowledged put superseded by a later committed put is kept", []LogEntry{put(5, k, "a"), put(6, k, "z")},
			map[string]KV{k: {Value: "z", ModRev: 6}}, true},
		{"lost write: acknowledged put missing from the committed log", []LogEntry{put(4, k, "x")},
			map[string]KV{k: {Value: "x", ModRev: 4}}, false},
		{"lost write: acknowledged put not in final state and never superseded", []LogEntry{put(5, k, "a")},
			map[string]KV{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := &hb{}
			h.op(0, history.OpPut, k, "a", 0, 10, withRev(absentPrev(), 5))
			rp := mustReplay(t, tc.log...)
			final := map[string]map[string]KV{"n1": tc.final, "n2": tc.final}
			res := CheckNoLostWrites(h.ops(), rp, final)
			if res.Valid != tc.valid {
				t.Fatalf("valid=%v want %v: %s", res.Valid, tc.valid, res.Detail)
			}
		})
	}
}

func TestConvergence(t *testing.T) {
	rp := mustReplay(t, put(5, k, "a"))
	good := map[string]KV{k: {Value: "a", ModRev: 5, CreateRev: 5, Version: 1}}
	tests := []struct {
		name  string
		nodes map[string]NodeFinal
		valid bool
	}{
		{"same fsm_index and same data converge", map[string]NodeFinal{
			"n1": {FSMIndex: 5, Data: good}, "n2": {FSMIndex: 5, Data: good}}, true},
		{"different fsm_index does not converge", map[string]NodeFinal{
			"n1": {FSMIndex: 5, Data: good}, "n2": {FSMIndex: 4, Data: good}}, false},
		{"different data does not converge", map[string]NodeFinal{
			"n1": {FSMIndex: 5, Data: good}, "n2": {FSMIndex: 5, Data: map[string]KV{}}}, false},
		{"same data that differs from the committed log is reported", map[string]NodeFinal{
			"n1": {FSMIndex: 5, Data: map[string]KV{k: {Value: "b", ModRev: 5}}},
			"n2": {FSMIndex: 5, Data: map[string]KV{k: {Value: "b", ModRev: 5}}}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := CheckConvergence(tc.nodes, rp)
			if res.Valid != tc.valid {
				t.Fatalf("valid=%v want %v: %s", res.Valid, tc.valid, res.Detail)
			}
		})
	}
}

// watchLog: k0 puts at 2,3; k1 put at 4; k0 delete at 5; k0 put at 6.
func watchLog(t *testing.T) *Replay {
	return mustReplay(t, put(2, k, "a"), put(3, k, "b"), put(4, "/jepsen/k1", "x"), del(5, k), put(6, k, "c"))
}

func wm(typ string, key string, rev uint64, value, prev string) history.WatchMsg {
	return history.WatchMsg{Type: typ, Key: key, Revision: rev, Value: value, PrevValue: prev, HasPrev: prev != ""}
}

func TestWatch(t *testing.T) {
	created := wm(MsgCreated, "", 1, "", "")
	tests := []struct {
		name   string
		prefix bool
		msgs   []history.WatchMsg
		rule   string // "" = valid
	}{
		{"complete exact-key stream with prev values holds every guarantee", false, []history.WatchMsg{
			created, wm(MsgPut, k, 2, "a", ""), wm(MsgPut, k, 3, "b", "a"), wm(MsgProgress, "", 4, "", ""),
			wm(MsgDelete, k, 5, "", "b"), wm(MsgPut, k, 6, "c", ""), wm(MsgProgress, "", 6, "", ""), wm(MsgCanceled, "", 0, "", "")}, ""},
		{"complete prefix stream holds every guarantee", true, []history.WatchMsg{
			created, wm(MsgPut, k, 2, "a", ""), wm(MsgPut, k, 3, "b", "a"), wm(MsgPut, "/jepsen/k1", 4, "x", ""),
			wm(MsgDelete, k, 5, "", "b"), wm(MsgPut, k, 6, "c", "")}, ""},
		{"stream that ends early is not missing later events", false, []history.WatchMsg{
			created, wm(MsgPut, k, 2, "a", "")}, ""},
		{"gap: a committed event inside the window is missing", false, []history.WatchMsg{
			created, wm(MsgPut, k, 2, "a", ""), wm(MsgDelete, k, 5, "", "b")}, RuleReliable},
		{"gap: progress past a committed event that was never sent", false, []history.WatchMsg{
			created, wm(MsgPut, k, 2, "a", ""), wm(MsgProgress, "", 4, "", "")}, RuleReliable},
		{"duplicate: the same revision and key delivered twice", false, []history.WatchMsg{
			created, wm(MsgPut, k, 2, "a", ""), wm(MsgPut, k, 3, "b", "a"), wm(MsgPut, k, 3, "b", "a")}, RuleUnique},
		{"reordered: revisions go down", false, []history.WatchMsg{
			created, wm(MsgPut, k, 3, "b", "a"), wm(MsgPut, k, 2, "a", "")}, RuleOrdered},
		{"wrong prev_value: not the value at revision-1", false, []history.WatchMsg{
			created, wm(MsgPut, k, 2, "a", ""), wm(MsgPut, k, 3, "b", "zzz")}, RulePrevValue},
		{"event below an earlier progress revision", false, []history.WatchMsg{
			created, wm(MsgProgress, "", 3, "", ""), wm(MsgPut, k, 3, "b", "a")}, RuleBookmark},
		{"event at or below the CREATED revision", false, []history.WatchMsg{
			wm(MsgCreated, "", 3, "", ""), wm(MsgPut, k, 3, "b", "a")}, RuleBookmark},
		{"progress revisions go down", false, []history.WatchMsg{
			created, wm(MsgPut, k, 2, "a", ""), wm(MsgPut, k, 3, "b", "a"), wm(MsgProgress, "", 4, "", ""), wm(MsgProgress, "", 3, "", "")}, RuleProgress},
		{"message after CANCELED", false, []history.WatchMsg{
			created, wm(MsgCanceled, "", 0, "", ""), wm(MsgPut, k, 2, "a", "")}, RuleCanceled},
		{"event that was never committed", false, []history.WatchMsg{
			created, wm(MsgPut, k, 2, "zzz", "")}, RuleValid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			key := k
			if tc.prefix {
				key = "/jepsen/"
			}
			s := Stream{Node: "n1", Key: key, Prefix: tc.prefix, PrevKV: true, Msgs: tc.msgs}
			res := CheckWatch([]Stream{s}, watchLog(t))
			if tc.rule == "" {
				if !res.Valid {
					t.Fatalf("want valid: %+v", res.Violations)
				}
				return
			}
			if res.Valid || res.ByRule[tc.rule] == 0 {
				t.Fatalf("want a %s violation, got %+v", tc.rule, res.Violations)
			}
		})
	}
}

func TestGroupStreamsSeparatesReopenedStreams(t *testing.T) {
	msgs := []history.WatchMsg{
		{Node: "n1", Stream: 0, Type: MsgOpen, Key: k},
		{Node: "n1", Stream: 0, Type: MsgCreated, Revision: 1},
		{Node: "n1", Stream: 0, Type: MsgError, Error: "EOF"},
		{Node: "n1", Stream: 1, Type: MsgOpen, Key: "/jepsen/", Prefix: true, PrevKV: true},
		{Node: "n1", Stream: 1, Type: MsgCreated, Revision: 7},
	}
	ss := GroupStreams(msgs)
	if len(ss) != 2 || ss[0].Key != k || !ss[1].Prefix || !ss[1].PrevKV || len(ss[1].Msgs) != 1 {
		t.Fatalf("got %+v", ss)
	}
}

func TestAvailabilityCountsPerWindow(t *testing.T) {
	ev := []history.NemesisEvent{{Time: 100, Phase: "start", Kind: "pause"}, {Time: 200, Phase: "stop", Kind: "pause"}}
	ws := Windows(ev, 300)
	if len(ws) != 3 || ws[1].Kind != "pause" {
		t.Fatalf("windows %+v", ws)
	}
	h := &hb{}
	h.op(0, history.OpGet, k, "", 50, 60, history.Event{})
	h.op(0, history.OpGet, k, "", 150, 160, history.Event{Type: history.Info})
	h.op(0, history.OpGet, k, "", 250, 260, history.Event{Type: history.Fail})
	ws, _ = Availability(h.ops(), ws)
	if ws[0].OK != 1 || ws[1].Info != 1 || ws[2].Fail != 1 {
		t.Fatalf("counts %+v", ws)
	}
}
