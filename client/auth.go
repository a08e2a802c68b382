package client

import (
	"context"

	"google.golang.org/grpc"

	pb "github.com/raftwatch/raftwatch/proto"
)

// The Auth service: roles (key prefixes with read or readwrite access) and
// their grants to identities, the common names of client certificates.
// Changes and reads go to the leader; on a node that enforces roles they
// are for admins only (PERMISSION_DENIED), except WhoAmI.

// authChange sends one change to the leader.
func (c *Client) authChange(ctx context.Context, call func(context.Context, pb.AuthClient) (*pb.AuthChangeResponse, error)) (*pb.AuthChangeResponse, error) {
	var resp *pb.AuthChangeResponse
	err := c.onLeader(ctx, func(ctx context.Context, cc *grpc.ClientConn) (err error) {
		resp, err = call(ctx, pb.NewAuthClient(cc))
		return err
	})
	return resp, err
}

// RoleAdd creates an empty role; ALREADY_EXISTS when it exists.
func (c *Client) RoleAdd(ctx context.Context, name string) (*pb.AuthChangeResponse, error) {
	return c.authChange(ctx, func(ctx context.Context, a pb.AuthClient) (*pb.AuthChangeResponse, error) {
		return a.RoleAdd(ctx, &pb.RoleAddRequest{Name: name})
	})
}

// RoleDelete deletes a role and takes it from every identity that had it.
func (c *Client) RoleDelete(ctx context.Context, name string) (*pb.AuthChangeResponse, error) {
	return c.authChange(ctx, func(ctx context.Context, a pb.AuthClient) (*pb.AuthChangeResponse, error) {
		return a.RoleDelete(ctx, &pb.RoleDeleteRequest{Name: name})
	})
}

// RoleGrant gives role name access to the keys under prefix (which starts
// and ends with '/'), replacing its access there if it had one.
func (c *Client) RoleGrant(ctx context.Context, name string, prefix []byte, access pb.Access) (*pb.AuthChangeResponse, error) {
	return c.authChange(ctx, func(ctx context.Context, a pb.AuthClient) (*pb.AuthChangeResponse, error) {
		return a.RoleGrant(ctx, &pb.RoleGrantRequest{Name: name, Permission: &pb.Permission{Prefix: prefix, Access: access}})
	})
}

// RoleRevoke removes role name's permission on prefix.
func (c *Client) RoleRevoke(ctx context.Context, name string, prefix []byte) (*pb.AuthChangeResponse, error) {
	return c.authChange(ctx, func(ctx context.Context, a pb.AuthClient) (*pb.AuthChangeResponse, error) {
		return a.RoleRevoke(ctx, &pb.RoleRevokeRequest{Name: name, Prefix: prefix})
	})
}

// UserGrant grants role to identity.
func (c *Client) UserGrant(ctx context.Context, identity, role string) (*pb.AuthChangeResponse, error) {
	return c.authChange(ctx, func(ctx context.Context, a pb.AuthClient) (*pb.AuthChangeResponse, error) {
		return a.UserGrant(ctx, &pb.UserGrantRequest{Identity: identity, Role: role})
	})
}

// UserRevoke takes role from identity.
func (c *Client) UserRevoke(ctx context.Context, identity, role string) (*pb.AuthChangeResponse, error) {
	return c.authChange(ctx, func(ctx context.Context, a pb.AuthClient) (*pb.AuthChangeResponse, error) {
		return a.UserRevoke(ctx, &pb.UserRevokeRequest{Identity: identity, Role: role})
	})
}

// authRead runs a linearizable read of the Auth service on the leader.
func authRead[T any](ctx context.Context, c *Client, call func(context.Context, pb.AuthClient) (T, error)) (T, error) {
	var resp T
	err := c.onLeader(ctx, func(ctx context.Context, cc *grpc.ClientConn) (err error) {
		resp, err = call(ctx, pb.NewAuthClient(cc))
		return err
	})
	return resp, err
}

// RoleGet returns one role; NOT_FOUND when it does not exist.
func (c *Client) RoleGet(ctx context.Context, name string) (*pb.Role, error) {
	r, err := authRead(ctx, c, func(ctx context.Context, a pb.AuthClient) (*pb.RoleGetResponse, error) {
		return a.RoleGet(ctx, &pb.RoleGetRequest{Name: name})
	})
	return r.GetRole(), err
}

// RoleList returns every role, the built-in admin included, by name.
func (c *Client) RoleList(ctx context.Context) ([]*pb.Role, error) {
	r, err := authRead(ctx, c, func(ctx context.Context, a pb.AuthClient) (*pb.RoleListResponse, error) {
		return a.RoleList(ctx, &pb.RoleListRequest{})
	})
	return r.GetRoles(), err
}

// UserGet returns the roles of identity; NOT_FOUND when it has none.
func (c *Client) UserGet(ctx context.Context, identity string) (*pb.User, error) {
	r, err := authRead(ctx, c, func(ctx context.Context, a pb.AuthClient) (*pb.UserGetResponse, error) {
		return a.UserGet(ctx, &pb.UserGetRequest{Identity: identity})
	})
	return r.GetUser(), err
}

// UserList returns every identity with a role, by identity.
func (c *Client) UserList(ctx context.Context) ([]*pb.User, error) {
	r, err := authRead(ctx, c, func(ctx context.Context, a pb.AuthClient) (*pb.UserListResponse, error) {
		return a.UserList(ctx, &pb.UserListRequest{})
	})
	return r.GetUsers(), err
}

// WhoAmI asks the first endpoint that answers who this client is: the
// common name of its certificate and its roles, as that node has applied
// them.
func (c *Client) WhoAmI(ctx context.Context) (*pb.WhoAmIResponse, error) {
	var resp *pb.WhoAmIResponse
	err := c.onAny(ctx, func(ctx context.Context, cc *grpc.ClientConn) (err error) {
		resp, err = pb.NewAuthClient(cc).WhoAmI(ctx, &pb.WhoAmIRequest{})
		return err
	})
	return resp, err
}
