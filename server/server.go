package server

import (
	"context"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"

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
	conns  *watchConns
	limits node.Limits
	// auth enforces the roles when set (RequireAuth).
	auth *authorizer
}

// New returns the services for n.
func New(n *node.Node, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	return &Server{node: n, log: log, conns: &watchConns{node: n, m: map[string]*connEntry{}}, limits: n.Limits()}
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

// NewGRPCServer returns a grpc.Server whose message limits follow the
// node's configured key, value and txn sizes (RecvLimit, SendLimit), with
// the services registered, and server reflection (so grpcurl and grpcui
// need no .proto file). With RequireAuth, every call is checked against
// the roles after the interceptors in opts (metrics) have seen it.
func (s *Server) NewGRPCServer(opts ...grpc.ServerOption) *grpc.Server {
	opts = append([]grpc.ServerOption{grpc.MaxRecvMsgSize(RecvLimit(s.limits)), grpc.MaxSendMsgSize(SendLimit(s.limits))}, opts...)
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
	r, err := s.node.List(ctx, req.Prefix, node.ListOptions{Start: req.StartKey, Revision: req.Revision,
		Limit: int(req.Limit), MaxBytes: ListPageBytes}, c)
	if err != nil {
		return nil, toStatus(err)
	}
	out := &pb.ListResponse{Revision: r.Revision, More: r.More, NextKey: r.Next, Kvs: make([]*pb.KeyValue, 0, len(r.KVs))}
	// A caller that may read only part of the prefix gets that part: the
	// page's bounds (more, next_key) stay those of the whole prefix.
	var acc *access
	if c := callerOf(ctx); c != nil && !c.access().mayReadAll(req.Prefix) {
		acc = c.access()
	}
	for i := range r.KVs {
		if acc == nil || acc.mayRead(r.KVs[i].Key) {
			out.Kvs = append(out.Kvs, toKV(&r.KVs[i]))
		}
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
