package server

import (
	"context"
	"fmt"
	"log/slog"
	"slices"

	"github.com/raftwatch/raftwatch/fsm"
	"github.com/raftwatch/raftwatch/node"
	pb "github.com/raftwatch/raftwatch/proto"
)

// authServer implements the Auth service over a node. Who may call it is
// decided by the rules (auth.go), not here; but a node that does not
// enforce roles checks no caller, so there it refuses every change:
// roles are set up by the admin identity once the nodes run with --auth,
// never by whoever reaches a node before. Reads stay open.
type authServer struct {
	pb.UnimplementedAuthServer
	node *node.Node
	log  *slog.Logger
	// auth is nil when the node does not enforce roles.
	auth *authorizer
}

// enforcing refuses a change (method) on a node that does not enforce
// roles.
func (a *authServer) enforcing(method string) error {
	if a.auth == nil {
		return rolesNotEnforced(method)
	}
	return nil
}

func (a *authServer) changed(what string, index uint64, err error, attrs ...any) (*pb.AuthChangeResponse, error) {
	if err != nil {
		return nil, toStatus(err)
	}
	a.log.Info(what, append(attrs, "index", index)...)
	return &pb.AuthChangeResponse{Revision: index}, nil
}

// RoleAdd implements Auth.RoleAdd.
func (a *authServer) RoleAdd(ctx context.Context, req *pb.RoleAddRequest) (*pb.AuthChangeResponse, error) {
	if err := a.enforcing(pb.Auth_RoleAdd_FullMethodName); err != nil {
		return nil, err
	}
	idx, err := a.node.RoleAdd(ctx, req.Name)
	return a.changed("role added", idx, err, "role", req.Name)
}

// RoleDelete implements Auth.RoleDelete.
func (a *authServer) RoleDelete(ctx context.Context, req *pb.RoleDeleteRequest) (*pb.AuthChangeResponse, error) {
	if err := a.enforcing(pb.Auth_RoleDelete_FullMethodName); err != nil {
		return nil, err
	}
	idx, err := a.node.RoleDelete(ctx, req.Name)
	return a.changed("role deleted", idx, err, "role", req.Name)
}

// RoleGrant implements Auth.RoleGrant.
func (a *authServer) RoleGrant(ctx context.Context, req *pb.RoleGrantRequest) (*pb.AuthChangeResponse, error) {
	if err := a.enforcing(pb.Auth_RoleGrant_FullMethodName); err != nil {
		return nil, err
	}
	p := req.Permission
	if p == nil || p.Access != pb.Access_READ && p.Access != pb.Access_READWRITE {
		return nil, invalidRequest("a grant needs a permission with a prefix and access READ or READWRITE")
	}
	idx, err := a.node.RoleGrant(ctx, req.Name, p.Prefix, p.Access == pb.Access_READWRITE)
	return a.changed("permission granted", idx, err, "role", req.Name, "prefix", string(p.Prefix), "access", p.Access.String())
}

// RoleRevoke implements Auth.RoleRevoke.
func (a *authServer) RoleRevoke(ctx context.Context, req *pb.RoleRevokeRequest) (*pb.AuthChangeResponse, error) {
	if err := a.enforcing(pb.Auth_RoleRevoke_FullMethodName); err != nil {
		return nil, err
	}
	idx, err := a.node.RoleRevoke(ctx, req.Name, req.Prefix)
	return a.changed("permission revoked", idx, err, "role", req.Name, "prefix", string(req.Prefix))
}

// UserGrant implements Auth.UserGrant.
func (a *authServer) UserGrant(ctx context.Context, req *pb.UserGrantRequest) (*pb.AuthChangeResponse, error) {
	if err := a.enforcing(pb.Auth_UserGrant_FullMethodName); err != nil {
		return nil, err
	}
	idx, err := a.node.UserGrant(ctx, req.Identity, req.Role)
	return a.changed("role granted", idx, err, "identity", req.Identity, "role", req.Role)
}

// UserRevoke implements Auth.UserRevoke.
func (a *authServer) UserRevoke(ctx context.Context, req *pb.UserRevokeRequest) (*pb.AuthChangeResponse, error) {
	if err := a.enforcing(pb.Auth_UserRevoke_FullMethodName); err != nil {
		return nil, err
	}
	idx, err := a.node.UserRevoke(ctx, req.Identity, req.Role)
	return a.changed("role revoked", idx, err, "identity", req.Identity, "role", req.Role)
}

func (a *authServer) read(ctx context.Context) (*node.Auth, error) {
	view, err := a.node.ReadAuth(ctx, node.Linearizable)
	return view, toStatus(err)
}

func toRole(r fsm.Role) *pb.Role {
	out := &pb.Role{Name: r.Name}
	for _, p := range r.Permissions {
		access := pb.Access_READ
		if p.ReadWrite {
			access = pb.Access_READWRITE
		}
		out.Permissions = append(out.Permissions, &pb.Permission{Prefix: p.Prefix, Access: access})
	}
	return out
}

// RoleGet implements Auth.RoleGet.
func (a *authServer) RoleGet(ctx context.Context, req *pb.RoleGetRequest) (*pb.RoleGetResponse, error) {
	view, err := a.read(ctx)
	if err != nil {
		return nil, err
	}
	r, ok := view.Role(req.Name)
	if !ok {
		return nil, toStatus(fmt.Errorf("%w: %s", fsm.ErrRoleNotFound, req.Name))
	}
	return &pb.RoleGetResponse{Role: toRole(r)}, nil
}

// RoleList implements Auth.RoleList.
func (a *authServer) RoleList(ctx context.Context, _ *pb.RoleListRequest) (*pb.RoleListResponse, error) {
	view, err := a.read(ctx)
	if err != nil {
		return nil, err
	}
	out := &pb.RoleListResponse{}
	for _, r := range view.Roles() {
		out.Roles = append(out.Roles, toRole(r))
	}
	return out, nil
}

// UserGet implements Auth.UserGet.
func (a *authServer) UserGet(ctx context.Context, req *pb.UserGetRequest) (*pb.UserGetResponse, error) {
	view, err := a.read(ctx)
	if err != nil {
		return nil, err
	}
	roles := view.UserRoles(req.Identity)
	if len(roles) == 0 {
		return nil, toStatus(fmt.Errorf("%w: identity %s has no role", fsm.ErrNotGranted, req.Identity))
	}
	return &pb.UserGetResponse{User: &pb.User{Identity: req.Identity, Roles: roles}}, nil
}

// UserList implements Auth.UserList.
func (a *authServer) UserList(ctx context.Context, _ *pb.UserListRequest) (*pb.UserListResponse, error) {
	view, err := a.read(ctx)
	if err != nil {
		return nil, err
	}
	out := &pb.UserListResponse{}
	for _, id := range view.Identities() {
		out.Users = append(out.Users, &pb.User{Identity: id, Roles: view.UserRoles(id)})
	}
	return out, nil
}

// WhoAmI implements Auth.WhoAmI, from this node's applied roles.
func (a *authServer) WhoAmI(ctx context.Context, _ *pb.WhoAmIRequest) (*pb.WhoAmIResponse, error) {
	id := identityOf(ctx)
	out := &pb.WhoAmIResponse{Identity: id, Enforced: a.auth != nil}
	if id == "" {
		return out, nil
	}
	view := a.node.Auth()
	out.Roles = view.UserRoles(id)
	out.Admin = slices.Contains(out.Roles, fsm.AdminRole)
	if a.auth != nil {
		out.Admin = a.auth.accessOf(id, view).admin
	}
	return out, nil
}
