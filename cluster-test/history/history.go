// Package history records what the cluster test did and saw: one JSON line per
// operation invocation and per completion (history.jsonl), one per watch
// message (watch-w<id>.jsonl), one per nemesis transition (nemesis.jsonl).
// All times are monotonic nanoseconds since the start of the test.
package history

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
)

// Outcome of a completed operation.
const (
	// Invoke marks the invocation of an operation.
	Invoke = "invoke"
	// OK: the operation took effect (or, for a read, returned this result).
	OK = "ok"
	// Fail: the operation definitely did not take effect.
	Fail = "fail"
	// Info: the outcome is unknown; a write may or may not have been applied.
	Info = "info"
)

// Operation kinds issued by the workload.
const (
	OpPut    = "put"    // unconditional put with prev_kv
	OpGet    = "get"    // get at the configured consistency
	OpDelete = "delete" // unconditional delete with prev_kv
	OpCAS    = "cas"    // put with a mod_revision or absent condition
)

// Kinds of workload client.
const (
	// ClientPinned talks to one node through the raw gRPC stubs, following
	// leader hints, so each outcome is exactly what that node said.
	ClientPinned = "pinned"
	// ClientFailover is the Go client given every endpoint, as users run it.
	ClientFailover = "failover"
)

// Event is one line of history.jsonl: an invocation (Type == Invoke) or the
// completion of the invocation with the same ID.
type Event struct {
	Type    string `json:"type"`
	ID      int    `json:"id"`
	Process int    `json:"process"`
	Op      string `json:"op"`
	Key     string `json:"key"`
	// Node the op was sent to; "" for a failover client's op, which the Go
	// client sends to whichever node it picks.
	Node string `json:"node"`
	// Client is the kind of client that issued the op: ClientPinned (also
	// when empty, as in histories of older runs) or ClientFailover.
	Client string `json:"client,omitempty"`
	Time   int64  `json:"time"`
	// Put/CAS: the value written (unique per key across the whole test).
	Value string `json:"value,omitempty"`
	// CAS condition: require mod_revision == CondRev, or CondAbsent.
	CondRev    uint64 `json:"cond_rev,omitempty"`
	CondAbsent bool   `json:"cond_absent,omitempty"`
	// Consistency of a get ("linearizable" or "serializable").
	Consistency string `json:"consistency,omitempty"`

	// Completion fields.
	// Get: whether the key exists, its value and mod_revision.
	Found     bool   `json:"found,omitempty"`
	ReadValue string `json:"read_value,omitempty"`
	ModRev    uint64 `json:"mod_revision,omitempty"`
	// Revision from the response (write: its entry index; read: served at).
	Revision uint64 `json:"revision,omitempty"`
	// CAS: whether the condition held.
	Succeeded bool `json:"succeeded,omitempty"`
	// Put/CAS/Delete: the key's state before the op (prev_kv), when known.
	PrevKnown bool   `json:"prev_known,omitempty"`
	PrevFound bool   `json:"prev_found,omitempty"`
	PrevValue string `json:"prev_value,omitempty"`
	// Delete: whether a key was removed.
	Deleted bool   `json:"deleted,omitempty"`
	Error   string `json:"error,omitempty"`
}

// Writer appends JSON lines to a file; safe for concurrent use.
type Writer struct {
	mu  sync.Mutex
	f   *os.File
	buf *bufio.Writer
	enc *json.Encoder
}

// Create truncates path and returns a Writer for it.
func Create(path string) (*Writer, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	buf := bufio.NewWriter(f)
	return &Writer{f: f, buf: buf, enc: json.NewEncoder(buf)}, nil
}

// Write appends v as one JSON line.
func (w *Writer) Write(v any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	_ = w.enc.Encode(v)
}

// Flush writes buffered lines to the file.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Flush()
}

// Close flushes and closes the file.
func (w *Writer) Close() error {
	if err := w.Flush(); err != nil {
		w.f.Close()
		return err
	}
	return w.f.Close()
}

// ReadLines decodes every JSON line of r into a T.
func ReadLines[T any](r io.Reader) ([]T, error) {
	var out []T
	dec := json.NewDecoder(r)
	for {
		var v T
		if err := dec.Decode(&v); err == io.EOF {
			return out, nil
		} else if err != nil {
			return out, fmt.Errorf("line %d: %w", len(out)+1, err)
		}
		out = append(out, v)
	}
}

// ReadFile decodes every JSON line of the file at path.
func ReadFile[T any](path string) ([]T, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadLines[T](f)
}

// Op pairs an invocation with its completion.
type Op struct {
	Invoke Event
	// Complete is the completion; nil when the test ended before it returned
	// (treated as Info).
	Complete *Event
}

// Outcome is the completion type, Info when the op never completed.
func (o Op) Outcome() string {
	if o.Complete == nil {
		return Info
	}
	return o.Complete.Type
}

// Pair matches invocations with completions by ID, in invocation order.
func Pair(events []Event) []Op {
	var ops []Op
	idx := map[int]int{}
	for _, e := range events {
		if e.Type == Invoke {
			idx[e.ID] = len(ops)
			ops = append(ops, Op{Invoke: e})
			continue
		}
		if i, ok := idx[e.ID]; ok {
			c := e
			ops[i].Complete = &c
		}
	}
	return ops
}

// WatchMsg is one line of a watch-w<id>.jsonl file, the record of one
// logical watch: every message received on any of its streams, and the
// markers its watcher wrote (OPEN for its first stream, RESUME for each
// reopen, ERROR when a stream ended, END when the logical watch ended).
type WatchMsg struct {
	// Node serving the stream the record belongs to.
	Node string `json:"node"`
	// Watcher identifies the logical watch (one per spec, for the whole run).
	Watcher int `json:"watcher"`
	// Stream is the connection number within the logical watch, from 0.
	Stream int   `json:"stream"`
	Time   int64 `json:"time"`
	// OPEN, RESUME, ERROR, END, or an EventType name: CREATED, PUT, DELETE,
	// PROGRESS, CANCELED.
	Type string `json:"type"`
	// OPEN/RESUME: what the stream watches and how it was created.
	Key           string `json:"key,omitempty"`
	Prefix        bool   `json:"prefix,omitempty"`
	PrevKV        bool   `json:"prev_kv,omitempty"`
	RequireLeader bool   `json:"require_leader,omitempty"`
	Roaming       bool   `json:"roaming,omitempty"`
	// OPEN/RESUME: the start_revision sent in the create (0 = from now).
	StartRevision uint64 `json:"start_revision,omitempty"`
	// Server messages: the watcher passed it on to its application. False on
	// an event means it was dropped as a duplicate of one delivered before a
	// resume; CREATED of a resumed stream and a CANCELED the watcher resumed
	// after are not delivered either (a resuming client hides them).
	Delivered bool `json:"delivered,omitempty"`
	// Event fields.
	Value           string `json:"value,omitempty"`
	HasPrev         bool   `json:"has_prev,omitempty"`
	PrevValue       string `json:"prev_value,omitempty"`
	Revision        uint64 `json:"revision,omitempty"`
	Version         uint64 `json:"version,omitempty"`
	Reason          string `json:"reason,omitempty"`
	WatchID         uint64 `json:"watch_id,omitempty"`
	RequestID       uint64 `json:"request_id,omitempty"`
	Code            int32  `json:"code,omitempty"`
	CompactRevision uint64 `json:"compact_revision,omitempty"`
	// ERROR: why the stream ended; END: why the logical watch ended.
	Error string `json:"error,omitempty"`
}

// NemesisEvent is one line of nemesis.jsonl.
type NemesisEvent struct {
	Time int64 `json:"time"`
	// "start" or "stop".
	Phase string `json:"phase"`
	// e.g. "partition-leader", "partition-majority", "partition-bridge",
	// "kill-one", "kill-all", "pause".
	Kind    string   `json:"kind"`
	Targets []string `json:"targets,omitempty"`
	// Leader is the node the harness saw as leader just before a fault
	// started ("" when none answered as leader).
	Leader string `json:"leader,omitempty"`
	Detail string `json:"detail,omitempty"`
	Error  string `json:"error,omitempty"`
}
