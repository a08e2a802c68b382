package checker

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
)

// NodeFinal is what one node reported in the final phase.
type NodeFinal struct {
	FSMIndex uint64        `json:"fsm_index"`
	Data     map[string]KV `json:"-"`
	Digest   string        `json:"digest"`
	Keys     int           `json:"keys"`
	Error    string        `json:"error,omitempty"`
}

// Digest is a sha256 over the sorted (key, value, create, mod, version,
// lease) tuples.
func Digest(data map[string]KV) string {
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		kv := data[k]
		fmt.Fprintf(h, "%q %q %d %d %d %d\n", k, kv.Value, kv.CreateRev, kv.ModRev, kv.Version, kv.Lease)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// ConvergenceResult is the verdict of the convergence checker.
type ConvergenceResult struct {
	Valid      bool                 `json:"valid"`
	Nodes      map[string]NodeFinal `json:"nodes"`
	Violations []string             `json:"violations,omitempty"`
	Detail     string               `json:"detail"`
}

// CheckConvergence verifies that every node reports the same fsm_index and the
// same data digest, and (when rp is given) that the data equals the committed
// log replayed (same keys, values, mod_revisions and leases) and that the log
// keeps the contract the replay checks (no key mutated twice in one entry).
func CheckConvergence(nodes map[string]NodeFinal, rp *Replay) ConvergenceResult {
	res := ConvergenceResult{Valid: true, Nodes: map[string]NodeFinal{}}
	var ids []string
	for id := range nodes {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	fail := func(format string, args ...any) {
		res.Valid = false
		if len(res.Violations) < maxListed {
			res.Violations = append(res.Violations, fmt.Sprintf(format, args...))
		}
	}
	for _, id := range ids {
		nf := nodes[id]
		if nf.Error != "" {
			fail("node %s: %s", id, nf.Error)
			res.Nodes[id] = nf
			continue
		}
		nf.Digest = Digest(nf.Data)
		nf.Keys = len(nf.Data)
		res.Nodes[id] = nf
	}
	var ref string
	for _, id := range ids {
		nf := res.Nodes[id]
		if nf.Error != "" {
			continue
		}
		if ref == "" {
			ref = id
			continue
		}
		r := res.Nodes[ref]
		if nf.FSMIndex != r.FSMIndex {
			fail("fsm_index differs: %s=%d %s=%d", ref, r.FSMIndex, id, nf.FSMIndex)
		}
		if nf.Digest != r.Digest {
			fail("data digest differs: %s=%s %s=%s (%s)", ref, r.Digest, id, nf.Digest, diffData(nodes[ref].Data, nodes[id].Data))
		}
	}
	if rp != nil {
		for _, a := range rp.Anomalies {
			fail("committed log: %s", a)
		}
	}
	if rp != nil && ref != "" {
		for _, id := range ids {
			if res.Nodes[id].Error != "" {
				continue
			}
			if d := diffReplay(rp, nodes[id].Data); d != "" {
				fail("node %s differs from the replayed committed log: %s", id, d)
			}
		}
	}
	if res.Valid {
		r := res.Nodes[ref]
		res.Detail = fmt.Sprintf("%d nodes at fsm_index %d, digest %s, %d keys", len(ids), r.FSMIndex, r.Digest, r.Keys)
	} else {
		res.Detail = strings.Join(res.Violations, "; ")
	}
	return res
}

func diffData(a, b map[string]KV) string {
	var out []string
	for k, av := range a {
		bv, ok := b[k]
		if !ok {
			out = append(out, fmt.Sprintf("%s only on first", k))
		} else if av != bv {
			out = append(out, fmt.Sprintf("%s: %+v vs %+v", k, av, bv))
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, fmt.Sprintf("%s only on second", k))
		}
	}
	sort.Strings(out)
	if len(out) > 5 {
		out = append(out[:5], "...")
	}
	return strings.Join(out, ", ")
}

// diffReplay compares a node's data with the replayed log on key, value,
// mod_revision and lease (keys the replay cannot know are skipped).
func diffReplay(rp *Replay, data map[string]KV) string {
	var out []string
	for k, kv := range rp.Final {
		got, ok := data[k]
		if !ok {
			out = append(out, fmt.Sprintf("%s missing (log: %q@%d)", k, kv.Value, kv.ModRev))
		} else if got.Value != kv.Value || got.ModRev != kv.ModRev || got.Lease != kv.Lease {
			out = append(out, fmt.Sprintf("%s=%q@%d lease %d (log: %q@%d lease %d)", k, got.Value, got.ModRev, got.Lease, kv.Value, kv.ModRev, kv.Lease))
		}
	}
	for k, got := range data {
		if _, ok := rp.Final[k]; !ok && !rp.Unknown[k] && (rp.FirstIndex <= 1 || len(rp.ByKey[k]) > 0) {
			out = append(out, fmt.Sprintf("%s=%q@%d not in the log's final state", k, got.Value, got.ModRev))
		}
	}
	sort.Strings(out)
	if len(out) > 5 {
		out = append(out[:5], "...")
	}
	return strings.Join(out, ", ")
}
