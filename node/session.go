package node

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The state machine commits without fsync by default: every acknowledged
// write is already fsynced in the raft log on a majority, and a process
// crash (kill -9) loses nothing that reached the page cache. What a crash
// of the whole machine can lose or tear is an unsynced bbolt file. The
// session file tells the two apart: it holds the kernel's boot id and
// whether the node closed cleanly. If the machine rebooted while the node
// had the file open, the file is set aside and rebuilt from the newest
// snapshot plus the raft log (raft keeps every entry after its newest
// snapshot, fsynced).
const (
	sessionFile  = "state.session"
	bootIDPath   = "/proc/sys/kernel/random/boot_id"
	sessionOpen  = "open"
	sessionClean = "clean"
)

func currentBootID() string {
	b, err := os.ReadFile(bootIDPath)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// beginSession decides whether the state machine file can be trusted and
// marks the session open. It returns whether the file was set aside.
func (n *Node) beginSession(statePath string) (bool, error) {
	sess := filepath.Join(n.cfg.DataDir, sessionFile)
	boot := currentBootID()
	setAside := false
	if prev, err := os.ReadFile(sess); err == nil {
		fields := strings.Fields(string(prev))
		interrupted := len(fields) == 2 && fields[1] == sessionOpen
		rebooted := len(fields) == 2 && (boot == "" || fields[0] != boot)
		if _, err := os.Stat(statePath); err == nil && interrupted && rebooted {
			aside := fmt.Sprintf("%s.untrusted-%d", statePath, time.Now().Unix())
			if err := os.Rename(statePath, aside); err != nil {
				return false, fmt.Errorf("set aside state machine after an interrupted boot: %w", err)
			}
			n.log.Warn("the machine restarted while this node was running: state machine set aside, rebuilding from snapshot and raft log",
				"set_aside_as", aside)
			setAside = true
		}
	}
	return setAside, writeSession(sess, boot, sessionOpen)
}

// endSession records a clean close (after the state machine was synced).
func (n *Node) endSession() error {
	return writeSession(filepath.Join(n.cfg.DataDir, sessionFile), currentBootID(), sessionClean)
}

func writeSession(path, boot, state string) error {
	if boot == "" {
		boot = "unknown"
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(bytes.TrimSpace([]byte(boot + " " + state)))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
