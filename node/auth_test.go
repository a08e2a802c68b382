package node

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/raftwatch/raftwatch/fsm"
)

// Role changes are validated before they are proposed, applied through the
// log, and the view a check reads follows them; members are known by id.
func TestAuthChangesAndMembers(t *testing.T) {
	n := openSingle(t, t.TempDir(), freeAddr(t))
	defer n.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	for _, bad := range []func() error{
		func() error { _, err := n.RoleAdd(ctx, ""); return err },
		func() error { _, err := n.RoleAdd(ctx, "two words"); return err },
		func() error { _, err := n.RoleAdd(ctx, fsm.AdminRole); return err },
		func() error { _, err := n.RoleGrant(ctx, "app", []byte("app"), true); return err },
		func() error { _, err := n.UserGrant(ctx, "", "app"); return err },
	} {
		if err := bad(); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("bad input: %v, want ErrInvalidArgument", err)
		}
	}
	before := n.fsm.Applied()
	if _, err := n.RoleAdd(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if _, err := n.RoleGrant(ctx, "app", []byte("/app/"), true); err != nil {
		t.Fatal(err)
	}
	if _, err := n.UserGrant(ctx, "alice", "app"); err != nil {
		t.Fatal(err)
	}
	if _, err := n.UserGrant(ctx, "bob", "nope"); !errors.Is(err, fsm.ErrRoleNotFound) {
		t.Fatalf("grant of a missing role: %v", err)
	}
	if n.fsm.Applied() <= before {
		t.Fatal("the changes were not applied through the log")
	}
	view, err := n.ReadAuth(ctx, Linearizable)
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := view.Role("app"); !ok || len(r.Permissions) != 1 || !r.Permissions[0].ReadWrite {
		t.Fatalf("role app = %+v %v", r, ok)
	}
	if got := n.Auth().UserRoles("alice"); len(got) != 1 || got[0] != "app" {
		t.Fatalf("alice's roles %v", got)
	}

	if err := n.LeaderCurrent(); err != nil {
		t.Fatalf("the ready leader is not current: %v", err)
	}
	// A leader that has not applied an entry of its term yet may have
	// roles older than those committed: ErrNotReady, retryable.
	term := n.readyTerm.Load()
	n.readyTerm.Store(0)
	err = n.LeaderCurrent()
	n.readyTerm.Store(term)
	if !errors.Is(err, ErrNotReady) {
		t.Fatalf("a leader not ready yet: %v, want ErrNotReady", err)
	}
	if !n.IsMember("n1") || n.IsMember("alice") {
		t.Fatal("IsMember: n1 is the member, alice is not")
	}
}
