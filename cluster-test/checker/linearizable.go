package checker

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/raftwatch/raftwatch/cluster-test/history"
)

// The linearizability model
//
// The history is partitioned per key (keys are independent registers). The
// state of one key is (exists, value). Every write in the workload writes a
// value that is unique for its key, so a value names the one write that
// produced it, and that write's mod_revision is a fixed fact. RevOf maps a
// value to that revision; it is filled from acknowledged puts (their
// response carries the revision) and from the committed log (which gives it
// for writes whose acknowledgement was lost).
//
//   - get -> (found, value, mod_revision): found must equal exists, value the
//     current value, and mod_revision must equal RevOf(value) when known.
//   - put v (prev_kv): the response's previous state must equal the state;
//     the state becomes (true, v).
//   - delete (prev_kv): deleted must equal exists, prev must match; the state
//     becomes absent.
//   - cas v if mod_revision == N: the condition holds iff the key exists and
//     RevOf(current value) == N (unknown RevOf: either result is accepted).
//     cas v if absent: holds iff !exists. succeeded=true requires the
//     condition to hold and sets (true, v); succeeded=false requires it not
//     to hold and changes nothing; in both cases prev_kv (returned for every
//     conditional put) must equal the state. A failed cas is therefore a read.
//
// Operations whose outcome is unknown (info) have their return time set past
// the end of the history and an output that accepts everything: a write is
// applied if its condition holds at its linearization point, and since it
// may be linearized after every other operation, "never applied" is also
// covered. Definitely failed ops and non-ok reads are dropped. With a
// complete committed log, an info put/cas whose value never reached the log
// (or whose condition failed there) definitely did not apply and is dropped
// as well, which keeps the search small.
//
// Soundness rests on value uniqueness: mod_revision(current) == N is
// equivalent to "the current value is the one written at revision N".

// KVInput is the input of one operation in the model.
type KVInput struct {
	Op         string // history.OpGet, OpPut, OpDelete, OpCAS
	Value      string
	CondRev    uint64
	CondAbsent bool
}

// KVOutput is the observed result of one operation.
type KVOutput struct {
	Unknown   bool // info: outcome not known
	Found     bool
	Value     string
	ModRev    uint64
	Succeeded bool
	PrevKnown bool
	PrevFound bool
	PrevValue string
	Deleted   bool
}

// KVState is the model state of one key.
type KVState struct {
	Exists bool
	Value  string
}

// KVModel returns the porcupine model of one key. revOf gives the revision
// that wrote a value of that key (nil map or missing entry: unknown). The
// model expects every operation's Metadata to be its key, and partitions by
// it.
func KVModel(revOf map[string]map[string]uint64) porcupine.Model {
	rev := func(key, v string) (uint64, bool) {
		r, ok := revOf[key][v]
		return r, ok
	}
	return porcupine.Model{
		Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
			by := map[string][]porcupine.Operation{}
			var keys []string
			for _, op := range h {
				k := op.Metadata.(opMeta).Key
				if _, ok := by[k]; !ok {
					keys = append(keys, k)
				}
				by[k] = append(by[k], op)
			}
			sort.Strings(keys)
			out := make([][]porcupine.Operation, 0, len(keys))
			for _, k := range keys {
				out = append(out, by[k])
			}
			return out
		},
		Init: func() any { return KVState{} },
		Step: func(st, in, out any) (bool, any) {
			// Metadata is not passed to Step; the key is folded into the
			// input by stepKey.
			return stepKV(rev, st.(KVState), in.(keyedInput), out.(KVOutput))
		},
		DescribeOperation: func(in, out any) string {
			return describeOp(in.(keyedInput), out.(KVOutput))
		},
		DescribeState: func(st any) string {
			s := st.(KVState)
			if !s.Exists {
				return "absent"
			}
			return fmt.Sprintf("%q", s.Value)
		},
		DescribeOperationMetadata: func(m any) string {
			md := m.(opMeta)
			return fmt.Sprintf("id %d on %s (%s)", md.ID, md.Node, md.Outcome)
		},
	}
}

type keyedInput struct {
	Key string
	KVInput
}

type opMeta struct {
	Key     string
	ID      int
	Node    string
	Outcome string
}

func stepKV(rev func(key, v string) (uint64, bool), s KVState, in keyedInput, out KVOutput) (bool, any) {
	prevOK := func() bool {
		if !out.PrevKnown {
			return true
		}
		return out.PrevFound == s.Exists && (!s.Exists || out.PrevValue == s.Value)
	}
	// condHolds: 1 holds, 0 does not, -1 unknown.
	condHolds := func() int {
		if in.CondAbsent {
			return b2i(!s.Exists)
		}
		if !s.Exists {
			return 0
		}
		r, ok := rev(in.Key, s.Value)
		if !ok {
			return -1
		}
		return b2i(r == in.CondRev)
	}
	switch in.Op {
	case history.OpGet:
		if out.Unknown {
			return true, s
		}
		if out.Found != s.Exists || (s.Exists && out.Value != s.Value) {
			return false, s
		}
		if out.Found {
			if r, ok := rev(in.Key, out.Value); ok && r != out.ModRev {
				return false, s
			}
		}
		return true, s
	case history.OpPut:
		if !out.Unknown && !prevOK() {
			return false, s
		}
		return true, KVState{Exists: true, Value: in.Value}
	case history.OpDelete:
		if !out.Unknown && (out.Deleted != s.Exists || !prevOK()) {
			return false, s
		}
		return true, KVState{}
	case history.OpCAS:
		h := condHolds()
		if out.Unknown {
			if h != 0 {
				return true, KVState{Exists: true, Value: in.Value}
			}
			return true, s
		}
		if !prevOK() {
			return false, s
		}
		if out.Succeeded {
			if h == 0 {
				return false, s
			}
			return true, KVState{Exists: true, Value: in.Value}
		}
		if h == 1 {
			return false, s
		}
		return true, s
	}
	return false, s
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func describeOp(in keyedInput, out KVOutput) string {
	var b strings.Builder
	switch in.Op {
	case history.OpGet:
		b.WriteString("get()")
	case history.OpPut:
		fmt.Fprintf(&b, "put(%s)", in.Value)
	case history.OpDelete:
		b.WriteString("delete()")
	case history.OpCAS:
		if in.CondAbsent {
			fmt.Fprintf(&b, "cas(%s if absent)", in.Value)
		} else {
			fmt.Fprintf(&b, "cas(%s if rev=%d)", in.Value, in.CondRev)
		}
	}
	b.WriteString(" -> ")
	switch {
	case out.Unknown:
		b.WriteString("?")
	case in.Op == history.OpGet && !out.Found:
		b.WriteString("absent")
	case in.Op == history.OpGet:
		fmt.Fprintf(&b, "%s@%d", out.Value, out.ModRev)
	case in.Op == history.OpCAS:
		fmt.Fprintf(&b, "succeeded=%v", out.Succeeded)
	case in.Op == history.OpDelete:
		fmt.Fprintf(&b, "deleted=%v", out.Deleted)
	default:
		b.WriteString("ok")
	}
	if out.PrevKnown && !out.Unknown {
		if out.PrevFound {
			fmt.Fprintf(&b, " prev=%s", out.PrevValue)
		} else {
			b.WriteString(" prev=absent")
		}
	}
	return b.String()
}

// LinearizableResult is the verdict of the linearizability checker.
type LinearizableResult struct {
	Valid bool `json:"valid"`
	// Undecided: porcupine timed out on some key; not proof of an anomaly.
	Undecided     bool     `json:"undecided"`
	Checked       int      `json:"checked_ops"`
	Unknown       int      `json:"unknown_ops"`
	DroppedByLog  int      `json:"info_ops_resolved_not_applied"`
	Bounded       int      `json:"info_ops_return_bounded_by_log"`
	BadKeys       []string `json:"bad_keys,omitempty"`
	UndecidedKeys []string `json:"undecided_keys,omitempty"`
	HTML          string   `json:"html,omitempty"`
	Detail        string   `json:"detail"`
}

// LinearizableOptions configures CheckLinearizable.
type LinearizableOptions struct {
	// Replay of the committed log, or nil if unavailable.
	Replay *Replay
	// Timeout per key (0: no limit).
	Timeout time.Duration
	// HTMLPath: where to write porcupine's visualisation of failing keys.
	HTMLPath string
}

// CheckLinearizable checks the KV history with porcupine, per key.
func CheckLinearizable(ops []history.Op, opt LinearizableOptions) LinearizableResult {
	res := LinearizableResult{Valid: true}
	revOf := map[string]map[string]uint64{}
	setRev := func(k, v string, r uint64) {
		if revOf[k] == nil {
			revOf[k] = map[string]uint64{}
		}
		if _, ok := revOf[k][v]; !ok {
			revOf[k][v] = r
		}
	}
	// Acknowledged writes first: the client saw these revisions.
	for _, o := range ops {
		c := o.Complete
		if c == nil || c.Type != history.OK {
			continue
		}
		switch o.Invoke.Op {
		case history.OpPut:
			setRev(o.Invoke.Key, o.Invoke.Value, c.Revision)
		case history.OpCAS:
			if c.Succeeded {
				setRev(o.Invoke.Key, o.Invoke.Value, c.Revision)
			}
		}
	}
	logComplete := opt.Replay != nil && opt.Replay.FirstIndex <= 1
	if opt.Replay != nil {
		for k, vs := range opt.Replay.Applied {
			for v, r := range vs {
				setRev(k, v, r)
			}
		}
	}

	var end int64
	for _, o := range ops {
		if o.Complete != nil && o.Complete.Time > end {
			end = o.Complete.Time
		}
		if o.Invoke.Time > end {
			end = o.Invoke.Time
		}
	}
	infinity := end + 1
	appliedBy := returnBoundByRevision(ops)

	clients := map[int]int{}
	clientID := func(p int) int {
		if id, ok := clients[p]; ok {
			return id
		}
		clients[p] = len(clients)
		return clients[p]
	}
	byKey := map[string][]porcupine.Operation{}
	for _, o := range ops {
		inv := o.Invoke
		outcome := o.Outcome()
		if outcome == history.Fail {
			continue
		}
		if inv.Op == history.OpGet && outcome != history.OK {
			continue
		}
		if outcome == history.Info && logComplete && (inv.Op == history.OpPut || inv.Op == history.OpCAS) {
			if !opt.Replay.Proposed[inv.Key][inv.Value] {
				res.DroppedByLog++
				continue
			}
			if _, applied := opt.Replay.Applied[inv.Key][inv.Value]; inv.Op == history.OpCAS && !applied {
				res.DroppedByLog++
				continue
			}
		}
		in := keyedInput{Key: inv.Key, KVInput: KVInput{Op: inv.Op, Value: inv.Value, CondRev: inv.CondRev, CondAbsent: inv.CondAbsent}}
		var out KVOutput
		ret := infinity
		if outcome == history.Info {
			out.Unknown = true
			res.Unknown++
			// A write whose effect is in the committed log at index i took
			// effect before any acknowledged op that reported a revision
			// >= i returned: that bounds its return time, which keeps
			// porcupine's search small on long runs with many unknowns.
			if opt.Replay != nil && (inv.Op == history.OpPut || inv.Op == history.OpCAS) {
				if i, ok := opt.Replay.Applied[inv.Key][inv.Value]; ok {
					if b, ok := appliedBy(i); ok && b > inv.Time {
						ret = b
						res.Bounded++
					}
				}
			}
		} else {
			c := o.Complete
			ret = c.Time
			out = KVOutput{Found: c.Found, Value: c.ReadValue, ModRev: c.ModRev, Succeeded: c.Succeeded,
				PrevKnown: c.PrevKnown, PrevFound: c.PrevFound, PrevValue: c.PrevValue, Deleted: c.Deleted}
		}
		byKey[inv.Key] = append(byKey[inv.Key], porcupine.Operation{
			ClientId: clientID(inv.Process),
			Input:    in,
			Call:     inv.Time,
			Output:   out,
			Return:   ret,
			Metadata: opMeta{Key: inv.Key, ID: inv.ID, Node: inv.Node, Outcome: outcome},
		})
		res.Checked++
	}

	model := KVModel(revOf)
	var keys []string
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var bad []porcupine.Operation
	for _, k := range keys {
		r := porcupine.CheckOperationsTimeout(model, byKey[k], opt.Timeout)
		switch r {
		case porcupine.Illegal:
			res.Valid = false
			res.BadKeys = append(res.BadKeys, k)
			bad = append(bad, byKey[k]...)
		case porcupine.Unknown:
			res.Undecided = true
			res.UndecidedKeys = append(res.UndecidedKeys, k)
		}
	}
	switch {
	case !res.Valid:
		res.Detail = fmt.Sprintf("no linearization exists for key(s) %s", strings.Join(res.BadKeys, ", "))
		if opt.HTMLPath != "" {
			_, info := porcupine.CheckOperationsVerbose(model, bad, opt.Timeout)
			if err := porcupine.VisualizePath(model, info, opt.HTMLPath); err != nil {
				res.Detail += fmt.Sprintf(" (writing visualisation: %v)", err)
			} else {
				res.HTML = opt.HTMLPath
			}
		}
	case res.Undecided:
		res.Detail = fmt.Sprintf("porcupine timed out on key(s) %s; undecided", strings.Join(res.UndecidedKeys, ", "))
	default:
		res.Detail = fmt.Sprintf("%d ops on %d keys linearizable (%d with unknown outcome, %d of them bounded by the log; %d info writes resolved as not applied via the log)",
			res.Checked, len(keys), res.Unknown, res.Bounded, res.DroppedByLog)
	}
	return res
}

// returnBoundByRevision returns a function giving, for a log index i, the
// earliest completion time of an acknowledged op that reported a revision
// >= i (a read served at that applied index, or a write committed at or
// after it); false when there is none.
func returnBoundByRevision(ops []history.Op) func(uint64) (int64, bool) {
	type point struct {
		rev uint64
		ret int64
	}
	var pts []point
	for _, o := range ops {
		if c := o.Complete; c != nil && c.Type == history.OK && c.Revision > 0 {
			pts = append(pts, point{c.Revision, c.Time})
		}
	}
	sort.Slice(pts, func(a, b int) bool { return pts[a].rev < pts[b].rev })
	// suffix[j] = earliest return among pts[j:].
	suffix := make([]int64, len(pts)+1)
	suffix[len(pts)] = math.MaxInt64
	for j := len(pts) - 1; j >= 0; j-- {
		suffix[j] = min(suffix[j+1], pts[j].ret)
	}
	return func(i uint64) (int64, bool) {
		j := sort.Search(len(pts), func(j int) bool { return pts[j].rev >= i })
		if j == len(pts) {
			return 0, false
		}
		return suffix[j], true
	}
}
