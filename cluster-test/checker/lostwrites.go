package checker

import (
	"fmt"
	"sort"
	"strings"

	"github.com/raftwatch/raftwatch/cluster-test/history"
)

// maxListed bounds how many violations a result spells out.
const maxListed = 20

// LostWritesResult is the verdict of the no-lost-writes checker.
type LostWritesResult struct {
	Valid        bool     `json:"valid"`
	Acknowledged int      `json:"acknowledged_writes"`
	Lost         int      `json:"lost"`
	Violations   []string `json:"violations,omitempty"`
	Detail       string   `json:"detail"`
}

// CheckNoLostWrites verifies that every acknowledged write (an ok put, a cas
// that succeeded, a delete that removed the key) is in the committed log at
// the revision its response gave, and that on every node's final state it is
// either still visible or superseded by a later committed mutation of the key.
// final maps node id to that node's final key/value state.
func CheckNoLostWrites(ops []history.Op, rp *Replay, final map[string]map[string]KV) LostWritesResult {
	res := LostWritesResult{Valid: true}
	nodes := make([]string, 0, len(final))
	for n := range final {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	report := func(format string, args ...any) {
		res.Valid = false
		res.Lost++
		if len(res.Violations) < maxListed {
			res.Violations = append(res.Violations, fmt.Sprintf(format, args...))
		}
	}
	for _, o := range ops {
		c := o.Complete
		if c == nil || c.Type != history.OK {
			continue
		}
		inv := o.Invoke
		var isPut bool
		switch {
		case inv.Op == history.OpPut, inv.Op == history.OpCAS && c.Succeeded:
			isPut = true
		case inv.Op == history.OpDelete && c.Deleted:
		default:
			continue
		}
		res.Acknowledged++
		rev := c.Revision
		if rp.Covers(rev) {
			m, ok := rp.MutationAt(inv.Key, rev)
			switch {
			case !ok:
				report("op %d: %s %s acknowledged at revision %d, but the committed log has no change of %s there", inv.ID, inv.Op, desc(inv), rev, inv.Key)
				continue
			case isPut && (m.Kind != LogPut || m.Value != inv.Value):
				report("op %d: %s %s acknowledged at revision %d, but the log's change of %s there is %s %q", inv.ID, inv.Op, desc(inv), rev, inv.Key, m.Kind, m.Value)
				continue
			case !isPut && m.Kind != LogDelete:
				report("op %d: delete of %s acknowledged at revision %d, but the log's change there is %s %q", inv.ID, inv.Key, rev, m.Kind, m.Value)
				continue
			}
		} else if rev > rp.LastIndex {
			report("op %d: %s %s acknowledged at revision %d, past the end of the committed log (%d)", inv.ID, inv.Op, desc(inv), rev, rp.LastIndex)
			continue
		}
		if _, later := rp.LaterMutation(inv.Key, rev); later {
			continue // superseded
		}
		for _, n := range nodes {
			kv, exists := final[n][inv.Key]
			switch {
			case isPut && (!exists || kv.Value != inv.Value):
				report("op %d: put %s=%q acknowledged at revision %d and never superseded, but node %s has %s", inv.ID, inv.Key, inv.Value, rev, n, descKV(kv, exists))
			case !isPut && exists:
				report("op %d: delete of %s acknowledged at revision %d and never superseded, but node %s has %s", inv.ID, inv.Key, rev, n, descKV(kv, exists))
			}
		}
	}
	if res.Valid {
		res.Detail = fmt.Sprintf("all %d acknowledged writes present or superseded on %d nodes", res.Acknowledged, len(nodes))
	} else {
		res.Detail = fmt.Sprintf("%d of %d acknowledged writes lost: %s", res.Lost, res.Acknowledged, strings.Join(res.Violations, "; "))
	}
	return res
}

func desc(e history.Event) string {
	return fmt.Sprintf("%s=%q", e.Key, e.Value)
}

func descKV(kv KV, exists bool) string {
	if !exists {
		return "the key absent"
	}
	return fmt.Sprintf("%q@%d", kv.Value, kv.ModRev)
}
