package checker

import (
	"fmt"
	"sort"
	"strings"

	"github.com/raftwatch/raftwatch/cluster-test/history"
)

// Watch message types as recorded in watch-*.jsonl.
const (
	MsgOpen     = "OPEN"  // written by the watcher when it opens a stream
	MsgError    = "ERROR" // written by the watcher when the stream broke
	MsgCreated  = "CREATED"
	MsgPut      = "PUT"
	MsgDelete   = "DELETE"
	MsgProgress = "PROGRESS"
	MsgCanceled = "CANCELED"
)

// Watch rules, as named in verdicts.
const (
	RuleOrdered   = "ordered"      // event revisions never go down
	RuleUnique    = "unique"       // no repeated revision+key
	RuleReliable  = "reliable"     // no committed matching event missing inside the stream's window
	RuleValid     = "valid"        // every event is a committed mutation, with the right type and value
	RulePrevValue = "prev_value"   // prev_value equals the key's value at revision-1
	RuleBookmark  = "bookmarkable" // no event at or below CREATED or an earlier PROGRESS revision
	RuleProgress  = "progress_monotonic"
	RuleCanceled  = "canceled_ends_stream"
	RuleCreated   = "created_first" // CREATED is the first message of a stream
)

// Stream is one watch stream: the messages received between opening it and
// its end, with what it watches.
type Stream struct {
	Node    string
	Watcher int
	Stream  int
	Key     string
	Prefix  bool
	PrevKV  bool
	Msgs    []history.WatchMsg
}

// Name identifies the stream in verdicts.
func (s Stream) Name() string {
	kind := "key"
	if s.Prefix {
		kind = "prefix"
	}
	return fmt.Sprintf("%s/w%d/s%d(%s %s)", s.Node, s.Watcher, s.Stream, kind, s.Key)
}

// Matches reports whether key is watched by the stream.
func (s Stream) Matches(key string) bool {
	if s.Prefix {
		return strings.HasPrefix(key, s.Key)
	}
	return key == s.Key
}

// GroupStreams splits watch messages into streams by (node, watcher, stream);
// an OPEN message gives the stream's parameters.
func GroupStreams(msgs []history.WatchMsg) []Stream {
	type id struct {
		node    string
		watcher int
		stream  int
	}
	idx := map[id]int{}
	var out []Stream
	for _, m := range msgs {
		k := id{m.Node, m.Watcher, m.Stream}
		i, ok := idx[k]
		if !ok {
			i = len(out)
			idx[k] = i
			out = append(out, Stream{Node: m.Node, Watcher: m.Watcher, Stream: m.Stream})
		}
		if m.Type == MsgOpen {
			out[i].Key, out[i].Prefix, out[i].PrevKV = m.Key, m.Prefix, m.PrevKV
			continue
		}
		out[i].Msgs = append(out[i].Msgs, m)
	}
	return out
}

// WatchViolation is one broken guarantee.
type WatchViolation struct {
	Stream string `json:"stream"`
	Rule   string `json:"rule"`
	Detail string `json:"detail"`
}

// WatchResult is the verdict of the watch checker.
type WatchResult struct {
	Valid      bool             `json:"valid"`
	Streams    int              `json:"streams"`
	Events     int              `json:"events"`
	Checked    int              `json:"committed_events_checked"`
	Violations []WatchViolation `json:"violations,omitempty"`
	ByRule     map[string]int   `json:"violations_by_rule,omitempty"`
	Detail     string           `json:"detail"`
}

// CheckWatch checks every stream against the committed log replay.
//
// A stream's window is (start, end]: start is its CREATED revision (or the
// first event's revision - 1 when CREATED never came), end the highest event
// or PROGRESS revision it received. Inside the window every committed
// matching mutation must have been delivered (reliable); outside it nothing
// is required because the stream had not yet promised it.
func CheckWatch(streams []Stream, rp *Replay) WatchResult {
	res := WatchResult{Valid: true, ByRule: map[string]int{}}
	for _, s := range streams {
		res.Streams++
		for _, v := range checkStream(s, rp, &res) {
			res.Valid = false
			res.ByRule[v.Rule]++
			if len(res.Violations) < 5*maxListed {
				res.Violations = append(res.Violations, v)
			}
		}
	}
	if res.Valid {
		res.Detail = fmt.Sprintf("%d streams, %d events, %d committed events checked for delivery: all guarantees hold", res.Streams, res.Events, res.Checked)
	} else {
		var rules []string
		for r, n := range res.ByRule {
			rules = append(rules, fmt.Sprintf("%s=%d", r, n))
		}
		sort.Strings(rules)
		res.Detail = fmt.Sprintf("%d streams, %d events; violations: %s; first: %s: %s",
			res.Streams, res.Events, strings.Join(rules, " "), res.Violations[0].Stream, res.Violations[0].Detail)
	}
	return res
}

func checkStream(s Stream, rp *Replay, res *WatchResult) []WatchViolation {
	var vs []WatchViolation
	add := func(rule, format string, args ...any) {
		vs = append(vs, WatchViolation{Stream: s.Name(), Rule: rule, Detail: fmt.Sprintf(format, args...)})
	}
	type rk struct {
		rev uint64
		key string
	}
	seen := map[rk]bool{}
	var (
		created    bool
		start      uint64
		startKnown bool
		mark       uint64 // highest CREATED/PROGRESS revision received so far
		lastEvent  uint64
		lastProg   uint64
		end        uint64
		canceled   bool
		anyMsg     bool
	)
	for _, m := range s.Msgs {
		if m.Type == MsgError {
			continue
		}
		if canceled {
			add(RuleCanceled, "%s rev %d received after CANCELED", m.Type, m.Revision)
			continue
		}
		first := !anyMsg
		anyMsg = true
		switch m.Type {
		case MsgCreated:
			if !first || created {
				add(RuleCreated, "CREATED(rev %d) is not the first message of the stream", m.Revision)
			}
			created = true
			if !startKnown {
				start, startKnown = m.Revision, true
			}
			mark = max(mark, m.Revision)
			end = max(end, m.Revision)
		case MsgProgress:
			if m.Revision < lastProg {
				add(RuleProgress, "PROGRESS %d after PROGRESS %d", m.Revision, lastProg)
			}
			lastProg = max(lastProg, m.Revision)
			mark = max(mark, m.Revision)
			end = max(end, m.Revision)
		case MsgCanceled:
			canceled = true
		case MsgPut, MsgDelete:
			res.Events++
			if !startKnown {
				start, startKnown = m.Revision-1, true
			}
			if !s.Matches(m.Key) {
				add(RuleValid, "event for %s does not match the watch", m.Key)
			}
			if m.Revision <= mark {
				add(RuleBookmark, "%s %s rev %d at or below an earlier CREATED/PROGRESS revision %d", m.Type, m.Key, m.Revision, mark)
			}
			if m.Revision < lastEvent {
				add(RuleOrdered, "%s %s rev %d after an event at rev %d", m.Type, m.Key, m.Revision, lastEvent)
			}
			lastEvent = max(lastEvent, m.Revision)
			end = max(end, m.Revision)
			k := rk{m.Revision, m.Key}
			if seen[k] {
				add(RuleUnique, "%s %s rev %d delivered twice", m.Type, m.Key, m.Revision)
			}
			seen[k] = true
			checkEvent(s, m, rp, add)
		}
	}
	if !startKnown || rp == nil {
		return vs
	}
	// reliable: every committed matching mutation in (start, end] delivered.
	lo := max(start, rp.FirstIndex-1)
	for _, mu := range rp.Mutations {
		if mu.Rev <= lo || mu.Rev > end || mu.Uncertain || !s.Matches(mu.Key) {
			continue
		}
		res.Checked++
		if !seen[rk{mu.Rev, mu.Key}] {
			add(RuleReliable, "committed %s %s rev %d missing (stream window %d..%d)", strings.ToUpper(mu.Kind), mu.Key, mu.Rev, start, end)
		}
	}
	return vs
}

func checkEvent(s Stream, m history.WatchMsg, rp *Replay, add func(rule, format string, args ...any)) {
	if rp == nil || !rp.Covers(m.Revision) {
		if rp != nil && m.Revision > rp.LastIndex {
			add(RuleValid, "%s %s rev %d is past the end of the committed log (%d)", m.Type, m.Key, m.Revision, rp.LastIndex)
		}
		return
	}
	mu, ok := rp.MutationAt(m.Key, m.Revision)
	if !ok {
		add(RuleValid, "%s %s rev %d: the committed log has no change of the key there", m.Type, m.Key, m.Revision)
		return
	}
	want := MsgPut
	if mu.Kind == LogDelete {
		want = MsgDelete
	}
	if m.Type != want {
		add(RuleValid, "%s %s rev %d: the committed log has a %s there", m.Type, m.Key, m.Revision, want)
		return
	}
	if m.Type == MsgPut && m.Value != mu.Value {
		add(RuleValid, "PUT %s rev %d value %q, committed value %q", m.Key, m.Revision, m.Value, mu.Value)
	}
	if s.PrevKV && mu.PrevKnown {
		want := ""
		if mu.PrevExists {
			want = mu.PrevValue
		}
		if m.PrevValue != want {
			add(RulePrevValue, "%s %s rev %d prev_value %q, value at rev %d was %q", m.Type, m.Key, m.Revision, m.PrevValue, m.Revision-1, want)
		}
	}
}
