package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/raftwatch/raftwatch/client"
	"github.com/raftwatch/raftwatch/node"
	pb "github.com/raftwatch/raftwatch/proto"
)

// maxTxnInput is the most txn reads from stdin: room for a txn of the
// default --max-txn-bytes written with quoting.
const maxTxnInput = 4 * node.DefaultMaxTxnBytes

const txnLong = `Run a transaction read from stdin: compares, then the ops to run when every
compare holds (success), then the ops to run otherwise (failure), the three
sections separated by one blank line each (so two blank lines in a row leave
a section empty, e.g. no success ops). The node applies the chosen branch
in one log entry: its writes share one revision and watchers see them
together, in op order.

Compares, one per line (KEY and string operands are Go string literals, or
bare words without spaces or quotes; numbers may be quoted):
  value("/k") = "x"         the value, byte-wise; =, !=, < or >; false when
                            the key is absent
  version("/k") > 0         puts since creation (0 = absent)
  create("/k") = 12         create revision (0 = absent)
  mod("/k") = "5"           mod revision (0 = absent)
  lease("/k") = 1f          the key's lease id, in hex as "lease grant" prints
                            it (0 = none)
  exists("/k")  absent("/k")

Ops, one per line:
  put KEY VALUE [--prev-kv] [--lease=ID]   ID in hex, as "lease grant" prints it
  del KEY [--prev-kv]
  get KEY                   reads the key as the earlier ops left it
  delprefix PREFIX [--prev-kv]   deletes every key under PREFIX (ends in /)

Lines starting with # are comments. A branch may not write a key twice (a
put or del under a delprefix prefix counts). At most --max-txn-ops (default
128) compares and ops per branch, and --max-txn-bytes (1 MiB) in all.

Prints which branch ran and each op's result; exits 2 when the failure branch
ran (the compares did not hold), 1 on bad input (nothing is sent, nothing
changes) or any error.`

const txnExample = `  # move 3 from /acct/a to /acct/b if neither changed; else show both
  printf '%s\n' 'value("/acct/a") = "10"' 'value("/acct/b") = "0"' '' \
    'put /acct/a 7' 'put /acct/b 3' '' 'get /acct/a' 'get /acct/b' | raftwatch txn

  # the same from a file
  raftwatch txn < transfer.txn`

func newTxnCmd() *cobra.Command {
	var g *clientFlags
	cmd := &cobra.Command{
		Use:     "txn",
		Short:   "Run a transaction read from stdin (compares, success ops, failure ops)",
		Long:    txnLong,
		Example: txnExample,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if fi, err := os.Stdin.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
				fmt.Fprintln(os.Stderr, "reading compares, success ops and failure ops from stdin (blank line between sections); end with Ctrl-D")
			}
			in, err := io.ReadAll(io.LimitReader(os.Stdin, maxTxnInput+1))
			if err != nil {
				return fmt.Errorf("read the txn from stdin: %w", err)
			}
			if len(in) > maxTxnInput {
				return fmt.Errorf("the txn on stdin is over %d bytes", maxTxnInput)
			}
			spec, err := parseTxn(in)
			if err != nil {
				return err
			}
			c, ctx, done, err := g.open()
			if err != nil {
				return err
			}
			defer done()
			r, err := c.Txn(ctx).If(spec.compares...).Then(spec.success.ops...).Else(spec.failure.ops...).Commit()
			if err != nil {
				return err
			}
			ran := spec.failure
			if r.Succeeded {
				ran = spec.success
			}
			if err := printTxn(g, r, ran.lines); err != nil {
				return err
			}
			if !r.Succeeded {
				return exitCode{code: exitConditionFailed}
			}
			return nil
		},
	}
	g = addClientFlags(cmd)
	return cmd
}

// txnSpec is a parsed txn: its compares and each branch's ops with the
// lines they were read from.
type txnSpec struct {
	compares         []client.Cmp
	success, failure txnBranch
}

type txnBranch struct {
	ops   []client.Op
	lines []string // each op's input line, for the output
}

// parseTxn reads the txn format described in txnLong.
func parseTxn(in []byte) (*txnSpec, error) {
	spec := &txnSpec{}
	section := 0
	sc := bufio.NewScanner(bytes.NewReader(in))
	sc.Buffer(make([]byte, 64<<10), maxTxnInput+1)
	pendingBlank := 0 // blank lines seen since the last content line
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			pendingBlank++
			continue
		}
		if strings.HasPrefix(line, "#") {
			continue
		}
		section += pendingBlank
		pendingBlank = 0
		var err error
		switch section {
		case 0:
			var c client.Cmp
			if c, err = parseCompare(line); err == nil {
				spec.compares = append(spec.compares, c)
			}
		case 1, 2:
			b := &spec.success
			if section == 2 {
				b = &spec.failure
			}
			var op client.Op
			if op, err = parseTxnOp(line); err == nil {
				b.ops, b.lines = append(b.ops, op), append(b.lines, line)
			}
		default:
			err = fmt.Errorf("a fourth section: a txn has three (compares, success ops, failure ops), separated by one blank line each")
		}
		if err != nil {
			return nil, fmt.Errorf("txn line %d %q: %w", n, line, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read the txn: %w", err)
	}
	if len(spec.compares)+len(spec.success.ops)+len(spec.failure.ops) == 0 {
		return nil, fmt.Errorf("empty txn: no compares and no ops on stdin (see --help for the format)")
	}
	return spec, nil
}

// token reads one operand: a Go string literal or a bare word (up to white
// space). It returns the operand and the rest of s.
func token(s string) (string, string, error) {
	s = strings.TrimLeft(s, " \t")
	if s == "" {
		return "", "", fmt.Errorf("missing operand")
	}
	if s[0] == '"' || s[0] == '`' {
		q, err := strconv.QuotedPrefix(s)
		if err != nil {
			return "", "", fmt.Errorf("bad quoted string %s", s)
		}
		v, _ := strconv.Unquote(q)
		return v, s[len(q):], nil
	}
	end := strings.IndexAny(s, " \t")
	if end < 0 {
		end = len(s)
	}
	return s[:end], s[end:], nil
}

// compareTargets maps the names a compare line may use to the target.
var compareTargets = map[string]func([]byte) client.CmpTarget{
	"value": client.Value, "version": client.Version, "ver": client.Version,
	"create": client.CreateRevision, "create_revision": client.CreateRevision, "create_rev": client.CreateRevision,
	"mod": client.ModRevision, "mod_revision": client.ModRevision, "mod_rev": client.ModRevision,
	"lease": client.LeaseValue,
}

// parseCompare reads e.g. `mod("/k") = "5"` or `exists("/k")`.
func parseCompare(line string) (client.Cmp, error) {
	name, rest, ok := strings.Cut(line, "(")
	name = strings.ToLower(strings.TrimSpace(name))
	if !ok {
		return client.Cmp{}, fmt.Errorf(`not a compare: want e.g. value("/k") = "x", mod("/k") > 3, exists("/k") or absent("/k")`)
	}
	var key string
	if rest = strings.TrimSpace(rest); strings.HasPrefix(rest, "\"") || strings.HasPrefix(rest, "`") {
		var err error
		if key, rest, err = token(rest); err != nil {
			return client.Cmp{}, fmt.Errorf("key: %w", err)
		}
	} else {
		key, rest, _ = strings.Cut(rest, ")") // a bare key: value(/k)
		key, rest = strings.TrimSpace(key), ")"+rest
	}
	rest = strings.TrimSpace(rest)
	if !strings.HasPrefix(rest, ")") {
		return client.Cmp{}, fmt.Errorf("missing ) after the key")
	}
	rest = strings.TrimSpace(rest[1:])
	switch name {
	case "exists", "absent":
		if rest != "" {
			return client.Cmp{}, fmt.Errorf("%s(KEY) takes no operator or operand, found %q", name, rest)
		}
		if name == "exists" {
			return client.Exists([]byte(key)), nil
		}
		return client.Absent([]byte(key)), nil
	}
	target, ok := compareTargets[name]
	if !ok {
		return client.Cmp{}, fmt.Errorf("unknown compare target %q: use value, version, create, mod, lease, exists or absent", name)
	}
	op, rest, err := token(rest)
	if err != nil {
		return client.Cmp{}, fmt.Errorf("operator: %w (use =, !=, < or >)", err)
	}
	switch op {
	case "=", "==", "!=", "<", ">":
	default:
		return client.Cmp{}, fmt.Errorf("unknown operator %q: use =, !=, < or >", op)
	}
	operand, rest, err := token(rest)
	if err != nil {
		return client.Cmp{}, err
	}
	if strings.TrimSpace(rest) != "" {
		return client.Cmp{}, fmt.Errorf("unexpected %q after the operand (quote operands with spaces)", strings.TrimSpace(rest))
	}
	switch name {
	case "value":
		return client.Compare(target([]byte(key)), op, []byte(operand)), nil
	case "lease":
		var id int64
		if operand != "0" {
			var err error
			if id, err = parseLeaseID(operand); err != nil {
				return client.Cmp{}, err
			}
		}
		return client.Compare(target([]byte(key)), op, id), nil
	}
	v, err := strconv.ParseUint(operand, 10, 64)
	if err != nil {
		return client.Cmp{}, fmt.Errorf("%s operand %q is not a non-negative number", name, operand)
	}
	return client.Compare(target([]byte(key)), op, v), nil
}

// parseTxnOp reads e.g. `put /k v --prev-kv`, `del /k`, `get /k`,
// `delprefix /p/`.
func parseTxnOp(line string) (client.Op, error) {
	verb, rest := line, ""
	if i := strings.IndexAny(line, " \t"); i >= 0 {
		verb, rest = line[:i], line[i+1:]
	}
	var args []string
	var prevKV bool
	var lease int64
	for rest = strings.TrimSpace(rest); rest != ""; rest = strings.TrimSpace(rest) {
		var a string
		var err error
		unquoted := rest[0] != '"' && rest[0] != '`'
		if a, rest, err = token(rest); err != nil {
			return client.Op{}, err
		}
		switch {
		case unquoted && a == "--prev-kv":
			prevKV = true
		case unquoted && strings.HasPrefix(a, "--lease="):
			if lease, err = parseLeaseID(strings.TrimPrefix(a, "--lease=")); err != nil {
				return client.Op{}, err
			}
		case unquoted && strings.HasPrefix(a, "--"):
			return client.Op{}, fmt.Errorf("unknown option %s (ops take --prev-kv; put also --lease=ID)", a)
		default:
			args = append(args, a)
		}
	}
	want := map[string]int{"put": 2, "del": 1, "delete": 1, "get": 1, "delprefix": 1}
	n, ok := want[verb]
	if !ok {
		return client.Op{}, fmt.Errorf("unknown op %q: use put KEY VALUE, del KEY, get KEY or delprefix PREFIX", verb)
	}
	if len(args) != n {
		return client.Op{}, fmt.Errorf("%s takes %d operand(s), got %d (quote values with spaces)", verb, n, len(args))
	}
	if lease != 0 && verb != "put" {
		return client.Op{}, fmt.Errorf("--lease is for put only")
	}
	if prevKV && verb == "get" {
		return client.Op{}, fmt.Errorf("--prev-kv is for put, del and delprefix")
	}
	var opts []client.OpOption
	if prevKV {
		opts = append(opts, client.WithPrevKV())
	}
	switch verb {
	case "put":
		if lease != 0 {
			opts = append(opts, client.WithLease(lease))
		}
		return client.OpPut([]byte(args[0]), []byte(args[1]), opts...), nil
	case "del", "delete":
		return client.OpDelete([]byte(args[0]), opts...), nil
	case "get":
		return client.OpGet([]byte(args[0])), nil
	}
	return client.OpDeletePrefix([]byte(args[0]), opts...), nil
}

// printTxn prints which branch ran and each op's result; lines are the
// ran branch's input lines.
func printTxn(g *clientFlags, r *pb.TxnResponse, lines []string) error {
	if g.json {
		results := make([]map[string]any, len(r.Results))
		for i, res := range r.Results {
			results[i] = txnResultJSON(res)
		}
		return printJSON(map[string]any{"revision": r.Revision, "succeeded": r.Succeeded, "results": results})
	}
	if r.Succeeded {
		fmt.Printf("SUCCESS (revision %d): every compare held; the success ops ran\n", r.Revision)
	} else {
		fmt.Printf("FAILURE (revision %d): a compare did not hold; the failure ops ran\n", r.Revision)
	}
	for i, res := range r.Results {
		line := ""
		if i < len(lines) {
			line = lines[i]
		}
		fmt.Printf("%s: %s\n", line, txnResultText(res))
	}
	return nil
}

func txnResultText(res *pb.TxnOpResult) string {
	prev := func(kv *pb.KeyValue) string {
		if kv == nil {
			return ""
		}
		return fmt.Sprintf("; previous: %s (mod revision %d, version %d)", quote(kv.Value), kv.ModRevision, kv.Version)
	}
	switch x := res.Result.(type) {
	case *pb.TxnOpResult_Put:
		return fmt.Sprintf("OK (mod revision %d)%s", x.Put.ModRevision, prev(x.Put.PrevKv))
	case *pb.TxnOpResult_Delete:
		if !x.Delete.Deleted {
			return "OK, key did not exist"
		}
		return "deleted" + prev(x.Delete.PrevKv)
	case *pb.TxnOpResult_Get:
		if x.Get.Kv == nil {
			return "not found"
		}
		return fmt.Sprintf("%s (mod revision %d, version %d)", quote(x.Get.Kv.Value), x.Get.Kv.ModRevision, x.Get.Kv.Version)
	case *pb.TxnOpResult_DeletePrefix:
		s := fmt.Sprintf("deleted %d keys", x.DeletePrefix.Deleted)
		for _, kv := range x.DeletePrefix.PrevKvs {
			s += fmt.Sprintf("\n  %s = %s", quote(kv.Key), quote(kv.Value))
		}
		return s
	}
	return "no result"
}

func txnResultJSON(res *pb.TxnOpResult) map[string]any {
	switch x := res.Result.(type) {
	case *pb.TxnOpResult_Put:
		return map[string]any{"op": "put", "mod_revision": x.Put.ModRevision, "prev_kv": toJSON(x.Put.PrevKv)}
	case *pb.TxnOpResult_Delete:
		return map[string]any{"op": "del", "deleted": x.Delete.Deleted, "prev_kv": toJSON(x.Delete.PrevKv)}
	case *pb.TxnOpResult_Get:
		return map[string]any{"op": "get", "kv": toJSON(x.Get.Kv)}
	case *pb.TxnOpResult_DeletePrefix:
		prevs := make([]*kvJSON, len(x.DeletePrefix.PrevKvs))
		for i, kv := range x.DeletePrefix.PrevKvs {
			prevs[i] = toJSON(kv)
		}
		return map[string]any{"op": "delprefix", "deleted": x.DeletePrefix.Deleted, "prev_kvs": prevs}
	}
	return map[string]any{"op": nil}
}
