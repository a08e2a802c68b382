package node

import (
	"bytes"
	"errors"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/raftwatch/raftwatch/keyspace"
	pb "github.com/raftwatch/raftwatch/proto"
)

// fuzzNode is a node with small limits and nothing running: enough for
// the request checks, which read only its configuration.
func fuzzNode() *Node {
	cfg := DefaultConfig()
	cfg.MaxKeySize, cfg.MaxValueSize, cfg.MaxTxnOps, cfg.MaxTxnBytes = 64, 256, 8, 4096
	return &Node{cfg: cfg}
}

// refusedAsInvalid fails t unless err is nil or wraps ErrInvalidArgument.
func refusedAsInvalid(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil && !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("%s refused with %v, which does not wrap ErrInvalidArgument", what, err)
	}
}

// FuzzCheckPut: the Put check (and the watch-create key check) never
// panics, refuses only with ErrInvalidArgument, accepts exactly the puts
// whose key obeys the key rule, whose value fits, whose lease is not
// negative and whose condition is not contradictory, and proposes the op
// asked for.
func FuzzCheckPut(f *testing.F) {
	f.Add([]byte("/a"), []byte("v"), int64(0), uint64(0), false, false, false)
	f.Add([]byte("/a/b"), []byte(""), int64(7), uint64(3), false, true, false)
	f.Add([]byte("/a"), []byte("v"), int64(0), uint64(0), true, false, false)
	f.Add([]byte("/a"), []byte("v"), int64(-1), uint64(0), false, false, false)
	f.Add([]byte("/a"), []byte("v"), int64(0), uint64(9), true, false, false)
	f.Add([]byte("a"), []byte("v"), int64(0), uint64(0), false, false, true)
	f.Add([]byte("/a/"), bytes.Repeat([]byte("x"), 257), int64(0), uint64(0), false, false, true)
	f.Add([]byte("/\x00"), []byte("v"), int64(1), uint64(0), false, false, false)
	f.Fuzz(func(t *testing.T, key, value []byte, lease int64, modRev uint64, absent, prevKV, prefix bool) {
		n := fuzzNode()
		opt := WriteOptions{PrevKV: prevKV, Lease: lease}
		if modRev != 0 || absent {
			opt.If = &Condition{ModRevision: modRev, Absent: absent}
		}
		op, err := n.putOp(key, value, opt)
		refusedAsInvalid(t, "put", err)
		valid := keyspace.CheckKey(key, n.cfg.MaxKeySize) == nil && len(value) <= n.cfg.MaxValueSize &&
			lease >= 0 && !(modRev != 0 && absent)
		if valid != (err == nil) {
			t.Fatalf("put %q (%d bytes) lease %d mod %d absent %v: %v, rule says valid=%v", key, len(value), lease, modRev, absent, err, valid)
		}
		if err == nil {
			cond := op.GetCondition()
			if op.Kind != pb.Op_PUT || !bytes.Equal(op.Key, key) || !bytes.Equal(op.Value, value) || op.Lease != lease ||
				op.WantPrev != prevKV || cond.GetModRevision() != modRev || cond.GetAbsent() != absent {
				t.Fatalf("put %q lease %d mod %d absent %v proposes %v", key, lease, modRev, absent, op)
			}
		}

		werr := n.checkWatchKey(key, WatchOptions{Prefix: prefix})
		refusedAsInvalid(t, "watch", werr)
		rule := keyspace.CheckKey(key, n.cfg.MaxKeySize)
		if prefix {
			rule = keyspace.CheckPrefix(key, n.cfg.MaxKeySize)
		}
		if (rule == nil) != (werr == nil) || werr != nil && werr.Error() != rule.Error() { // the rule's own message
			t.Fatalf("watch %q (prefix %v): %v, the key rule says %v", key, prefix, werr, rule)
		}
	})
}

// FuzzCheckTxn: the Txn check never panics on any request that decodes,
// refuses only with ErrInvalidArgument, and what it accepts keeps the
// rules: at most MaxTxnOps compares and ops per branch, within
// MaxTxnBytes, every key and prefix by the key rule, every value within
// MaxValueSize, every compare with a target and a known result, no op
// empty or conditional, and no key mutated twice in a branch.
func FuzzCheckTxn(f *testing.F) {
	put := func(k, v string) *pb.TxnOp {
		return &pb.TxnOp{Op: &pb.TxnOp_Put{Put: &pb.PutRequest{Key: []byte(k), Value: []byte(v)}}}
	}
	del := func(k string) *pb.TxnOp {
		return &pb.TxnOp{Op: &pb.TxnOp_Delete{Delete: &pb.DeleteRequest{Key: []byte(k)}}}
	}
	delPrefix := func(p string) *pb.TxnOp {
		return &pb.TxnOp{Op: &pb.TxnOp_DeletePrefix{DeletePrefix: &pb.DeletePrefixRequest{Prefix: []byte(p)}}}
	}
	get := func(k string) *pb.TxnOp { return &pb.TxnOp{Op: &pb.TxnOp_Get{Get: &pb.GetRequest{Key: []byte(k)}}} }
	cmpValue := &pb.Compare{Key: []byte("/a"), Result: pb.Compare_EQUAL, Target: &pb.Compare_Value{Value: []byte("v")}}
	for _, req := range []*pb.TxnRequest{
		{},
		{Compares: []*pb.Compare{cmpValue}, Success: []*pb.TxnOp{put("/a", "w"), get("/a")}, Failure: []*pb.TxnOp{get("/a")}},
		{Success: []*pb.TxnOp{put("/a", "1"), del("/a")}},
		{Success: []*pb.TxnOp{delPrefix("/a/"), put("/a/b", "1")}},
		{Success: []*pb.TxnOp{delPrefix("/a/"), delPrefix("/a/b/")}},
		{Success: []*pb.TxnOp{{}}},
		{Compares: []*pb.Compare{{Key: []byte("/a"), Result: pb.Compare_LESS, Target: &pb.Compare_Exists{Exists: true}}}},
		{Compares: []*pb.Compare{{Key: []byte("/a"), Result: pb.Compare_EQUAL}}},
		{Compares: []*pb.Compare{{Key: []byte("a"), Result: 9, Target: &pb.Compare_Version{Version: 1}}}},
		{Success: []*pb.TxnOp{put("/a", strings.Repeat("x", 300))}},
		{Success: []*pb.TxnOp{put("/1", ""), put("/2", ""), put("/3", ""), put("/4", ""), put("/5", ""), put("/6", ""), put("/7", ""), put("/8", ""), put("/9", "")}},
	} {
		b, err := proto.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req := new(pb.TxnRequest)
		if proto.Unmarshal(b, req) != nil {
			return
		}
		n := fuzzNode()
		err := n.checkTxn(req)
		refusedAsInvalid(t, "txn", err)
		if err != nil {
			return
		}
		max := n.cfg.MaxKeySize
		if len(req.Compares) > n.cfg.MaxTxnOps || len(req.Success) > n.cfg.MaxTxnOps || len(req.Failure) > n.cfg.MaxTxnOps ||
			proto.Size(req) > n.cfg.MaxTxnBytes {
			t.Fatalf("accepted a txn over its limits: %d compares, %d/%d ops, %d bytes", len(req.Compares), len(req.Success), len(req.Failure), proto.Size(req))
		}
		for _, c := range req.Compares {
			if keyspace.CheckKey(c.Key, max) != nil || c.Target == nil || pb.Compare_Result_name[int32(c.Result)] == "" ||
				len(c.GetValue()) > n.cfg.MaxValueSize {
				t.Fatalf("accepted compare %v", c)
			}
		}
		for _, branch := range [][]*pb.TxnOp{req.Success, req.Failure} {
			var mutated, prefixes []string
			for _, op := range branch {
				var key string
				switch o := op.Op.(type) {
				case *pb.TxnOp_Put:
					if len(o.Put.Value) > n.cfg.MaxValueSize || o.Put.Lease < 0 || o.Put.Condition != nil {
						t.Fatalf("accepted put %v", o.Put)
					}
					key = string(o.Put.Key)
				case *pb.TxnOp_Delete:
					if o.Delete.Condition != nil {
						t.Fatalf("accepted a conditional delete %v", o.Delete)
					}
					key = string(o.Delete.Key)
				case *pb.TxnOp_Get:
					if keyspace.CheckKey(o.Get.Key, max) != nil {
						t.Fatalf("accepted get %q", o.Get.Key)
					}
					continue
				case *pb.TxnOp_DeletePrefix:
					p := string(o.DeletePrefix.Prefix)
					if keyspace.CheckPrefix([]byte(p), max) != nil {
						t.Fatalf("accepted delete_prefix %q", p)
					}
					for _, k := range mutated {
						if strings.HasPrefix(k, p) {
							t.Fatalf("accepted a branch that mutates %q and deletes the prefix %q", k, p)
						}
					}
					for _, q := range prefixes {
						if strings.HasPrefix(p, q) || strings.HasPrefix(q, p) {
							t.Fatalf("accepted a branch deleting overlapping prefixes %q and %q", q, p)
						}
					}
					prefixes = append(prefixes, p)
					continue
				default:
					t.Fatalf("accepted an empty op")
				}
				if keyspace.CheckKey([]byte(key), max) != nil {
					t.Fatalf("accepted key %q", key)
				}
				for _, k := range mutated {
					if k == key {
						t.Fatalf("accepted a branch mutating %q twice", key)
					}
				}
				for _, p := range prefixes {
					if strings.HasPrefix(key, p) {
						t.Fatalf("accepted a branch mutating %q under the deleted prefix %q", key, p)
					}
				}
				mutated = append(mutated, key)
			}
		}
	})
}

// memberIDRule is what checkMemberID accepts.
var memberIDRule = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// FuzzCheckMember: the member id and address checks never panic, refuse
// only with ErrInvalidArgument, accept exactly the ids of 1 to 64 letters,
// digits, '.', '_' and '-', and accept only host:port addresses with a port
// from 1 to 65535 and a host other nodes could reach, which an IP address
// host makes resolvable without a lookup.
func FuzzCheckMember(f *testing.F) {
	for _, s := range [][2]string{
		{"n1", "10.0.0.4:7001"}, {"node-2.example_x", "[::1]:7001"}, {"", ""}, {"bogus", "not-an-addr"},
		{"a b", "0.0.0.0:7001"}, {"é", "[::]:7001"}, {"n1", "host:0"}, {"n1", "host:65536"}, {"n1", "host:+80"},
		{"n1", ":7001"}, {"n1", "a/b:7001"}, {"n1", "[fe80::1%eth0]:7001"}, {strings.Repeat("x", 65), "h:1"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, id, addr string) {
		err := checkMemberID(id)
		refusedAsInvalid(t, "member id", err)
		if want := memberIDRule.MatchString(id); want != (err == nil) {
			t.Fatalf("checkMemberID(%q) = %v, rule says valid=%v", id, err, want)
		}
		err = checkAddr("raft address", addr)
		refusedAsInvalid(t, "address", err)
		if err != nil {
			return
		}
		host, port, serr := net.SplitHostPort(addr)
		p, perr := strconv.Atoi(port)
		if serr != nil || perr != nil || p < 1 || p > 65535 || host == "" {
			t.Fatalf("checkAddr accepted %q (host %q, port %q)", addr, host, port)
		}
		if ip := net.ParseIP(host); ip != nil {
			if ip.IsUnspecified() {
				t.Fatalf("checkAddr accepted the unspecified address %q", addr)
			}
			if _, err := net.ResolveTCPAddr("tcp", addr); err != nil {
				t.Fatalf("checkAddr accepted %q, which does not resolve: %v", addr, err)
			}
		}
	})
}
