package server

import (
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftwatch/raftwatch/fsm"
	"github.com/raftwatch/raftwatch/keyspace"
	"github.com/raftwatch/raftwatch/node"
	pb "github.com/raftwatch/raftwatch/proto"
	"github.com/raftwatch/raftwatch/watch"
)

// edgeErrors is every exported error variable of the packages whose errors
// reach the services, with the code and reason a client sees for it. A
// new Err variable in those packages fails TestEveryErrorKindHasItsCode
// until it is added here, which is the moment to decide its code (in
// codeOf) and whether a client may retry it.
var edgeErrors = map[string]struct {
	err    error
	code   codes.Code
	reason string
}{
	"node.ErrNoLeader":        {node.ErrNoLeader, codes.Unavailable, pb.ReasonNotApplied},
	"node.ErrNotReady":        {node.ErrNotReady, codes.Unavailable, pb.ReasonNotApplied},
	"node.ErrNotApplied":      {node.ErrNotApplied, codes.Unavailable, pb.ReasonNotApplied},
	"node.ErrShuttingDown":    {node.ErrShuttingDown, codes.Unavailable, pb.ReasonNotApplied},
	"node.ErrOutcomeUnknown":  {node.ErrOutcomeUnknown, codes.Unavailable, ""},
	"node.ErrInvalidArgument": {node.ErrInvalidArgument, codes.InvalidArgument, ""},
	"node.ErrRemoved":         {node.ErrRemoved, codes.FailedPrecondition, pb.ReasonRemoved},
	"node.ErrAlreadyExists":   {node.ErrAlreadyExists, codes.AlreadyExists, ""},
	"node.ErrQuorumAtRisk":    {node.ErrQuorumAtRisk, codes.FailedPrecondition, ""},
	"node.ErrNotCaughtUp":     {node.ErrNotCaughtUp, codes.DeadlineExceeded, ""},
	"node.ErrDataLoss":        {node.ErrDataLoss, codes.DataLoss, ""},
	"node.ErrUnknownMember":   {node.ErrUnknownMember, codes.NotFound, ""},
	"node.ErrMemberRemoved":   {node.ErrMemberRemoved, codes.FailedPrecondition, ""},
	// Cluster.Log reading a damaged entry: damaged storage, not a server bug.
	"node.ErrLogCorrupt":   {node.ErrLogCorrupt, codes.DataLoss, ""},
	"fsm.ErrLeaseNotFound": {fsm.ErrLeaseNotFound, codes.NotFound, ""},
	"fsm.ErrLeaseExists":   {fsm.ErrLeaseExists, codes.AlreadyExists, ""},
	"fsm.ErrLeaseLimit":    {fsm.ErrLeaseLimit, codes.ResourceExhausted, ""},
	"fsm.ErrRoleNotFound":  {fsm.ErrRoleNotFound, codes.NotFound, ""},
	"fsm.ErrNotGranted":    {fsm.ErrNotGranted, codes.NotFound, ""},
	"fsm.ErrRoleExists":    {fsm.ErrRoleExists, codes.AlreadyExists, ""},
	"fsm.ErrBuiltinRole":   {fsm.ErrBuiltinRole, codes.InvalidArgument, ""},
	// A damaged value never leaves the node bare: the read that found it
	// returns node.ErrDataLoss wrapping it (see TestWrappedErrorsTakeTheFirstMatchingCode).
	"fsm.ErrCorrupt":            {fsm.ErrCorrupt, codes.Internal, ""},
	"watch.ErrInvalidPrefix":    {watch.ErrInvalidPrefix, codes.InvalidArgument, ""},
	"watch.ErrInvalidKey":       {watch.ErrInvalidKey, codes.InvalidArgument, ""},
	"watch.ErrLimitExceeded":    {watch.ErrLimitExceeded, codes.ResourceExhausted, ""},
	"watch.ErrClosed":           {watch.ErrClosed, codes.Unavailable, pb.ReasonNotApplied},
	"watch.ErrCompacted":        {watch.ErrCompacted, codes.OutOfRange, ""},
	"keyspace.ErrInvalidKey":    {keyspace.ErrInvalidKey, codes.InvalidArgument, ""},
	"keyspace.ErrInvalidPrefix": {keyspace.ErrInvalidPrefix, codes.InvalidArgument, ""},
}

// declaredNames lists the exported package-level names of kind tok (var
// or const) starting with prefix, declared in the non-test files of the
// package in dir, as dir.Name.
func declaredNames(t *testing.T, dir string, tok token.Token, prefix string) []string {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join("..", dir, "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no Go files in ../%s: %v", dir, err)
	}
	var out []string
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, file, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != tok {
				continue
			}
			for _, spec := range gd.Specs {
				for _, name := range spec.(*ast.ValueSpec).Names {
					if strings.HasPrefix(name.Name, prefix) && name.IsExported() {
						out = append(out, dir+"."+name.Name)
					}
				}
			}
		}
	}
	return out
}

// TestEveryErrorKindHasItsCode: every exported error of node, fsm, watch
// and keyspace (bare and wrapped, as the node returns them) maps to its
// code and reason and keeps its message; none is forgotten.
func TestEveryErrorKindHasItsCode(t *testing.T) {
	seen := map[string]bool{}
	for _, dir := range []string{"node", "fsm", "watch", "keyspace"} {
		for _, name := range declaredNames(t, dir, token.VAR, "Err") {
			seen[name] = true
			if _, ok := edgeErrors[name]; !ok {
				t.Errorf("%s has no expected gRPC code in edgeErrors: decide it (codeOf in status.go) and add it", name)
			}
		}
	}
	for name, want := range edgeErrors {
		if !seen[name] {
			t.Errorf("edgeErrors lists %s, which is no longer declared: remove it", name)
		}
		for _, err := range []error{want.err, fmt.Errorf("put /k: %w", want.err)} {
			got := toStatus(err)
			st, _ := status.FromError(got)
			if st.Code() != want.code || st.Message() != err.Error() || reasonOf(st) != want.reason {
				t.Errorf("%s: toStatus(%q) = %v %q reason %q; want %v reason %q with the error's message",
					name, err, st.Code(), st.Message(), reasonOf(st), want.code, want.reason)
			}
			if code, reason := codeOf(err); code != want.code || reason != want.reason {
				t.Errorf("%s: codeOf = %v %q, want %v %q", name, code, reason, want.code, want.reason)
			}
		}
	}
}

// TestWrappedErrorsTakeTheFirstMatchingCode pins codeOf's order where the
// node returns one error wrapping several kinds.
func TestWrappedErrorsTakeTheFirstMatchingCode(t *testing.T) {
	corrupt := &fsm.CorruptError{Bucket: "kv", Key: []byte("/k"), Detail: "checksum mismatch"}
	for _, tc := range []struct {
		name   string
		err    error
		code   codes.Code
		reason string
	}{
		// node.readable: a read on a damaged node.
		{"data loss over a corrupt value", fmt.Errorf("%w; read from another node: %w", node.ErrDataLoss, corrupt), codes.DataLoss, ""},
		// node.writable: a write on a damaged node was not applied.
		{"not applied on a damaged node", fmt.Errorf("%w: this node found damaged stored data (%v); use another node", node.ErrNotApplied, corrupt), codes.Unavailable, pb.ReasonNotApplied},
		{"outcome unknown past the deadline", fmt.Errorf("%w: %w", node.ErrOutcomeUnknown, context.DeadlineExceeded), codes.DeadlineExceeded, ""},
		// Canceled or not, an unknown outcome must never read as not applied.
		{"outcome unknown when canceled", fmt.Errorf("%w: %w", node.ErrOutcomeUnknown, context.Canceled), codes.Unavailable, ""},
		{"outcome unknown while shutting down", errors.Join(node.ErrOutcomeUnknown, node.ErrShuttingDown), codes.Unavailable, ""},
		{"removed while shutting down", errors.Join(node.ErrRemoved, node.ErrShuttingDown), codes.FailedPrecondition, pb.ReasonRemoved},
		{"lease not found within an invalid txn", errors.Join(fsm.ErrLeaseNotFound, node.ErrInvalidArgument), codes.NotFound, ""},
		{"member removed (NotCaughtUp would say wait)", errors.Join(node.ErrMemberRemoved, node.ErrNotCaughtUp), codes.FailedPrecondition, ""},
		{"committed log read of a damaged entry", fmt.Errorf("read committed log (oldest index held 1): read log entry 3: %w",
			&node.LogCorruptError{Index: 3, Path: "raft.db", Detail: "checksum mismatch"}), codes.DataLoss, ""},
		{"outcome unknown over a damaged log entry", errors.Join(node.ErrOutcomeUnknown, &node.LogCorruptError{Index: 3}), codes.Unavailable, ""},
		{"a deadline alone", fmt.Errorf("read index: %w", context.DeadlineExceeded), codes.DeadlineExceeded, ""},
		{"a cancel alone", fmt.Errorf("read index: %w", context.Canceled), codes.Canceled, ""},
	} {
		st := status.Convert(toStatus(tc.err))
		if st.Code() != tc.code || reasonOf(st) != tc.reason {
			t.Errorf("%s: %v reason %q; want %v reason %q", tc.name, st.Code(), reasonOf(st), tc.code, tc.reason)
		}
	}

	// A NotLeaderError joined with a not-applied error still carries its
	// hint: the client follows it.
	nl := &node.NotLeaderError{LeaderID: "n3", LeaderAddr: "127.0.0.1:7103"}
	st := status.Convert(toStatus(errors.Join(nl, node.ErrNotApplied)))
	if st.Code() != codes.FailedPrecondition || len(st.Details()) != 1 {
		t.Fatalf("NotLeaderError joined with ErrNotApplied: %v %v, want FAILED_PRECONDITION with only the hint", st.Code(), st.Details())
	}
	if h, ok := st.Details()[0].(*pb.NotLeader); !ok || h.LeaderId != "n3" || h.LeaderAddr != "127.0.0.1:7103" {
		t.Fatalf("hint %v, want n3 at 127.0.0.1:7103", st.Details()[0])
	}
	// No leader known: the hint is there, empty, and the message says so.
	st = status.Convert(toStatus(&node.NotLeaderError{}))
	if h, ok := st.Details()[0].(*pb.NotLeader); !ok || h.LeaderAddr != "" || !strings.Contains(st.Message(), "no leader is known") {
		t.Fatalf("NotLeaderError without a leader: %q %v", st.Message(), st.Details())
	}
}

func TestNewStatusShapes(t *testing.T) {
	if toStatus(nil) != nil {
		t.Fatal("toStatus(nil) is not nil")
	}

	// The reason comes first, in the raftwatch domain, then the details.
	st := status.Convert(newStatus(codes.FailedPrecondition, "m", pb.ReasonRemoved, &pb.NotLeader{LeaderId: "n1"}))
	d := st.Details()
	if st.Code() != codes.FailedPrecondition || st.Message() != "m" || len(d) != 2 {
		t.Fatalf("newStatus = %v %q %v", st.Code(), st.Message(), d)
	}
	if ei, ok := d[0].(*errdetails.ErrorInfo); !ok || ei.Reason != pb.ReasonRemoved || ei.Domain != pb.ErrorDomain {
		t.Fatalf("first detail %v, want ErrorInfo %s in domain %s", d[0], pb.ReasonRemoved, pb.ErrorDomain)
	}
	if nl, ok := d[1].(*pb.NotLeader); !ok || nl.LeaderId != "n1" {
		t.Fatalf("second detail %v, want the NotLeader", d[1])
	}

	// No reason: no ErrorInfo (a client must not find one to misread).
	for _, err := range []error{
		newStatus(codes.Internal, "m", ""),
		invalidRequest("limit %d is too large (at most %d)", 5, 4),
		responseTooLarge("response of %d bytes exceeds %d", 9, 8),
	} {
		if st := status.Convert(err); len(st.Details()) != 0 {
			t.Errorf("%v carries details %v", err, st.Details())
		}
	}
	if st := status.Convert(invalidRequest("limit %d is too large (at most %d)", 5, 4)); st.Code() != codes.InvalidArgument || st.Message() != "limit 5 is too large (at most 4)" {
		t.Errorf("invalidRequest = %v %q", st.Code(), st.Message())
	}
	if st := status.Convert(responseTooLarge("response of %d bytes exceeds %d", 9, 8)); st.Code() != codes.ResourceExhausted || st.Message() != "response of 9 bytes exceeds 8" {
		t.Errorf("responseTooLarge = %v %q", st.Code(), st.Message())
	}
}

// TestCancelCodeOfEveryCause: each reason a watch is canceled carries the
// code that tells a client whether to resume elsewhere, re-list, or never
// come back.
func TestCancelCodeOfEveryCause(t *testing.T) {
	want := map[string]struct {
		cause watch.CancelCause
		code  codes.Code
	}{
		"watch.CauseUnknown":   {watch.CauseUnknown, codes.OK},
		"watch.CauseShutdown":  {watch.CauseShutdown, codes.Unavailable},
		"watch.CauseNoLeader":  {watch.CauseNoLeader, codes.Unavailable},
		"watch.CauseInternal":  {watch.CauseInternal, codes.Unavailable},
		"watch.CauseCompacted": {watch.CauseCompacted, codes.OutOfRange},
		"watch.CauseRemoved":   {watch.CauseRemoved, codes.FailedPrecondition},
	}
	for _, name := range declaredNames(t, "watch", token.CONST, "Cause") {
		if _, ok := want[name]; !ok {
			t.Errorf("%s has no expected code here: decide it in cancelCode and add it", name)
		}
	}
	for name, w := range want {
		if got := cancelCode(w.cause); got != w.code {
			t.Errorf("cancelCode(%s) = %v, want %v", name, got, w.code)
		}
	}
}
