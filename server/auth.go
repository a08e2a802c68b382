package server

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"slices"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/raftwatch/raftwatch/certs"
	"github.com/raftwatch/raftwatch/fsm"
	"github.com/raftwatch/raftwatch/node"
	pb "github.com/raftwatch/raftwatch/proto"
)

// Authorization (serve --auth). A caller's identity is the common name of
// its verified client certificate; a member node is recognised by its node
// certificate (certs.NodeID), never by a common name. What a caller may do
// is decided here, once per call, by the rule of the method it calls
// (methodRules) and the roles the state machine replicates (node.Auth, an
// in-memory view): the interceptors apply the rule before the handler
// runs, so a refused call changes nothing. List and Watch, whose results
// may hold keys the caller may not read, deliver only the keys it may
// read: a list reads only its readable prefixes (listReadable), a watch
// checks each event against the roles current when it is sent, so a
// revoked role stops delivery.
//
// A node checks with the roles it has applied. A call only the leader
// serves (servedByLeader) is checked only by a leader that has applied an
// entry of its own term (node.LeaderCurrent), so its roles include every
// change committed before; a follower answers it with the leader hint, and
// a new leader still applying with the retryable ErrNotReady. A change is
// thus in force for every call checked after it applied; a call checked
// just before (a write racing the revoke of its role) still goes through.

// rule is what a method requires of its caller.
type rule int

const (
	// ruleOpen: any caller, identified or not.
	ruleOpen rule = iota
	// ruleKeys: a role, and the access the request's keys need
	// (checkKeys); a watch's creates are checked as they arrive on the
	// stream.
	ruleKeys
	// ruleLeases: a readwrite permission on some prefix; a KeepAlive
	// stream checks it again for each renewal.
	ruleLeases
	// ruleLeaseRevoke: ruleLeases, and readwrite on every key attached to
	// the lease, which the revoke deletes (etcd's rule).
	ruleLeaseRevoke
	// ruleMember: a role, or a member node (a node certificate naming a
	// member).
	ruleMember
	// ruleSelfOrAdmin: admin, or the member the request names itself (by
	// its node certificate).
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
	pb.Lease_Revoke_FullMethodName:        ruleLeaseRevoke,
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

// certOf returns the verified client certificate of ctx's call (nil when
// it has none).
func certOf(ctx context.Context) *x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return nil
	}
	return ti.State.VerifiedChains[0][0]
}

// identityOf returns the common name of the verified client certificate
// of ctx's call ("" when it has none).
func identityOf(ctx context.Context) string {
	if c := certOf(ctx); c != nil {
		return c.Subject.CommonName
	}
	return ""
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

// readablePrefixes returns the prefixes under prefix that a may read (it
// may not read all of prefix): those of its permissions, in key order,
// without one under another.
func (a *access) readablePrefixes(prefix []byte) [][]byte {
	var under [][]byte
	for _, p := range a.perms {
		if bytes.HasPrefix(p.Prefix, prefix) {
			under = append(under, p.Prefix)
		}
	}
	slices.SortFunc(under, bytes.Compare)
	var out [][]byte
	for _, p := range under {
		// Sorted, a prefix comes before every key under it, and every key
		// between them is under it too: the last one kept is the only one
		// p can be under.
		if len(out) == 0 || !bytes.HasPrefix(p, out[len(out)-1]) {
			out = append(out, p)
		}
	}
	return out
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
	cert := certOf(ctx)
	if cert == nil || cert.Subject.CommonName == "" {
		return nil, unauthenticated("%s needs a verified client certificate: this node enforces roles (serve --auth)", method)
	}
	identity := cert.Subject.CommonName
	// The node id of a node certificate ("" for a client's): what a member
	// node is known by.
	nodeID, _ := certs.NodeID(cert)
	if known && servedByLeader(method, req) {
		if err := z.node.LeaderCurrent(); err != nil {
			return nil, toStatus(err)
		}
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
		if m, ok := req.(*pb.SetMemberRequest); !acc.admin && (!ok || nodeID == "" || m.Id != nodeID) {
			err = permissionDenied("%s: identity %q may record only the address of the member its node certificate names", method, identity)
		}
	case r == ruleMember && !acc.hasRole() && (nodeID == "" || !z.node.IsMember(nodeID)):
		err = permissionDenied("%s: identity %q has no role, and its certificate is not a member's node certificate", method, identity)
	case (r == ruleLeases || r == ruleLeaseRevoke) && !acc.mayHoldLeases():
		err = permissionDenied("%s: identity %q has no readwrite permission, which leases need (roles: %s)", method, identity, rolesText(acc))
	case r == ruleLeaseRevoke:
		err = z.checkRevoke(ctx, acc, req)
	case r == ruleKeys && req == nil:
		// A watch stream: each create is checked as it arrives, and a
		// refused one gets its own CANCELED (watchSession.mayWatch).
	case r == ruleKeys && !acc.hasRole():
		err = permissionDenied("%s: identity %q has no role (ask an admin: raftwatch user grant %s ROLE)", method, identity, identity)
	case r == ruleKeys:
		err = checkKeys(acc, req)
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

// checkRevoke lets a revoke through when a may write every key attached
// to the lease: revoking deletes them. It runs on the current leader
// (LeaderCurrent), which reads the keys from its applied state; a lease
// that does not exist is left to the handler (NOT_FOUND).
func (z *authorizer) checkRevoke(ctx context.Context, a *access, req any) error {
	r, ok := req.(*pb.LeaseRevokeRequest)
	if !ok {
		return permissionDenied("no lease rule for a %T", req)
	}
	if a.admin {
		return nil
	}
	info, err := z.node.TimeToLive(ctx, r.Id, true, node.Serializable)
	if errors.Is(err, fsm.ErrLeaseNotFound) {
		return nil
	}
	if err != nil {
		return toStatus(err)
	}
	for _, k := range info.Keys {
		if !a.mayWrite(k) {
			// The key's name is not told: a may not be able to read it.
			return permissionDenied("identity %q may not revoke lease %x: a key attached to it is outside its readwrite permissions (roles: %s)",
				a.identity, r.Id, rolesText(a))
		}
	}
	return nil
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
