package server

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/raftwatch/raftwatch/fsm"
	"github.com/raftwatch/raftwatch/node"
	pb "github.com/raftwatch/raftwatch/proto"
)

// Authorization (serve --auth). A caller's identity is the common name of
// its verified client certificate. What it may do is decided here, once
// per call, by the rule of the method it calls (methodRules) and the roles
// the state machine replicates (node.Auth, an in-memory view): the
// interceptors apply the rule before the handler runs, so a refused call
// changes nothing. List and Watch, whose results may hold keys the caller
// may not read, also filter what they deliver through the caller's access;
// a watch checks each event against the roles current when it is sent, so
// a revoked role stops delivery.
//
// A node checks with the roles it has applied. A follower may not have
// applied a grant the leader has just acknowledged, so a call only the
// leader serves (servedByLeader) that a follower would refuse gets the
// leader hint instead: the leader, whose roles are current, decides.

// rule is what a method requires of its caller.
type rule int

const (
	// ruleOpen: any caller, identified or not.
	ruleOpen rule = iota
	// ruleKeys: a role, and the access the request's keys need
	// (checkKeys); a watch's creates are checked as they arrive on the
	// stream.
	ruleKeys
	// ruleLeases: a readwrite permission on some prefix.
	ruleLeases
	// ruleMember: a role, or a member node (identity = a member id).
	ruleMember
	// ruleSelfOrAdmin: admin, or the member the request names itself.
	ruleSelfOrAdmin
	// ruleAdmin: admin only.
	ruleAdmin
)

// methodRules is the rule of every method the node serves. A method not
// listed here is refused to every caller: a new method must be given a
// rule before anyone can call it.
var methodRules = map[string]rule{
	pb.KV_Put_FullMethodName:      ruleKeys,
	pb.KV_Get_FullMethodName:      ruleKeys,
	pb.KV_Delete_FullMethodName:   ruleKeys,
	pb.KV_List_FullMethodName:     ruleKeys,
	pb.KV_Txn_FullMethodName:      ruleKeys,
	pb.Watch_Watch_FullMethodName: ruleKeys,

	pb.Lease_Grant_FullMethodName:         ruleLeases,
	pb.Lease_Revoke_FullMethodName:        ruleLeases,
	pb.Lease_KeepAlive_FullMethodName:     ruleLeases,
	pb.Lease_KeepAliveOnce_FullMethodName: ruleLeases,
	pb.Lease_TimeToLive_FullMethodName:    ruleLeases,
	pb.Lease_Leases_FullMethodName:        ruleLeases,

	pb.Cluster_Status_FullMethodName:       ruleMember,
	pb.Cluster_Members_FullMethodName:      ruleMember,
	pb.Cluster_SetMember_FullMethodName:    ruleSelfOrAdmin,
	pb.Cluster_AddVoter_FullMethodName:     ruleAdmin,
	pb.Cluster_RemoveServer_FullMethodName: ruleAdmin,
	pb.Debug_Log_FullMethodName:            ruleAdmin,
	pb.Maintenance_Snapshot_FullMethodName: ruleAdmin,

	pb.Auth_RoleAdd_FullMethodName:    ruleAdmin,
	pb.Auth_RoleDelete_FullMethodName: ruleAdmin,
	pb.Auth_RoleGet_FullMethodName:    ruleAdmin,
	pb.Auth_RoleList_FullMethodName:   ruleAdmin,
	pb.Auth_RoleGrant_FullMethodName:  ruleAdmin,
	pb.Auth_RoleRevoke_FullMethodName: ruleAdmin,
	pb.Auth_UserGrant_FullMethodName:  ruleAdmin,
	pb.Auth_UserRevoke_FullMethodName: ruleAdmin,
	pb.Auth_UserGet_FullMethodName:    ruleAdmin,
	pb.Auth_UserList_FullMethodName:   ruleAdmin,
	pb.Auth_WhoAmI_FullMethodName:     ruleOpen,
}

// openServices are the services any caller may use: health checks and
// server reflection.
var openServices = []string{"/grpc.health.v1.Health/", "/grpc.reflection.v1.ServerReflection/",
	"/grpc.reflection.v1alpha.ServerReflection/"}

// leaderMethods are the methods only the leader serves (besides Get and
// List at LINEARIZABLE consistency).
var leaderMethods = map[string]bool{
	pb.KV_Put_FullMethodName: true, pb.KV_Delete_FullMethodName: true, pb.KV_Txn_FullMethodName: true,
	pb.Lease_Grant_FullMethodName: true, pb.Lease_Revoke_FullMethodName: true, pb.Lease_KeepAlive_FullMethodName: true,
	pb.Lease_KeepAliveOnce_FullMethodName: true, pb.Lease_TimeToLive_FullMethodName: true, pb.Lease_Leases_FullMethodName: true,
	pb.Cluster_AddVoter_FullMethodName: true, pb.Cluster_RemoveServer_FullMethodName: true, pb.Cluster_SetMember_FullMethodName: true,
	pb.Auth_RoleAdd_FullMethodName: true, pb.Auth_RoleDelete_FullMethodName: true, pb.Auth_RoleGet_FullMethodName: true,
	pb.Auth_RoleList_FullMethodName: true, pb.Auth_RoleGrant_FullMethodName: true, pb.Auth_RoleRevoke_FullMethodName: true,
	pb.Auth_UserGrant_FullMethodName: true, pb.Auth_UserRevoke_FullMethodName: true, pb.Auth_UserGet_FullMethodName: true,
	pb.Auth_UserList_FullMethodName: true,
}

// servedByLeader reports whether only the leader serves method with req.
func servedByLeader(method string, req any) bool {
	switch r := req.(type) {
	case *pb.GetRequest:
		return r.Consistency == pb.Consistency_LINEARIZABLE
	case *pb.ListRequest:
		return r.Consistency == pb.Consistency_LINEARIZABLE
	}
	return leaderMethods[method]
}

func ruleOf(method string) (rule, bool) {
	for _, s := range openServices {
		if strings.HasPrefix(method, s) {
			return ruleOpen, true
		}
	}
	r, ok := methodRules[method]
	return r, ok
}

// authorizer enforces the rules on a node.
type authorizer struct {
	node *node.Node
	// adminIdentity is always admin (serve --auth-admin-identity), so a
	// new cluster can be set up.
	adminIdentity string
}

// identityOf returns the common name of the verified client certificate
// of ctx's call ("" when it has none).
func identityOf(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return ""
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return ""
	}
	return ti.State.VerifiedChains[0][0].Subject.CommonName
}

// access is what one identity may do under one authorization view.
type access struct {
	identity string
	roles    []string
	admin    bool
	perms    []fsm.Permission // of all its roles
}

func (z *authorizer) accessOf(identity string, view *node.Auth) *access {
	a := &access{identity: identity, roles: view.UserRoles(identity)}
	a.admin = identity == z.adminIdentity || slices.Contains(a.roles, fsm.AdminRole)
	for _, name := range a.roles {
		if r, ok := view.Role(name); ok {
			a.perms = append(a.perms, r.Permissions...)
		}
	}
	return a
}

func (a *access) hasRole() bool { return a.admin || len(a.roles) > 0 }

// mayRead reports whether a may read key.
func (a *access) mayRead(key []byte) bool {
	return a.admin || slices.ContainsFunc(a.perms, func(p fsm.Permission) bool { return bytes.HasPrefix(key, p.Prefix) })
}

// mayWrite reports whether a may write key.
func (a *access) mayWrite(key []byte) bool {
	return a.admin || slices.ContainsFunc(a.perms, func(p fsm.Permission) bool { return p.ReadWrite && bytes.HasPrefix(key, p.Prefix) })
}

// mayWriteAll reports whether one readwrite permission of a covers every
// key under prefix.
func (a *access) mayWriteAll(prefix []byte) bool { return a.mayWrite(prefix) }

// mayReadAll reports whether a may read every key under prefix.
func (a *access) mayReadAll(prefix []byte) bool { return a.mayRead(prefix) }

// mayReadSome reports whether a may read some key under prefix: a
// permission covers it or lies under it.
func (a *access) mayReadSome(prefix []byte) bool {
	return a.admin || slices.ContainsFunc(a.perms, func(p fsm.Permission) bool {
		return bytes.HasPrefix(prefix, p.Prefix) || bytes.HasPrefix(p.Prefix, prefix)
	})
}

// mayHoldLeases reports whether a has readwrite access somewhere: a lease
// is only useful to attach keys it writes.
func (a *access) mayHoldLeases() bool {
	return a.admin || slices.ContainsFunc(a.perms, func(p fsm.Permission) bool { return p.ReadWrite })
}

// caller is the identity of one call, with its access under the newest
// authorization view (recomputed when the view changes).
type caller struct {
	z        *authorizer
	identity string
	cached   atomic.Pointer[cachedAccess]
}

type cachedAccess struct {
	view *node.Auth
	acc  *access
}

// access returns the caller's access under the roles applied now.
func (c *caller) access() *access {
	view := c.z.node.Auth()
	if ca := c.cached.Load(); ca != nil && ca.view == view {
		return ca.acc
	}
	acc := c.z.accessOf(c.identity, view)
	c.cached.Store(&cachedAccess{view: view, acc: acc})
	return acc
}

type callerKey struct{}

// callerOf returns the caller the interceptors identified (nil when the
// node does not enforce authorization).
func callerOf(ctx context.Context) *caller {
	c, _ := ctx.Value(callerKey{}).(*caller)
	return c
}

// authorize applies method's rule to the caller of ctx; req is the
// request of a unary call (nil for a stream).
func (z *authorizer) authorize(ctx context.Context, method string, req any) (*caller, error) {
	r, known := ruleOf(method)
	if known && r == ruleOpen {
		return nil, nil
	}
	identity := identityOf(ctx)
	if identity == "" {
		return nil, unauthenticated("%s needs a verified client certificate: this node enforces roles (serve --auth)", method)
	}
	c := &caller{z: z, identity: identity}
	acc := c.access()
	var err error
	switch {
	case !known:
		err = permissionDenied("%s has no authorization rule; nobody may call it", method)
	case r == ruleAdmin && !acc.admin:
		err = permissionDenied("%s is for admins; identity %q is not one (ask an admin: raftwatch user grant %s admin)", method, identity, identity)
	case r == ruleSelfOrAdmin:
		if m, ok := req.(*pb.SetMemberRequest); !acc.admin && (!ok || m.Id != identity) {
			err = permissionDenied("%s: identity %q may record only its own member's address", method, identity)
		}
	case r == ruleMember && !acc.hasRole() && !z.node.IsMember(identity):
		err = permissionDenied("%s: identity %q has no role and is not a member node", method, identity)
	case r == ruleLeases && !acc.mayHoldLeases():
		err = permissionDenied("%s: identity %q has no readwrite permission, which leases need (roles: %s)", method, identity, rolesText(acc))
	case r == ruleKeys && req == nil:
		// A watch stream: each create is checked as it arrives, and a
		// refused one gets its own CANCELED (watchSession.mayWatch).
	case r == ruleKeys && !acc.hasRole():
		err = permissionDenied("%s: identity %q has no role (ask an admin: raftwatch user grant %s ROLE)", method, identity, identity)
	case r == ruleKeys:
		err = checkKeys(acc, req)
	}
	if err != nil {
		if known && servedByLeader(method, req) {
			if hint := z.node.LeaderHint(); hint != nil {
				return nil, toStatus(hint)
			}
		}
		return nil, err
	}
	return c, nil
}

func rolesText(a *access) string {
	if len(a.roles) == 0 {
		return "none"
	}
	return strings.Join(a.roles, ",")
}

// checkKeys checks the access a KV request's keys need.
func checkKeys(a *access, req any) error {
	switch r := req.(type) {
	case *pb.PutRequest:
		return needWrite(a, r.Key)
	case *pb.DeleteRequest:
		return needWrite(a, r.Key)
	case *pb.GetRequest:
		return needRead(a, r.Key)
	case *pb.ListRequest:
		if !a.mayReadSome(r.Prefix) {
			return permissionDenied("identity %q may read no key under %q (roles: %s)", a.identity, r.Prefix, rolesText(a))
		}
		return nil // the handler leaves out the keys it may not read
	case *pb.TxnRequest:
		for _, c := range r.Compares {
			if err := needRead(a, c.Key); err != nil {
				return err
			}
		}
		for _, op := range slices.Concat(r.Success, r.Failure) {
			var err error
			switch o := op.Op.(type) {
			case *pb.TxnOp_Put:
				err = needWrite(a, o.Put.GetKey())
			case *pb.TxnOp_Delete:
				err = needWrite(a, o.Delete.GetKey())
			case *pb.TxnOp_Get:
				err = needRead(a, o.Get.GetKey())
			case *pb.TxnOp_DeletePrefix:
				if p := o.DeletePrefix.GetPrefix(); !a.mayWriteAll(p) {
					err = permissionDenied("identity %q may not delete prefix %q: that needs a readwrite permission covering it (roles: %s)",
						a.identity, p, rolesText(a))
				}
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	return permissionDenied("no key rule for a %T", req)
}

func needRead(a *access, key []byte) error {
	if a.mayRead(key) {
		return nil
	}
	return permissionDenied("identity %q may not read %q (roles: %s)", a.identity, key, rolesText(a))
}

func needWrite(a *access, key []byte) error {
	if a.mayWrite(key) {
		return nil
	}
	return permissionDenied("identity %q may not write %q (roles: %s)", a.identity, key, rolesText(a))
}

// unary is the interceptor of unary calls.
func (z *authorizer) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	c, err := z.authorize(ctx, info.FullMethod, req)
	if err != nil {
		return nil, err
	}
	if c != nil {
		ctx = context.WithValue(ctx, callerKey{}, c)
	}
	return h(ctx, req)
}

// stream is the interceptor of streaming calls.
func (z *authorizer) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	c, err := z.authorize(ss.Context(), info.FullMethod, nil)
	if err != nil {
		return err
	}
	if c == nil {
		return h(srv, ss)
	}
	return h(srv, &callerStream{ServerStream: ss, ctx: context.WithValue(ss.Context(), callerKey{}, c)})
}

// callerStream is a stream whose context carries its caller.
type callerStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *callerStream) Context() context.Context { return s.ctx }
