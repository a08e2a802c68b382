package checker

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/raftwatch/raftwatch/cluster-test/history"
)

// The bank (txn transfer) check
//
// N account keys hold a conserved total. Every value written is
// BankValue(balance, tag) with a tag unique to the op that wrote it, so a
// value names its write and that write's revision is a fact, as in the KV
// model (linearizable.go): a transfer's compares "mod_revision(a) == r" hold
// iff the write that produced a's current value was at revision r. The
// porcupine model's state is therefore the account values alone (balances
// plus the tags standing for their mod_revisions); the whole account map is
// one partition, since transfers span accounts.
//
//   - init: holds iff every account is absent; then sets every initial value.
//   - read -> values, mod_revs: the values must equal the state (absent =
//     missing) and each mod_rev the revision of its value when known.
//   - transfer: holds iff both accounts exist and their values' revisions
//     are FromRev and ToRev (a revision not known: either result accepted);
//     succeeded requires it to hold and sets FromValue and ToValue; not
//     succeeded requires it not to hold, and the failure branch's reads must
//     equal the state.
//
// Info ops return at infinity and may apply; with a complete log, an info
// transfer or init whose values never got applied did not apply and is
// dropped.

// MaxBankAccounts bounds the number of accounts (the model state is an array).
const MaxBankAccounts = 16

// BankValue is the value stored for an account: its balance and the tag of
// the op that wrote it.
func BankValue(balance int64, tag string) string {
	return strconv.FormatInt(balance, 10) + "/" + tag
}

// BankBalance parses the balance out of a BankValue.
func BankBalance(v string) (int64, error) {
	b, _, ok := strings.Cut(v, "/")
	if !ok {
		return 0, fmt.Errorf("account value %q is not balance/tag", v)
	}
	return strconv.ParseInt(b, 10, 64)
}

// BankOptions configures CheckBank.
type BankOptions struct {
	// Accounts are the account keys, at most MaxBankAccounts.
	Accounts []string
	// Total is the conserved sum of the balances.
	Total int64
	// Replay of the committed log, or nil.
	Replay *Replay
	// Windows of the nemesis timeline, to report the first read after each
	// fault (nil: none).
	Windows []Window
	// Timeout of porcupine (0: none).
	Timeout time.Duration
}

// BankResult is the verdict of the bank checker.
type BankResult struct {
	Valid     bool `json:"valid"`
	Undecided bool `json:"undecided"`
	// Reads: successful read-alls whose sum was checked; BadReads of them
	// did not sum to the total.
	Reads    int `json:"reads"`
	BadReads int `json:"bad_reads"`
	// FaultsChecked: fault windows followed by a successful read-all before
	// the next fault began; FaultsUnchecked: the others (a report).
	FaultsChecked   int `json:"faults_checked"`
	FaultsUnchecked int `json:"faults_unchecked"`
	// Transfers that succeeded (acknowledged), and ops with unknown outcome.
	Transfers    int `json:"transfers_ok"`
	Unknown      int `json:"unknown_ops"`
	DroppedByLog int `json:"info_ops_resolved_not_applied"`
	// Linearizable: porcupine's verdict over the whole account map.
	Linearizable bool `json:"linearizable"`
	// FinalSums: each node's final balance sum.
	FinalSums  map[string]int64 `json:"final_sums,omitempty"`
	Violations []string         `json:"violations,omitempty"`
	Detail     string           `json:"detail"`
}

type bankState [MaxBankAccounts]string

type bankInput struct {
	Op               string
	From, To         int
	FromRev, ToRev   uint64
	FromVal, ToVal   string
	Init             bankState
	FromName, ToName string
}

type bankOutput struct {
	Unknown   bool
	Succeeded bool
	HasValues bool
	Values    bankState
	ModRevs   [MaxBankAccounts]uint64
}

// BankModel is the porcupine model of n accounts; revOf[i][value] is the
// revision that wrote value to account i, when known.
func BankModel(n int, revOf []map[string]uint64) porcupine.Model {
	holds := func(s bankState, i int, rev uint64) int {
		if s[i] == "" {
			return 0
		}
		r, ok := revOf[i][s[i]]
		if !ok {
			return -1
		}
		return b2i(r == rev)
	}
	return porcupine.Model{
		Init: func() any { return bankState{} },
		Step: func(st, in, out any) (bool, any) {
			s, i, o := st.(bankState), in.(bankInput), out.(bankOutput)
			switch i.Op {
			case history.BankRead:
				for a := 0; a < n; a++ {
					if o.Values[a] != s[a] {
						return false, s
					}
					if r, ok := revOf[a][s[a]]; ok && s[a] != "" && o.ModRevs[a] != 0 && o.ModRevs[a] != r {
						return false, s
					}
				}
				return true, s
			case history.BankInit:
				h := 1
				for a := 0; a < n; a++ {
					if s[a] != "" {
						h = 0
					}
				}
				switch {
				case o.Unknown || o.Succeeded:
					if h == 0 {
						return o.Unknown, s
					}
					return true, i.Init
				default:
					return h == 0, s
				}
			case history.BankTransfer:
				hf, ht := holds(s, i.From, i.FromRev), holds(s, i.To, i.ToRev)
				h := 1
				switch {
				case hf == 0 || ht == 0:
					h = 0
				case hf < 0 || ht < 0:
					h = -1
				}
				next := s
				next[i.From], next[i.To] = i.FromVal, i.ToVal
				switch {
				case o.Unknown:
					if h != 0 {
						return h != 0, next
					}
					return true, s
				case o.Succeeded:
					return h != 0, next
				default:
					if h == 1 {
						return false, s
					}
					if o.HasValues && (o.Values[i.From] != s[i.From] || o.Values[i.To] != s[i.To]) {
						return false, s
					}
					return true, s
				}
			}
			return false, st
		},
		Equal: func(a, b any) bool { return a.(bankState) == b.(bankState) },
		DescribeOperation: func(in, out any) string {
			i, o := in.(bankInput), out.(bankOutput)
			var b strings.Builder
			switch i.Op {
			case history.BankRead:
				b.WriteString("read()")
			case history.BankInit:
				b.WriteString("init()")
			case history.BankTransfer:
				fmt.Fprintf(&b, "transfer(%s@%d -> %s, %s@%d -> %s)", i.FromName, i.FromRev, i.FromVal, i.ToName, i.ToRev, i.ToVal)
			}
			switch {
			case o.Unknown:
				b.WriteString(" -> ?")
			case i.Op == history.BankRead:
				fmt.Fprintf(&b, " -> %v", o.Values[:n])
			default:
				fmt.Fprintf(&b, " -> succeeded=%v", o.Succeeded)
			}
			return b.String()
		},
		DescribeState: func(st any) string {
			s := st.(bankState)
			return fmt.Sprint(s[:n])
		},
	}
}

// CheckBank checks the txn transfer history: every successful read-all sums
// to the total, the history is linearizable with the bank model, and each
// node's final state (and the replayed log's) sums to the total.
func CheckBank(ops []history.Paired[history.BankEvent], final map[string]map[string]KV, opt BankOptions) BankResult {
	res := BankResult{Valid: true, Linearizable: true, FinalSums: map[string]int64{}}
	fail := func(format string, args ...any) {
		res.Valid = false
		if len(res.Violations) < maxListed {
			res.Violations = append(res.Violations, fmt.Sprintf(format, args...))
		}
	}
	n := len(opt.Accounts)
	if n == 0 || n > MaxBankAccounts {
		fail("bank check needs 1..%d accounts, got %d", MaxBankAccounts, n)
		res.Detail = strings.Join(res.Violations, "; ")
		return res
	}
	idx := map[string]int{}
	for i, a := range opt.Accounts {
		idx[a] = i
	}
	// sum checks a snapshot of every account.
	sum := func(values map[string]string) (int64, error) {
		var total int64
		for _, a := range opt.Accounts {
			v, ok := values[a]
			if !ok {
				return 0, fmt.Errorf("account %s missing", a)
			}
			b, err := BankBalance(v)
			if err != nil {
				return 0, err
			}
			total += b
		}
		return total, nil
	}

	// (i) snapshot reads.
	var goodReads []int64 // completion times of reads that summed right
	for _, o := range ops {
		c := o.Complete
		if o.Invoke.Op != history.BankRead || c == nil || c.Type != history.OK {
			continue
		}
		res.Reads++
		s, err := sum(c.Values)
		switch {
		case err != nil:
			res.BadReads++
			fail("read %d at revision %d: %v", o.Invoke.ID, c.Revision, err)
		case s != opt.Total:
			res.BadReads++
			fail("read %d at revision %d sums to %d, not %d: %v", o.Invoke.ID, c.Revision, s, opt.Total, c.Values)
		default:
			goodReads = append(goodReads, o.Invoke.Time)
		}
	}
	sort.Slice(goodReads, func(a, b int) bool { return goodReads[a] < goodReads[b] })
	for wi, w := range opt.Windows {
		if w.Class == ClassHealthy {
			continue
		}
		next := int64(1<<63 - 1)
		for _, x := range opt.Windows[wi+1:] {
			if x.Class != ClassHealthy {
				next = x.Start
				break
			}
		}
		j := sort.Search(len(goodReads), func(j int) bool { return goodReads[j] >= w.End })
		if j < len(goodReads) && goodReads[j] < next {
			res.FaultsChecked++
		} else {
			res.FaultsUnchecked++
		}
	}

	// (iii) final state, on every node and in the replayed log.
	nodes := make([]string, 0, len(final))
	for id := range final {
		nodes = append(nodes, id)
	}
	sort.Strings(nodes)
	values := func(data map[string]KV) map[string]string {
		out := map[string]string{}
		for _, a := range opt.Accounts {
			if kv, ok := data[a]; ok {
				out[a] = kv.Value
			}
		}
		return out
	}
	for _, id := range nodes {
		s, err := sum(values(final[id]))
		res.FinalSums[id] = s
		switch {
		case err != nil:
			fail("node %s final state: %v", id, err)
		case s != opt.Total:
			fail("node %s final balances sum to %d, not %d", id, s, opt.Total)
		}
	}
	if rp := opt.Replay; rp != nil && rp.FirstIndex <= 1 {
		if s, err := sum(values(rp.Final)); err != nil || s != opt.Total {
			fail("the replayed committed log ends with balances summing to %d, not %d (%v)", s, opt.Total, err)
		}
	}

	// (ii) linearizability.
	revOf := make([]map[string]uint64, n)
	for i := range revOf {
		revOf[i] = map[string]uint64{}
	}
	setRev := func(acct, v string, r uint64) {
		if i, ok := idx[acct]; ok && v != "" && r != 0 {
			if _, seen := revOf[i][v]; !seen {
				revOf[i][v] = r
			}
		}
	}
	for _, o := range ops {
		c := o.Complete
		if c == nil || c.Type != history.OK || !c.Succeeded {
			continue
		}
		switch o.Invoke.Op {
		case history.BankTransfer:
			setRev(o.Invoke.From, o.Invoke.FromValue, c.Revision)
			setRev(o.Invoke.To, o.Invoke.ToValue, c.Revision)
		case history.BankInit:
			for a, v := range o.Invoke.Init {
				setRev(a, v, c.Revision)
			}
		}
	}
	logComplete := opt.Replay != nil && opt.Replay.FirstIndex <= 1
	if opt.Replay != nil {
		for _, a := range opt.Accounts {
			for v, r := range opt.Replay.Applied[a] {
				setRev(a, v, r)
			}
		}
	}
	var end int64
	for _, o := range ops {
		end = max(end, o.Invoke.Time)
		if o.Complete != nil {
			end = max(end, o.Complete.Time)
		}
	}
	clients := map[int]int{}
	var pops []porcupine.Operation
	for _, o := range ops {
		inv := o.Invoke
		outcome := history.Info
		if o.Complete != nil {
			outcome = o.Complete.Type
		}
		if outcome == history.Fail || (inv.Op == history.BankRead && outcome != history.OK) {
			continue
		}
		in := bankInput{Op: inv.Op, FromRev: inv.FromRev, ToRev: inv.ToRev, FromVal: inv.FromValue, ToVal: inv.ToValue,
			FromName: inv.From, ToName: inv.To}
		switch inv.Op {
		case history.BankTransfer:
			f, okF := idx[inv.From]
			t, okT := idx[inv.To]
			if !okF || !okT || f == t {
				fail("transfer %d between %q and %q: not two distinct accounts", inv.ID, inv.From, inv.To)
				continue
			}
			in.From, in.To = f, t
			if outcome == history.Info && logComplete {
				if _, applied := opt.Replay.Applied[inv.From][inv.FromValue]; !applied {
					res.DroppedByLog++
					continue
				}
			}
		case history.BankInit:
			for a, v := range inv.Init {
				if i, ok := idx[a]; ok {
					in.Init[i] = v
				}
			}
		}
		var out bankOutput
		ret := end + 1
		if outcome == history.Info {
			out.Unknown = true
			res.Unknown++
		} else {
			c := o.Complete
			ret = c.Time
			out.Succeeded = c.Succeeded
			if c.Succeeded && inv.Op == history.BankTransfer {
				res.Transfers++
			}
			if c.Values != nil {
				out.HasValues = true
				for a, v := range c.Values {
					if i, ok := idx[a]; ok {
						out.Values[i] = v
						out.ModRevs[i] = c.ModRevs[a]
					}
				}
			}
		}
		if _, ok := clients[inv.Process]; !ok {
			clients[inv.Process] = len(clients)
		}
		pops = append(pops, porcupine.Operation{ClientId: clients[inv.Process], Input: in, Call: inv.Time, Output: out, Return: ret,
			Metadata: inv.ID})
	}
	switch porcupine.CheckOperationsTimeout(BankModel(n, revOf), pops, opt.Timeout) {
	case porcupine.Illegal:
		res.Linearizable = false
		fail("no linearization of the %d bank ops exists (txn model over every account)", len(pops))
	case porcupine.Unknown:
		res.Undecided = true
	}

	switch {
	case !res.Valid:
		res.Detail = strings.Join(res.Violations, "; ")
	case res.Undecided:
		res.Detail = fmt.Sprintf("%d reads sum to %d; porcupine timed out on %d ops: undecided", res.Reads, opt.Total, len(pops))
	default:
		res.Detail = fmt.Sprintf("%d reads sum to %d (%d faults followed by a read, %d not), %d transfers, %d ops linearizable (%d unknown, %d resolved not applied by the log), final sums %v",
			res.Reads, opt.Total, res.FaultsChecked, res.FaultsUnchecked, res.Transfers, len(pops), res.Unknown, res.DroppedByLog, res.FinalSums)
	}
	return res
}
