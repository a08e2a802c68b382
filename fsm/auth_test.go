package fsm

import (
	"bytes"
	"errors"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/hashicorp/raft"

	pb "github.com/raftwatch/raftwatch/proto"
)

func roleOp(kind pb.Op_Kind, role string) *pb.Op { return &pb.Op{Kind: kind, Key: []byte(role)} }

func grantOp(role, prefix string, access pb.Access) *pb.Op {
	return &pb.Op{Kind: pb.Op_ROLE_GRANT, Key: []byte(role), Permission: &pb.Permission{Prefix: []byte(prefix), Access: access}}
}

func userOp(kind pb.Op_Kind, identity, role string) *pb.Op {
	return &pb.Op{Kind: kind, Key: []byte(identity), Value: []byte(role)}
}

// authOf summarizes a view: each role's permissions as "prefix=r|rw", and
// each identity's roles.
func authOf(a *Auth) (map[string][]string, map[string][]string) {
	roles := map[string][]string{}
	for _, r := range a.Roles() {
		perms := []string{}
		for _, p := range r.Permissions {
			access := "r"
			if p.ReadWrite {
				access = "rw"
			}
			perms = append(perms, string(p.Prefix)+"="+access)
		}
		roles[r.Name] = perms
	}
	users := map[string][]string{}
	for _, id := range a.Identities() {
		users[id] = a.UserRoles(id)
	}
	return roles, users
}

func wantAuth(t *testing.T, what string, a *Auth, roles, users map[string][]string) {
	t.Helper()
	gotRoles, gotUsers := authOf(a)
	if !reflect.DeepEqual(gotRoles, roles) || !reflect.DeepEqual(gotUsers, users) {
		t.Fatalf("%s: roles %v users %v, want roles %v users %v", what, gotRoles, gotUsers, roles, users)
	}
}

// The authorization ops build roles and grants, emit no watch event, and a
// refused op changes nothing; the view follows every applied batch.
func TestAuthOpsApplyAndRefuse(t *testing.T) {
	sink := &recordingSink{}
	f := openTest(t, filepath.Join(t.TempDir(), "state.db"), sink)
	res := result(t, f.ApplyBatch([]*raft.Log{entry(t, 1,
		roleOp(pb.Op_ROLE_ADD, "app"),
		grantOp("app", "/app/", pb.Access_READ),
		grantOp("app", "/app/", pb.Access_READWRITE), // changes the access, adds nothing
		grantOp("app", "/a/", pb.Access_READ),
		userOp(pb.Op_USER_GRANT, "alice", "app"),
		userOp(pb.Op_USER_GRANT, "root2", "admin"),
	)})[0])
	for i, r := range res.Ops {
		if r.Err != nil || !r.Succeeded {
			t.Fatalf("op %d: %+v", i, r)
		}
	}
	if evs := sink.events(); len(evs) != 0 {
		t.Fatalf("authorization ops emitted events: %v", evs)
	}
	admin := []string{"/=rw"}
	roles := map[string][]string{"admin": admin, "app": {"/a/=r", "/app/=rw"}}
	users := map[string][]string{"alice": {"app"}, "root2": {"admin"}}
	wantAuth(t, "after grants", f.Auth(), roles, users)

	refusals := []struct {
		op   *pb.Op
		want error
	}{
		{roleOp(pb.Op_ROLE_ADD, "app"), ErrRoleExists},
		{roleOp(pb.Op_ROLE_ADD, "admin"), ErrRoleExists},
		{roleOp(pb.Op_ROLE_DELETE, "admin"), ErrBuiltinRole},
		{grantOp("admin", "/x/", pb.Access_READ), ErrBuiltinRole},
		{roleOp(pb.Op_ROLE_DELETE, "nope"), ErrRoleNotFound},
		{grantOp("nope", "/x/", pb.Access_READ), ErrRoleNotFound},
		{&pb.Op{Kind: pb.Op_ROLE_REVOKE, Key: []byte("app"), Permission: &pb.Permission{Prefix: []byte("/x/")}}, ErrNotGranted},
		{userOp(pb.Op_USER_GRANT, "bob", "nope"), ErrRoleNotFound},
		{userOp(pb.Op_USER_REVOKE, "alice", "admin"), ErrNotGranted},
	}
	for i, r := range refusals {
		got := result(t, f.ApplyBatch([]*raft.Log{entry(t, uint64(2+i), r.op)})[0]).Ops[0]
		if !errors.Is(got.Err, r.want) {
			t.Fatalf("%v %s: err %v, want %v", r.op.Kind, r.op.Key, got.Err, r.want)
		}
		wantAuth(t, "after a refusal", f.Auth(), roles, users)
	}

	next := uint64(2 + len(refusals))
	f.ApplyBatch([]*raft.Log{entry(t, next,
		&pb.Op{Kind: pb.Op_ROLE_REVOKE, Key: []byte("app"), Permission: &pb.Permission{Prefix: []byte("/a/")}},
		roleOp(pb.Op_ROLE_ADD, "ro"),
		userOp(pb.Op_USER_GRANT, "alice", "ro"),
		userOp(pb.Op_USER_REVOKE, "root2", "admin"),
	)})
	wantAuth(t, "after revokes", f.Auth(), map[string][]string{"admin": admin, "app": {"/app/=rw"}, "ro": {}},
		map[string][]string{"alice": {"app", "ro"}})
	// Deleting a role takes it from every identity that had it.
	f.ApplyBatch([]*raft.Log{entry(t, next+1, roleOp(pb.Op_ROLE_DELETE, "app"))})
	wantAuth(t, "after deleting app", f.Auth(), map[string][]string{"admin": admin, "ro": {}},
		map[string][]string{"alice": {"ro"}})
}

// The authorization state is in the file: it survives a reopen and travels
// in a snapshot.
func TestAuthSurvivesReopenAndSnapshot(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	f, err := Open(path, nil, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	f.ApplyBatch([]*raft.Log{entry(t, 1, roleOp(pb.Op_ROLE_ADD, "app"), grantOp("app", "/app/", pb.Access_READ),
		userOp(pb.Op_USER_GRANT, "alice", "app"))})
	roles := map[string][]string{"admin": {"/=rw"}, "app": {"/app/=r"}}
	users := map[string][]string{"alice": {"app"}}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	f = openTest(t, path, nil)
	wantAuth(t, "after reopen", f.Auth(), roles, users)

	data := snapshotOf(t, f)
	dst := openTest(t, filepath.Join(t.TempDir(), "state.db"), nil)
	dst.ApplyBatch([]*raft.Log{entry(t, 1, roleOp(pb.Op_ROLE_ADD, "stale"))})
	wantAuth(t, "before restore", dst.Auth(), map[string][]string{"admin": {"/=rw"}, "stale": {}}, map[string][]string{})
	f.ApplyBatch([]*raft.Log{entry(t, 2, put("/k", "v"))}) // the snapshot must be ahead of dst
	data = snapshotOf(t, f)
	if err := dst.Restore(readCloser{bytes.NewReader(data)}); err != nil {
		t.Fatal(err)
	}
	wantAuth(t, "after restore", dst.Auth(), roles, users)
}

// A damaged role record fails its checksum like any stored value.
func TestDamagedRoleIsFound(t *testing.T) {
	f := openTest(t, filepath.Join(t.TempDir(), "state.db"), nil)
	f.ApplyBatch([]*raft.Log{entry(t, 1, roleOp(pb.Op_ROLE_ADD, "app"))})
	flipStored(t, f, bucketAuthRoles, []byte("app"))
	if _, err := f.Scrub(nil, DefaultScrubPace); err != nil {
		t.Fatal(err)
	}
	if st := f.ScrubStats(); st.Mismatches != 1 {
		t.Fatalf("scrub found %d mismatches, want 1", st.Mismatches)
	}
}
