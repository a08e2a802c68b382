package server

import (
	"bytes"
	"context"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"

	"github.com/raftwatch/raftwatch/fsm"
	"github.com/raftwatch/raftwatch/keyspace"
	"github.com/raftwatch/raftwatch/node"
	pb "github.com/raftwatch/raftwatch/proto"
)

// framing is the room a message needs besides its keys and values.
const framing = 64 << 10

// RecvLimit is the largest request a node with limits l accepts: a
// maximum-size value with its key, or a maximum-size txn, with framing.
// A larger request is refused by gRPC with RESOURCE_EXHAUSTED; one under
// it but over the node's limits by the node, with INVALID_ARGUMENT.
func RecvLimit(l node.Limits) int {
	return max(l.MaxValueSize+l.MaxKeySize, l.MaxTxnBytes) + framing
}

// SendLimit is the largest response a node with limits l sends: a watch
// event carrying a maximum-size value, its previous value (also
// maximum-size) and its key, with framing (a watch batch holding such an
// event goes alone), or a committed log entry holding a maximum-size txn.
func SendLimit(l node.Limits) int {
	return max(2*l.MaxValueSize+l.MaxKeySize, l.MaxTxnBytes) + framing
}

// Server implements the KV, Watch and Cluster services over a node, and
// registers the Lease, Maintenance, Auth and Debug services beside them.
type Server struct {
	pb.UnimplementedKVServer
	pb.UnimplementedWatchServer
	pb.UnimplementedClusterServer

	node   *node.Node
	log    *slog.Logger
	conns  *watchClients
	limits node.Limits
	// auth enforces the roles when set (RequireAuth).
	auth *authorizer
}

// New returns the services for n.
func New(n *node.Node, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	return &Server{node: n, log: log, conns: &watchClients{node: n, m: map[string]*clientEntry{}}, limits: n.Limits()}
}

// RequireAuth makes the server enforce the roles replicated in the state
// machine (auth.go) on every call, taking the caller's identity from its
// verified client certificate; adminIdentity has every right whatever the
// roles say. Call it before NewGRPCServer, on a server whose listener
// requires and verifies client certificates.
func (s *Server) RequireAuth(adminIdentity string) {
	s.auth = &authorizer{node: s.node, adminIdentity: adminIdentity}
}

// Register adds the services to g.
func (s *Server) Register(g *grpc.Server) {
	pb.RegisterKVServer(g, s)
	pb.RegisterWatchServer(g, s)
	pb.RegisterClusterServer(g, s)
	pb.RegisterLeaseServer(g, &leaseServer{node: s.node, log: s.log})
	pb.RegisterMaintenanceServer(g, &maintenanceServer{node: s.node, log: s.log})
	pb.RegisterDebugServer(g, &debugServer{node: s.node})
	pb.RegisterAuthServer(g, &authServer{node: s.node, log: s.log, auth: s.auth})
}

// streamWorkers is how many goroutines the gRPC server keeps to run calls
// on. Without them every call starts a goroutine whose stack then grows,
// by copying, through gRPC's and our handlers (12% of a node's CPU under
// linearizable gets); a kept goroutine has grown its stack already. A call
// that finds every worker busy (watch streams hold one for their life)
// gets a goroutine of its own, as before. In the bench's get and put loads
// it saved 5-10% of the server's CPU per operation.
const streamWorkers = 256

// NewGRPCServer returns a grpc.Server whose message limits follow the
// node's configured key, value and txn sizes (RecvLimit, SendLimit), with
// the services registered, and server reflection (so grpcurl and grpcui
// need no .proto file). With RequireAuth, every call is checked against
// the roles after the interceptors in opts (metrics) have seen it.
func (s *Server) NewGRPCServer(opts ...grpc.ServerOption) *grpc.Server {
	opts = append([]grpc.ServerOption{
		grpc.MaxRecvMsgSize(RecvLimit(s.limits)), grpc.MaxSendMsgSize(SendLimit(s.limits)),
		grpc.NumStreamWorkers(streamWorkers),
	}, opts...)
	if s.auth != nil {
		opts = append(opts, grpc.ChainUnaryInterceptor(s.auth.unary), grpc.ChainStreamInterceptor(s.auth.stream))
	}
	g := grpc.NewServer(opts...)
	s.Register(g)
	reflection.Register(g)
	return g
}

func consistency(c pb.Consistency) (node.Consistency, error) {
	switch c {
	case pb.Consistency_LINEARIZABLE:
		return node.Linearizable, nil
	case pb.Consistency_SERIALIZABLE:
		return node.Serializable, nil
	}
	return 0, invalidRequest("unknown consistency %d: use LINEARIZABLE or SERIALIZABLE", c)
}

func condition(c *pb.Condition) (*node.Condition, error) {
	if c == nil {
		return nil, nil
	}
	switch r := c.Require.(type) {
	case *pb.Condition_ModRevision:
		if r.ModRevision == 0 {
			return nil, invalidRequest("condition mod_revision must be > 0 (use absent=true to require that the key does not exist)")
		}
		return &node.Condition{ModRevision: r.ModRevision}, nil
	case *pb.Condition_Absent:
		if !r.Absent {
			return nil, invalidRequest("condition absent=false means nothing; leave the condition unset")
		}
		return &node.Condition{Absent: true}, nil
	}
	return nil, invalidRequest("empty condition: set mod_revision or absent")
}

func toKV(kv *node.KeyValue) *pb.KeyValue {
	if kv == nil {
		return nil
	}
	return &pb.KeyValue{Key: kv.Key, Value: kv.Value, CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision, Version: kv.Version,
		Lease: kv.Lease}
}

// Put implements KV.Put.
func (s *Server) Put(ctx context.Context, req *pb.PutRequest) (*pb.PutResponse, error) {
	cond, err := condition(req.Condition)
	if err != nil {
		return nil, err
	}
	r, err := s.node.Put(ctx, req.Key, req.Value, node.WriteOptions{PrevKV: req.PrevKv, If: cond, Lease: req.Lease})
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.PutResponse{Revision: r.Revision, Succeeded: r.Succeeded, PrevKv: toKV(r.Prev), ModRevision: r.ModRevision}, nil
}

// Delete implements KV.Delete.
func (s *Server) Delete(ctx context.Context, req *pb.DeleteRequest) (*pb.DeleteResponse, error) {
	cond, err := condition(req.Condition)
	if err != nil {
		return nil, err
	}
	r, err := s.node.Delete(ctx, req.Key, node.WriteOptions{PrevKV: req.PrevKv, If: cond})
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.DeleteResponse{Revision: r.Revision, Succeeded: r.Succeeded, Deleted: r.Deleted, PrevKv: toKV(r.Prev), ModRevision: r.ModRevision}, nil
}

// Get implements KV.Get.
func (s *Server) Get(ctx context.Context, req *pb.GetRequest) (*pb.GetResponse, error) {
	c, err := consistency(req.Consistency)
	if err != nil {
		return nil, err
	}
	kv, rev, err := s.node.Get(ctx, req.Key, c)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.GetResponse{Kv: toKV(kv), Revision: rev}, nil
}

// ListPageBytes bounds one List response: its pairs' keys, values and
// fsm.KVOverhead add up to at most this, or it is one pair alone. A page
// thus stays under SendLimit even when it holds a maximum-size value, and
// a prefix of any size is read in pages.
const ListPageBytes = node.DefaultMaxValueSize

// List implements KV.List.
func (s *Server) List(ctx context.Context, req *pb.ListRequest) (*pb.ListResponse, error) {
	c, err := consistency(req.Consistency)
	if err != nil {
		return nil, err
	}
	const maxLimit = 1 << 31
	if req.Limit > maxLimit {
		return nil, invalidRequest("limit %d is too large (at most %d)", req.Limit, maxLimit)
	}
	o := node.ListOptions{Start: req.StartKey, Revision: req.Revision, Limit: int(req.Limit), MaxBytes: ListPageBytes}
	if cl := callerOf(ctx); cl != nil && !cl.access().mayReadAll(req.Prefix) {
		// The request is checked as the node checks it, before any read.
		if err := keyspace.CheckPrefix(req.Prefix, s.limits.MaxKeySize); err != nil {
			return nil, toStatus(err)
		}
		if len(req.StartKey) > 0 && !bytes.HasPrefix(req.StartKey, req.Prefix) {
			return nil, invalidRequest("start key %.80q is not a key under the prefix %.80q", req.StartKey, req.Prefix)
		}
		acc := cl.access()
		subs := acc.readablePrefixes(req.Prefix)
		if len(subs) == 0 { // revoked since the call was checked
			return nil, permissionDenied("identity %q may read no key under %q (roles: %s)", acc.identity, req.Prefix, rolesText(acc))
		}
		return s.listReadable(ctx, subs, o, c)
	}
	r, err := s.node.List(ctx, req.Prefix, o, c)
	if err != nil {
		return nil, toStatus(err)
	}
	out := &pb.ListResponse{Revision: r.Revision, More: r.More, NextKey: r.Next, Kvs: make([]*pb.KeyValue, 0, len(r.KVs))}
	for i := range r.KVs {
		out.Kvs = append(out.Kvs, toKV(&r.KVs[i]))
	}
	return out, nil
}

// listReadable serves a List page to a caller that may read only part of
// the prefix: from the prefixes under it that the caller may read (subs,
// in key order, none under another), never reading a key outside them, so
// that neither the page nor its next_key names one. The first read of the
// page has consistency c; the others read at its revision, as later pages
// do. next_key lies in a readable prefix: the first key left out, or the
// next prefix itself when the page filled up at the end of one (the next
// page may then come back empty).
func (s *Server) listReadable(ctx context.Context, subs [][]byte, o node.ListOptions, c node.Consistency) (*pb.ListResponse, error) {
	out := &pb.ListResponse{Revision: o.Revision, Kvs: []*pb.KeyValue{}}
	limit, budget := o.Limit, o.MaxBytes
	read := false
	for _, sub := range subs {
		start := sub
		if bytes.Compare(o.Start, sub) > 0 {
			if !bytes.HasPrefix(o.Start, sub) {
				continue // every key under sub lies before the start
			}
			start = o.Start
		}
		if len(out.Kvs) > 0 && (o.Limit > 0 && limit == 0 || budget <= 0) {
			out.More, out.NextKey = true, start
			return out, nil
		}
		r, err := s.node.List(ctx, sub, node.ListOptions{Start: start, Revision: out.Revision, Limit: limit, MaxBytes: budget}, c)
		if err != nil {
			return nil, toStatus(err)
		}
		out.Revision, c, read = r.Revision, node.Serializable, true
		for i := range r.KVs {
			kv := &r.KVs[i]
			size := len(kv.Key) + len(kv.Value) + fsm.KVOverhead
			if len(out.Kvs) > 0 && size > budget {
				// A pair the node sends alone, after pairs of other
				// prefixes: it starts the next page.
				out.More, out.NextKey = true, kv.Key
				return out, nil
			}
			out.Kvs = append(out.Kvs, toKV(kv))
			budget -= size
			if o.Limit > 0 {
				limit--
			}
		}
		if r.More {
			out.More, out.NextKey = true, r.Next
			return out, nil
		}
	}
	if !read && out.Revision == 0 {
		// Every readable prefix lies before the start: an empty last page,
		// at the revision a read of the last one gives.
		r, err := s.node.List(ctx, subs[len(subs)-1], node.ListOptions{Limit: 1}, c)
		if err != nil {
			return nil, toStatus(err)
		}
		out.Revision = r.Revision
	}
	return out, nil
}

// Status implements Cluster.Status.
func (s *Server) Status(context.Context, *pb.StatusRequest) (*pb.StatusResponse, error) {
	fig := s.node.Figures()
	st := fig.Status
	r := &pb.StatusResponse{Id: st.ID, Role: st.Role, LeaderId: st.LeaderID, LeaderAddr: st.LeaderAddr,
		Term: st.Term, CommitIndex: st.CommitIndex, AppliedIndex: st.AppliedIndex, FsmIndex: st.FSMIndex,
		LastLogIndex: st.LastLogIndex, Watchers: uint64(st.Watchers), ClientAddr: st.ClientAddr,
		HistoryOldestRevision: st.HistoryOldest, HistoryEvents: st.HistoryEvents, HistoryBytes: st.HistoryBytes,
		WatchersCatchingUp: uint64(st.WatchersCatchingUp), Healthy: st.Healthy, UnhealthyReason: st.UnhealthyReason,
		ScrubPasses: st.Scrub.Passes, ScrubLastPassValues: st.Scrub.LastPassValues, ScrubMismatches: st.Scrub.Mismatches,
		ApplyLag: fig.ApplyLag, DispatcherLag: fig.DispatcherLag, StateDbBytes: fig.StateDBBytes,
		RaftDbBytes: fig.RaftDBBytes, Leases: int64(fig.Leases)}
	r.Ready, r.NotReadyReason, _ = s.node.Ready()
	if !st.Scrub.LastPassEnd.IsZero() {
		r.ScrubLastPassUnixMs = st.Scrub.LastPassEnd.UnixMilli()
	}
	r.LogScrubPasses, r.LogScrubLastPassEntries, r.LogScrubMismatches =
		st.LogScrub.Passes, st.LogScrub.LastPassValues, st.LogScrub.Mismatches
	if !st.LogScrub.LastPassEnd.IsZero() {
		r.LogScrubLastPassUnixMs = st.LogScrub.LastPassEnd.UnixMilli()
	}
	return r, nil
}

// Members implements Cluster.Members.
func (s *Server) Members(context.Context, *pb.MembersRequest) (*pb.MembersResponse, error) {
	ms, err := s.node.Members()
	if err != nil {
		return nil, toStatus(err)
	}
	out := &pb.MembersResponse{}
	for _, m := range ms {
		out.Members = append(out.Members, &pb.Member{Id: m.ID, RaftAddr: m.RaftAddr, ClientAddr: m.ClientAddr,
			Voter: m.Voter, Leader: m.Leader, Reachable: m.Reachable})
	}
	return out, nil
}

// AddVoter implements Cluster.AddVoter: it logs the new member's progress
// whenever it changes.
func (s *Server) AddVoter(ctx context.Context, req *pb.AddVoterRequest) (*pb.AddVoterResponse, error) {
	var last node.AddProgress
	progress := func(p node.AddProgress) {
		switch {
		case p.Err != nil && (last.Err == nil || p.Err.Error() != last.Err.Error()):
			s.log.Info("new member not answering yet", "id", req.Id, "client_addr", req.ClientAddr, "err", p.Err)
		case p.Err == nil && (last.Err != nil || p.Applied != last.Applied):
			s.log.Info("new member catching up", "id", req.Id, "applied", p.Applied, "commit", p.Commit)
		}
		last = p
	}
	idx, err := s.node.AddVoter(ctx, req.Id, req.RaftAddr, req.ClientAddr, req.Force, progress)
	if err != nil {
		s.log.Warn("member add failed", "id", req.Id, "raft_addr", req.RaftAddr, "err", err)
		return nil, toStatus(err)
	}
	s.log.Info("voter added", "id", req.Id, "raft_addr", req.RaftAddr, "index", idx)
	return &pb.AddVoterResponse{Index: idx}, nil
}

// RemoveServer implements Cluster.RemoveServer.
func (s *Server) RemoveServer(ctx context.Context, req *pb.RemoveServerRequest) (*pb.RemoveServerResponse, error) {
	idx, err := s.node.RemoveServer(ctx, req.Id, req.Force)
	if err != nil {
		return nil, toStatus(err)
	}
	s.log.Info("server removed", "id", req.Id, "index", idx)
	return &pb.RemoveServerResponse{Index: idx}, nil
}

// SetMember implements Cluster.SetMember.
func (s *Server) SetMember(ctx context.Context, req *pb.SetMemberRequest) (*pb.SetMemberResponse, error) {
	idx, err := s.node.SetMember(ctx, req.Id, req.ClientAddr)
	if err != nil {
		return nil, toStatus(err)
	}
	s.log.Info("member client address recorded", "id", req.Id, "client_addr", req.ClientAddr, "index", idx)
	return &pb.SetMemberResponse{Index: idx}, nil
}
