package checker

import (
	"strings"
	"testing"

	"github.com/raftwatch/raftwatch/cluster-test/history"
)

// bb builds a bank history over accounts /bank/a and /bank/b (total 100).
type bb struct {
	events []history.BankEvent
	id     int
}

var bankAccounts = []string{"/bank/a", "/bank/b"}

func (h *bb) op(p int, inv history.BankEvent, call, ret int64, comp history.BankEvent) {
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

func (h *bb) init(call, ret int64, rev uint64) {
	h.op(0, history.BankEvent{Op: history.BankInit, Init: map[string]string{
		"/bank/a": BankValue(50, "init"), "/bank/b": BankValue(50, "init")}}, call, ret,
		history.BankEvent{Succeeded: true, Revision: rev})
}

func (h *bb) read(p int, call, ret int64, a, b string, ra, rb uint64) {
	h.op(p, history.BankEvent{Op: history.BankRead}, call, ret, history.BankEvent{
		Values: map[string]string{"/bank/a": a, "/bank/b": b}, ModRevs: map[string]uint64{"/bank/a": ra, "/bank/b": rb}})
}

// transfer moves amount from a to b, expecting both at revision rev.
func (h *bb) transfer(p int, call, ret int64, fromRev, toRev uint64, fromVal, toVal string, comp history.BankEvent) {
	h.op(p, history.BankEvent{Op: history.BankTransfer, From: "/bank/a", To: "/bank/b", Amount: 10,
		FromRev: fromRev, ToRev: toRev, FromValue: fromVal, ToValue: toVal}, call, ret, comp)
}

func okFinal(a, b string) map[string]map[string]KV {
	d := map[string]KV{"/bank/a": {Value: a}, "/bank/b": {Value: b}}
	return map[string]map[string]KV{"n1": d, "n2": d, "n3": d}
}

func TestBank(t *testing.T) {
	i50 := BankValue(50, "init")
	a40, b60 := BankValue(40, "t2"), BankValue(60, "t2")
	tests := []struct {
		name  string
		build func(h *bb)
		final map[string]map[string]KV
		valid bool
		want  string // in the detail when invalid
	}{
		{"init, a transfer and reads on either side are valid", func(h *bb) {
			h.init(0, 10, 1)
			h.read(1, 11, 20, i50, i50, 1, 1)
			h.transfer(2, 21, 30, 1, 1, a40, b60, history.BankEvent{Succeeded: true, Revision: 5})
			h.read(1, 31, 40, a40, b60, 5, 5)
		}, okFinal(a40, b60), true, ""},
		{"a transfer with unknown outcome may have applied", func(h *bb) {
			h.init(0, 10, 1)
			h.transfer(2, 21, 30, 1, 1, a40, b60, history.BankEvent{Type: history.Info})
			h.read(1, 31, 40, a40, b60, 5, 5)
		}, okFinal(a40, b60), true, ""},
		{"a failed transfer whose failure branch read the state is valid", func(h *bb) {
			h.init(0, 10, 1)
			h.transfer(2, 21, 30, 7, 1, a40, b60, history.BankEvent{Values: map[string]string{"/bank/a": i50, "/bank/b": i50}})
		}, okFinal(i50, i50), true, ""},
		{"planted: a read that does not sum to the total", func(h *bb) {
			h.init(0, 10, 1)
			h.read(1, 31, 40, a40, i50, 5, 1)
		}, okFinal(i50, i50), false, "sums to 90"},
		{"planted: a stale read (sums right, but after the transfer returned)", func(h *bb) {
			h.init(0, 10, 1)
			h.transfer(2, 21, 30, 1, 1, a40, b60, history.BankEvent{Succeeded: true, Revision: 5})
			h.read(1, 31, 40, i50, i50, 1, 1)
		}, okFinal(a40, b60), false, "no linearization"},
		{"planted: a transfer that succeeded on a stale mod_revision", func(h *bb) {
			h.init(0, 10, 1)
			h.transfer(2, 21, 30, 1, 1, a40, b60, history.BankEvent{Succeeded: true, Revision: 5})
			h.transfer(3, 31, 40, 1, 1, BankValue(30, "t3"), BankValue(70, "t3"), history.BankEvent{Succeeded: true, Revision: 6})
		}, okFinal(BankValue(30, "t3"), BankValue(70, "t3")), false, "no linearization"},
		{"planted: a failed transfer whose compares held", func(h *bb) {
			h.init(0, 10, 1)
			h.transfer(2, 21, 30, 1, 1, a40, b60, history.BankEvent{})
		}, okFinal(i50, i50), false, "no linearization"},
		{"planted: a node whose final balances do not sum to the total", func(h *bb) {
			h.init(0, 10, 1)
		}, map[string]map[string]KV{"n1": {"/bank/a": {Value: i50}, "/bank/b": {Value: i50}}, "n2": {"/bank/a": {Value: a40}, "/bank/b": {Value: i50}}},
			false, "node n2 final balances sum to 90"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := &bb{}
			tc.build(h)
			res := CheckBank(history.PairBank(h.events), tc.final, BankOptions{Accounts: bankAccounts, Total: 100})
			if res.Valid != tc.valid || res.Undecided {
				t.Fatalf("valid=%v undecided=%v, want valid=%v: %s", res.Valid, res.Undecided, tc.valid, res.Detail)
			}
			if !tc.valid && !strings.Contains(res.Detail, tc.want) {
				t.Fatalf("detail %q does not say %q", res.Detail, tc.want)
			}
		})
	}
}

func TestBankInfoTransferResolvedByTheLog(t *testing.T) {
	i50 := BankValue(50, "init")
	h := &bb{}
	h.init(0, 10, 1)
	h.transfer(2, 21, 30, 1, 1, BankValue(40, "t2"), BankValue(60, "t2"), history.BankEvent{Type: history.Info})
	h.read(1, 31, 40, i50, i50, 1, 1)
	// The log shows the Txn's compares failed: the transfer did not apply.
	init := txnOp(nil, []LogTxnOp{tput("/bank/a", i50), tput("/bank/b", i50)}, nil)
	tr := txnOp([]LogCompare{{Key: "/bank/a", Target: CmpMod, Result: CmpEqual, Rev: 9}},
		[]LogTxnOp{tput("/bank/a", BankValue(40, "t2")), tput("/bank/b", BankValue(60, "t2"))}, nil)
	rp := mustReplay(t, entry(1, init), entry(5, tr))
	res := CheckBank(history.PairBank(h.events), okFinal(i50, i50), BankOptions{Accounts: bankAccounts, Total: 100, Replay: rp})
	if !res.Valid || res.DroppedByLog != 1 {
		t.Fatalf("valid=%v dropped=%d: %s", res.Valid, res.DroppedByLog, res.Detail)
	}
}

func TestBankReportsFaultsFollowedByARead(t *testing.T) {
	i50 := BankValue(50, "init")
	h := &bb{}
	h.init(0, 10, 1)
	h.read(1, 120, 130, i50, i50, 1, 1)
	windows := []Window{{Class: ClassHealthy, Start: 0, End: 50}, {Kind: "pause", Class: "leader-paused", Start: 50, End: 100},
		{Class: ClassHealthy, Start: 100, End: 200}, {Kind: "kill", Class: "leader-killed", Start: 200, End: 300}}
	res := CheckBank(history.PairBank(h.events), okFinal(i50, i50), BankOptions{Accounts: bankAccounts, Total: 100, Windows: windows})
	if !res.Valid || res.FaultsChecked != 1 || res.FaultsUnchecked != 1 {
		t.Fatalf("valid=%v checked=%d unchecked=%d: %s", res.Valid, res.FaultsChecked, res.FaultsUnchecked, res.Detail)
	}
}
