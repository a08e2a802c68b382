package checker

import (
	"strings"
	"testing"

	"github.com/raftwatch/raftwatch/cluster-test/history"
)

const (
	fenceKey   = "/lock/fence"
	counterKey = "/lock/counter"
)

// lb builds a lock history.
type lb struct {
	events []history.LockEvent
	id     int
}

func (h *lb) op(p int, inv history.LockEvent, call, ret int64, comp history.LockEvent) {
	h.id++
	inv.Type, inv.ID, inv.Process, inv.Time = history.Invoke, h.id, p, call
	h.events = append(h.events, inv)
	if ret < 0 {
		return
	}
	comp.ID, comp.Process, comp.Op, comp.Time = h.id, p, inv.Op, ret
	if comp.Type == "" {
		comp.Type = history.OK
	}
	h.events = append(h.events, comp)
}

// hold records acquire [call, acq], a fenced write at writeRev (0: none)
// and a release invoked at rel (<0: never).
func (h *lb) hold(p int, token uint64, lease int64, call, acq int64, read uint64, writeRev uint64, wcall, rel int64) {
	h.op(p, history.LockEvent{Op: history.LockAcquire}, call, acq, history.LockEvent{Token: token, Lease: lease})
	if writeRev != 0 {
		h.op(p, history.LockEvent{Op: history.LockWrite, Token: token, ReadCounter: read}, wcall, wcall+1,
			history.LockEvent{Succeeded: true, Revision: writeRev})
	}
	if rel >= 0 {
		h.op(p, history.LockEvent{Op: history.LockRelease, Token: token}, rel, rel+1, history.LockEvent{})
	}
}

// lockLog: init at 1, then per write (token, counter) a fenced Txn at rev.
func lockLog(t *testing.T, extra []LogEntry, writes ...[3]uint64) *Replay {
	es := []LogEntry{entry(1, LogOp{Kind: LogPut, Key: fenceKey, Value: FenceValue(0)}, LogOp{Kind: LogPut, Key: counterKey, Value: CounterValue(0)})}
	es = append(es, extra...)
	for _, w := range writes {
		es = append(es, entry(w[0], txnOp([]LogCompare{{Key: fenceKey, Target: CmpValue, Result: CmpLess, Value: FenceValue(w[1] + 1)}},
			[]LogTxnOp{tput(fenceKey, FenceValue(w[1])), tput(counterKey, CounterValue(w[2]))}, nil)))
	}
	sortEntries(es)
	return mustReplay(t, es...)
}

func sortEntries(es []LogEntry) {
	for i := 1; i < len(es); i++ {
		for j := i; j > 0 && es[j].Index < es[j-1].Index; j-- {
			es[j], es[j-1] = es[j-1], es[j]
		}
	}
}

func counterFinal(n uint64) map[string]map[string]KV {
	d := map[string]KV{counterKey: {Value: CounterValue(n)}, fenceKey: {Value: FenceValue(0)}}
	return map[string]map[string]KV{"n1": d, "n2": d}
}

func TestLock(t *testing.T) {
	expire := func(idx uint64, lease int64) LogEntry {
		return entry(idx, LogOp{Kind: LogLeaseExpire, Expiries: []LogLeaseExpiry{{Lease: lease, RenewedIndex: 2}}})
	}
	grants := []LogEntry{entry(2, LogOp{Kind: LogLeaseGrant, TTL: 5}), entry(3, LogOp{Kind: LogLeaseGrant, TTL: 5})} // leases 1, 2
	tests := []struct {
		name    string
		build   func(h *lb)
		rp      func(t *testing.T) *Replay
		final   map[string]map[string]KV
		valid   bool
		want    string
		overlap int
	}{
		{"two holds one after the other are valid", func(h *lb) {
			h.hold(0, 10, 1, 0, 10, 0, 11, 11, 20)
			h.hold(1, 30, 2, 5, 40, 1, 41, 41, 50)
		}, func(t *testing.T) *Replay { return lockLog(t, grants, [3]uint64{11, 10, 1}, [3]uint64{41, 30, 2}) }, counterFinal(2), true, "", 0},
		{"an overlap after the earlier holder's lease expired is reported, not a violation", func(h *lb) {
			h.hold(0, 10, 1, 0, 10, 0, 11, 11, -1) // paused after its write, never released
			h.hold(1, 30, 2, 5, 40, 1, 41, 41, 50)
		}, func(t *testing.T) *Replay {
			return lockLog(t, append(grants, expire(20, 1)), [3]uint64{11, 10, 1}, [3]uint64{41, 30, 2})
		}, counterFinal(2), true, "", 1},
		{"planted: overlapping critical sections with no expiry", func(h *lb) {
			h.hold(0, 10, 1, 0, 10, 0, 11, 11, 60)
			h.hold(1, 30, 2, 5, 40, 1, 41, 41, 50)
		}, func(t *testing.T) *Replay { return lockLog(t, grants, [3]uint64{11, 10, 1}, [3]uint64{41, 30, 2}) },
			counterFinal(2), false, "critical sections of tokens 10 and 30 overlap, and lease 1", 1},
		{"planted: an excused overlap where the stale holder still wrote after the new acquisition", func(h *lb) {
			h.hold(0, 10, 1, 0, 10, 0, 35, 35, -1)
			h.hold(1, 30, 2, 5, 31, 0, 41, 41, 50)
		}, func(t *testing.T) *Replay {
			return lockLog(t, append(grants, expire(20, 1)), [3]uint64{35, 10, 1}, [3]uint64{41, 30, 1})
		}, counterFinal(1), false, "both fenced writes succeeded", 1},
		{"planted: a later acquisition with a smaller token", func(h *lb) {
			h.hold(0, 30, 1, 0, 10, 0, 0, 0, 20)
			h.hold(1, 10, 2, 25, 40, 0, 0, 0, 50)
		}, func(t *testing.T) *Replay { return lockLog(t, grants) }, counterFinal(0), false, "its token is not larger", 0},
		{"planted: acknowledged fenced writes out of token order", func(h *lb) {
			h.hold(0, 10, 1, 0, 10, 0, 45, 11, 20)
			h.hold(1, 30, 2, 25, 40, 0, 41, 41, 50)
		}, func(t *testing.T) *Replay { return lockLog(t, grants, [3]uint64{41, 30, 1}) },
			counterFinal(1), false, "acknowledged fenced writes out of order: token 10 at revision 45 after token 30", 0},
		{"planted: fenced writes out of token order in the log (a write without the fence compare)", func(h *lb) {
			h.hold(0, 10, 1, 0, 10, 0, 0, 0, 20)
			h.hold(1, 30, 2, 25, 40, 0, 0, 0, 50)
		}, func(t *testing.T) *Replay {
			unfenced := entry(45, txnOp(nil, []LogTxnOp{tput(fenceKey, FenceValue(10)), tput(counterKey, CounterValue(2))}, nil))
			return lockLog(t, append(grants, unfenced), [3]uint64{41, 30, 1})
		}, counterFinal(2), false, "out of order in the log: token 10 at revision 45 after token 30", 0},
		{"planted: a lost increment (final counter below the applied writes)", func(h *lb) {
			h.hold(0, 10, 1, 0, 10, 0, 11, 11, 20)
			h.hold(1, 30, 2, 5, 40, 0, 41, 41, 50)
		}, func(t *testing.T) *Replay { return lockLog(t, grants, [3]uint64{11, 10, 1}, [3]uint64{41, 30, 1}) },
			counterFinal(1), false, "2 fenced writes were applied", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := &lb{}
			tc.build(h)
			res := CheckLock(history.PairLock(h.events), tc.final, LockOptions{FenceKey: fenceKey, CounterKey: counterKey, Replay: tc.rp(t)})
			if res.Valid != tc.valid {
				t.Fatalf("valid=%v, want %v: %s", res.Valid, tc.valid, res.Detail)
			}
			if !tc.valid && !strings.Contains(res.Detail, tc.want) {
				t.Fatalf("detail %q does not say %q", res.Detail, tc.want)
			}
			if len(res.Overlaps) != tc.overlap {
				t.Fatalf("overlaps %+v, want %d", res.Overlaps, tc.overlap)
			}
		})
	}
}
