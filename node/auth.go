package node

import (
	"context"

	"github.com/hashicorp/raft"

	"github.com/raftwatch/raftwatch/fsm"
	pb "github.com/raftwatch/raftwatch/proto"
)

// Auth is the replicated authorization state: roles and their grants to
// identities (fsm/auth.go).
type Auth = fsm.Auth

// maxRoleNameLen bounds role names and identities: twice X.509's upper
// bound on a common name (64), short enough for logs and the CLI.
const maxRoleNameLen = 128

// Auth returns the authorization state this node has applied: an
// immutable view, read without touching bbolt, so the gRPC edge can check
// every request (and every watch event) against it.
func (n *Node) Auth() *Auth { return n.fsm.Auth() }

// ReadAuth returns the authorization state at consistency c: linearizable
// reads are served by the leader once it has applied everything committed
// before the call.
func (n *Node) ReadAuth(ctx context.Context, c Consistency) (*Auth, error) {
	if err := n.leaseRead(ctx, c); err != nil {
		return nil, err
	}
	return n.fsm.Auth(), nil
}

// LeaderCurrent returns nil when this node leads and has applied an
// entry of its own term, so the roles it has applied include every change
// committed before it took over: only then may it check a call only the
// leader serves. Otherwise it returns the error such a call gets here: a
// *NotLeaderError naming the leader, ErrNoLeader, or ErrNotReady (a new
// leader still applying; retry shortly).
func (n *Node) LeaderCurrent() error {
	if n.raft.State() != raft.Leader {
		return n.notLeader()
	}
	if !n.leaderReady() {
		return ErrNotReady
	}
	return nil
}

// IsMember reports whether id is a member of the cluster: a server of the
// latest raft configuration, or one whose client address the replicated
// state records (a member being removed still asks the others whether its
// removal committed).
func (n *Node) IsMember(id string) bool {
	for _, s := range n.raft.GetConfiguration().Configuration().Servers {
		if string(s.ID) == id {
			return true
		}
	}
	addrs, err := n.fsm.Members()
	return err == nil && addrs[id] != ""
}

// RoleAdd creates an empty role (leader only); fsm.ErrRoleExists when it
// exists.
func (n *Node) RoleAdd(ctx context.Context, name string) (uint64, error) {
	if err := checkAuthName("role", name, false); err != nil {
		return 0, err
	}
	return n.proposeAuth(ctx, &pb.Op{Kind: pb.Op_ROLE_ADD, Key: []byte(name)})
}

// RoleDelete deletes a role and its grants to identities (leader only);
// fsm.ErrRoleNotFound when it does not exist.
func (n *Node) RoleDelete(ctx context.Context, name string) (uint64, error) {
	if err := checkAuthName("role", name, false); err != nil {
		return 0, err
	}
	return n.proposeAuth(ctx, &pb.Op{Kind: pb.Op_ROLE_DELETE, Key: []byte(name)})
}

// RoleGrant gives role name readwrite (or read) access to the keys under
// prefix, replacing its access on that prefix if it had one.
func (n *Node) RoleGrant(ctx context.Context, name string, prefix []byte, readWrite bool) (uint64, error) {
	if err := checkAuthName("role", name, false); err != nil {
		return 0, err
	}
	if err := checkPrefix(prefix, n.cfg.MaxKeySize); err != nil {
		return 0, err
	}
	access := pb.Access_READ
	if readWrite {
		access = pb.Access_READWRITE
	}
	return n.proposeAuth(ctx, &pb.Op{Kind: pb.Op_ROLE_GRANT, Key: []byte(name),
		Permission: &pb.Permission{Prefix: prefix, Access: access}})
}

// RoleRevoke removes role name's permission on prefix; fsm.ErrNotGranted
// when it has none there.
func (n *Node) RoleRevoke(ctx context.Context, name string, prefix []byte) (uint64, error) {
	if err := checkAuthName("role", name, false); err != nil {
		return 0, err
	}
	if err := checkPrefix(prefix, n.cfg.MaxKeySize); err != nil {
		return 0, err
	}
	return n.proposeAuth(ctx, &pb.Op{Kind: pb.Op_ROLE_REVOKE, Key: []byte(name), Permission: &pb.Permission{Prefix: prefix}})
}

// UserGrant grants role to identity; fsm.ErrRoleNotFound when the role
// does not exist. Granting a role the identity has changes nothing.
func (n *Node) UserGrant(ctx context.Context, identity, role string) (uint64, error) {
	if err := checkAuthName("identity", identity, true); err != nil {
		return 0, err
	}
	if err := checkAuthName("role", role, true); err != nil {
		return 0, err
	}
	return n.proposeAuth(ctx, &pb.Op{Kind: pb.Op_USER_GRANT, Key: []byte(identity), Value: []byte(role)})
}

// UserRevoke takes role from identity; fsm.ErrNotGranted when it does not
// have it.
func (n *Node) UserRevoke(ctx context.Context, identity, role string) (uint64, error) {
	if err := checkAuthName("identity", identity, true); err != nil {
		return 0, err
	}
	if err := checkAuthName("role", role, true); err != nil {
		return 0, err
	}
	return n.proposeAuth(ctx, &pb.Op{Kind: pb.Op_USER_REVOKE, Key: []byte(identity), Value: []byte(role)})
}

func (n *Node) proposeAuth(ctx context.Context, op *pb.Op) (uint64, error) {
	index, _, err := n.submit(ctx, op)
	return index, err
}

// checkAuthName accepts a role name or identity of printable characters
// other than space; the built-in role admin is refused unless mayBeAdmin
// (a grant of admin to an identity, or its revoke).
func checkAuthName(what, name string, mayBeAdmin bool) error {
	switch {
	case name == "":
		return invalid("%s is required", what)
	case len(name) > maxRoleNameLen:
		return invalid("%s %q is %d bytes; at most %d", what, name, len(name), maxRoleNameLen)
	case what == "role" && name == fsm.AdminRole && !mayBeAdmin:
		return invalid("%v", fsm.ErrBuiltinRole)
	}
	for _, r := range name {
		if r <= ' ' || r == 0x7f {
			return invalid("%s %q: use printable characters other than space", what, name)
		}
	}
	return nil
}
