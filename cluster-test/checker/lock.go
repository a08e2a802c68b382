package checker

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/raftwatch/raftwatch/cluster-test/history"
)

// The lock (fencing) check
//
// Each lock client acquires the lock (fencing token T = a revision, session
// lease L), does a fenced write (history.LockWrite) and releases. A hold's
// critical section is [acquire returned, release invoked] (no release: it
// never ended). The checks:
//
//   - tokens: a successful acquisition that was invoked after another one
//     returned has a larger token; no two acquisitions share a token.
//   - fence order: committed fenced writes (the fence key's puts in the log,
//     and acknowledged writes by revision) have non-decreasing tokens.
//   - mutual exclusion: two holds' critical sections overlap in real time
//     only if the earlier holder's (smaller token's) lease expired in the
//     log before the later acquisition (its revision < the later token);
//     an overlap where both holders' fenced writes succeeded and the
//     earlier one's committed after the later acquisition is a violation
//     even then. Every overlap is reported with both tokens.
//   - counter: each node's final counter equals the number of fenced writes
//     applied (the counter's puts in the log), and lies between the
//     acknowledged successful writes and those plus the unknown ones.

// FenceValue is the fence key's value for token: fixed-width decimal, so
// byte-wise order (Compare on value) is numeric order.
func FenceValue(token uint64) string { return fmt.Sprintf("%020d", token) }

// CounterValue is the counter key's value n.
func CounterValue(n uint64) string { return fmt.Sprintf("%020d", n) }

// ParseFixed parses a FenceValue or CounterValue.
func ParseFixed(v string) (uint64, error) { return strconv.ParseUint(v, 10, 64) }

// LockOptions configures CheckLock.
type LockOptions struct {
	FenceKey, CounterKey string
	// Replay of the committed log, or nil.
	Replay *Replay
}

// LockOverlap is two holds whose critical sections overlapped.
type LockOverlap struct {
	Earlier      uint64 `json:"earlier_token"`
	Later        uint64 `json:"later_token"`
	EarlierLease int64  `json:"earlier_lease"`
	// Excused: the earlier holder's lease expired (at ExpiredAt) before the
	// later acquisition.
	Excused   bool   `json:"excused"`
	ExpiredAt uint64 `json:"expired_at,omitempty"`
	// BothWrote: both holders' fenced writes succeeded, the earlier one's
	// after the later acquisition.
	BothWrote bool `json:"both_wrote"`
}

// LockResult is the verdict of the lock checker.
type LockResult struct {
	Valid        bool `json:"valid"`
	Acquisitions int  `json:"acquisitions"`
	// Writes acknowledged as succeeded, of unknown outcome, and applied in
	// the log (-1: log incomplete).
	WritesOK      int               `json:"writes_ok"`
	WritesUnknown int               `json:"writes_unknown"`
	WritesApplied int               `json:"writes_applied"`
	Overlaps      []LockOverlap     `json:"overlaps,omitempty"`
	FinalCounters map[string]uint64 `json:"final_counters,omitempty"`
	Violations    []string          `json:"violations,omitempty"`
	Detail        string            `json:"detail"`
}

type hold struct {
	token     uint64
	lease     int64
	invoked   int64
	acquired  int64
	end       int64    // release invoked; MaxInt64 if never
	writeRevs []uint64 // revisions of its successful fenced writes
}

// CheckLock checks the lock history (see the comment above).
func CheckLock(ops []history.Paired[history.LockEvent], final map[string]map[string]KV, opt LockOptions) LockResult {
	res := LockResult{Valid: true, FinalCounters: map[string]uint64{}, WritesApplied: -1}
	fail := func(format string, args ...any) {
		res.Valid = false
		if len(res.Violations) < maxListed {
			res.Violations = append(res.Violations, fmt.Sprintf(format, args...))
		}
	}
	holds := map[uint64]*hold{}
	var order []*hold
	for _, o := range ops {
		c := o.Complete
		if o.Invoke.Op != history.LockAcquire || c == nil || c.Type != history.OK {
			continue
		}
		res.Acquisitions++
		if h, dup := holds[c.Token]; dup {
			fail("two acquisitions got fencing token %d (leases %d and %d)", c.Token, h.lease, c.Lease)
			continue
		}
		h := &hold{token: c.Token, lease: c.Lease, invoked: o.Invoke.Time, acquired: c.Time, end: math.MaxInt64}
		holds[c.Token] = h
		order = append(order, h)
	}
	type write struct {
		token uint64
		rev   uint64
	}
	var acked []write
	for _, o := range ops {
		inv := o.Invoke
		switch inv.Op {
		case history.LockRelease:
			if h := holds[inv.Token]; h != nil && inv.Time < h.end {
				h.end = inv.Time
			}
		case history.LockWrite:
			c := o.Complete
			switch {
			case c == nil || c.Type == history.Info:
				res.WritesUnknown++
			case c.Type == history.OK && c.Succeeded:
				res.WritesOK++
				acked = append(acked, write{inv.Token, c.Revision})
				if h := holds[inv.Token]; h != nil {
					h.writeRevs = append(h.writeRevs, c.Revision)
				} else {
					fail("fenced write %d with token %d succeeded, but no acquisition returned that token", inv.ID, inv.Token)
				}
			}
		}
	}

	// Tokens: strictly increasing across acquisitions that did not overlap.
	byReturn := append([]*hold(nil), order...)
	sort.Slice(byReturn, func(a, b int) bool { return byReturn[a].acquired < byReturn[b].acquired })
	for _, b := range order {
		for _, a := range byReturn {
			if a.acquired >= b.invoked {
				break
			}
			if a.token >= b.token {
				fail("acquisition with token %d was invoked after the one with token %d returned, but its token is not larger", b.token, a.token)
			}
		}
	}

	// Fence order: in the log, and among acknowledged writes.
	logComplete := opt.Replay != nil && opt.Replay.FirstIndex <= 1
	var applied []write
	if opt.Replay != nil {
		var last uint64
		var lastRev uint64
		for _, m := range opt.Replay.ByKey[opt.FenceKey] {
			if m.Kind != LogPut || m.Uncertain {
				continue
			}
			tok, err := ParseFixed(m.Value)
			if err != nil {
				fail("fence put at revision %d: %v", m.Rev, err)
				continue
			}
			if tok < last {
				fail("fenced writes out of order in the log: token %d at revision %d after token %d at revision %d", tok, m.Rev, last, lastRev)
			}
			last, lastRev = max(last, tok), m.Rev
			if tok != 0 {
				applied = append(applied, write{tok, m.Rev})
			}
		}
		if logComplete {
			res.WritesApplied = 0
			for _, m := range opt.Replay.ByKey[opt.CounterKey] {
				if m.Kind == LogPut && !m.Uncertain && m.Value != CounterValue(0) {
					res.WritesApplied++
				}
			}
		}
	}
	sort.Slice(acked, func(a, b int) bool { return acked[a].rev < acked[b].rev })
	for i := 1; i < len(acked); i++ {
		if acked[i].token < acked[i-1].token {
			fail("acknowledged fenced writes out of order: token %d at revision %d after token %d at revision %d",
				acked[i].token, acked[i].rev, acked[i-1].token, acked[i-1].rev)
		}
	}
	// The log's applied writes count for a hold even when the client did
	// not hear back.
	for _, w := range applied {
		if h := holds[w.token]; h != nil && !containsRev(h.writeRevs, w.rev) {
			h.writeRevs = append(h.writeRevs, w.rev)
		}
	}

	// Mutual exclusion.
	sorted := append([]*hold(nil), order...)
	sort.Slice(sorted, func(a, b int) bool { return sorted[a].token < sorted[b].token })
	for i, a := range sorted {
		for _, b := range sorted[i+1:] {
			if !(a.acquired < b.end && b.acquired < a.end) {
				continue
			}
			ov := LockOverlap{Earlier: a.token, Later: b.token, EarlierLease: a.lease}
			if opt.Replay != nil {
				if e, ok := opt.Replay.Ended[a.lease]; ok && e.Kind == LogLeaseExpire && e.Rev < b.token {
					ov.Excused, ov.ExpiredAt = true, e.Rev
				}
			}
			late := false
			for _, r := range a.writeRevs {
				late = late || r > b.token
			}
			ov.BothWrote = late && len(b.writeRevs) > 0
			if len(res.Overlaps) < maxListed {
				res.Overlaps = append(res.Overlaps, ov)
			}
			switch {
			case !ov.Excused:
				fail("critical sections of tokens %d and %d overlap, and lease %d of the earlier holder had not expired before token %d", a.token, b.token, a.lease, b.token)
			case ov.BothWrote:
				fail("critical sections of tokens %d and %d overlap (lease %d expired at %d) and both fenced writes succeeded, the earlier one after token %d", a.token, b.token, a.lease, ov.ExpiredAt, b.token)
			}
		}
	}

	// Counter.
	nodes := make([]string, 0, len(final))
	for id := range final {
		nodes = append(nodes, id)
	}
	sort.Strings(nodes)
	for _, id := range nodes {
		kv, ok := final[id][opt.CounterKey]
		if !ok {
			fail("node %s has no counter %s", id, opt.CounterKey)
			continue
		}
		n, err := ParseFixed(kv.Value)
		if err != nil {
			fail("node %s counter: %v", id, err)
			continue
		}
		res.FinalCounters[id] = n
		if res.WritesApplied >= 0 && n != uint64(res.WritesApplied) {
			fail("node %s counter is %d, but %d fenced writes were applied", id, n, res.WritesApplied)
		}
		if n < uint64(res.WritesOK) || n > uint64(res.WritesOK+res.WritesUnknown) {
			fail("node %s counter is %d, outside [%d acknowledged, %d acknowledged or unknown] fenced writes", id, n, res.WritesOK, res.WritesOK+res.WritesUnknown)
		}
	}

	if res.Valid {
		excused := 0
		for _, o := range res.Overlaps {
			if o.Excused {
				excused++
			}
		}
		res.Detail = fmt.Sprintf("%d acquisitions with increasing tokens, %d fenced writes acknowledged (%d unknown, %d applied in the log), %d overlaps (all after the earlier holder's lease expired), counters %v",
			res.Acquisitions, res.WritesOK, res.WritesUnknown, res.WritesApplied, excused, res.FinalCounters)
	} else {
		res.Detail = strings.Join(res.Violations, "; ")
	}
	return res
}

func containsRev(revs []uint64, r uint64) bool {
	for _, x := range revs {
		if x == r {
			return true
		}
	}
	return false
}
