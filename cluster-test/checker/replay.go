// Package checker holds the independent checkers of a cluster-test run. Each
// takes recorded data (the client history, watch streams, the nodes' final
// state and the committed Raft log) and returns a verdict with the evidence;
// none of them talks to the cluster.
package checker

import (
	"fmt"
	"sort"
	"strings"
)

// Op kinds in a committed log entry (mirror raftwatchpb.Op_Kind).
const (
	LogPut             = "put"
	LogDelete          = "delete"
	LogSetMember       = "set_member"
	LogTxn             = "txn"
	LogLeaseGrant      = "lease_grant"
	LogLeaseRevoke     = "lease_revoke"
	LogLeaseRenew      = "lease_renew"
	LogLeaseCheckpoint = "lease_checkpoint"
	LogLeaseExpire     = "lease_expire"
	// LogUnknown is an op kind this checker does not know (a newer
	// version's); the fsm skips it, and so does the replay.
	LogUnknown = "unknown"
)

// Txn op kinds (LogTxnOp.Kind): LogPut, LogDelete, and these.
const (
	LogGet          = "get"
	LogDeletePrefix = "delete_prefix"
)

// Compare targets (LogCompare.Target; "" = none set, which never holds).
const (
	CmpValue   = "value"
	CmpVersion = "version"
	CmpCreate  = "create_revision"
	CmpMod     = "mod_revision"
	CmpLease   = "lease"
	CmpExists  = "exists"
)

// Compare results (LogCompare.Result).
const (
	CmpEqual    = "equal"
	CmpNotEqual = "not_equal"
	CmpLess     = "less"
	CmpGreater  = "greater"
)

// LogOp is one client op of a committed entry.
type LogOp struct {
	Kind       string `json:"kind"`
	Key        string `json:"key,omitempty"`
	Value      string `json:"value,omitempty"`
	CondRev    uint64 `json:"cond_rev,omitempty"`
	CondAbsent bool   `json:"cond_absent,omitempty"`
	// Lease: PUT: the lease to attach the key to (0 = none, which detaches
	// it); LEASE_GRANT/REVOKE/RENEW: the lease (GRANT: 0 = the state machine
	// picks the id).
	Lease int64 `json:"lease,omitempty"`
	// TTL of a LEASE_GRANT, in seconds.
	TTL         int64            `json:"ttl,omitempty"`
	Txn         *LogTxnRequest   `json:"txn,omitempty"`
	Checkpoints []LogCheckpoint  `json:"checkpoints,omitempty"`
	Expiries    []LogLeaseExpiry `json:"expiries,omitempty"`
}

// LogTxnRequest is the TxnRequest of a TXN op.
type LogTxnRequest struct {
	Compares []LogCompare `json:"compares,omitempty"`
	Success  []LogTxnOp   `json:"success,omitempty"`
	Failure  []LogTxnOp   `json:"failure,omitempty"`
}

// LogCompare is one Compare of a Txn: Target names the field that was set
// and the operand is in the field of that name.
type LogCompare struct {
	Key    string `json:"key"`
	Result string `json:"result"`
	Target string `json:"target"`
	Value  string `json:"value,omitempty"`
	// Rev is the operand of CmpVersion, CmpCreate and CmpMod.
	Rev    uint64 `json:"rev,omitempty"`
	Lease  int64  `json:"lease,omitempty"`
	Exists bool   `json:"exists,omitempty"`
}

// LogTxnOp is one op of a Txn branch. Key is the prefix of a delete_prefix.
type LogTxnOp struct {
	Kind  string `json:"kind"`
	Key   string `json:"key"`
	Value string `json:"value,omitempty"`
	Lease int64  `json:"lease,omitempty"`
}

// LogCheckpoint is a LeaseCheckpoint.
type LogCheckpoint struct {
	Lease        int64  `json:"lease"`
	RemainingMS  int64  `json:"remaining_ms"`
	RenewedIndex uint64 `json:"renewed_index"`
}

// LogLeaseExpiry is a LeaseExpiry.
type LogLeaseExpiry struct {
	Lease        int64  `json:"lease"`
	RenewedIndex uint64 `json:"renewed_index"`
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
	// Lease the key is attached to (0 = none).
	Lease int64 `json:"lease,omitempty"`
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

// leaseState is the replayed state of one lease id.
type leaseState struct {
	known   bool // false: unknown because the log was compacted
	exists  bool
	renewed uint64          // renewed_index: its GRANT's or last RENEW's index
	keys    map[string]bool // attached keys
}

// LeaseEnd says how and where a lease ended.
type LeaseEnd struct {
	Rev uint64
	// Kind is LogLeaseRevoke or LogLeaseExpire.
	Kind string
	// Keys deleted with it, in key order.
	Keys []string
}

// Replay is the result of applying the committed log with raftwatch's apply
// semantics (docs/CONTRACTS.md and the issue 9 design): a put with condition
// mod_revision=N requires the key to exist with mod_revision N, absent
// requires the key to be absent, and on failure nothing changes; a delete of
// an absent key changes nothing and emits no event; the revision of every op
// is its entry's index. A TXN runs the ops of the branch its compares chose,
// in order, each mutation an event at the entry's revision; leases attach
// keys, and a revoke or an expiry deletes a lease's keys in key order.
//
// Not known to the replay: the node's caps (--max-leases,
// --max-keys-per-lease). A grant or an attaching put refused by a cap
// (RESOURCE_EXHAUSTED at apply) is replayed as applied; the convergence
// checker then reports the difference.
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
	// Proposed[key][value]: a put of value to key is in the committed log
	// (a Txn's puts of either branch count).
	Proposed map[string]map[string]bool
	// Applied[key][value]: the revision at which that put was applied.
	Applied map[string]map[string]uint64
	// Granted[id]: the revision of the entry that granted lease id.
	Granted map[int64]uint64
	// Ended[id]: how lease id ended (revoke or expiry), when it did.
	Ended map[int64]LeaseEnd
	// Leases: the leases that exist at the end (known ones only).
	Leases map[int64]bool
	// Anomalies: committed entries that break the contract (two mutations
	// of one key at one revision); the convergence checker reports them.
	Anomalies []string

	// wild[rev]: prefixes under which keys the replay never saw may have
	// been deleted at rev ("" = any key): a revoke, expiry or delete_prefix
	// on state the compacted log does not show.
	wild map[uint64][]string
	// knownAt[key]: revisions at which the key's state became known or
	// unknown (compacted logs only), in order.
	knownAt map[string][]knownMark
}

type knownMark struct {
	rev   uint64
	known bool
}

// replayer holds the state NewReplay builds.
type replayer struct {
	r         *Replay
	compacted bool
	state     map[string]*keyState
	leases    map[int64]*leaseState
	// nextAuto is the state machine's lease id counter (the next id a grant
	// with lease 0 may get); maxKnown is false when the compacted log hides
	// earlier grants.
	nextAuto int64
	maxKnown bool
	// entry being applied
	index uint64
	seen  map[string]bool // keys mutated in this entry
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
		Granted:    map[int64]uint64{},
		Ended:      map[int64]LeaseEnd{},
		Leases:     map[int64]bool{},
		wild:       map[uint64][]string{},
		knownAt:    map[string][]knownMark{},
	}
	if r.FirstIndex == 0 {
		r.FirstIndex = 1
	}
	p := &replayer{r: r, compacted: r.FirstIndex > 1, state: map[string]*keyState{}, leases: map[int64]*leaseState{}}
	p.maxKnown = !p.compacted
	var prev uint64
	for _, e := range log.Entries {
		if e.Index <= prev {
			return nil, fmt.Errorf("committed log is not in increasing index order: %d after %d", e.Index, prev)
		}
		prev = e.Index
		r.LastIndex = e.Index
		p.index, p.seen = e.Index, map[string]bool{}
		for _, op := range e.Ops {
			p.apply(op)
		}
	}
	for k, s := range p.state {
		switch {
		case !s.known:
			r.Unknown[k] = true
		case s.exists:
			r.Final[k] = s.kv
		}
	}
	for id, l := range p.leases {
		if l.known && l.exists {
			r.Leases[id] = true
		}
	}
	return r, nil
}

func (p *replayer) apply(op LogOp) {
	switch op.Kind {
	case LogPut:
		p.proposed(op.Key, op.Value)
		p.put(op.Key, op.Value, op.Lease, conds(op), false)
	case LogDelete:
		p.del(op.Key, conds(op), false)
	case LogTxn:
		p.txn(op.Txn)
	case LogLeaseGrant:
		p.grant(op.Lease)
	case LogLeaseRevoke:
		p.endLease(op.Lease, 0, false, LogLeaseRevoke)
	case LogLeaseExpire:
		for _, x := range op.Expiries {
			p.endLease(x.Lease, x.RenewedIndex, true, LogLeaseExpire)
		}
	case LogLeaseRenew:
		// Refused (NOT_FOUND) when the lease does not exist.
		if l := p.lease(op.Lease); l.known && l.exists {
			l.renewed = p.index
		}
	case LogLeaseCheckpoint:
		// Remaining TTLs only: no key changes.
	}
}

// conds converts the single-key Condition of a PUT/DELETE into Compares, as
// the fsm does (one evaluator for conditions): mod_revision N means the key
// exists with mod_revision N; absent means it does not exist.
func conds(op LogOp) []LogCompare {
	switch {
	case op.CondAbsent:
		return []LogCompare{{Key: op.Key, Target: CmpExists, Result: CmpEqual, Exists: false}}
	case op.CondRev != 0:
		return []LogCompare{
			{Key: op.Key, Target: CmpExists, Result: CmpEqual, Exists: true},
			{Key: op.Key, Target: CmpMod, Result: CmpEqual, Rev: op.CondRev},
		}
	}
	return nil
}

func (p *replayer) key(k string) *keyState {
	s, ok := p.state[k]
	if !ok {
		s = &keyState{known: !p.compacted}
		p.state[k] = s
	}
	return s
}

// setKnown records a change of key k's known-ness at the current entry.
func (p *replayer) setKnown(k string, s *keyState, known bool) {
	if s.known == known {
		return
	}
	s.known = known
	p.r.knownAt[k] = append(p.r.knownAt[k], knownMark{rev: p.index, known: known})
}

func (p *replayer) lease(id int64) *leaseState {
	l, ok := p.leases[id]
	if !ok {
		l = &leaseState{known: !p.compacted, keys: map[string]bool{}}
		p.leases[id] = l
	}
	return l
}

func (p *replayer) proposed(k, v string) {
	if p.r.Proposed[k] == nil {
		p.r.Proposed[k] = map[string]bool{}
	}
	p.r.Proposed[k][v] = true
}

// tri is a three-valued truth: the compacted log may leave it unknown.
type tri int

const (
	triFalse tri = iota
	triTrue
	triUnknown
)

func and(a, b tri) tri {
	switch {
	case a == triFalse || b == triFalse:
		return triFalse
	case a == triUnknown || b == triUnknown:
		return triUnknown
	}
	return triTrue
}

// evalCompares evaluates compares on the current state.
func (p *replayer) evalCompares(cs []LogCompare) tri {
	res := triTrue
	for _, c := range cs {
		s := p.key(c.Key)
		if !s.known {
			res = and(res, triUnknown)
			continue
		}
		if compareHolds(c, s.kv, s.exists) {
			continue
		}
		res = triFalse
	}
	return res
}

// compareHolds evaluates one Compare against a key's state: for an absent
// key version, create_revision, mod_revision and lease are 0 and a value
// compare is false; exists allows EQUAL and NOT_EQUAL only (the node refuses
// anything else, so it never reaches the log; here it does not hold).
func compareHolds(c LogCompare, kv KV, exists bool) bool {
	if !exists {
		kv = KV{}
	}
	var cmp int
	switch c.Target {
	case CmpValue:
		if !exists {
			return false
		}
		cmp = strings.Compare(kv.Value, c.Value)
	case CmpVersion:
		cmp = cmpU(kv.Version, c.Rev)
	case CmpCreate:
		cmp = cmpU(kv.CreateRev, c.Rev)
	case CmpMod:
		cmp = cmpU(kv.ModRev, c.Rev)
	case CmpLease:
		cmp = cmpI(kv.Lease, c.Lease)
	case CmpExists:
		switch c.Result {
		case CmpEqual:
			return exists == c.Exists
		case CmpNotEqual:
			return exists != c.Exists
		}
		return false
	default:
		return false
	}
	switch c.Result {
	case CmpEqual:
		return cmp == 0
	case CmpNotEqual:
		return cmp != 0
	case CmpLess:
		return cmp < 0
	case CmpGreater:
		return cmp > 0
	}
	return false
}

func cmpI(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func cmpU(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// txn applies a TXN op: the compares choose the branch, whose ops run in
// order on the state the earlier ops left. A branch the compacted log cannot
// decide makes every key either branch mutates unknown.
func (p *replayer) txn(t *LogTxnRequest) {
	if t == nil {
		return
	}
	for _, br := range [][]LogTxnOp{t.Success, t.Failure} {
		for _, o := range br {
			if o.Kind == LogPut {
				p.proposed(o.Key, o.Value)
			}
		}
	}
	holds := p.evalCompares(t.Compares)
	if holds == triUnknown {
		for _, br := range [][]LogTxnOp{t.Success, t.Failure} {
			p.runBranch(br, true)
		}
		return
	}
	branch := t.Failure
	if holds == triTrue {
		branch = t.Success
	}
	// Apply-time refusal: a put to a lease that does not exist refuses the
	// whole Txn (NOT_FOUND; nothing changes). Leases cannot change within a
	// Txn, so checking every put first is exact.
	uncertain := false
	for _, o := range branch {
		if o.Kind == LogPut && o.Lease != 0 {
			switch l := p.lease(o.Lease); {
			case !l.known:
				uncertain = true
			case !l.exists:
				return
			}
		}
	}
	p.runBranch(branch, uncertain)
}

// runBranch applies a Txn branch; uncertain: it may not have run at all.
func (p *replayer) runBranch(ops []LogTxnOp, uncertain bool) {
	for _, o := range ops {
		switch o.Kind {
		case LogPut:
			p.put(o.Key, o.Value, o.Lease, nil, uncertain)
		case LogDelete:
			p.del(o.Key, nil, uncertain)
		case LogDeletePrefix:
			p.deletePrefix(o.Key, uncertain)
		}
	}
}

// put applies a put of the current entry; cs is its condition as compares.
// uncertain: the replay cannot tell whether it is applied.
func (p *replayer) put(k, v string, lease int64, cs []LogCompare, uncertain bool) {
	s := p.key(k)
	m := Mutation{Rev: p.index, Key: k, Kind: LogPut, Value: v, PrevKnown: s.known, PrevExists: s.exists, PrevValue: s.kv.Value}
	holds := triTrue
	if len(cs) > 0 {
		holds = p.evalCompares(cs)
	}
	if holds == triFalse {
		return
	}
	if lease != 0 {
		// The lease must exist at apply time: NOT_FOUND, nothing changes.
		switch l := p.lease(lease); {
		case !l.known:
			holds = triUnknown
		case !l.exists:
			return
		}
	}
	if uncertain || holds == triUnknown || !s.known {
		// Not an unconditional put onto known or unknown state: the
		// resulting state is unknown, except that an unconditional put
		// without doubts defines it.
		if !uncertain && holds == triTrue {
			p.detach(k, s)
			p.setKnown(k, s, true)
			s.exists = true
			s.kv = KV{Value: v, ModRev: p.index, Lease: lease} // create/version unknown
			p.attach(k, lease)
			p.markApplied(k, v)
			p.addMutation(m)
			return
		}
		m.Uncertain = true
		p.maybeDetach(k, s)
		p.setKnown(k, s, false)
		if lease != 0 {
			p.lease(lease).keys[k] = true // may be attached
		}
		p.addMutation(m)
		return
	}
	p.detach(k, s)
	if !s.exists {
		s.kv = KV{CreateRev: p.index}
	}
	s.exists = true
	s.kv.Value, s.kv.ModRev, s.kv.Lease = v, p.index, lease
	s.kv.Version++
	p.attach(k, lease)
	p.markApplied(k, v)
	p.addMutation(m)
}

// del applies a delete of the current entry (any kind detaches the key).
func (p *replayer) del(k string, cs []LogCompare, uncertain bool) {
	s := p.key(k)
	m := Mutation{Rev: p.index, Key: k, Kind: LogDelete, PrevKnown: s.known, PrevExists: s.exists, PrevValue: s.kv.Value}
	holds := triTrue
	if len(cs) > 0 {
		holds = p.evalCompares(cs)
	}
	if holds == triFalse {
		return
	}
	if uncertain || holds == triUnknown || !s.known {
		m.Uncertain = true
		p.maybeDetach(k, s)
		p.setKnown(k, s, false)
		p.addMutation(m)
		return
	}
	if !s.exists {
		return // deleting an absent key changes nothing and emits nothing
	}
	p.detach(k, s)
	s.exists = false
	s.kv = KV{}
	p.addMutation(m)
}

// deletePrefix deletes every key under prefix, in key order.
func (p *replayer) deletePrefix(prefix string, uncertain bool) {
	var keys []string
	for k, s := range p.state {
		if strings.HasPrefix(k, prefix) && (s.exists || !s.known) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		p.del(k, nil, uncertain)
	}
	if p.compacted {
		// Keys the compacted log never named may have been deleted too.
		p.r.wild[p.index] = append(p.r.wild[p.index], prefix)
	}
}

func (p *replayer) attach(k string, lease int64) {
	if lease != 0 {
		p.lease(lease).keys[k] = true
	}
}

// detach removes a known key from its lease's key set.
func (p *replayer) detach(k string, s *keyState) {
	if s.known && s.exists && s.kv.Lease != 0 {
		delete(p.lease(s.kv.Lease).keys, k)
	}
}

// maybeDetach is detach for a key whose next state is unknown: it stays in
// any lease's key set it was in (it may still be attached).
func (p *replayer) maybeDetach(k string, s *keyState) {
	if s.known && s.exists && s.kv.Lease != 0 {
		p.lease(s.kv.Lease).keys[k] = true
	}
}

// nextLeaseID is the id a LEASE_GRANT with lease 0 gets, and advances the
// counter past it: the counter's value (starting at 1), skipping ids of
// leases that exist; explicit ids do not move the counter. This is the one
// place that encodes the state machine's choice; it must match leaseGrant
// in fsm/lease.go. ok=false when the compacted log hides earlier grants.
func (p *replayer) nextLeaseID() (id int64, ok bool) {
	if !p.maxKnown {
		return 0, false
	}
	id = max(p.nextAuto, 1)
	for l := p.leases[id]; l != nil && l.exists; l = p.leases[id] {
		id++
	}
	p.nextAuto = id + 1
	return id, true
}

// grant applies a LEASE_GRANT of id (0: the state machine picks it). An id
// in use is refused (ALREADY_EXISTS, nothing changes).
func (p *replayer) grant(id int64) {
	if id == 0 {
		next, ok := p.nextLeaseID()
		if !ok {
			return // an id the replay cannot know; leases it did not see stay unknown
		}
		id = next
	}
	l := p.lease(id)
	switch {
	case !l.known:
		// In use or not, the compacted log cannot tell: the lease exists
		// now, but its renewed_index and keys stay unknown.
		l.exists = true
		return
	case l.exists:
		return // ALREADY_EXISTS
	}
	l.exists, l.renewed, l.keys = true, p.index, map[string]bool{}
	p.noteGrant(id)
}

func (p *replayer) noteGrant(id int64) {
	p.r.Granted[id] = p.index
	delete(p.r.Ended, id)
}

// endLease applies a revoke, or an expiry when the lease's renewed_index is
// still renewed: the lease and every key attached to it are deleted, in key
// order, at the current revision.
func (p *replayer) endLease(id int64, renewed uint64, expiry bool, kind string) {
	l := p.lease(id)
	if l.known {
		if !l.exists || (expiry && l.renewed != renewed) {
			return // unknown lease (NOT_FOUND), or renewed since the leader decided
		}
		keys := sortedKeys(l.keys)
		for _, k := range keys {
			s := p.key(k)
			if s.known && (!s.exists || s.kv.Lease != id) {
				continue // detached since
			}
			p.del(k, nil, !s.known)
		}
		l.exists, l.keys = false, map[string]bool{}
		p.r.Ended[id] = LeaseEnd{Rev: p.index, Kind: kind, Keys: keys}
		return
	}
	// Unknown lease (compacted log): it may or may not end here, and any key
	// of unknown state may be attached to it.
	var keys []string
	for k, s := range p.state {
		if !s.known || (s.exists && s.kv.Lease == id) || l.keys[k] {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		p.del(k, nil, true)
	}
	p.r.wild[p.index] = append(p.r.wild[p.index], "")
	if !expiry {
		// Revoked or never there: either way it does not exist now.
		l.known, l.exists, l.keys = true, false, map[string]bool{}
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (p *replayer) markApplied(key, value string) {
	if p.r.Applied[key] == nil {
		p.r.Applied[key] = map[string]uint64{}
	}
	p.r.Applied[key][value] = p.index
}

func (p *replayer) addMutation(m Mutation) {
	if !m.Uncertain {
		if p.seen[m.Key] {
			p.r.Anomalies = append(p.r.Anomalies, fmt.Sprintf("entry %d mutates %s twice", m.Rev, m.Key))
		}
		p.seen[m.Key] = true
	}
	r := p.r
	r.Mutations = append(r.Mutations, m)
	r.ByKey[m.Key] = append(r.ByKey[m.Key], m)
}

// Covers reports whether the log holds the revision rev (it was not compacted
// and is not past the end).
func (r *Replay) Covers(rev uint64) bool {
	return rev >= r.FirstIndex && rev <= r.LastIndex
}

// MutationAt returns the mutation of key at revision rev. On a compacted log,
// a key the replay did not know at rev, under a prefix a revoke, expiry or
// delete_prefix there may have deleted, gets an uncertain delete.
func (r *Replay) MutationAt(key string, rev uint64) (Mutation, bool) {
	ms := r.ByKey[key]
	i := sort.Search(len(ms), func(i int) bool { return ms[i].Rev >= rev })
	if i < len(ms) && ms[i].Rev == rev {
		return ms[i], true
	}
	for _, prefix := range r.wild[rev] {
		if strings.HasPrefix(key, prefix) && !r.knownBefore(key, rev) {
			return Mutation{Rev: rev, Key: key, Kind: LogDelete, Uncertain: true}, true
		}
	}
	return Mutation{}, false
}

// knownBefore reports whether the replay knew key's state just before rev
// (only meaningful on a compacted log, where keys start unknown).
func (r *Replay) knownBefore(key string, rev uint64) bool {
	known := r.FirstIndex <= 1
	for _, m := range r.knownAt[key] {
		if m.rev >= rev {
			break
		}
		known = m.known
	}
	return known
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
