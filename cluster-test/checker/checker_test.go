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

func created(rev uint64) history.WatchMsg  { return wm(MsgCreated, "", rev, "", "") }
func progress(rev uint64) history.WatchMsg { return wm(MsgProgress, "", rev, "", "") }

// wb writes the records of one logical watch the way the watcher does: OPEN
// or RESUME starts a stream, got records messages it received and
// delivered, hid ones it received and did not deliver (dropped duplicates,
// the CREATED of a resumed stream, a CANCELED it resumes after).
type wb struct {
	key    string
	prefix bool
	recs   []history.WatchMsg
	stream int
	node   string
	t      int64
}

func newWB(key string, prefix bool) *wb { return &wb{key: key, prefix: prefix, stream: -1} }

func (b *wb) rec(m history.WatchMsg) {
	b.t++
	m.Watcher, m.Stream, m.Node, m.Time = 1, b.stream, b.node, b.t
	b.recs = append(b.recs, m)
}

func (b *wb) start(typ, node string, startRev uint64) *wb {
	b.stream++
	b.node = node
	b.rec(history.WatchMsg{Type: typ, Key: b.key, Prefix: b.prefix, PrevKV: true, StartRevision: startRev})
	return b
}

func (b *wb) open(node string, startRev uint64) *wb   { return b.start(MsgOpen, node, startRev) }
func (b *wb) resume(node string, startRev uint64) *wb { return b.start(MsgResume, node, startRev) }
func (b *wb) brk() *wb                                { b.rec(history.WatchMsg{Type: MsgError, Error: "EOF"}); return b }
func (b *wb) at(t int64) *wb                          { b.t = t - 1; return b }

func (b *wb) got(ms ...history.WatchMsg) *wb {
	for _, m := range ms {
		m.Delivered = true
		b.rec(m)
	}
	return b
}

func (b *wb) hid(ms ...history.WatchMsg) *wb {
	for _, m := range ms {
		b.rec(m)
	}
	return b
}

func (b *wb) end(why string) *wb { b.rec(history.WatchMsg{Type: MsgEnd, Error: why}); return b }

func (b *wb) watches() []Watch { return GroupWatches(b.recs) }

// wantRules fails unless res is valid when rules is empty, or reports a
// violation of each "<level>/<rule>" in rules and none at a level rules
// does not name.
func wantRules(t *testing.T, res WatchResult, rules ...string) {
	t.Helper()
	if len(rules) == 0 {
		if !res.Valid {
			t.Fatalf("want valid: %+v", res.Violations)
		}
		return
	}
	levels := map[string]bool{}
	for _, r := range rules {
		levels[strings.SplitN(r, "/", 2)[0]] = true
		if res.ByRule[r] == 0 {
			t.Errorf("want a %s violation, got %v: %+v", r, res.ByRule, res.Violations)
		}
	}
	for r := range res.ByRule {
		if !levels[strings.SplitN(r, "/", 2)[0]] {
			t.Errorf("unexpected %s violation: %+v", r, res.Violations)
		}
	}
}

func both(rule string) []string { return []string{LevelRaw + "/" + rule, LevelLogical + "/" + rule} }

// TestWatch: one stream whose every message the watcher delivered; each
// anomaly is one the server made, so both levels see it.
func TestWatch(t *testing.T) {
	tests := []struct {
		name   string
		prefix bool
		msgs   []history.WatchMsg
		rules  []string // none = valid
	}{
		{"complete exact-key stream with prev values holds every guarantee", false, []history.WatchMsg{
			created(1), wm(MsgPut, k, 2, "a", ""), wm(MsgPut, k, 3, "b", "a"), progress(4),
			wm(MsgDelete, k, 5, "", "b"), wm(MsgPut, k, 6, "c", ""), progress(6)}, nil},
		{"complete prefix stream holds every guarantee", true, []history.WatchMsg{
			created(1), wm(MsgPut, k, 2, "a", ""), wm(MsgPut, k, 3, "b", "a"), wm(MsgPut, "/jepsen/k1", 4, "x", ""),
			wm(MsgDelete, k, 5, "", "b"), wm(MsgPut, k, 6, "c", "")}, nil},
		{"stream that ends early is not missing later events", false, []history.WatchMsg{
			created(1), wm(MsgPut, k, 2, "a", "")}, nil},
		{"gap: a committed event inside the window is missing", false, []history.WatchMsg{
			created(1), wm(MsgPut, k, 2, "a", ""), wm(MsgDelete, k, 5, "", "b")}, both(RuleReliable)},
		{"gap: progress past a committed event that was never sent", false, []history.WatchMsg{
			created(1), wm(MsgPut, k, 2, "a", ""), progress(4)}, both(RuleReliable)},
		{"duplicate: the same revision and key delivered twice", false, []history.WatchMsg{
			created(1), wm(MsgPut, k, 2, "a", ""), wm(MsgPut, k, 3, "b", "a"), wm(MsgPut, k, 3, "b", "a")}, both(RuleUnique)},
		{"reordered: revisions go down", false, []history.WatchMsg{
			created(1), wm(MsgPut, k, 3, "b", "a"), wm(MsgPut, k, 2, "a", "")}, both(RuleOrdered)},
		{"wrong prev_value: not the value at revision-1", false, []history.WatchMsg{
			created(1), wm(MsgPut, k, 2, "a", ""), wm(MsgPut, k, 3, "b", "zzz")}, both(RulePrevValue)},
		{"event below an earlier progress revision", false, []history.WatchMsg{
			created(1), progress(3), wm(MsgPut, k, 3, "b", "a")}, append(both(RuleBookmark), both(RuleReliable)...)},
		{"event at or below the CREATED revision", false, []history.WatchMsg{
			created(3), wm(MsgPut, k, 3, "b", "a")}, both(RuleBookmark)},
		{"progress revisions go down", false, []history.WatchMsg{
			created(1), wm(MsgPut, k, 2, "a", ""), wm(MsgPut, k, 3, "b", "a"), progress(4), progress(3)}, both(RuleProgress)},
		{"message after CANCELED (which a watcher must not deliver either)", false, []history.WatchMsg{
			created(1), wm(MsgCanceled, "", 0, "", ""), wm(MsgPut, k, 2, "a", "")},
			[]string{LevelRaw + "/" + RuleCanceled, LevelLogical + "/" + RuleSurvives}},
		{"CREATED that is not the first message", false, []history.WatchMsg{
			progress(1), created(1)}, both(RuleCreated)},
		{"event that was never committed", false, []history.WatchMsg{
			created(1), wm(MsgPut, k, 2, "zzz", "")}, both(RuleValid)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			key := k
			if tc.prefix {
				key = "/jepsen/"
			}
			b := newWB(key, tc.prefix).open("n1", 0).got(tc.msgs...)
			wantRules(t, CheckWatch(b.watches(), watchLog(t), nil), tc.rules...)
		})
	}
}

const k1 = "/jepsen/k1"

// resumeLog: k put a at 2; k put b and k1 put x share revision 3; k deleted
// at 4; k1 put y at 5; k put c at 6.
func resumeLog(t *testing.T) *Replay {
	return mustReplay(t, put(2, k, "a"),
		LogEntry{Index: 3, Type: "command", Ops: []LogOp{{Kind: LogPut, Key: k, Value: "b"}, {Kind: LogPut, Key: k1, Value: "x"}}},
		del(4, k), put(5, k1, "y"), put(6, k, "c"))
}

var (
	putA  = wm(MsgPut, k, 2, "a", "")
	putB  = wm(MsgPut, k, 3, "b", "a")
	putX  = wm(MsgPut, k1, 3, "x", "")
	delK  = wm(MsgDelete, k, 4, "", "b")
	putY  = wm(MsgPut, k1, 5, "y", "x")
	putC  = wm(MsgPut, k, 6, "c", "")
	noLdr = history.WatchMsg{Type: MsgCanceled, Reason: "no leader", Code: 14}
)

func compacted(oldest uint64) history.WatchMsg {
	return history.WatchMsg{Type: MsgCanceled, Reason: "compacted", Code: CodeOutOfRange, CompactRevision: oldest}
}

// TestWatchAcrossResumes: prefix watches (prev_kv) over resumeLog whose
// streams break and resume; each anomaly is planted at a resume.
func TestWatchAcrossResumes(t *testing.T) {
	tests := []struct {
		name  string
		build func(b *wb)
		rules []string // none = valid
	}{
		{"resumed history: mid-revision break, duplicate dropped, roaming over three nodes", func(b *wb) {
			b.open("n1", 0).got(created(1), putA, putB).brk()
			b.resume("n2", 3).hid(created(2), putB).got(putX, progress(3), delK, progress(4)).brk()
			b.resume("n3", 5).hid(created(4)).got(putY, putC, progress(6))
		}, nil},
		{"resume after a CANCELED (no leader) the watcher did not deliver", func(b *wb) {
			b.open("n1", 0).got(created(1), putA, progress(2)).hid(noLdr).brk()
			b.resume("n2", 3).hid(created(2)).got(putB, putX, delK, putY, putC, progress(6))
		}, nil},
		{"gap: the resumed stream starts one revision after the start_revision it asked for", func(b *wb) {
			b.open("n1", 0).got(created(1), putA, progress(2)).brk()
			b.resume("n2", 3).hid(created(2)).got(delK, progress(4))
		}, both(RuleReliable)},
		{"gap: the watcher resumes one revision too late", func(b *wb) {
			b.open("n1", 0).got(created(1), putA, progress(2)).brk()
			b.resume("n2", 4).hid(created(3)).got(delK, progress(4))
		}, []string{LevelLogical + "/" + RuleReliable}},
		{"duplicate: an event delivered before the break is delivered again after it", func(b *wb) {
			b.open("n1", 0).got(created(1), putA, putB).brk()
			b.resume("n2", 3).hid(created(2)).got(putB, putX, progress(3))
		}, []string{LevelLogical + "/" + RuleUnique}},
		{"raw stream sends an event below the start_revision it was asked for (dropped)", func(b *wb) {
			b.open("n1", 0).got(created(1), putA, putB, putX, progress(3)).brk()
			b.resume("n2", 4).hid(created(3), putX).got(delK, progress(4))
		}, []string{LevelRaw + "/" + RuleStartRevision}},
		{"raw stream reports CREATED past the start_revision it was asked for", func(b *wb) {
			b.open("n1", 0).got(created(1), putA, putB, putX, progress(3)).brk()
			b.resume("n2", 4).hid(created(4)).got(putY, progress(5))
		}, []string{LevelRaw + "/" + RuleStartRevision, LevelRaw + "/" + RuleReliable, LevelLogical + "/" + RuleReliable}},
		{"PROGRESS goes down across a resume", func(b *wb) {
			b.open("n1", 0).got(created(1), putA, putB, putX, delK, progress(4)).brk()
			b.resume("n2", 5).hid(created(4)).got(progress(3))
		}, []string{LevelRaw + "/" + RuleStartRevision, LevelLogical + "/" + RuleProgress}},
		{"event at or below a PROGRESS delivered before the break", func(b *wb) {
			b.open("n1", 0).got(created(1), putA, putB, putX, progress(3)).brk()
			b.resume("n2", 3).hid(created(2), putB).got(putX, delK)
		}, []string{LevelLogical + "/" + RuleBookmark, LevelLogical + "/" + RuleUnique}},
		{"past start: history replayed from start_revision", func(b *wb) {
			b.open("n1", 3).got(created(2), putB, putX).brk()
			b.resume("n2", 3).hid(created(2), putB, putX).got(delK, putY, putC, progress(6))
		}, nil},
		{"past start: an event below start_revision delivered", func(b *wb) {
			b.open("n1", 3).got(created(2), putA, putB, putX, progress(3))
		}, []string{LevelRaw + "/" + RuleStartRevision, LevelLogical + "/" + RuleBookmark, LevelRaw + "/" + RuleBookmark}},
		{"compaction ends the watch when history lost the revision it needed", func(b *wb) {
			b.open("n1", 3).got(created(2), putB, putX).brk()
			b.resume("n2", 3).got(compacted(4)).brk().end(EndCompacted)
		}, nil},
		{"compaction CANCELED while history still held the revision needed", func(b *wb) {
			b.open("n1", 3).got(created(2), putB, putX).brk()
			b.resume("n2", 3).got(compacted(3)).brk().end(EndCompacted)
		}, []string{LevelLogical + "/" + RuleCompaction}},
		{"a resume after the compaction that ended the watch", func(b *wb) {
			b.open("n1", 3).got(created(2), putB, putX).brk()
			b.resume("n2", 3).got(compacted(4)).brk()
			b.resume("n3", 4).hid(created(3)).got(delK, progress(4))
		}, []string{LevelLogical + "/" + RuleCompactionEnds}},
		{"a CANCELED other than compaction delivered instead of resuming", func(b *wb) {
			b.open("n1", 0).got(created(1), putA, noLdr).brk()
		}, []string{LevelLogical + "/" + RuleSurvives}},
		{"a watcher that gave up", func(b *wb) {
			b.open("n1", 0).got(created(1), putA).brk().end("gave up after 5000 streams")
		}, []string{LevelLogical + "/" + RuleSurvives}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newWB("/jepsen/", true)
			tc.build(b)
			wantRules(t, CheckWatch(b.watches(), resumeLog(t), nil), tc.rules...)
		})
	}
}

func TestWatchCountsResumesDuplicatesAndFaults(t *testing.T) {
	b := newWB("/jepsen/", true)
	b.open("n1", 0).got(created(1), putA, putB).at(15).brk()
	b.at(16).resume("n2", 3).hid(created(2), putB).got(putX, progress(3)).at(40).brk()
	b.at(41).resume("n3", 4).hid(created(3)).got(delK, putY, putC, progress(6))
	windows := []Window{{Kind: "healthy", Start: 0, End: 10}, {Kind: "kill-one", Start: 10, End: 20}, {Kind: "healthy", Start: 20, End: 30}}
	res := CheckWatch(b.watches(), resumeLog(t), windows)
	if !res.Valid {
		t.Fatalf("want valid: %+v", res.Violations)
	}
	if res.Resumes != 2 || res.Dropped != 1 || res.Events != 6 || res.RawEvents != 7 || res.Streams != 3 {
		t.Fatalf("resumes=%d dropped=%d events=%d raw=%d streams=%d", res.Resumes, res.Dropped, res.Events, res.RawEvents, res.Streams)
	}
	if res.ResumesByFault["kill-one"] != 1 || res.ResumesByFault["final"] != 1 {
		t.Fatalf("resumes by fault %v", res.ResumesByFault)
	}
	s := res.PerWatch[0]
	if s.Start != 2 || s.Resumes != 2 || s.Dropped != 1 || s.PerNode["n2"] != 1 || s.Ended != "" {
		t.Fatalf("summary %+v", s)
	}
}

func TestGroupWatchesFollowsOneWatchAcrossStreamsAndNodes(t *testing.T) {
	msgs := []history.WatchMsg{
		{Watcher: 1, Node: "n1", Stream: 0, Type: MsgOpen, Key: k, PrevKV: true, StartRevision: 7},
		{Watcher: 2, Node: "n3", Stream: 0, Type: MsgOpen, Key: "/jepsen/", Prefix: true, Roaming: true},
		{Watcher: 1, Node: "n1", Stream: 0, Type: MsgCreated, Revision: 6},
		{Watcher: 1, Node: "n1", Stream: 0, Type: MsgError, Error: "EOF"},
		{Watcher: 1, Node: "n2", Stream: 1, Type: MsgResume, Key: k, PrevKV: true, StartRevision: 9},
		{Watcher: 1, Node: "n2", Stream: 1, Type: MsgCreated, Revision: 8},
		{Watcher: 2, Node: "n3", Stream: 0, Type: MsgCreated, Revision: 3},
	}
	ws := GroupWatches(msgs)
	if len(ws) != 2 {
		t.Fatalf("got %d watches", len(ws))
	}
	w := ws[0]
	if w.Key != k || !w.PrevKV || w.StartRevision != 7 || len(w.Streams) != 2 || len(w.Records) != 5 {
		t.Fatalf("watch 1: %+v", w)
	}
	if s := w.Streams[1]; !s.Resume || s.Node != "n2" || s.StartRevision != 9 || len(s.Msgs) != 1 {
		t.Fatalf("stream 1: %+v", s)
	}
	if !ws[1].Prefix || !ws[1].Roaming || len(ws[1].Streams) != 1 {
		t.Fatalf("watch 2: %+v", ws[1])
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
