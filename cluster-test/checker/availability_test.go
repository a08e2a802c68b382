package checker

import (
	"strings"
	"testing"

	"github.com/raftwatch/raftwatch/cluster-test/history"
)

const sec = int64(1e9)

func TestClassifySaysWhomAFaultHit(t *testing.T) {
	cases := []struct {
		name string
		w    Window
		want string
	}{
		{"a killed node that is not the leader is a follower", Window{Kind: "kill-one", Targets: []string{"n2"}, Leader: "n1"}, ClassFollowerKilled},
		{"a killed leader", Window{Kind: "kill-one", Targets: []string{"n1"}, Leader: "n1"}, ClassLeaderKilled},
		{"a random pause that hit the leader is a leader fault", Window{Kind: "pause-random", Targets: []string{"n3"}, Leader: "n3"}, ClassLeaderPaused},
		{"a paused follower", Window{Kind: "pause-random", Targets: []string{"n3"}, Leader: "n1"}, ClassFollowerPaused},
		{"a minority of one that is a follower", Window{Kind: "partition-majority", Targets: []string{"{n3}", "{n1,n2}"}, Leader: "n1"}, ClassFollowerIsolated},
		{"the isolated leader", Window{Kind: "partition-leader", Targets: []string{"{n2}", "{n1,n3}"}, Leader: "n2"}, ClassLeaderIsolated},
		{"a bridge isolates nobody", Window{Kind: "partition-bridge", Targets: []string{"{n1,n2}", "{n2,n3}"}, Leader: "n1"}, ClassBridge},
		{"every node killed", Window{Kind: "kill-all", Targets: []string{"n1", "n2", "n3"}, Leader: "n1"}, ClassAllKilled},
		{"no known leader", Window{Kind: "pause-random", Targets: []string{"n3"}}, ClassUnknown},
	}
	for _, tc := range cases {
		if got := Classify(tc.w); got != tc.want {
			t.Errorf("%s: Classify(%+v) = %q, want %q", tc.name, tc.w, got, tc.want)
		}
	}
}

// planted is a run: a timeline of faults and ops of both kinds of client.
type planted struct {
	events []history.Event
	id     int
}

// op records an op invoked at call (s) that returned outcome at ret (s).
func (p *planted) op(client, kind string, call, ret float64, outcome string) {
	p.id++
	inv := history.Event{Type: history.Invoke, ID: p.id, Op: kind, Key: k, Client: client, Time: int64(call * 1e9)}
	c := inv
	c.Type, c.Time = outcome, int64(ret*1e9)
	p.events = append(p.events, inv, c)
}

// fill records n ops of a client in [from, from+n*0.1s), the first bad ones
// with outcome bad and the rest ok.
func (p *planted) fill(client string, from float64, n, bad int, badOutcome string) {
	for i := range n {
		out := history.OK
		if i < bad {
			out = badOutcome
		}
		p.op(client, history.OpGet, from+float64(i)*0.1, from+float64(i)*0.1+0.05, out)
	}
}

func timeline() []history.NemesisEvent {
	fault := func(start, stop float64, kind, leader string, targets ...string) []history.NemesisEvent {
		return []history.NemesisEvent{
			{Time: int64(start * 1e9), Phase: "start", Kind: kind, Targets: targets, Leader: leader},
			{Time: int64(stop * 1e9), Phase: "stop", Kind: kind, Targets: targets},
		}
	}
	var ev []history.NemesisEvent
	ev = append(ev, fault(10, 20, "kill-one", "n1", "n2")...)
	ev = append(ev, fault(30, 40, "pause-leader", "n1", "n1")...)
	ev = append(ev, fault(40, 50, "partition-majority", "n2", "{n3}", "{n1,n2}")...)
	ev = append(ev, fault(50, 60, "partition-leader", "n2", "{n2}", "{n1,n3}")...)
	return ev
}

func TestFailoverAvailabilityPerWindowAndLeaderRecovery(t *testing.T) {
	const F, P = history.ClientFailover, history.ClientPinned
	p := &planted{}
	// follower-killed: 19 of 20 ok = 95%, at the bar; the pinned clients'
	// failures there are theirs alone.
	p.fill(F, 11, 20, 1, history.Info)
	p.fill(P, 11, 10, 10, history.Fail)
	// leader-paused: a write invoked before the fault that returns after
	// it, a read, and a pinned write do not end the recovery; the first
	// failover write invoked after the start that succeeds does, at 31.4 s.
	p.op(F, history.OpPut, 29.5, 30.5, history.OK)
	p.op(F, history.OpGet, 30.2, 30.3, history.OK)
	p.op(P, history.OpPut, 30.2, 30.3, history.OK)
	p.op(F, history.OpPut, 30.1, 31.1, history.Info)
	p.op(F, history.OpDelete, 30.5, 31.0, history.Fail)
	p.op(F, history.OpCAS, 31.0, 31.4, history.OK)
	p.op(F, history.OpPut, 31.5, 31.6, history.OK)
	// follower-isolated: 18 of 20 ok = 90%, below the bar.
	p.fill(F, 41, 20, 2, history.Fail)
	// leader-isolated: no failover write succeeds until 61.5 s, after the
	// window: the recovery is 11.5 s.
	p.op(F, history.OpPut, 51, 52, history.Info)
	p.op(F, history.OpPut, 61, 61.5, history.OK)

	ws, _ := Availability(history.Pair(p.events), Windows(timeline(), 70*sec))
	byClass := map[string]Window{}
	for _, w := range ws {
		byClass[w.Class] = w
	}
	if w := byClass[ClassFollowerKilled]; w.Failover != (Counts{OK: 19, Info: 1}) || w.Fail != 10 {
		t.Errorf("follower-killed window: failover %+v, pinned fail %d; want 19 ok 1 info, and 10 pinned fails", w.Failover, w.Fail)
	}
	if w := byClass[ClassLeaderPaused]; w.Recovery != int64(1.4*1e9) {
		t.Errorf("leader-paused recovery %v ns, want 1.4 s", w.Recovery)
	}
	if w := byClass[ClassLeaderIsolated]; w.Recovery != int64(11.5*1e9) {
		t.Errorf("leader-isolated recovery %v ns, want 11.5 s", w.Recovery)
	}

	res := FailoverAvailability(ws)
	if res.Valid {
		t.Fatalf("a follower-fault window at 90%% passed: %s", res.Detail)
	}
	if len(res.Below) != 1 || !strings.Contains(res.Below[0], "follower-isolated {n3} {n1,n2} at 40.0s-50.0s: 90.0% < 95%") {
		t.Errorf("below %q, want only the follower-isolated window at 90%%", res.Below)
	}
	r := res.Recovery
	if r.Faults != 2 || r.Recovered != 2 || r.P50 != int64(1.4*1e9) || r.P99 != int64(11.5*1e9) || r.Max != r.P99 || r.TargetMet {
		t.Errorf("recovery %+v; want 2 faults, p50 1.4 s, p99 = max = 11.5 s, target missed", r)
	}
	if !strings.Contains(res.Table, "MISSED") || !strings.Contains(res.Table, "follower-isolated   1 window(s)      20 ops   90.0% ok") {
		t.Errorf("report does not show the miss and the class:\n%s", res.Table)
	}

	// The same run with the isolated follower's window at 100% passes.
	p2 := &planted{}
	p2.fill(F, 11, 20, 1, history.Info)
	p2.fill(F, 41, 20, 0, "")
	ws, _ = Availability(history.Pair(p2.events), Windows(timeline(), 70*sec))
	if res := FailoverAvailability(ws); !res.Valid || res.Detail != "every follower-fault window (2) >= 95% ok" {
		t.Errorf("valid %v, detail %q; want both follower windows to pass", res.Valid, res.Detail)
	}
}

func TestAFollowerWindowWithoutFailoverOpsFails(t *testing.T) {
	p := &planted{}
	p.fill(history.ClientPinned, 11, 20, 0, "")
	p.fill(history.ClientFailover, 41, 20, 0, "")
	ws, _ := Availability(history.Pair(p.events), Windows(timeline(), 70*sec))
	res := FailoverAvailability(ws)
	if res.Valid || len(res.Below) != 1 || !strings.Contains(res.Below[0], "no failover op was invoked") {
		t.Errorf("valid %v, below %q; want the follower-killed window without failover ops to fail", res.Valid, res.Below)
	}
}

func TestLeaderRecoveryPercentilesCountAFaultThatNeverRecovered(t *testing.T) {
	r := recoveryStats(RecoveryStats{Faults: 3, Recovered: 2}, []int64{2 * sec, sec})
	if r.P50 != 2*sec || r.P99 != -1 || r.Max != -1 || r.TargetMet {
		t.Errorf("%+v; want p50 2 s, p99 and max never, target missed", r)
	}
	if s := r.String(); !strings.Contains(s, "p99 never max never") {
		t.Errorf("report %q", s)
	}
	r = recoveryStats(RecoveryStats{Faults: 2, Recovered: 2}, []int64{1500e6, 500e6})
	if r.P50 != 500e6 || r.P99 != 1500e6 || !r.TargetMet {
		t.Errorf("%+v; want p50 0.5 s, p99 1.5 s, target met", r)
	}
}
