package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/raftwatch/raftwatch/fsm"
)

// A node is healthy until it finds stored data it cannot trust: a state
// machine value that fails its checksum (fsm.FSM.Damage: a read, the
// apply path, a snapshot or the scrub found it) or a raft log entry that
// does (*LogCorruptError). From then on, until it is closed, the node
//   - refuses every read, serializable or linearizable, with ErrDataLoss;
//   - refuses writes and new watches as not applied, and cancels every
//     watch, so clients move to another node;
//   - does not stay leader: it hands leadership over, again each time it
//     wins an election; with a damaged log entry it stops raft altogether;
//   - says why in its log and in Status.
//
// At its next start, a damaged state machine (marker state.db.damaged) is
// set aside and rebuilt from the newest snapshot and the raft log, as after
// a machine crash (session.go); StateDamaged tells the process to reopen
// the node for that without an operator. A damaged log entry (marker raft.db.damaged,
// or found when the entries still to apply are verified at start) makes the
// node refuse to start, naming the entry: it cannot be rebuilt locally.

// healthCheckInterval is how often an unhealthy node checks that it is not
// the leader: raft may elect it, as its log is as good as anyone's.
const healthCheckInterval = 200 * time.Millisecond

// DamagedReason is the reason of the CANCELED event every watcher of a node
// that found damaged stored data gets: its client resumes elsewhere.
const DamagedReason = "this node found damaged stored data; resume on another node"

// ErrDataLoss is wrapped by the error every read returns on a node that
// found damaged data.
var ErrDataLoss = errors.New("this node found damaged stored data and serves no reads until it is repaired")

// logMarkerPath is the damage marker of the raft log file.
func logMarkerPath(dataDir string) string { return filepath.Join(dataDir, "raft.db.damaged") }

// checkDamageMarkers runs before anything is opened: a node whose raft log
// was found damaged refuses to start; a damaged state machine file is set
// aside, to be rebuilt from the newest snapshot and the raft log.
func (n *Node) checkDamageMarkers(statePath string) error {
	if b, err := os.ReadFile(logMarkerPath(n.cfg.DataDir)); err == nil {
		reason := strings.TrimSpace(string(b))
		if n.cfg.DropDamagedWALTail == 0 || !strings.Contains(reason, walTailDamage) ||
			!strings.Contains(reason, fmt.Sprintf("entries %d to ", n.cfg.DropDamagedWALTail)) {
			return fmt.Errorf("refusing to start: %s (recorded in %s)", reason, logMarkerPath(n.cfg.DataDir))
		}
		// The operator says the damaged last batch is a torn write:
		// openWAL drops it.
		if err := os.Remove(logMarkerPath(n.cfg.DataDir)); err != nil {
			return err
		}
		n.log.Warn("the wal's damaged last batch will be dropped as a torn write (--wal-drop-damaged-tail)", "recorded", reason)
	}
	reason, found, err := fsm.ReadMarker(statePath)
	if err != nil || !found {
		return err
	}
	if _, err := os.Stat(statePath); err == nil {
		aside := fmt.Sprintf("%s.damaged-%d", statePath, time.Now().Unix())
		if err := os.Rename(statePath, aside); err != nil {
			return fmt.Errorf("set aside the damaged state machine: %w", err)
		}
		n.log.Warn("the state machine was found damaged: set aside, rebuilding it from the newest snapshot and the raft log",
			"reason", reason, "set_aside_as", aside)
	}
	return os.Remove(fsm.MarkerPath(statePath))
}

// verifyLog reads every entry raft reads at start (those after its newest
// snapshot, scanned for configuration changes) and every entry it will
// hand the state machine (after its applied index), so a damaged one stops
// the start with a clear error rather than a panic inside raft, or the
// process later with part of the log applied.
func (n *Node) verifyLog(logs *checkedLogStore, snaps raft.SnapshotStore) error {
	first, err := logs.FirstIndex()
	if err != nil {
		return err
	}
	last, err := logs.LastIndex()
	if err != nil {
		return err
	}
	from := n.fsm.Applied() + 1
	if metas, err := snaps.List(); err != nil {
		return fmt.Errorf("list snapshots: %w", err)
	} else if len(metas) > 0 {
		from = min(from, metas[0].Index+1)
	} else {
		from = 1
	}
	var l raft.Log
	for i := max(first, from); i <= last && i != 0; i++ {
		if err := logs.GetLog(i, &l); err != nil {
			return fmt.Errorf("refusing to start: %w", err)
		}
	}
	return nil
}

// checkLogHoldsApplied refuses a raft log that ends before the state
// machine's applied index (and the newest snapshot): the state machine
// applies only entries this node had stored, fsynced and so acknowledged,
// and raft deletes none of them but to compact behind a snapshot. A log
// shorter than that lost acknowledged entries at open, as raft-wal does
// with a damaged batch it takes for a torn write (waltail.go), and must
// not vote.
func (n *Node) checkLogHoldsApplied(logs *checkedLogStore, snaps raft.SnapshotStore) error {
	last, err := logs.LastIndex()
	if err != nil {
		return err
	}
	metas, err := snaps.List()
	if err != nil {
		return fmt.Errorf("list snapshots: %w", err)
	}
	if len(metas) > 0 {
		last = max(last, metas[0].Index)
	}
	if applied := n.fsm.Applied(); last < applied {
		return &LogCorruptError{Index: last + 1, Path: logs.path, Detail: fmt.Sprintf(
			"the log ends at entry %d, but the state machine applied entries up to %d, so this node had stored them: "+
				"the log store lost them when it was opened", last, applied)}
	}
	return nil
}

// refuseDamagedLog records err, when it is a damaged raft log found at
// start, in the log's damage marker, so that every later start refuses
// too even once the store itself no longer shows it (raft-wal overwrites
// a batch it dropped at its first append), and returns err.
func (n *Node) refuseDamagedLog(err error) error {
	var ce *LogCorruptError
	if !errors.As(err, &ce) {
		return err
	}
	err = fmt.Errorf("refusing to start: %w", err)
	if merr := writeMarker(logMarkerPath(n.cfg.DataDir), ce.Error()); merr != nil {
		n.log.Error("could not write the raft log damage marker", "err", merr)
	}
	return err
}

// markLogDamaged records the first damaged log entry found: the node is
// unhealthy from now on and refuses to start until repaired.
func (n *Node) markLogDamaged(e *LogCorruptError) {
	n.healthMu.Lock()
	defer n.healthMu.Unlock()
	if n.logDamage != nil {
		return
	}
	n.logDamage = e
	close(n.logDamaged)
	n.log.Error("raft log entry damaged", "index", e.Index, "path", e.Path, "err", e)
	if err := writeMarker(logMarkerPath(n.cfg.DataDir), e.Error()); err != nil {
		n.log.Error("could not write the raft log damage marker", "err", err)
	}
}

func writeMarker(path, reason string) error {
	if err := os.WriteFile(path+".tmp", []byte(reason+"\n"), 0o600); err != nil {
		return err
	}
	if f, err := os.Open(path + ".tmp"); err == nil {
		f.Sync()
		f.Close()
	}
	return os.Rename(path+".tmp", path)
}

// StateDamaged is closed when this node finds its state machine damaged (a
// stored value failed its checksum). Closing the node and opening it again
// on the same data dir rebuilds the state machine from the newest snapshot
// and the raft log. A damaged raft log entry does not close it: that
// cannot be rebuilt here, and the next Open refuses to start.
func (n *Node) StateDamaged() <-chan struct{} { return n.fsm.Damaged() }

// unhealthy returns why this node is unhealthy; nil while it is healthy.
func (n *Node) unhealthy() error {
	if err := n.fsm.Damage(); err != nil {
		return err
	}
	n.healthMu.Lock()
	defer n.healthMu.Unlock()
	if n.logDamage != nil {
		return n.logDamage
	}
	return nil
}

// readable returns the error a read gets on an unhealthy node.
func (n *Node) readable() error {
	if reason := n.unhealthy(); reason != nil {
		return fmt.Errorf("%w; read from another node: %w", ErrDataLoss, reason)
	}
	return nil
}

// writable returns the error a write or a new watch gets on an unhealthy
// node: not applied, so the client may go elsewhere.
func (n *Node) writable() error {
	if reason := n.unhealthy(); reason != nil {
		return fmt.Errorf("%w: this node found damaged stored data (%v); use another node", ErrNotApplied, reason)
	}
	return nil
}

// guardHealth waits until the node finds damaged data, then cancels every
// watch and keeps leadership away from this node until it stops.
func (n *Node) guardHealth() {
	select {
	case <-n.fsm.Damaged():
	case <-n.logDamaged:
	case <-n.stop:
		return
	}
	reason := n.unhealthy()
	n.log.Error("node unhealthy: refusing reads, writes, watches and leadership until repaired; a damaged state machine is rebuilt when the node is reopened",
		"reason", reason)
	n.CancelWatchers(DamagedReason)
	if errors.Is(reason, ErrLogCorrupt) {
		// It could neither apply nor send that entry: as leader it would
		// stall the followers that need it, and a transfer to them could
		// never finish. Without raft here the others elect a leader that
		// has the entry (it is committed, so a majority has it).
		n.log.Error("raft log damaged: raft stopped on this node; it takes no part in the cluster until repaired")
		if err := n.raft.Shutdown().Error(); err != nil {
			n.log.Warn("raft shutdown after log damage", "err", err)
		}
		n.raftStopped() // answer every raft future still waiting
		return
	}
	t := time.NewTicker(healthCheckInterval)
	defer t.Stop()
	failing := false
	for attempt := 0; ; {
		if n.raft.State() == raft.Leader {
			if !failing {
				n.log.Warn("unhealthy node is leader: handing leadership over")
			}
			err := n.handOver(attempt)
			attempt++
			if err != nil && !failing {
				n.log.Warn("leadership transfer failed; retrying with each voter in turn until one succeeds", "err", err)
			}
			failing = err != nil
		}
		select {
		case <-t.C:
		case <-n.stop:
			return
		}
	}
}

// handOver transfers leadership to another voter, the attempt-th in turn:
// raft's own choice is the most up-to-date follower, which may be a node
// that is down, every time.
func (n *Node) handOver(attempt int) error {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	var others []raft.Server
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter && s.ID != raft.ServerID(n.cfg.ID) {
			others = append(others, s)
		}
	}
	if len(others) == 0 {
		return errors.New("no other voter to hand leadership to")
	}
	to := others[attempt%len(others)]
	return n.await(n.raft.LeadershipTransferToServer(to.ID, to.Address))
}

// scrub verifies the state machine's stored values and then the raft log
// at rest now, and again every interval after a pass ends, paced
// (fsm.DefaultScrubPace).
func (n *Node) scrub(interval time.Duration) {
	for {
		n.scrubPass("state", func() (uint64, error) { return n.fsm.Scrub(n.stop, fsm.DefaultScrubPace) }, n.fsm.ScrubStats)
		n.scrubPass("log", func() (uint64, error) { return n.logStore.scrub(n.stop, fsm.DefaultScrubPace, &n.logScrub) },
			n.logScrub.stats)
		select {
		case <-time.After(interval):
		case <-n.stop:
			return
		}
	}
}

// scrubPass runs one pass over store and logs what it found.
func (n *Node) scrubPass(store string, pass func() (uint64, error), stats func() fsm.ScrubStats) {
	start := time.Now()
	verified, err := pass()
	select {
	case <-n.stop:
		return // cut short by Close: nothing to report
	default:
	}
	if err != nil {
		n.log.Error("scrub failed", "store", store, "err", err)
		return
	}
	n.log.Info("scrub pass done", "store", store, "verified", verified, "took", time.Since(start).Round(time.Millisecond),
		"mismatches_total", stats().Mismatches)
}
