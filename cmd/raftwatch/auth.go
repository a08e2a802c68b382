package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/raftwatch/raftwatch/client"
	pb "github.com/raftwatch/raftwatch/proto"
)

// authLong is what role and user say about enforcement.
const authLong = `Roles give identities (the common names of client certificates) access to
keys: a role holds permissions, each a prefix ('/'-terminated; "/" is every
key) with read or readwrite access. A node started with --auth enforces them:
an identity with no role may do nothing but "user whoami"; reading (get, list,
watch) needs read on the key, writing (put, del, txn puts and deletes)
readwrite, leases a readwrite permission somewhere, and revoking a lease
readwrite on every key attached to it. List and prefix watches deliver only the
keys the identity may read. The built-in role admin has every right
(membership, snapshots, roles); so does the node's --auth-admin-identity
(default root), which sets the first roles up. Changes are admin-only,
replicated like data, and refused by nodes without --auth.`

// authCmd is one role or user subcommand taking exactly nargs arguments,
// run with a client and a request context.
func authCmd(use, short string, nargs int, run func(ctx context.Context, c *client.Client, g *clientFlags, args []string) error) *cobra.Command {
	var g *clientFlags
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(nargs),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.open()
			if err != nil {
				return err
			}
			defer done()
			return run(ctx, c, g, args)
		},
	}
	g = addClientFlags(cmd)
	return cmd
}

// printChange reports an applied change.
func printChange(g *clientFlags, r *pb.AuthChangeResponse) error {
	if g.json {
		return printJSON(map[string]any{"revision": r.Revision})
	}
	fmt.Printf("OK (revision %d)\n", r.Revision)
	return nil
}

// parseAccess reads the access of a grant: read or readwrite.
func parseAccess(s string) (pb.Access, error) {
	switch strings.ToLower(s) {
	case "read", "r":
		return pb.Access_READ, nil
	case "readwrite", "rw":
		return pb.Access_READWRITE, nil
	}
	return 0, fmt.Errorf("access %q: use read or readwrite", s)
}

func accessName(a pb.Access) string {
	if a == pb.Access_READWRITE {
		return "readwrite"
	}
	return "read"
}

func printRole(g *clientFlags, r *pb.Role) error {
	if g.json {
		perms := []map[string]string{}
		for _, p := range r.Permissions {
			perms = append(perms, map[string]string{"prefix": b64(p.Prefix), "access": accessName(p.Access)})
		}
		return printJSON(map[string]any{"name": r.Name, "permissions": perms})
	}
	var perms []string
	for _, p := range r.Permissions {
		perms = append(perms, quote(p.Prefix)+"="+accessName(p.Access))
	}
	if len(perms) == 0 {
		perms = []string{"(no permissions)"}
	}
	fmt.Printf("%s %s\n", r.Name, strings.Join(perms, " "))
	return nil
}

func printUser(g *clientFlags, u *pb.User) error {
	if g.json {
		return printJSON(map[string]any{"identity": u.Identity, "roles": u.Roles})
	}
	fmt.Printf("%s %s\n", u.Identity, strings.Join(u.Roles, ","))
	return nil
}

func newRoleCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "role", Short: "Manage roles: prefixes with read or readwrite access (admin only)", Long: authLong}
	cmd.AddCommand(
		authCmd("add NAME", "Create an empty role (AlreadyExists when it exists)", 1,
			func(ctx context.Context, c *client.Client, g *clientFlags, args []string) error {
				r, err := c.RoleAdd(ctx, args[0])
				if err != nil {
					return err
				}
				return printChange(g, r)
			}),
		authCmd("delete NAME", "Delete a role and take it from every identity that has it", 1,
			func(ctx context.Context, c *client.Client, g *clientFlags, args []string) error {
				r, err := c.RoleDelete(ctx, args[0])
				if err != nil {
					return err
				}
				return printChange(g, r)
			}),
		authCmd("get NAME", "Print a role's permissions: NAME \"PREFIX\"=ACCESS ...", 1,
			func(ctx context.Context, c *client.Client, g *clientFlags, args []string) error {
				r, err := c.RoleGet(ctx, args[0])
				if err != nil {
					return err
				}
				return printRole(g, r)
			}),
		authCmd("list", "Print every role (one a line, as role get), the built-in admin included", 0,
			func(ctx context.Context, c *client.Client, g *clientFlags, _ []string) error {
				roles, err := c.RoleList(ctx)
				if err != nil {
					return err
				}
				for _, r := range roles {
					if err := printRole(g, r); err != nil {
						return err
					}
				}
				return nil
			}),
		authCmd("grant NAME PREFIX read|readwrite", "Give a role access to the keys under PREFIX (replacing its access there)", 3,
			func(ctx context.Context, c *client.Client, g *clientFlags, args []string) error {
				access, err := parseAccess(args[2])
				if err != nil {
					return err
				}
				r, err := c.RoleGrant(ctx, args[0], []byte(args[1]), access)
				if err != nil {
					return err
				}
				return printChange(g, r)
			}),
		authCmd("revoke NAME PREFIX", "Remove a role's permission on PREFIX (NotFound when it has none)", 2,
			func(ctx context.Context, c *client.Client, g *clientFlags, args []string) error {
				r, err := c.RoleRevoke(ctx, args[0], []byte(args[1]))
				if err != nil {
					return err
				}
				return printChange(g, r)
			}),
	)
	return cmd
}

func newUserCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "user", Short: "Grant roles to identities, the common names of client certificates", Long: authLong}
	cmd.AddCommand(
		authCmd("grant IDENTITY ROLE", "Grant a role to an identity (admin only; NotFound when the role does not exist)", 2,
			func(ctx context.Context, c *client.Client, g *clientFlags, args []string) error {
				r, err := c.UserGrant(ctx, args[0], args[1])
				if err != nil {
					return err
				}
				return printChange(g, r)
			}),
		authCmd("revoke IDENTITY ROLE", "Take a role from an identity (admin only)", 2,
			func(ctx context.Context, c *client.Client, g *clientFlags, args []string) error {
				r, err := c.UserRevoke(ctx, args[0], args[1])
				if err != nil {
					return err
				}
				return printChange(g, r)
			}),
		authCmd("get IDENTITY", "Print an identity's roles: IDENTITY ROLE,... (admin only)", 1,
			func(ctx context.Context, c *client.Client, g *clientFlags, args []string) error {
				u, err := c.UserGet(ctx, args[0])
				if err != nil {
					return err
				}
				return printUser(g, u)
			}),
		authCmd("list", "Print every identity with a role, one a line (admin only)", 0,
			func(ctx context.Context, c *client.Client, g *clientFlags, _ []string) error {
				users, err := c.UserList(ctx)
				if err != nil {
					return err
				}
				for _, u := range users {
					if err := printUser(g, u); err != nil {
						return err
					}
				}
				return nil
			}),
		authCmd("whoami", "Print this client's identity and roles as a node sees them", 0,
			func(ctx context.Context, c *client.Client, g *clientFlags, _ []string) error {
				w, err := c.WhoAmI(ctx)
				if err != nil {
					return err
				}
				if g.json {
					return printJSON(map[string]any{"identity": w.Identity, "roles": w.Roles, "admin": w.Admin, "enforced": w.Enforced})
				}
				id := w.Identity
				if id == "" {
					id = "(no client certificate)"
				}
				fmt.Printf("identity=%s roles=%s admin=%v enforced=%v\n", id, strings.Join(w.Roles, ","), w.Admin, w.Enforced)
				return nil
			}),
	)
	return cmd
}
