// Package checker holds the independent checkers of a cluster-test run. Each
// takes recorded data (the client history, watch streams, the nodes' final
// state and the committed Raft log) and returns a verdict with the evidence;
// none of them talks to the cluster.
package checker

import (
	"fmt"
	"sort"
)

// Op kinds in a committed log entry (mirror raftwatchpb.Op_Kind).
const (
	LogPut       = "put"
	LogDelete    = "delete"
	LogSetMember = "set_member"
)

// LogOp is one client op of a committed entry.
type LogOp struct {
	Kind       string `json:"kind"`
	Key        string `json:"key"`
	Value      string `json:"value,omitempty"`
	CondRev    uint64 `json:"cond_rev,omitempty"`
	CondAbsent bool   `json:"cond_absent,omitempty"`
}

// LogEntry is one committed Raft log entry; every op in it has revision Index.
type LogEntry struct {
	Index uint64  `json:"index"`
	Type  string  `json:"type"`
	Ops   []LogOp `json:"ops,omitempty"`
}

// Log is the committed log pulled from a node (Cluster.Log).
type Log struct {
	// FirstIndex is the oldest index the node still held; entries below it
	// were compacted and the state before it is unknown to the replay.
	FirstIndex uint64     `json:"first_index"`
	Entries    []LogEntry `json:"entries"`
}

// KV is a key's state.
type KV struct {
	Value     string `json:"value"`
	ModRev    uint64 `json:"mod_revision"`
	CreateRev uint64 `json:"create_revision"`
	Version   uint64 `json:"version"`
}

// Mutation is one applied change of a key: the event a watcher must see.
type Mutation struct {
	Rev   uint64
	Key   string
	Kind  string // LogPut or LogDelete
	Value string // LogPut: the new value
	// PrevKnown is false when the key's state before the mutation is unknown
	// (log compacted); PrevExists/PrevValue then mean nothing.
	PrevKnown  bool
	PrevExists bool
	PrevValue  string
	// Uncertain: the log is compacted and the replay cannot tell whether this
	// op really changed the key (a delete or conditional op on unknown state).
	Uncertain bool
}

// keyState is the replayed state of one key.
type keyState struct {
	known  bool // false: unknown because the log was compacted
	exists bool
	kv     KV
}

// Replay is the result of applying the committed log with raftwatch's apply
// semantics (docs/CONTRACTS.md): a put with condition mod_revision=N requires
// the key to exist with mod_revision N, absent requires the key to be absent,
// and on failure nothing changes; a delete of an absent key changes nothing
// and emits no event; the revision of every op is its entry's index.
type Replay struct {
	FirstIndex uint64
	LastIndex  uint64
	// Mutations in log order.
	Mutations []Mutation
	// ByKey: each key's mutations in revision order.
	ByKey map[string][]Mutation
	// Final is the replayed final state of every key whose state is known and
	// that exists.
	Final map[string]KV
	// Unknown lists keys whose final state the replay cannot tell.
	Unknown map[string]bool
	// Proposed[key][value]: a put of value to key is in the committed log.
	Proposed map[string]map[string]bool
	// Applied[key][value]: the revision at which that put was applied.
	Applied map[string]map[string]uint64
}

// NewReplay applies log with the documented apply semantics.
func NewReplay(log *Log) (*Replay, error) {
	r := &Replay{
		FirstIndex: log.FirstIndex,
		ByKey:      map[string][]Mutation{},
		Final:      map[string]KV{},
		Unknown:    map[string]bool{},
		Proposed:   map[string]map[string]bool{},
		Applied:    map[string]map[string]uint64{},
	}
	if r.FirstIndex == 0 {
		r.FirstIndex = 1
	}
	compacted := r.FirstIndex > 1
	state := map[string]*keyState{}
	get := func(k string) *keyState {
		s, ok := state[k]
		if !ok {
			s = &keyState{known: !compacted}
			state[k] = s
		}
		return s
	}
	var prev uint64
	for _, e := range log.Entries {
		if e.Index <= prev {
			return nil, fmt.Errorf("committed log is not in increasing index order: %d after %d", e.Index, prev)
		}
		prev = e.Index
		r.LastIndex = e.Index
		for _, op := range e.Ops {
			if op.Kind != LogPut && op.Kind != LogDelete {
				continue
			}
			s := get(op.Key)
			if op.Kind == LogPut {
				if r.Proposed[op.Key] == nil {
					r.Proposed[op.Key] = map[string]bool{}
				}
				r.Proposed[op.Key][op.Value] = true
			}
			hasCond := op.CondRev != 0 || op.CondAbsent
			m := Mutation{Rev: e.Index, Key: op.Key, Kind: op.Kind, Value: op.Value,
				PrevKnown: s.known, PrevExists: s.exists, PrevValue: s.kv.Value}
			if !s.known {
				// State unknown (compacted log): an unconditional put still
				// defines it; anything else leaves it unknown.
				if op.Kind == LogPut && !hasCond {
					s.known, s.exists = true, true
					s.kv = KV{Value: op.Value, ModRev: e.Index} // create/version unknown
					r.markApplied(op.Key, op.Value, e.Index)
					r.addMutation(m)
				} else {
					m.Uncertain = true
					r.addMutation(m)
				}
				continue
			}
			holds := true
			switch {
			case op.CondAbsent:
				holds = !s.exists
			case op.CondRev != 0:
				holds = s.exists && s.kv.ModRev == op.CondRev
			}
			if !holds {
				continue
			}
			switch op.Kind {
			case LogPut:
				if !s.exists {
					s.kv = KV{CreateRev: e.Index}
				}
				s.exists = true
				s.kv.Value, s.kv.ModRev = op.Value, e.Index
				s.kv.Version++
				r.markApplied(op.Key, op.Value, e.Index)
				r.addMutation(m)
			case LogDelete:
				if !s.exists {
					continue
				}
				s.exists = false
				s.kv = KV{}
				r.addMutation(m)
			}
		}
	}
	for k, s := range state {
		switch {
		case !s.known:
			r.Unknown[k] = true
		case s.exists:
			r.Final[k] = s.kv
		}
	}
	return r, nil
}

func (r *Replay) markApplied(key, value string, rev uint64) {
	if r.Applied[key] == nil {
		r.Applied[key] = map[string]uint64{}
	}
	r.Applied[key][value] = rev
}

func (r *Replay) addMutation(m Mutation) {
	r.Mutations = append(r.Mutations, m)
	r.ByKey[m.Key] = append(r.ByKey[m.Key], m)
}

// Covers reports whether the log holds the revision rev (it was not compacted
// and is not past the end).
func (r *Replay) Covers(rev uint64) bool {
	return rev >= r.FirstIndex && rev <= r.LastIndex
}

// MutationAt returns the mutation of key at revision rev.
func (r *Replay) MutationAt(key string, rev uint64) (Mutation, bool) {
	ms := r.ByKey[key]
	i := sort.Search(len(ms), func(i int) bool { return ms[i].Rev >= rev })
	if i < len(ms) && ms[i].Rev == rev {
		return ms[i], true
	}
	return Mutation{}, false
}

// LaterMutation reports whether key has a mutation (certain or not) after rev.
func (r *Replay) LaterMutation(key string, rev uint64) (Mutation, bool) {
	ms := r.ByKey[key]
	i := sort.Search(len(ms), func(i int) bool { return ms[i].Rev > rev })
	if i < len(ms) {
		return ms[i], true
	}
	return Mutation{}, false
}
