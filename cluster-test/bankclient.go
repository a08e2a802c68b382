package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"

	"google.golang.org/grpc"

	rwclient "github.com/raftwatch/raftwatch/client"
	"github.com/raftwatch/raftwatch/cluster-test/history"
	pb "github.com/raftwatch/raftwatch/proto"
)

// The txn workload's clients (bankClient), one per client process, of the
// two kinds the KV workload runs: a pinned client sends each Txn to one
// node through the raw gRPC stub, following leader hints and going back
// home now and then; a failover client is the Go client (client.Txn) given
// every endpoint. Both send the same TxnRequests:
//
//   - ReadAll: a Txn without compares whose success branch gets every
//     account. It goes through the log like any Txn, so it is one snapshot
//     (the state after the entries before its own) and linearizable; its
//     revision is its entry's index.
//   - Transfer: if mod_revision(from) == FromRev and mod_revision(to) ==
//     ToRev then put both new values, else get both.
//   - InitKeys: if every key is absent then put every value.
//
// Errors are returned as they came (gRPC statuses, or the Go client's
// errors, which carry one); the workload classifies them with classify:
// only a status that says the Txn was not applied is a fail.

// newTxnBankClient makes a bank client of kind (history.ClientPinned or
// history.ClientFailover) for nodes, the first being its home (pinned) or
// the endpoint it tries first (failover).
func newTxnBankClient(kind string, nodes []endpoint, seed uint64) (bankClient, error) {
	if len(nodes) == 0 {
		return nil, fmt.Errorf("bank client: no endpoints")
	}
	switch kind {
	case history.ClientPinned:
		return &pinnedBank{nodes: nodes, home: nodes[0], target: nodes[0], conns: map[string]*grpc.ClientConn{},
			rng: rand.New(rand.NewPCG(seed, 7))}, nil
	case history.ClientFailover:
		var addrs []string
		for _, n := range nodes {
			addrs = append(addrs, n.addr)
		}
		c, err := rwclient.New(rwclient.Config{Endpoints: addrs})
		if err != nil {
			return nil, fmt.Errorf("bank client: %w", err)
		}
		return &failoverBank{c: c}, nil
	}
	return nil, fmt.Errorf("bank client: unknown client kind %q", kind)
}

// txnSender sends one TxnRequest.
type txnSender func(ctx context.Context, req *pb.TxnRequest) (*pb.TxnResponse, error)

// readAllTxn is ReadAll's request: no compares, a get of every account.
func readAllTxn(accounts []string) *pb.TxnRequest {
	req := &pb.TxnRequest{}
	for _, a := range accounts {
		req.Success = append(req.Success, getOp(a))
	}
	return req
}

// transferTxn is Transfer's request.
func transferTxn(t bankTransfer) *pb.TxnRequest {
	return &pb.TxnRequest{
		Compares: []*pb.Compare{modRevIs(t.From, t.FromRev), modRevIs(t.To, t.ToRev)},
		Success:  []*pb.TxnOp{putOp(t.From, t.FromValue), putOp(t.To, t.ToValue)},
		Failure:  []*pb.TxnOp{getOp(t.From), getOp(t.To)},
	}
}

// initTxn is InitKeys's request, keys in order so it is reproducible.
func initTxn(values map[string]string) *pb.TxnRequest {
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	req := &pb.TxnRequest{}
	for _, k := range keys {
		req.Compares = append(req.Compares, &pb.Compare{Key: []byte(k), Result: pb.Compare_EQUAL,
			Target: &pb.Compare_Exists{Exists: false}})
		req.Success = append(req.Success, putOp(k, values[k]))
	}
	return req
}

func modRevIs(key string, rev uint64) *pb.Compare {
	return &pb.Compare{Key: []byte(key), Result: pb.Compare_EQUAL, Target: &pb.Compare_ModRevision{ModRevision: rev}}
}

func putOp(key, value string) *pb.TxnOp {
	return &pb.TxnOp{Op: &pb.TxnOp_Put{Put: &pb.PutRequest{Key: []byte(key), Value: []byte(value)}}}
}

func getOp(key string) *pb.TxnOp {
	return &pb.TxnOp{Op: &pb.TxnOp_Get{Get: &pb.GetRequest{Key: []byte(key)}}}
}

// snapshotOf reads the gets of a Txn's results into a snapshot at the
// Txn's revision.
func snapshotOf(resp *pb.TxnResponse) (bankSnapshot, error) {
	s := bankSnapshot{Revision: resp.Revision, Values: map[string]string{}, ModRevs: map[string]uint64{}}
	for i, r := range resp.Results {
		g := r.GetGet()
		if g == nil {
			return s, fmt.Errorf("txn at revision %d: result %d is not a get: %v", resp.Revision, i, r)
		}
		if kv := g.Kv; kv != nil {
			s.Values[string(kv.Key)], s.ModRevs[string(kv.Key)] = string(kv.Value), kv.ModRevision
		}
	}
	return s, nil
}

func readAll(ctx context.Context, send txnSender, accounts []string) (bankSnapshot, error) {
	resp, err := send(ctx, readAllTxn(accounts))
	if err != nil {
		return bankSnapshot{}, err
	}
	if !resp.Succeeded || len(resp.Results) != len(accounts) {
		return bankSnapshot{}, fmt.Errorf("read txn at revision %d: succeeded=%v with %d results for %d gets",
			resp.Revision, resp.Succeeded, len(resp.Results), len(accounts))
	}
	return snapshotOf(resp)
}

func transfer(ctx context.Context, send txnSender, t bankTransfer) (bankOutcome, error) {
	resp, err := send(ctx, transferTxn(t))
	if err != nil {
		return bankOutcome{}, err
	}
	out := bankOutcome{Revision: resp.Revision, Succeeded: resp.Succeeded}
	if !resp.Succeeded {
		if out.Failure, err = snapshotOf(resp); err != nil {
			return bankOutcome{}, err
		}
	}
	return out, nil
}

func initKeys(ctx context.Context, send txnSender, values map[string]string) (uint64, bool, error) {
	resp, err := send(ctx, initTxn(values))
	if err != nil {
		return 0, false, err
	}
	return resp.Revision, resp.Succeeded, nil
}

// pinnedBank is a pinned bank client: every Txn goes to one node, the one a
// NotLeader hint named last (else home); now and then it goes back home.
type pinnedBank struct {
	nodes  []endpoint
	home   endpoint
	target endpoint
	conns  map[string]*grpc.ClientConn
	rng    *rand.Rand
}

// Target is the node the next op goes to (recorded as the op's node).
func (b *pinnedBank) Target() string {
	if b.rng.Float64() < resetChance {
		b.target = b.home
	}
	return b.target.id
}

func (b *pinnedBank) send(ctx context.Context, req *pb.TxnRequest) (*pb.TxnResponse, error) {
	cc, ok := b.conns[b.target.addr]
	if !ok {
		var err error
		if cc, err = grpc.NewClient(b.target.addr, dialOptions()...); err != nil {
			return nil, err
		}
		b.conns[b.target.addr] = cc
	}
	resp, err := pb.NewKVClient(cc).Txn(ctx, req)
	if err != nil {
		if hint := notLeaderHint(err); hint != "" {
			for _, n := range b.nodes {
				if n.id == hint {
					b.target = n
				}
			}
		} else if typ, _ := classify(err); typ == history.Info {
			b.target = b.home
		}
	}
	return resp, err
}

func (b *pinnedBank) InitKeys(ctx context.Context, values map[string]string) (uint64, bool, error) {
	return initKeys(ctx, b.send, values)
}

func (b *pinnedBank) ReadAll(ctx context.Context, accounts []string) (bankSnapshot, error) {
	return readAll(ctx, b.send, accounts)
}

func (b *pinnedBank) Transfer(ctx context.Context, t bankTransfer) (bankOutcome, error) {
	return transfer(ctx, b.send, t)
}

func (b *pinnedBank) Close() error {
	for _, cc := range b.conns {
		cc.Close()
	}
	return nil
}

// failoverBank is a failover bank client: the Go client's Txn.
type failoverBank struct{ c *rwclient.Client }

func (b *failoverBank) send(ctx context.Context, req *pb.TxnRequest) (*pb.TxnResponse, error) {
	t := b.c.Txn(ctx)
	for _, c := range req.Compares {
		t = t.If(cmpOf(c))
	}
	for _, o := range req.Success {
		t = t.Then(opOf(o))
	}
	for _, o := range req.Failure {
		t = t.Else(opOf(o))
	}
	return t.Commit()
}

// cmpOf is the Go client's form of the compares the bank client builds.
func cmpOf(c *pb.Compare) rwclient.Cmp {
	switch t := c.Target.(type) {
	case *pb.Compare_ModRevision:
		return rwclient.Compare(rwclient.ModRevision(c.Key), "=", t.ModRevision)
	case *pb.Compare_Exists:
		if t.Exists {
			return rwclient.Exists(c.Key)
		}
		return rwclient.Absent(c.Key)
	}
	panic(fmt.Sprintf("bank client: no Go client form for compare %v", c)) // only the ones above are built
}

// opOf is the Go client's form of the ops the bank client builds.
func opOf(o *pb.TxnOp) rwclient.Op {
	switch t := o.Op.(type) {
	case *pb.TxnOp_Put:
		return rwclient.OpPut(t.Put.Key, t.Put.Value)
	case *pb.TxnOp_Get:
		return rwclient.OpGet(t.Get.Key)
	}
	panic(fmt.Sprintf("bank client: no Go client form for op %v", o)) // only the ones above are built
}

func (b *failoverBank) InitKeys(ctx context.Context, values map[string]string) (uint64, bool, error) {
	return initKeys(ctx, b.send, values)
}

func (b *failoverBank) ReadAll(ctx context.Context, accounts []string) (bankSnapshot, error) {
	return readAll(ctx, b.send, accounts)
}

func (b *failoverBank) Transfer(ctx context.Context, t bankTransfer) (bankOutcome, error) {
	return transfer(ctx, b.send, t)
}

func (b *failoverBank) Close() error { return b.c.Close() }
