package history

// Records of the coordination workloads (--workload txn and lock). Each
// workload writes its own file, bank.jsonl and lock.jsonl, one line per
// invocation and per completion, as history.jsonl does for the KV workload.

// Bank operations (BankEvent.Op).
const (
	// BankInit creates every account in one Txn (compares: every account
	// absent; success: put each account's initial value).
	BankInit = "init"
	// BankRead reads every account at one revision (a Txn of gets, or a
	// List at one revision).
	BankRead = "read"
	// BankTransfer is a Txn: compares mod_revision of both accounts equal
	// FromRev and ToRev; success puts FromValue and ToValue; failure gets
	// both accounts (the completion's Values).
	BankTransfer = "transfer"
)

// BankEvent is one line of bank.jsonl. Account values are BankValue strings:
// a balance and the tag of the op that wrote it, so a value names its write.
type BankEvent struct {
	Type    string `json:"type"` // Invoke, OK, Fail, Info
	ID      int    `json:"id"`
	Process int    `json:"process"`
	Op      string `json:"op"`
	Node    string `json:"node,omitempty"`
	Client  string `json:"client,omitempty"`
	Time    int64  `json:"time"`

	// Init invocation: every account's initial value.
	Init map[string]string `json:"init,omitempty"`
	// Transfer invocation.
	From      string `json:"from,omitempty"`
	To        string `json:"to,omitempty"`
	Amount    int64  `json:"amount,omitempty"`
	FromRev   uint64 `json:"from_rev,omitempty"`
	ToRev     uint64 `json:"to_rev,omitempty"`
	FromValue string `json:"from_value,omitempty"`
	ToValue   string `json:"to_value,omitempty"`

	// Completion: Revision of the Txn (transfer, init) or the revision the
	// read was served at; Succeeded: the compares held.
	Revision  uint64 `json:"revision,omitempty"`
	Succeeded bool   `json:"succeeded,omitempty"`
	// Read, and a transfer's failure branch: the accounts read (absent
	// accounts are missing) with their mod_revisions.
	Values  map[string]string `json:"values,omitempty"`
	ModRevs map[string]uint64 `json:"mod_revs,omitempty"`
	Error   string            `json:"error,omitempty"`
}

// Lock operations (LockEvent.Op).
const (
	// LockAcquire acquires the lock (a session lease + the recipe); the
	// completion carries the fencing token and the session's lease.
	LockAcquire = "acquire"
	// LockWrite is the fenced write: a Txn whose compare requires the fence
	// key's value (a fixed-width FenceValue, so byte order is numeric order)
	// to be LESS than FenceValue(Token+1), i.e. <= the holder's token; its
	// success branch puts fence = FenceValue(Token) and counter =
	// CounterValue(ReadCounter+1), ReadCounter being the counter the holder
	// read under the lock. Nothing compares the counter: an increment lost
	// to two holders at once shows in the final counter.
	LockWrite = "write"
	// LockRelease releases the lock held with Token.
	LockRelease = "release"
)

// LockEvent is one line of lock.jsonl.
type LockEvent struct {
	Type    string `json:"type"` // Invoke, OK, Fail, Info
	ID      int    `json:"id"`
	Process int    `json:"process"`
	Op      string `json:"op"`
	Node    string `json:"node,omitempty"`
	Client  string `json:"client,omitempty"`
	Time    int64  `json:"time"`

	// Token: acquire completion: the fencing token (a revision); write and
	// release invocations: the token of the hold they belong to.
	Token uint64 `json:"token,omitempty"`
	// Lease: acquire completion: the session's lease id.
	Lease int64 `json:"lease,omitempty"`
	// Write invocation: the counter value the holder read.
	ReadCounter uint64 `json:"read_counter,omitempty"`
	// Write completion: the Txn's revision and whether its compares held.
	Revision  uint64 `json:"revision,omitempty"`
	Succeeded bool   `json:"succeeded,omitempty"`
	Error     string `json:"error,omitempty"`
}

// PairOf matches invocations with completions by ID, in invocation order, for
// any record with a type and an id (BankEvent, LockEvent).
func PairOf[T any](events []T, typ func(T) string, id func(T) int) []Paired[T] {
	var out []Paired[T]
	idx := map[int]int{}
	for _, e := range events {
		if typ(e) == Invoke {
			idx[id(e)] = len(out)
			out = append(out, Paired[T]{Invoke: e})
			continue
		}
		if i, ok := idx[id(e)]; ok {
			c := e
			out[i].Complete = &c
		}
	}
	return out
}

// Paired is an invocation and its completion (nil: none, treated as Info).
type Paired[T any] struct {
	Invoke   T
	Complete *T
}

// PairBank pairs bank.jsonl records.
func PairBank(events []BankEvent) []Paired[BankEvent] {
	return PairOf(events, func(e BankEvent) string { return e.Type }, func(e BankEvent) int { return e.ID })
}

// PairLock pairs lock.jsonl records.
func PairLock(events []LockEvent) []Paired[LockEvent] {
	return PairOf(events, func(e LockEvent) string { return e.Type }, func(e LockEvent) int { return e.ID })
}
