package fsm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// A state machine that finds a stored value failing its checksum is
// damaged, for good: it says so in Damage, closes Damaged, logs why, and
// writes a marker file beside the database (MarkerPath) holding the reason,
// so the next start of the node can set the file aside and rebuild it from
// the raft snapshot and log. The FSM itself goes on answering reads that
// touch only healthy values; refusing every read is the node's decision.

// MarkerPath is the damage marker of the state machine file at path.
func MarkerPath(path string) string { return path + ".damaged" }

// ReadMarker returns the reason written in the damage marker of the state
// machine file at path, and whether there is one.
func ReadMarker(path string) (string, bool, error) {
	b, err := os.ReadFile(MarkerPath(path))
	if errors.Is(err, os.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("read damage marker: %w", err)
	}
	return strings.TrimSpace(string(b)), true, nil
}

// Damage returns why the state machine is damaged; nil while it is not.
func (f *FSM) Damage() error {
	f.damageMu.Lock()
	defer f.damageMu.Unlock()
	return f.damage
}

// Damaged is closed when the state machine finds itself damaged.
func (f *FSM) Damaged() <-chan struct{} { return f.damaged }

// check marks the state machine damaged when err is (or wraps) a
// *CorruptError, and returns err.
func (f *FSM) check(err error) error {
	if err == nil {
		return nil // every read passes here: no allocation for errors.As
	}
	var ce *CorruptError
	if errors.As(err, &ce) {
		f.markDamaged(err)
	}
	return err
}

func (f *FSM) markDamaged(err error) {
	f.damageMu.Lock()
	defer f.damageMu.Unlock()
	if f.damage != nil {
		return
	}
	f.damage = err
	close(f.damaged)
	f.log.Error("state machine damaged: a stored value failed its checksum; this node must not serve it. "+
		"It will be rebuilt from the raft snapshot and log when the node is reopened (serve does that in-process)",
		"path", f.path, "err", err, "marker", MarkerPath(f.path))
	if werr := writeMarker(f.path, err.Error()); werr != nil {
		f.log.Error("could not write the damage marker; the state machine will not be rebuilt at the next start by itself",
			"marker", MarkerPath(f.path), "err", werr)
	}
}

// WriteMarker records that the state machine at path is damaged, for why:
// the node's next start sets it aside and rebuilds it. For damage found
// before an *FSM exists (while opening); an open FSM marks itself.
func WriteMarker(path, why string) error { return writeMarker(path, why) }

func writeMarker(path, reason string) error {
	tmp := MarkerPath(path) + ".tmp"
	if err := writeFileSync(tmp, strings.NewReader(reason+"\n")); err != nil {
		return err
	}
	if err := os.Rename(tmp, MarkerPath(path)); err != nil {
		return err
	}
	syncDir(filepath.Dir(path))
	return nil
}

// undecodableError is a command entry the state machine cannot decode.
type undecodableError struct {
	index uint64
	err   error
}

func (e *undecodableError) Error() string {
	return fmt.Sprintf("log entry %d is not a command this version can decode: %v", e.index, e.err)
}

// stopApplying ends the process when a batch of entries first..last cannot
// be applied; see ApplyBatch.
func (f *FSM) stopApplying(first, last uint64, err error) {
	var ue *undecodableError
	switch {
	case errors.As(err, &ue):
		f.log.Error("stopping: a committed log entry cannot be decoded; applying anything after it would diverge from the other nodes",
			"index", ue.index, "err", ue.err, "state", f.path)
		panic(fmt.Sprintf("fsm: stopping at %v; nothing after it is applied. If every node stops here, "+
			"the entry was written by a newer raftwatch: run that version", err))
	case errors.Is(f.check(err), ErrCorrupt):
		panic(fmt.Sprintf("fsm: stopping: entries %d..%d cannot be applied: %v; the state machine %s is marked damaged "+
			"and is rebuilt from the raft snapshot and log when the node is reopened (serve does that in-process)", first, last, err, f.path))
	}
	panic(fmt.Sprintf("fsm: commit of entries %d..%d to %s failed: %v", first, last, f.path, err))
}
