package server_test

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/raftwatch/raftwatch/client"
	"github.com/raftwatch/raftwatch/fsm"
	"github.com/raftwatch/raftwatch/node"
	"github.com/raftwatch/raftwatch/nodetest"
	pb "github.com/raftwatch/raftwatch/proto"
	"github.com/raftwatch/raftwatch/server"
)

// authCluster is three nodes in this process on loopback TCP, their client
// API over TLS with client certificates required, enforcing roles with
// admin identity "root". Every certificate comes from one throwaway CA;
// the nodes serve with node certificates.
type authCluster struct {
	t     *testing.T
	ca    *testCA
	nodes []*authNode
}

type authNode struct {
	id, dir, raftAddr, clientAddr string
	n                             *node.Node
	g                             *grpc.Server
}

func startAuthCluster(t *testing.T) *authCluster {
	t.Helper()
	c := &authCluster{t: t, ca: newTestCA(t)}
	ports := nodetest.FreeAddrs(t, 6)
	for i := 0; i < 3; i++ {
		id := fmt.Sprintf("n%d", i+1)
		c.nodes = append(c.nodes, &authNode{id: id, dir: filepath.Join(t.TempDir(), id), raftAddr: ports[i], clientAddr: ports[3+i]})
	}
	for _, an := range c.nodes {
		c.start(an)
	}
	t.Cleanup(func() {
		for _, an := range c.nodes {
			c.stop(an)
		}
	})
	c.waitWritable()
	return c
}

func (c *authCluster) initial() map[string]string {
	m := map[string]string{}
	for _, an := range c.nodes {
		m[an.id] = an.raftAddr
	}
	return m
}

// start opens (or reopens) an's node and serves it.
func (c *authCluster) start(an *authNode) {
	c.t.Helper()
	cfg := node.DefaultConfig()
	cfg.ID, cfg.DataDir, cfg.RaftAddr, cfg.ClientAddr = an.id, an.dir, an.raftAddr, an.clientAddr
	cfg.InitialCluster = c.initial()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	lis, err := net.Listen("tcp", an.clientAddr)
	if err != nil {
		c.t.Fatal(err)
	}
	n, err := node.Open(cfg)
	if err != nil {
		lis.Close()
		c.t.Fatal(err)
	}
	creds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{c.ca.node(an.id)},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: c.ca.pool, MinVersion: tls.VersionTLS12})
	srv := server.New(n, cfg.Logger)
	srv.RequireAuth("root")
	an.n, an.g = n, srv.NewGRPCServer(grpc.Creds(creds))
	go an.g.Serve(lis)
}

func (c *authCluster) stop(an *authNode) {
	if an.g == nil {
		return
	}
	an.g.Stop()
	an.n.Close()
	an.g, an.n = nil, nil
}

func (c *authCluster) endpoints() []string {
	var out []string
	for _, an := range c.nodes {
		out = append(out, an.clientAddr)
	}
	return out
}

func (c *authCluster) creds(cert tls.Certificate) grpc.DialOption {
	return grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{cert}, RootCAs: c.ca.pool, MinVersion: tls.VersionTLS12}))
}

// client returns a client with identity's certificate, to the given
// endpoints (all nodes when none).
func (c *authCluster) client(identity string, endpoints ...string) *client.Client {
	c.t.Helper()
	if len(endpoints) == 0 {
		endpoints = c.endpoints()
	}
	cl, err := client.New(client.Config{Endpoints: endpoints, DialOptions: []grpc.DialOption{c.creds(c.ca.client(identity))}})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// conn is a raw connection with identity's client certificate to addr.
func (c *authCluster) conn(identity, addr string) *grpc.ClientConn {
	c.t.Helper()
	return c.connWith(c.ca.client(identity), addr)
}

// connWith is a raw connection with cert to addr.
func (c *authCluster) connWith(cert tls.Certificate, addr string) *grpc.ClientConn {
	c.t.Helper()
	cc, err := grpc.NewClient(addr, c.creds(cert))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cc.Close() })
	return cc
}

func (c *authCluster) waitWritable() {
	c.t.Helper()
	root := c.client("root")
	nodetest.Eventually(c.t, 30*time.Second, "the cluster takes the admin's writes", func() bool {
		_, err := root.Put(ctxT(c.t, 2*time.Second), []byte("/ready"), []byte("1"))
		return err == nil
	})
}

func (c *authCluster) leader() *authNode {
	c.t.Helper()
	var l *authNode
	nodetest.Eventually(c.t, 10*time.Second, "a leader", func() bool {
		for _, an := range c.nodes {
			if an.n != nil && an.n.Status().Role == "leader" {
				l = an
				return true
			}
		}
		return false
	})
	return l
}

func (c *authCluster) follower() *authNode {
	l := c.leader()
	for _, an := range c.nodes {
		if an != l {
			return an
		}
	}
	return nil
}

func wantStatus(t *testing.T, what string, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("%s: %v, want %v", what, err, code)
	}
}

func succeeds[T any](t *testing.T, what string) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
}

func valueOf(t *testing.T, cl *client.Client, key string) string {
	t.Helper()
	r, err := cl.Get(ctxT(t, 5*time.Second), []byte(key))
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	if r.Kv == nil {
		return "(absent)"
	}
	return string(r.Kv.Value)
}

func TestAuthRoles(t *testing.T) {
	c := startAuthCluster(t)
	ctx := ctxT(t, 2*time.Minute)
	root, alice, bob := c.client("root"), c.client("alice"), c.client("bob")
	succeeds[*pb.PutResponse](t, "root put")(root.Put(ctx, []byte("/app/x"), []byte("old")))
	succeeds[*pb.PutResponse](t, "root put")(root.Put(ctx, []byte("/other/x"), []byte("old")))

	// An identity with no role is refused, and nothing changes.
	_, err := alice.Put(ctx, []byte("/app/x"), []byte("new"))
	wantStatus(t, "put without a role", err, codes.PermissionDenied)
	if v := valueOf(t, root, "/app/x"); v != "old" {
		t.Fatalf("/app/x = %q after a refused put, want old", v)
	}
	_, err = alice.Get(ctx, []byte("/app/x"))
	wantStatus(t, "get without a role", err, codes.PermissionDenied)

	// A read role: get allowed, put refused.
	succeeds[*pb.AuthChangeResponse](t, "role add")(root.RoleAdd(ctx, "reader"))
	succeeds[*pb.AuthChangeResponse](t, "role grant")(root.RoleGrant(ctx, "reader", []byte("/app/"), pb.Access_READ))
	succeeds[*pb.AuthChangeResponse](t, "user grant")(root.UserGrant(ctx, "bob", "reader"))
	if v := valueOf(t, bob, "/app/x"); v != "old" {
		t.Fatalf("bob reads /app/x = %q, want old", v)
	}
	_, err = bob.Put(ctx, []byte("/app/x"), []byte("bob"))
	wantStatus(t, "put with a read role", err, codes.PermissionDenied)
	_, err = bob.Get(ctx, []byte("/other/x"))
	wantStatus(t, "get outside the role's prefix", err, codes.PermissionDenied)
	_, err = bob.Grant(ctx, 10)
	wantStatus(t, "lease grant with read access only", err, codes.PermissionDenied)

	// Readwrite on /app/ only.
	succeeds[*pb.AuthChangeResponse](t, "role add")(root.RoleAdd(ctx, "app"))
	succeeds[*pb.AuthChangeResponse](t, "role grant")(root.RoleGrant(ctx, "app", []byte("/app/"), pb.Access_READWRITE))
	succeeds[*pb.AuthChangeResponse](t, "user grant")(root.UserGrant(ctx, "alice", "app"))
	succeeds[*pb.PutResponse](t, "alice put /app/y")(alice.Put(ctx, []byte("/app/y"), []byte("alice")))
	_, err = alice.Put(ctx, []byte("/other/x"), []byte("alice"))
	wantStatus(t, "put outside readwrite prefix", err, codes.PermissionDenied)
	lease := succeeds[*pb.LeaseGrantResponse](t, "lease grant with readwrite")(alice.Grant(ctx, 60))
	// The lease's keys alice may not read are left out of what she is told.
	succeeds[*pb.PutResponse](t, "root put on alice's lease")(root.Put(ctx, []byte("/other/l"), []byte("v"), client.WithLease(lease.Id)))
	succeeds[*pb.PutResponse](t, "alice put on her lease")(alice.Put(ctx, []byte("/app/l"), []byte("v"), client.WithLease(lease.Id)))
	ttl := succeeds[*pb.LeaseTimeToLiveResponse](t, "time to live")(alice.TimeToLive(ctx, lease.Id, true))
	if len(ttl.Keys) != 1 || string(ttl.Keys[0]) != "/app/l" {
		t.Fatalf("alice's lease lists keys %q, want only /app/l", ttl.Keys)
	}
	// Revoking deletes every attached key: alice may not, since root's
	// /other/l is outside her readwrite prefix; nothing is deleted.
	_, err = alice.Revoke(ctx, lease.Id)
	wantStatus(t, "revoke of a lease carrying a key alice may not write", err, codes.PermissionDenied)
	if v := valueOf(t, root, "/other/l"); v != "v" {
		t.Fatalf("/other/l = %q after a refused revoke, want v", v)
	}
	if v := valueOf(t, root, "/app/l"); v != "v" {
		t.Fatalf("/app/l = %q after a refused revoke, want v", v)
	}
	// A lease with only her keys she may revoke.
	own := succeeds[*pb.LeaseGrantResponse](t, "lease grant")(alice.Grant(ctx, 60))
	succeeds[*pb.PutResponse](t, "alice put on her lease")(alice.Put(ctx, []byte("/app/own"), []byte("v"), client.WithLease(own.Id)))
	succeeds[*pb.LeaseRevokeResponse](t, "revoke of a lease with only alice's keys")(alice.Revoke(ctx, own.Id))
	if v := valueOf(t, root, "/app/own"); v != "(absent)" {
		t.Fatalf("/app/own = %q after its lease was revoked", v)
	}
	succeeds[*pb.LeaseRevokeResponse](t, "root revokes the shared lease")(root.Revoke(ctx, lease.Id))
	if v := valueOf(t, root, "/other/l"); v != "(absent)" {
		t.Fatalf("/other/l = %q after root revoked its lease", v)
	}

	// A txn needs every op's access: a put outside the prefix refuses all.
	aliceKV := pb.NewKVClient(c.conn("alice", c.leader().clientAddr))
	put := func(k string) *pb.TxnOp {
		return &pb.TxnOp{Op: &pb.TxnOp_Put{Put: &pb.PutRequest{Key: []byte(k), Value: []byte("txn")}}}
	}
	_, err = aliceKV.Txn(ctx, &pb.TxnRequest{Success: []*pb.TxnOp{put("/app/z"), put("/other/x")}})
	wantStatus(t, "txn writing outside the prefix", err, codes.PermissionDenied)
	if v := valueOf(t, root, "/app/z"); v != "(absent)" {
		t.Fatalf("/app/z = %q after a refused txn", v)
	}
	delPrefix := func(p string) *pb.TxnOp {
		return &pb.TxnOp{Op: &pb.TxnOp_DeletePrefix{DeletePrefix: &pb.DeletePrefixRequest{Prefix: []byte(p)}}}
	}
	_, err = aliceKV.Txn(ctx, &pb.TxnRequest{Success: []*pb.TxnOp{delPrefix("/")}})
	wantStatus(t, "delete_prefix wider than the role", err, codes.PermissionDenied)
	_, err = aliceKV.Txn(ctx, &pb.TxnRequest{Compares: []*pb.Compare{{Key: []byte("/other/x"), Target: &pb.Compare_Version{Version: 1}}},
		Success: []*pb.TxnOp{put("/app/z")}})
	wantStatus(t, "txn comparing a key it may not read", err, codes.PermissionDenied)
	succeeds[*pb.TxnResponse](t, "txn inside the prefix")(aliceKV.Txn(ctx, &pb.TxnRequest{Success: []*pb.TxnOp{put("/app/z")}}))

	// List delivers only the readable keys; a prefix with none is refused.
	l := succeeds[*pb.ListResponse](t, "alice lists /")(alice.List(ctx, []byte("/")))
	var keys []string
	for _, kv := range l.Kvs {
		keys = append(keys, string(kv.Key))
	}
	if want := []string{"/app/x", "/app/y", "/app/z"}; !slices.Equal(keys, want) {
		t.Fatalf("alice lists / = %v, want %v", keys, want)
	}
	_, err = alice.List(ctx, []byte("/other/"))
	wantStatus(t, "list of an unreadable prefix", err, codes.PermissionDenied)

	// Admin-only calls.
	_, err = alice.Snapshot(ctx, io.Discard, func(client.SnapshotInfo) error { return nil })
	wantStatus(t, "snapshot by a non-admin", err, codes.PermissionDenied)
	_, err = alice.AddVoter(ctx, "n9", "127.0.0.1:1", "127.0.0.1:2")
	wantStatus(t, "member add by a non-admin", err, codes.PermissionDenied)
	_, err = alice.RoleAdd(ctx, "mine")
	wantStatus(t, "role add by a non-admin", err, codes.PermissionDenied)
	succeeds[client.SnapshotInfo](t, "snapshot by root")(root.Snapshot(ctx, io.Discard, func(client.SnapshotInfo) error { return nil }))
	// An identity granted admin is one.
	succeeds[*pb.AuthChangeResponse](t, "grant admin")(root.UserGrant(ctx, "carol", "admin"))
	succeeds[[]*pb.Role](t, "role list by carol")(c.client("carol").RoleList(ctx))

	who := succeeds[*pb.WhoAmIResponse](t, "whoami")(alice.WhoAmI(ctx))
	if who.Identity != "alice" || !slices.Equal(who.Roles, []string{"app"}) || who.Admin || !who.Enforced {
		t.Fatalf("alice's whoami = %v", who)
	}
	roles := succeeds[[]*pb.Role](t, "role list")(root.RoleList(ctx))
	var names []string
	for _, r := range roles {
		names = append(names, r.Name)
	}
	if !slices.Equal(names, []string{"admin", "app", "reader"}) {
		t.Fatalf("roles %v", names)
	}
	_, err = root.RoleDelete(ctx, "admin")
	wantStatus(t, "deleting the built-in admin", err, codes.InvalidArgument)
	_, err = root.UserRevoke(ctx, "alice", "reader")
	wantStatus(t, "revoking a role not granted", err, codes.NotFound)
}

// Status and Members are open to any identity with a role and to member
// nodes (a node certificate names its id in a URI); SetMember to the member
// itself; nothing to an identity with neither, whatever its common name.
func TestAuthMemberCalls(t *testing.T) {
	c := startAuthCluster(t)
	ctx := ctxT(t, time.Minute)
	leader := c.leader()
	n2 := pb.NewClusterClient(c.connWith(c.ca.node("n2"), leader.clientAddr))
	succeeds[*pb.StatusResponse](t, "status by member n2")(n2.Status(ctx, &pb.StatusRequest{}))
	succeeds[*pb.MembersResponse](t, "members by member n2")(n2.Members(ctx, &pb.MembersRequest{}))
	var self *authNode
	for _, an := range c.nodes {
		if an.id == "n2" {
			self = an
		}
	}
	succeeds[*pb.SetMemberResponse](t, "n2 records its own address")(n2.SetMember(ctx, &pb.SetMemberRequest{Id: "n2", ClientAddr: self.clientAddr}))
	_, err := n2.SetMember(ctx, &pb.SetMemberRequest{Id: "n3", ClientAddr: "127.0.0.1:9"})
	wantStatus(t, "n2 records n3's address", err, codes.PermissionDenied)
	_, err = n2.AddVoter(ctx, &pb.AddVoterRequest{Id: "n9", RaftAddr: "127.0.0.1:1", ClientAddr: "127.0.0.1:2"})
	wantStatus(t, "member add by a node", err, codes.PermissionDenied)

	// A client certificate whose common name is a node id is a client like
	// any other: no node certificate, no member's rights.
	fake := pb.NewClusterClient(c.conn("n2", leader.clientAddr))
	_, err = fake.Status(ctx, &pb.StatusRequest{})
	wantStatus(t, "status by a client certificate named n2", err, codes.PermissionDenied)
	_, err = fake.SetMember(ctx, &pb.SetMemberRequest{Id: "n2", ClientAddr: "127.0.0.1:9"})
	wantStatus(t, "set member by a client certificate named n2", err, codes.PermissionDenied)
	// A node certificate of a node that is no member has no rights either.
	n9 := pb.NewClusterClient(c.connWith(c.ca.node("n9"), leader.clientAddr))
	_, err = n9.Status(ctx, &pb.StatusRequest{})
	wantStatus(t, "status by a node that is no member", err, codes.PermissionDenied)

	stranger := pb.NewClusterClient(c.conn("mallory", leader.clientAddr))
	_, err = stranger.Status(ctx, &pb.StatusRequest{})
	wantStatus(t, "status by an identity with no role", err, codes.PermissionDenied)
	// WhoAmI is open to anyone with a certificate the CA signed.
	_, err = pb.NewAuthClient(c.conn("mallory", leader.clientAddr)).WhoAmI(ctx, &pb.WhoAmIRequest{})
	if err != nil {
		t.Fatalf("whoami by an identity with no role: %v", err)
	}
}

// A prefix watch on "/" delivers only the keys the watcher may read, and
// stops delivering them once its role is revoked. The roles are granted
// through the leader and enforced by the follower the watch is on.
func TestAuthWatchFollowsCurrentRoles(t *testing.T) {
	c := startAuthCluster(t)
	ctx := ctxT(t, 2*time.Minute)
	root := c.client("root")
	f := c.follower()
	alice := c.client("alice", f.clientAddr)

	_, err := alice.Watch(ctx, []byte("/"), client.WithPrefix())
	wantStatus(t, "watch without a role", err, codes.PermissionDenied)

	succeeds[*pb.AuthChangeResponse](t, "role add")(root.RoleAdd(ctx, "app"))
	succeeds[*pb.AuthChangeResponse](t, "role grant")(root.RoleGrant(ctx, "app", []byte("/app/"), pb.Access_READ))
	succeeds[*pb.AuthChangeResponse](t, "user grant")(root.UserGrant(ctx, "alice", "app"))
	// The follower applies the grant: alice's serializable read there works.
	nodetest.Eventually(t, 10*time.Second, "the follower enforces the grant", func() bool {
		_, err := alice.Get(ctxT(t, time.Second), []byte("/app/x"), client.WithSerializable())
		return err == nil
	})
	_, err = alice.Get(ctx, []byte("/other/x"), client.WithSerializable())
	wantStatus(t, "follower read outside the role", err, codes.PermissionDenied)
	_, err = alice.Watch(ctx, []byte("/other/"), client.WithPrefix())
	wantStatus(t, "watch of an unreadable prefix", err, codes.PermissionDenied)
	_, err = alice.Watch(ctx, []byte("/other/x"))
	wantStatus(t, "watch of an unreadable key", err, codes.PermissionDenied)

	w, err := alice.Watch(ctx, []byte("/"), client.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	events := nodetest.Collect(w)
	for _, k := range []string{"/other/a", "/app/a", "/secret/b", "/app/b"} {
		succeeds[*pb.PutResponse](t, "root put")(root.Put(ctx, []byte(k), []byte("v")))
	}
	for _, want := range []string{"/app/a", "/app/b"} {
		if ev := nodetest.NextData(t, events, 10*time.Second); string(ev.Key) != want {
			t.Fatalf("alice's watch delivered %s, want %s", ev.Key, want)
		}
	}

	// Revoked: /app/c is not delivered. A later grant on /late/ shows the
	// stream is still live and that /app/c was skipped, not delayed.
	succeeds[*pb.AuthChangeResponse](t, "user revoke")(root.UserRevoke(ctx, "alice", "app"))
	succeeds[*pb.PutResponse](t, "root put")(root.Put(ctx, []byte("/app/c"), []byte("v")))
	succeeds[*pb.AuthChangeResponse](t, "role add")(root.RoleAdd(ctx, "late"))
	succeeds[*pb.AuthChangeResponse](t, "role grant")(root.RoleGrant(ctx, "late", []byte("/late/"), pb.Access_READ))
	succeeds[*pb.AuthChangeResponse](t, "user grant")(root.UserGrant(ctx, "alice", "late"))
	succeeds[*pb.PutResponse](t, "root put")(root.Put(ctx, []byte("/late/x"), []byte("v")))
	if ev := nodetest.NextData(t, events, 10*time.Second); string(ev.Key) != "/late/x" {
		t.Fatalf("after the revoke alice's watch delivered %s, want /late/x", ev.Key)
	}
}

// The roles are in the replicated state: they survive a restart of every
// node.
func TestAuthSurvivesRestart(t *testing.T) {
	c := startAuthCluster(t)
	ctx := ctxT(t, 2*time.Minute)
	root := c.client("root")
	succeeds[*pb.AuthChangeResponse](t, "role add")(root.RoleAdd(ctx, "reader"))
	succeeds[*pb.AuthChangeResponse](t, "role grant")(root.RoleGrant(ctx, "reader", []byte("/app/"), pb.Access_READ))
	succeeds[*pb.AuthChangeResponse](t, "user grant")(root.UserGrant(ctx, "bob", "reader"))
	for _, an := range c.nodes {
		c.stop(an)
	}
	for _, an := range c.nodes {
		c.start(an)
	}
	c.waitWritable()
	bob := c.client("bob")
	if _, err := bob.Get(ctx, []byte("/app/x")); err != nil {
		t.Fatalf("bob's read after the restart: %v", err)
	}
	_, err := bob.Put(ctx, []byte("/app/x"), []byte("v"))
	wantStatus(t, "bob's put after the restart", err, codes.PermissionDenied)
	u := succeeds[*pb.User](t, "user get")(root.UserGet(ctx, "bob"))
	if !slices.Equal(u.Roles, []string{"reader"}) || u.Identity != "bob" {
		t.Fatalf("bob after the restart: %v", u)
	}
}

// List for an identity that may read only part of a prefix reads only the
// prefixes it may read: no page, next_key or more reveals another key,
// paging yields exactly the readable keys, all at the first page's
// revision, and a page stays within its byte bound across prefixes.
func TestAuthListRevealsOnlyReadableKeys(t *testing.T) {
	c := startAuthCluster(t)
	ctx := ctxT(t, 2*time.Minute)
	root := c.client("root")
	big := bytes.Repeat([]byte("b"), server.ListPageBytes*2/3)
	for _, k := range []string{"/a/1", "/app/a", "/app/b", "/app/c", "/apple", "/b/1", "/cfg/x", "/cfg/shared/1",
		"/cfg/shared/sub/1", "/cfg/zz", "/other/x", "/z"} {
		succeeds[*pb.PutResponse](t, "root put")(root.Put(ctx, []byte(k), []byte("v")))
	}
	succeeds[*pb.PutResponse](t, "root put")(root.Put(ctx, []byte("/app/big"), big))
	succeeds[*pb.PutResponse](t, "root put")(root.Put(ctx, []byte("/cfg/shared/0big"), big))
	succeeds[*pb.AuthChangeResponse](t, "role add")(root.RoleAdd(ctx, "app"))
	succeeds[*pb.AuthChangeResponse](t, "role grant")(root.RoleGrant(ctx, "app", []byte("/app/"), pb.Access_READWRITE))
	succeeds[*pb.AuthChangeResponse](t, "role grant")(root.RoleGrant(ctx, "app", []byte("/cfg/shared/sub/"), pb.Access_READ))
	succeeds[*pb.AuthChangeResponse](t, "role add")(root.RoleAdd(ctx, "cfg"))
	succeeds[*pb.AuthChangeResponse](t, "role grant")(root.RoleGrant(ctx, "cfg", []byte("/cfg/shared/"), pb.Access_READ))
	succeeds[*pb.AuthChangeResponse](t, "user grant")(root.UserGrant(ctx, "alice", "app"))
	succeeds[*pb.AuthChangeResponse](t, "user grant")(root.UserGrant(ctx, "alice", "cfg"))
	readable := []string{"/app/a", "/app/b", "/app/big", "/app/c", "/cfg/shared/0big", "/cfg/shared/1", "/cfg/shared/sub/1"}
	mayRead := func(k []byte) bool {
		return bytes.HasPrefix(k, []byte("/app/")) || bytes.HasPrefix(k, []byte("/cfg/shared/"))
	}

	leader := c.leader()
	kv := pb.NewKVClient(c.conn("alice", leader.clientAddr))
	// The review's case: one key a page from the last /app/ key on. Its
	// next_key named /apple, and paging from there /b/1, /cfg/x ... every
	// key of the prefix. Now it is the next readable prefix.
	r, err := kv.List(ctx, &pb.ListRequest{Prefix: []byte("/"), Limit: 1, StartKey: []byte("/app/c")})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Kvs) != 1 || string(r.Kvs[0].Key) != "/app/c" || !r.More || string(r.NextKey) != "/cfg/shared/" {
		t.Fatalf("page from /app/c: %d keys, more %v, next_key %q", len(r.Kvs), r.More, r.NextKey)
	}

	// Page through "/" by hand, writing between pages: every page at the
	// first one's revision, every key and next_key readable.
	for _, limit := range []uint64{1, 2, 3, 0} {
		req := &pb.ListRequest{Prefix: []byte("/"), Limit: limit}
		var got []string
		for page := 0; ; page++ {
			if page > 20 {
				t.Fatalf("limit %d: still paging after %d pages", limit, page)
			}
			r, err := kv.List(ctx, req)
			if err != nil {
				t.Fatalf("limit %d, page %d: %v", limit, page, err)
			}
			size := 0
			for _, p := range r.Kvs {
				if !mayRead(p.Key) {
					t.Fatalf("limit %d: alice got %q", limit, p.Key)
				}
				got = append(got, string(p.Key))
				size += len(p.Key) + len(p.Value) + fsm.KVOverhead
			}
			if limit > 0 && len(r.Kvs) > int(limit) || len(r.Kvs) > 1 && size > server.ListPageBytes {
				t.Fatalf("limit %d: a page of %d pairs, %d bytes", limit, len(r.Kvs), size)
			}
			if !r.More {
				break
			}
			if !mayRead(r.NextKey) {
				t.Fatalf("limit %d: next_key %q is not readable by alice", limit, r.NextKey)
			}
			if page == 0 {
				succeeds[*pb.PutResponse](t, "root put between pages")(root.Put(ctx, []byte("/app/bb"), []byte("late")))
				succeeds[*pb.DeleteResponse](t, "root delete between pages")(root.Delete(ctx, []byte("/cfg/shared/1")))
			}
			req.StartKey, req.Revision = r.NextKey, r.Revision
		}
		if !slices.Equal(got, readable) {
			t.Fatalf("limit %d: alice paged through %v, want %v", limit, got, readable)
		}
		succeeds[*pb.DeleteResponse](t, "root delete")(root.Delete(ctx, []byte("/app/bb")))
		succeeds[*pb.PutResponse](t, "root put")(root.Put(ctx, []byte("/cfg/shared/1"), []byte("v")))
	}

	// The client's List follows the pages: the readable keys, no more.
	l := succeeds[*pb.ListResponse](t, "alice lists /")(c.client("alice").List(ctx, []byte("/")))
	var keys []string
	for _, p := range l.Kvs {
		keys = append(keys, string(p.Key))
	}
	if !slices.Equal(keys, readable) || l.More {
		t.Fatalf("alice lists / = %v (more %v), want %v", keys, l.More, readable)
	}
	// A start past every readable prefix: an empty last page.
	r, err = kv.List(ctx, &pb.ListRequest{Prefix: []byte("/"), StartKey: []byte("/d")})
	if err != nil || len(r.Kvs) != 0 || r.More || r.Revision == 0 {
		t.Fatalf("list from /d: %v, %d keys, more %v, revision %d", err, len(r.GetKvs()), r.GetMore(), r.GetRevision())
	}
	_, err = kv.List(ctx, &pb.ListRequest{Prefix: []byte("/"), StartKey: []byte("x")})
	wantStatus(t, "a start key outside the prefix", err, codes.InvalidArgument)
}

// A KeepAlive stream is checked for each renewal: once its identity may
// hold leases no more, the stream ends with PERMISSION_DENIED.
func TestAuthKeepAliveFollowsCurrentRoles(t *testing.T) {
	c := startAuthCluster(t)
	ctx := ctxT(t, time.Minute)
	root := c.client("root")
	succeeds[*pb.AuthChangeResponse](t, "role add")(root.RoleAdd(ctx, "app"))
	succeeds[*pb.AuthChangeResponse](t, "role grant")(root.RoleGrant(ctx, "app", []byte("/app/"), pb.Access_READWRITE))
	succeeds[*pb.AuthChangeResponse](t, "user grant")(root.UserGrant(ctx, "alice", "app"))
	leases := pb.NewLeaseClient(c.conn("alice", c.leader().clientAddr))
	g := succeeds[*pb.LeaseGrantResponse](t, "lease grant")(leases.Grant(ctx, &pb.LeaseGrantRequest{Ttl: 60}))
	stream, err := leases.KeepAlive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	renew := func() (*pb.LeaseKeepAliveResponse, error) {
		if err := stream.Send(&pb.LeaseKeepAliveRequest{Id: g.Id}); err != nil {
			return nil, err
		}
		return stream.Recv()
	}
	if r, err := renew(); err != nil || r.Ttl != 60 {
		t.Fatalf("renewal with the role: %v %v", r, err)
	}
	succeeds[*pb.AuthChangeResponse](t, "user revoke")(root.UserRevoke(ctx, "alice", "app"))
	_, err = renew()
	wantStatus(t, "renewal after the role was revoked", err, codes.PermissionDenied)
}

// A node that does not enforce roles refuses every role and user change
// (anyone could make it there, and it would hold once --auth is on); it
// still answers reads.
func TestRoleChangesNeedAuth(t *testing.T) {
	s := startSingle(t, nil)
	ctx := ctxT(t, 30*time.Second)
	for what, change := range map[string]func() error{
		"role add":    func() error { _, err := s.cl.RoleAdd(ctx, "app"); return err },
		"role delete": func() error { _, err := s.cl.RoleDelete(ctx, "app"); return err },
		"role grant":  func() error { _, err := s.cl.RoleGrant(ctx, "app", []byte("/app/"), pb.Access_READ); return err },
		"role revoke": func() error { _, err := s.cl.RoleRevoke(ctx, "app", []byte("/app/")); return err },
		"user grant":  func() error { _, err := s.cl.UserGrant(ctx, "mallory", "admin"); return err },
		"user revoke": func() error { _, err := s.cl.UserRevoke(ctx, "mallory", "admin"); return err },
	} {
		err := change()
		wantStatus(t, what+" without --auth", err, codes.FailedPrecondition)
		if !strings.Contains(err.Error(), "serve --auth") {
			t.Fatalf("%s without --auth: %v does not say what to do", what, err)
		}
	}
	roles := succeeds[[]*pb.Role](t, "role list")(s.cl.RoleList(ctx))
	if len(roles) != 1 || roles[0].Name != "admin" {
		t.Fatalf("roles after refused changes: %v", roles)
	}
	users := succeeds[[]*pb.User](t, "user list")(s.cl.UserList(ctx))
	if len(users) != 0 {
		t.Fatalf("users after refused changes: %v", users)
	}
}
