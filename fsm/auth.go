package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	pb "github.com/raftwatch/raftwatch/proto"
)

// Authorization is replicated in two buckets, written in the applying
// transaction like the data (so it travels in snapshots and backups), every
// value sealed:
//
//	authroles: role name -> pb.Role (its permissions, in prefix order)
//	authusers: identity  -> pb.User (its role names, sorted)
//
// The built-in role AdminRole is never stored: it has every right, and no
// op changes or deletes it. The FSM keeps an immutable view of both buckets
// (*Auth), replaced after a batch that changed them, at open and after
// Restore, so that checking a request reads no bbolt.
var (
	bucketAuthRoles = []byte("authroles")
	bucketAuthUsers = []byte("authusers")
)

// AdminRole is the built-in role with every right.
const AdminRole = "admin"

var (
	// ErrRoleNotFound: the role does not exist.
	ErrRoleNotFound = errors.New("role not found")
	// ErrRoleExists: a role of that name exists (admin always does).
	ErrRoleExists = errors.New("role already exists")
	// ErrNotGranted: the role has no permission on that prefix, or the
	// identity does not have that role.
	ErrNotGranted = errors.New("not granted")
	// ErrBuiltinRole: an op tried to change or delete AdminRole.
	ErrBuiltinRole = errors.New("the built-in role admin cannot be changed or deleted")
)

// Permission is one prefix a role may read or, with ReadWrite, also write.
type Permission struct {
	Prefix    []byte
	ReadWrite bool
}

// Role is a named set of permissions, in prefix order.
type Role struct {
	Name        string
	Permissions []Permission
}

// Auth is the replicated authorization state at one applied index. It is
// never modified once published: read it freely without locks.
type Auth struct {
	roles map[string]Role
	users map[string][]string // identity -> role names, sorted
}

// Auth returns the authorization state as of the last applied batch.
func (f *FSM) Auth() *Auth { return f.auth.Load() }

// Role returns the role called name; AdminRole always exists, with
// readwrite on "/".
func (a *Auth) Role(name string) (Role, bool) {
	if name == AdminRole {
		return Role{Name: AdminRole, Permissions: []Permission{{Prefix: []byte("/"), ReadWrite: true}}}, true
	}
	r, ok := a.roles[name]
	return r, ok
}

// Roles returns every role, AdminRole included, in name order.
func (a *Auth) Roles() []Role {
	admin, _ := a.Role(AdminRole)
	out := []Role{admin}
	for _, r := range a.roles {
		out = append(out, r)
	}
	slices.SortFunc(out, func(x, y Role) int { return strings.Compare(x.Name, y.Name) })
	return out
}

// UserRoles returns the roles granted to identity, sorted (nil: none).
func (a *Auth) UserRoles(identity string) []string { return a.users[identity] }

// Identities returns every identity with a role, sorted.
func (a *Auth) Identities() []string {
	out := make([]string, 0, len(a.users))
	for id := range a.users {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// createAuthBuckets runs in the transaction that opens a file.
func createAuthBuckets(tx *bolt.Tx) error {
	for _, b := range [][]byte{bucketAuthRoles, bucketAuthUsers} {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return err
		}
	}
	return nil
}

// loadAuth reads the authorization buckets of db into a view.
func loadAuth(db *bolt.DB) (*Auth, error) {
	var a *Auth
	err := db.View(func(tx *bolt.Tx) error {
		var err error
		a, err = readAuth(tx)
		return err
	})
	return a, err
}

func readAuth(tx *bolt.Tx) (*Auth, error) {
	a := &Auth{roles: map[string]Role{}, users: map[string][]string{}}
	if b := tx.Bucket(bucketAuthRoles); b != nil {
		if err := b.ForEach(func(k, v []byte) error {
			r, err := decodeRole(k, v)
			if err != nil {
				return err
			}
			role := Role{Name: r.Name}
			for _, p := range r.Permissions {
				role.Permissions = append(role.Permissions, Permission{Prefix: clone(p.Prefix), ReadWrite: p.Access == pb.Access_READWRITE})
			}
			a.roles[r.Name] = role
			return nil
		}); err != nil {
			return nil, err
		}
	}
	if b := tx.Bucket(bucketAuthUsers); b != nil {
		if err := b.ForEach(func(k, v []byte) error {
			u, err := decodeUser(k, v)
			if err != nil {
				return err
			}
			a.users[u.Identity] = u.Roles
			return nil
		}); err != nil {
			return nil, err
		}
	}
	return a, nil
}

var marshalDeterministic = proto.MarshalOptions{Deterministic: true}

func encodeAuth(key []byte, m proto.Message) ([]byte, error) {
	b, err := marshalDeterministic.Marshal(m)
	if err != nil {
		return nil, err
	}
	return sealed(key, b), nil
}

func decodeRole(key, stored []byte) (*pb.Role, error) {
	b, err := openValue(bucketAuthRoles, key, stored)
	if err != nil {
		return nil, err
	}
	var r pb.Role
	if err := proto.Unmarshal(b, &r); err != nil || r.Name != string(key) {
		return nil, &CorruptError{Bucket: string(bucketAuthRoles), Key: clone(key),
			Detail: fmt.Sprintf("role record does not decode as role %q (%v)", key, err)}
	}
	return &r, nil
}

func decodeUser(key, stored []byte) (*pb.User, error) {
	b, err := openValue(bucketAuthUsers, key, stored)
	if err != nil {
		return nil, err
	}
	var u pb.User
	if err := proto.Unmarshal(b, &u); err != nil || u.Identity != string(key) {
		return nil, &CorruptError{Bucket: string(bucketAuthUsers), Key: clone(key),
			Detail: fmt.Sprintf("user record does not decode as identity %q (%v)", key, err)}
	}
	return &u, nil
}

// ---------------------------------------------------------------- apply

// authApply is the authorization part of one applying transaction.
type authApply struct {
	roles, users *bolt.Bucket
	// changed is set by an op that changed either bucket: the view is
	// then rebuilt before the commit and published after it.
	changed bool
}

func newAuthApply(tx *bolt.Tx) *authApply {
	return &authApply{roles: tx.Bucket(bucketAuthRoles), users: tx.Bucket(bucketAuthUsers)}
}

func (a *authApply) role(name string) (*pb.Role, error) {
	raw := a.roles.Get([]byte(name))
	if raw == nil {
		return nil, nil
	}
	return decodeRole([]byte(name), raw)
}

func (a *authApply) putRole(r *pb.Role) error {
	v, err := encodeAuth([]byte(r.Name), r)
	if err != nil {
		return err
	}
	a.changed = true
	return a.roles.Put([]byte(r.Name), v)
}

// putUser stores u, or deletes it when it has no role left.
func (a *authApply) putUser(u *pb.User) error {
	a.changed = true
	if len(u.Roles) == 0 {
		return a.users.Delete([]byte(u.Identity))
	}
	v, err := encodeAuth([]byte(u.Identity), u)
	if err != nil {
		return err
	}
	return a.users.Put([]byte(u.Identity), v)
}

// applyAuthOp applies a ROLE_* or USER_* op. A refusal (a missing role, a
// change to AdminRole) is the op's Err and changes nothing, the same on
// every node.
func (a *applier) applyAuthOp(op *pb.Op) (OpResult, error) {
	refused, err := a.auth.apply(op)
	if err != nil || refused != nil {
		return OpResult{Err: refused}, err
	}
	return OpResult{Succeeded: true}, nil
}

func (a *authApply) apply(op *pb.Op) (refused, err error) {
	name := string(op.Key) // the role, or (USER_*) the identity
	if name == "" {
		return errors.New("an authorization op needs a role name or identity"), nil
	}
	switch op.Kind {
	case pb.Op_ROLE_ADD:
		return a.roleAdd(name)
	case pb.Op_ROLE_DELETE:
		return a.roleDelete(name)
	case pb.Op_ROLE_GRANT, pb.Op_ROLE_REVOKE:
		return a.rolePermission(name, op.Kind == pb.Op_ROLE_GRANT, op.Permission)
	case pb.Op_USER_GRANT, pb.Op_USER_REVOKE:
		return a.userRole(name, string(op.Value), op.Kind == pb.Op_USER_GRANT)
	}
	return fmt.Errorf("unknown authorization op %v", op.Kind), nil
}

func (a *authApply) roleAdd(name string) (refused, err error) {
	if name == AdminRole {
		return fmt.Errorf("%w: %s is built in", ErrRoleExists, AdminRole), nil
	}
	r, err := a.role(name)
	if err != nil || r != nil {
		if err == nil {
			refused = fmt.Errorf("%w: %s", ErrRoleExists, name)
		}
		return refused, err
	}
	return nil, a.putRole(&pb.Role{Name: name})
}

// roleDelete deletes the role and its grants to identities.
func (a *authApply) roleDelete(name string) (refused, err error) {
	if name == AdminRole {
		return ErrBuiltinRole, nil
	}
	r, err := a.role(name)
	if err != nil || r == nil {
		if err == nil {
			refused = fmt.Errorf("%w: %s", ErrRoleNotFound, name)
		}
		return refused, err
	}
	// bbolt allows no puts while iterating: collect, then write.
	var holders []*pb.User
	if err := a.users.ForEach(func(k, v []byte) error {
		u, err := decodeUser(k, v)
		if err == nil && slices.Contains(u.Roles, name) {
			holders = append(holders, u)
		}
		return err
	}); err != nil {
		return nil, err
	}
	for _, u := range holders {
		u.Roles = slices.DeleteFunc(u.Roles, func(r string) bool { return r == name })
		if err := a.putUser(u); err != nil {
			return nil, err
		}
	}
	a.changed = true
	return nil, a.roles.Delete([]byte(name))
}

// rolePermission grants p to role name (replacing the access of its
// permission on the same prefix), or revokes its permission on p's prefix.
func (a *authApply) rolePermission(name string, grant bool, p *pb.Permission) (refused, err error) {
	if name == AdminRole {
		return ErrBuiltinRole, nil
	}
	if p == nil || len(p.Prefix) == 0 || grant && p.Access != pb.Access_READ && p.Access != pb.Access_READWRITE {
		return errors.New("a role grant needs a prefix and READ or READWRITE access"), nil
	}
	r, err := a.role(name)
	if err != nil || r == nil {
		if err == nil {
			refused = fmt.Errorf("%w: %s", ErrRoleNotFound, name)
		}
		return refused, err
	}
	i, found := slices.BinarySearchFunc(r.Permissions, p.Prefix, func(q *pb.Permission, prefix []byte) int {
		return bytes.Compare(q.Prefix, prefix)
	})
	switch {
	case grant && found:
		r.Permissions[i].Access = p.Access
	case grant:
		r.Permissions = slices.Insert(r.Permissions, i, &pb.Permission{Prefix: clone(p.Prefix), Access: p.Access})
	case !found:
		return fmt.Errorf("%w: role %s has no permission on %q", ErrNotGranted, name, p.Prefix), nil
	default:
		r.Permissions = slices.Delete(r.Permissions, i, i+1)
	}
	return nil, a.putRole(r)
}

// userRole grants role to identity, or revokes it.
func (a *authApply) userRole(identity, role string, grant bool) (refused, err error) {
	if role == "" {
		return errors.New("a user grant or revoke needs a role"), nil
	}
	u := &pb.User{Identity: identity}
	if raw := a.users.Get([]byte(identity)); raw != nil {
		if u, err = decodeUser([]byte(identity), raw); err != nil {
			return nil, err
		}
	}
	i, has := slices.BinarySearch(u.Roles, role)
	switch {
	case grant && has:
		return nil, nil // already granted: nothing changes
	case grant:
		if role != AdminRole {
			r, err := a.role(role)
			if err != nil || r == nil {
				if err == nil {
					refused = fmt.Errorf("%w: %s", ErrRoleNotFound, role)
				}
				return refused, err
			}
		}
		u.Roles = slices.Insert(u.Roles, i, role)
	case !has:
		return fmt.Errorf("%w: %s does not have role %s", ErrNotGranted, identity, role), nil
	default:
		u.Roles = slices.Delete(u.Roles, i, i+1)
	}
	return nil, a.putUser(u)
}
