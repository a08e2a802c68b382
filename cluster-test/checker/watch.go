package checker

import (
	"fmt"
	"sort"
	"strings"

	"github.com/raftwatch/raftwatch/cluster-test/history"
)

// Watch record types as written in watch-w<id>.jsonl.
const (
	MsgOpen     = "OPEN"   // the watcher opened a stream of a watch that has not started yet
	MsgResume   = "RESUME" // the watcher reopened the watch after a stream ended
	MsgError    = "ERROR"  // a stream ended: transport error, CANCELED, stall, end of run
	MsgEnd      = "END"    // the logical watch ended; Error says why
	MsgCreated  = "CREATED"
	MsgPut      = "PUT"
	MsgDelete   = "DELETE"
	MsgProgress = "PROGRESS"
	MsgCanceled = "CANCELED"
)

// CodeOutOfRange is the gRPC code (codes.OutOfRange) of the CANCELED that
// refuses a start_revision below the oldest revision history retains.
const CodeOutOfRange = 11

// EndCompacted is the END reason of a logical watch ended by a compaction
// CANCELED; any other END is a watch that did not survive.
const EndCompacted = "compacted"

// IsCompaction reports whether m is a CANCELED because history no longer
// holds what the watch needs. It ends the logical watch; a watcher resumes
// after any other CANCELED.
func IsCompaction(m history.WatchMsg) bool {
	return m.Type == MsgCanceled && (m.Code == CodeOutOfRange || m.CompactRevision > 0)
}

// Watch rules, as named in verdicts. Most apply at both levels: to each raw
// stream as the server sent it, and to the logical sequence the watcher
// delivered across all its streams.
const (
	RuleOrdered   = "ordered"      // event revisions never go down
	RuleUnique    = "unique"       // no repeated revision+key
	RuleReliable  = "reliable"     // no committed matching event missing inside the window
	RuleValid     = "valid"        // every event is a committed mutation, with the right type and value
	RulePrevValue = "prev_value"   // prev_value equals the key's value at revision-1
	RuleBookmark  = "bookmarkable" // no event at or below CREATED, an earlier PROGRESS, or before the watch's start
	RuleProgress  = "progress_monotonic"
	RuleCanceled  = "canceled_ends_stream" // raw: nothing after CANCELED on a stream
	RuleCreated   = "created_first"        // CREATED is the first message
	// RuleStartRevision (raw): a stream created with start_revision S
	// reports CREATED S-1, sends no event below S and no PROGRESS below S-1.
	RuleStartRevision = "start_revision"
	// RuleCompaction (logical): a compaction CANCELED reports a
	// compact_revision (oldest retained) above the revision the watch still
	// needed; otherwise history still held it and the refusal was wrong.
	RuleCompaction = "compaction_justified"
	// RuleCompactionEnds (logical): nothing is delivered and no stream is
	// opened after the compaction CANCELED that ended the watch.
	RuleCompactionEnds = "compaction_ends_watch"
	// RuleSurvives (logical): the watch ends only by compaction or with the
	// run; a CANCELED delivered for another reason or a watcher that gave up
	// breaks it.
	RuleSurvives = "survives"
)

// Levels at which a rule is checked.
const (
	LevelRaw     = "raw"     // one stream, every message as the server sent it
	LevelLogical = "logical" // what the watcher delivered, across its streams
)

// Stream is one gRPC watch stream of a logical watch: how it was created
// (its OPEN or RESUME record) and what it received until it ended.
type Stream struct {
	Watcher       int
	Stream        int
	Node          string
	Resume        bool
	StartRevision uint64
	// Msgs: server messages and the ERROR that ended the stream, in order.
	Msgs []history.WatchMsg
}

// Name identifies the stream in verdicts.
func (s Stream) Name() string { return fmt.Sprintf("w%d/s%d@%s", s.Watcher, s.Stream, s.Node) }

// Watch is one logical watch: what one watcher watched over the whole run,
// every stream it opened for it, and all its records in the order written.
type Watch struct {
	ID            int
	Key           string
	Prefix        bool
	PrevKV        bool
	RequireLeader bool
	Roaming       bool
	// StartRevision of the first OPEN: the first revision the watch must
	// deliver (0: from the revision its first CREATED reports, + 1).
	StartRevision uint64
	Streams       []Stream
	Records       []history.WatchMsg
}

// Name identifies the watch in verdicts.
func (w Watch) Name() string {
	kind := "key"
	if w.Prefix {
		kind = "prefix"
	}
	var opts []string
	if w.PrevKV {
		opts = append(opts, "prev_kv")
	}
	if w.RequireLeader {
		opts = append(opts, "require_leader")
	}
	if w.Roaming {
		opts = append(opts, "roaming")
	}
	if w.StartRevision > 0 {
		opts = append(opts, fmt.Sprintf("from %d", w.StartRevision))
	}
	return fmt.Sprintf("w%d(%s %s%s)", w.ID, kind, w.Key, strings.Join(append([]string{""}, opts...), " "))
}

// Matches reports whether key is watched.
func (w Watch) Matches(key string) bool {
	if w.Prefix {
		return strings.HasPrefix(key, w.Key)
	}
	return key == w.Key
}

// GroupWatches splits watch records into logical watches by Watcher, and
// each watch into its streams: an OPEN or RESUME record starts a stream and
// gives its parameters; the first one gives the watch's.
func GroupWatches(msgs []history.WatchMsg) []Watch {
	type sid struct{ watcher, stream int }
	widx := map[int]int{}
	sidx := map[sid]int{}
	var out []Watch
	for _, m := range msgs {
		i, ok := widx[m.Watcher]
		if !ok {
			i = len(out)
			widx[m.Watcher] = i
			out = append(out, Watch{ID: m.Watcher})
		}
		w := &out[i]
		w.Records = append(w.Records, m)
		if m.Type == MsgEnd {
			continue
		}
		open := m.Type == MsgOpen || m.Type == MsgResume
		if open && len(w.Streams) == 0 {
			w.Key, w.Prefix, w.PrevKV, w.RequireLeader, w.Roaming = m.Key, m.Prefix, m.PrevKV, m.RequireLeader, m.Roaming
			w.StartRevision = m.StartRevision
		}
		k := sid{m.Watcher, m.Stream}
		j, ok := sidx[k]
		if !ok || open {
			j = len(w.Streams)
			sidx[k] = j
			w.Streams = append(w.Streams, Stream{Watcher: m.Watcher, Stream: m.Stream, Node: m.Node})
		}
		if open {
			w.Streams[j].Resume, w.Streams[j].StartRevision = m.Type == MsgResume, m.StartRevision
			continue
		}
		w.Streams[j].Msgs = append(w.Streams[j].Msgs, m)
	}
	return out
}

// WatchViolation is one broken guarantee.
type WatchViolation struct {
	Watch  string `json:"watch"`
	Stream string `json:"stream,omitempty"`
	Level  string `json:"level"`
	Rule   string `json:"rule"`
	Detail string `json:"detail"`
}

// WatchSummary is what one logical watch did.
type WatchSummary struct {
	ID    int    `json:"id"`
	Watch string `json:"watch"`
	// Start: the first revision the watch had to deliver (0 when it never
	// started: no CREATED and no start_revision).
	Start      uint64         `json:"start"`
	Streams    int            `json:"streams"`
	Resumes    int            `json:"resumes"`
	Events     int            `json:"events_delivered"`
	Dropped    int            `json:"duplicates_dropped"`
	PerNode    map[string]int `json:"streams_per_node"`
	Ended      string         `json:"ended,omitempty"`
	Violations int            `json:"violations,omitempty"`
}

// WatchResult is the verdict of the watch checker.
type WatchResult struct {
	Valid   bool `json:"valid"`
	Watches int  `json:"watches"`
	Streams int  `json:"streams"`
	// Resumes: streams reopened after one ended; ResumesByFault by the
	// nemesis window in which the stream before it ended ("final": after
	// the workload, during the final heal).
	Resumes        int            `json:"resumes"`
	ResumesByFault map[string]int `json:"resumes_by_fault,omitempty"`
	// Events: events delivered (logical); RawEvents: events received on
	// all streams; Dropped: raw events the watchers dropped as duplicates.
	Events     int              `json:"events"`
	RawEvents  int              `json:"raw_events"`
	Dropped    int              `json:"duplicates_dropped"`
	Compacted  int              `json:"ended_by_compaction"`
	Checked    int              `json:"committed_events_checked"`
	PerWatch   []WatchSummary   `json:"per_watch"`
	Violations []WatchViolation `json:"violations,omitempty"`
	// ByRule counts violations by "<level>/<rule>".
	ByRule map[string]int `json:"violations_by_rule,omitempty"`
	Detail string         `json:"detail"`
}

// CheckWatch checks every logical watch at both levels against the committed
// log replay: each raw stream on its own, from the start_revision it asked
// for, and the sequence the watcher delivered across all its streams, from
// the watch's start. windows (may be nil) attribute resumes to faults.
//
// A window is [start, end]: end is the highest CREATED or PROGRESS revision
// received, or the revision before the highest event's (that revision may
// still have been incomplete when the sequence stopped). Inside it every
// committed matching mutation must have been delivered (reliable); past it
// nothing is required because nothing had been promised.
func CheckWatch(watches []Watch, rp *Replay, windows []Window) WatchResult {
	res := WatchResult{Valid: true, ByRule: map[string]int{}, ResumesByFault: map[string]int{}}
	for _, w := range watches {
		res.Watches++
		sum := WatchSummary{ID: w.ID, Watch: w.Name(), PerNode: map[string]int{}}
		var vs []WatchViolation
		for _, s := range w.Streams {
			res.Streams++
			sum.Streams++
			sum.PerNode[s.Node]++
			vs = append(vs, checkRawStream(&w, s, rp, &res)...)
		}
		vs = append(vs, checkLogical(&w, rp, windows, &res, &sum)...)
		sum.Violations = len(vs)
		res.PerWatch = append(res.PerWatch, sum)
		for _, v := range vs {
			res.Valid = false
			res.ByRule[v.Level+"/"+v.Rule]++
			if len(res.Violations) < 5*maxListed {
				res.Violations = append(res.Violations, v)
			}
		}
	}
	if res.Valid {
		res.Detail = fmt.Sprintf("%d watches over %d streams (%d resumes, %d raw duplicates dropped), %d events delivered, %d committed events checked for delivery: all guarantees hold",
			res.Watches, res.Streams, res.Resumes, res.Dropped, res.Events, res.Checked)
	} else {
		var rules []string
		for r, n := range res.ByRule {
			rules = append(rules, fmt.Sprintf("%s=%d", r, n))
		}
		sort.Strings(rules)
		v := res.Violations[0]
		where := v.Watch
		if v.Stream != "" {
			where += " " + v.Stream
		}
		res.Detail = fmt.Sprintf("%d watches over %d streams (%d resumes), %d events delivered; violations: %s; first: %s: %s",
			res.Watches, res.Streams, res.Resumes, res.Events, strings.Join(rules, " "), where, v.Detail)
	}
	return res
}

// checkRawStream checks one stream as the server sent it, every event
// included (dropped duplicates too).
func checkRawStream(w *Watch, s Stream, rp *Replay, res *WatchResult) []WatchViolation {
	var vs []WatchViolation
	add := func(rule, format string, args ...any) {
		vs = append(vs, WatchViolation{Watch: w.Name(), Stream: s.Name(), Level: LevelRaw, Rule: rule, Detail: fmt.Sprintf(format, args...)})
	}
	c := newSeqCheck(w, rp, add)
	start := s.StartRevision
	if start > 0 {
		c.setStart(start)
	}
	canceled := false
	for _, m := range s.Msgs {
		if m.Type == MsgError {
			continue
		}
		if canceled {
			add(RuleCanceled, "%s rev %d received after CANCELED", m.Type, m.Revision)
			continue
		}
		switch m.Type {
		case MsgCreated:
			if start > 0 && m.Revision != start-1 {
				add(RuleStartRevision, "CREATED rev %d for start_revision %d (want %d: the watch starts after it)", m.Revision, start, start-1)
			}
			c.created(m)
		case MsgProgress:
			if start > 0 && m.Revision < start-1 {
				add(RuleStartRevision, "PROGRESS %d below start_revision %d - 1", m.Revision, start)
			}
			c.progress(m)
		case MsgPut, MsgDelete:
			res.RawEvents++
			if m.Revision < start {
				add(RuleStartRevision, "%s %s rev %d below the start_revision %d the stream asked for", m.Type, m.Key, m.Revision, start)
			}
			c.event(m)
		case MsgCanceled:
			canceled = true
			c.any = true
		}
	}
	c.reliable()
	return vs
}

// checkLogical checks what the watcher delivered across all the watch's
// streams, and that it resumed after everything but compaction.
func checkLogical(w *Watch, rp *Replay, windows []Window, res *WatchResult, sum *WatchSummary) []WatchViolation {
	var vs []WatchViolation
	stream := ""
	add := func(rule, format string, args ...any) {
		vs = append(vs, WatchViolation{Watch: w.Name(), Stream: stream, Level: LevelLogical, Rule: rule, Detail: fmt.Sprintf(format, args...)})
	}
	c := newSeqCheck(w, rp, add)
	if w.StartRevision > 0 {
		c.setStart(w.StartRevision)
		c.mark = w.StartRevision - 1
	}
	ended := "" // why the logical watch ended, once it has
	var lastBreak int64 = -1
	for _, r := range w.Records {
		stream = fmt.Sprintf("w%d/s%d@%s", r.Watcher, r.Stream, r.Node)
		switch r.Type {
		case MsgOpen, MsgResume:
			if ended != "" {
				add(RuleCompactionEnds, "stream %d opened (start_revision %d) after the watch ended: %s", r.Stream, r.StartRevision, ended)
			}
			if r.Type == MsgResume {
				sum.Resumes++
				res.Resumes++
				t := r.Time
				if lastBreak >= 0 {
					t = lastBreak
				}
				res.ResumesByFault[kindAt(windows, t)]++
			}
			continue
		case MsgError:
			lastBreak = r.Time
			continue
		case MsgEnd:
			sum.Ended = r.Error
			if r.Error != EndCompacted {
				add(RuleSurvives, "the watch ended: %s", r.Error)
			}
			continue
		}
		if IsCompaction(r) && ended == "" {
			if !r.Delivered {
				add(RuleCompactionEnds, "compaction CANCELED (compact_revision %d) not delivered", r.CompactRevision)
			}
			if c.startKnown {
				if needed := c.needed(); r.CompactRevision <= needed {
					add(RuleCompaction, "CANCELED (code %d, %q) reports oldest retained revision %d, but the watch needed %d, which history still held", r.Code, r.Reason, r.CompactRevision, needed)
				}
			}
			ended = fmt.Sprintf("compaction CANCELED (oldest retained %d)", r.CompactRevision)
			res.Compacted++
			c.any = true
			continue
		}
		if !r.Delivered {
			if r.Type == MsgPut || r.Type == MsgDelete {
				sum.Dropped++
				res.Dropped++
			}
			continue
		}
		if ended != "" {
			add(RuleCompactionEnds, "%s rev %d delivered after the watch ended: %s", r.Type, r.Revision, ended)
			continue
		}
		switch r.Type {
		case MsgCreated:
			c.created(r)
		case MsgProgress:
			c.progress(r)
		case MsgPut, MsgDelete:
			sum.Events++
			res.Events++
			c.event(r)
		case MsgCanceled:
			add(RuleSurvives, "CANCELED (%q, code %d) delivered: the watcher must resume after every CANCELED but compaction", r.Reason, r.Code)
		}
	}
	stream = ""
	res.Checked += c.reliable()
	if c.startKnown {
		sum.Start = c.start
	}
	return vs
}

// kindAt names the window holding time t ("final" after the last one).
func kindAt(windows []Window, t int64) string {
	for _, w := range windows {
		if t >= w.Start && t <= w.End {
			return w.Kind
		}
	}
	if len(windows) > 0 && t > windows[len(windows)-1].End {
		return "final"
	}
	return "unknown"
}

type revKey struct {
	rev uint64
	key string
}

// seqCheck applies the per-sequence rules to one sequence of server
// messages: a raw stream, or what a watcher delivered across its streams.
type seqCheck struct {
	w   *Watch
	rp  *Replay
	add func(rule, format string, args ...any)

	seen       map[revKey]bool
	startKnown bool
	start      uint64 // first revision the sequence must deliver
	mark       uint64 // highest CREATED/PROGRESS revision (logical: at least start-1)
	createdRev uint64
	hasCreated bool
	lastProg   uint64
	lastEvent  uint64 // highest event revision so far
	any        bool   // a message was received
}

func newSeqCheck(w *Watch, rp *Replay, add func(rule, format string, args ...any)) *seqCheck {
	return &seqCheck{w: w, rp: rp, add: add, seen: map[revKey]bool{}}
}

func (c *seqCheck) setStart(rev uint64) {
	if !c.startKnown {
		c.start, c.startKnown = rev, true
	}
}

// needed is the lowest revision the sequence may still lack: the last
// event's, unless a bookmark or a later event shows it complete.
func (c *seqCheck) needed() uint64 {
	if c.lastEvent > c.mark {
		return c.lastEvent
	}
	return c.mark + 1
}

func (c *seqCheck) created(m history.WatchMsg) {
	if c.any || c.hasCreated {
		c.add(RuleCreated, "CREATED(rev %d) is not the first message", m.Revision)
	}
	c.any, c.hasCreated, c.createdRev = true, true, m.Revision
	c.setStart(m.Revision + 1)
	c.mark = max(c.mark, m.Revision)
}

func (c *seqCheck) progress(m history.WatchMsg) {
	c.any = true
	if m.Revision < c.lastProg {
		c.add(RuleProgress, "PROGRESS %d after PROGRESS %d", m.Revision, c.lastProg)
	}
	c.lastProg = max(c.lastProg, m.Revision)
	c.mark = max(c.mark, m.Revision)
}

func (c *seqCheck) event(m history.WatchMsg) {
	c.any = true
	c.setStart(m.Revision)
	if !c.w.Matches(m.Key) {
		c.add(RuleValid, "event for %s does not match the watch", m.Key)
	}
	if m.Revision <= c.mark {
		c.add(RuleBookmark, "%s %s rev %d at or below an earlier bookmark (CREATED, PROGRESS or start) %d", m.Type, m.Key, m.Revision, c.mark)
	}
	if m.Revision < c.lastEvent {
		c.add(RuleOrdered, "%s %s rev %d after an event at rev %d", m.Type, m.Key, m.Revision, c.lastEvent)
	}
	c.lastEvent = max(c.lastEvent, m.Revision)
	k := revKey{m.Revision, m.Key}
	if c.seen[k] {
		c.add(RuleUnique, "%s %s rev %d delivered twice", m.Type, m.Key, m.Revision)
	}
	c.seen[k] = true
	checkEvent(c.w, m, c.rp, c.add)
}

// reliable checks that every committed matching mutation inside the window
// was delivered, and returns how many it checked.
func (c *seqCheck) reliable() int {
	if !c.startKnown || c.rp == nil {
		return 0
	}
	end := c.mark
	if c.lastEvent > 0 {
		end = max(end, c.lastEvent-1)
	}
	lo := max(c.start, c.rp.FirstIndex)
	checked := 0
	for _, mu := range c.rp.Mutations {
		if mu.Rev < lo || mu.Rev > end || mu.Uncertain || !c.w.Matches(mu.Key) {
			continue
		}
		checked++
		if !c.seen[revKey{mu.Rev, mu.Key}] {
			c.add(RuleReliable, "committed %s %s rev %d missing (window %d..%d)", strings.ToUpper(mu.Kind), mu.Key, mu.Rev, c.start, end)
		}
	}
	return checked
}

func checkEvent(w *Watch, m history.WatchMsg, rp *Replay, add func(rule, format string, args ...any)) {
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
	if w.PrevKV && mu.PrevKnown {
		want := ""
		if mu.PrevExists {
			want = mu.PrevValue
		}
		if m.PrevValue != want {
			add(RulePrevValue, "%s %s rev %d prev_value %q, value at rev %d was %q", m.Type, m.Key, m.Revision, m.PrevValue, m.Revision-1, want)
		}
	}
}
