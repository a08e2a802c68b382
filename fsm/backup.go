package fsm

import (
	"fmt"
	"io"
)

// Backup writes a consistent copy of the state machine to w: the bbolt
// database as one read transaction sees it, after checking every stored
// value against its checksum (a damaged state is never backed up). begin is
// called with the copy's applied index and size in bytes before any byte is
// written; an error from it or from w stops the copy.
//
// The read transaction is held until the copy is written, so a Restore (a
// snapshot installed from the leader) waits for a backup going to a slow
// reader, as it waits for a raft snapshot being persisted.
func (f *FSM) Backup(w io.Writer, begin func(index uint64, size int64) error) error {
	f.dbMu.RLock()
	defer f.dbMu.RUnlock()
	tx, err := f.db.Begin(false)
	if err != nil {
		return fmt.Errorf("backup: begin read transaction: %w", err)
	}
	defer tx.Rollback()
	if _, err := verifyAll(tx); err != nil {
		return fmt.Errorf("backup: %w", f.check(err))
	}
	index, err := readApplied(tx)
	if err != nil {
		return fmt.Errorf("backup: %w", f.check(err))
	}
	if err := begin(index, tx.Size()); err != nil {
		return err
	}
	if _, err := tx.WriteTo(w); err != nil {
		return fmt.Errorf("backup: write database at index %d: %w", index, err)
	}
	return nil
}

// CheckFile checks that the bbolt file at path is a raftwatch state machine
// whose every value matches its checksum, and returns its applied index. It
// is what Restore checks before swapping a snapshot in.
func CheckFile(path string) (uint64, error) { return appliedIndexOf(path) }
