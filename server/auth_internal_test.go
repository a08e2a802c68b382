package server

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftwatch/raftwatch/fsm"
	pb "github.com/raftwatch/raftwatch/proto"
)

// Every method the server registers has a rule: one without would be
// refused to everybody, admins included, once roles are enforced.
func TestEveryRegisteredMethodHasARule(t *testing.T) {
	g := grpc.NewServer()
	(&Server{}).Register(g)
	n := 0
	for service, info := range g.GetServiceInfo() {
		for _, m := range info.Methods {
			method := "/" + service + "/" + m.Name
			if _, ok := ruleOf(method); !ok {
				t.Errorf("%s has no authorization rule", method)
			}
			n++
		}
	}
	if n < 20 {
		t.Fatalf("only %d methods registered", n)
	}
	for _, m := range []string{"/grpc.health.v1.Health/Check", "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", pb.Auth_WhoAmI_FullMethodName} {
		if r, _ := ruleOf(m); r != ruleOpen {
			t.Errorf("%s is not open", m)
		}
	}
	if r, _ := ruleOf(pb.Debug_Log_FullMethodName); r != ruleAdmin {
		t.Errorf("%s is not admin-only", pb.Debug_Log_FullMethodName)
	}
}

func TestAccessOfPermissions(t *testing.T) {
	a := &access{identity: "alice", roles: []string{"app"}, perms: []fsm.Permission{
		{Prefix: []byte("/app/"), ReadWrite: true}, {Prefix: []byte("/cfg/shared/")}}}
	checks := []struct {
		what string
		got  bool
		want bool
	}{
		{"read /app/x", a.mayRead([]byte("/app/x")), true},
		{"read /cfg/shared/x", a.mayRead([]byte("/cfg/shared/x")), true},
		{"read /cfg/x", a.mayRead([]byte("/cfg/x")), false},
		{"read /apple (shares leading bytes only)", a.mayRead([]byte("/apple")), false},
		{"write /app/x", a.mayWrite([]byte("/app/x")), true},
		{"write /cfg/shared/x (read only)", a.mayWrite([]byte("/cfg/shared/x")), false},
		{"write all of /app/sub/", a.mayWriteAll([]byte("/app/sub/")), true},
		{"write all of /", a.mayWriteAll([]byte("/")), false},
		{"read some of / ", a.mayReadSome([]byte("/")), true},
		{"read some of /cfg/", a.mayReadSome([]byte("/cfg/")), true},
		{"read all of /cfg/", a.mayReadAll([]byte("/cfg/")), false},
		{"read some of /other/", a.mayReadSome([]byte("/other/")), false},
		{"hold leases", a.mayHoldLeases(), true},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.what, c.got, c.want)
		}
	}
	reader := &access{identity: "bob", roles: []string{"r"}, perms: []fsm.Permission{{Prefix: []byte("/")}}}
	if reader.mayHoldLeases() || reader.mayWrite([]byte("/x")) || !reader.mayReadAll([]byte("/")) {
		t.Error("a read-only role on / may hold leases or write, or may not read everything")
	}
	admin := &access{identity: "root", admin: true}
	if !admin.mayWriteAll([]byte("/")) || !admin.hasRole() || !admin.mayHoldLeases() {
		t.Error("admin lacks a right")
	}
}

// A call without a verified certificate has no identity: UNAUTHENTICATED,
// except for the open methods.
func TestCallWithoutIdentity(t *testing.T) {
	z := &authorizer{adminIdentity: "root"}
	_, err := z.authorize(context.Background(), pb.KV_Put_FullMethodName, &pb.PutRequest{Key: []byte("/k")})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("put without an identity: %v, want Unauthenticated", err)
	}
	c, err := z.authorize(context.Background(), "/grpc.health.v1.Health/Check", nil)
	if err != nil || c != nil {
		t.Fatalf("health check without an identity: %v %v", c, err)
	}
}
