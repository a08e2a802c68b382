package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	rwclient "github.com/raftwatch/raftwatch/client"
	"github.com/raftwatch/raftwatch/cluster-test/history"
	pb "github.com/raftwatch/raftwatch/proto"
)

// Workload shape.
const (
	// numKeys: a small key space so operations collide.
	numKeys   = 5
	keyPrefix = "/jepsen/"
	// resetChance: how often a redirected client goes back to its home node,
	// so followers keep seeing (and rejecting) requests too.
	resetChance = 0.05
)

// Operation mix, in percent (the rest are deletes).
const (
	pctGet = 40
	pctPut = 25
	pctCAS = 25
)

func workloadKeys() []string {
	var ks []string
	for i := range numKeys {
		ks = append(ks, fmt.Sprintf("%sk%d", keyPrefix, i))
	}
	return ks
}

type endpoint struct {
	id   string
	addr string
}

// Client modes selectable with --clients.
const (
	clientsPinned   = history.ClientPinned
	clientsFailover = history.ClientFailover
	clientsBoth     = "both"
)

// workload runs the client processes. A pinned client sends every operation
// to one chosen node through the raw gRPC stubs, so its outcome is exactly
// what that node said; a failover client is the Go client given every
// endpoint, which picks the node itself, as users run it.
type workload struct {
	start       time.Time
	hist        *history.Writer
	nodes       []endpoint
	keys        []string
	consistency pb.Consistency
	opTimeout   time.Duration
	// concurrency is the number of clients of each kind that runs.
	concurrency int
	// pinned and failover: which kinds of client run.
	pinned, failover bool
	seed             uint64

	nextID  atomic.Int64
	nextVal atomic.Int64
	// counts of completions by outcome
	ok, fail, info atomic.Int64
}

func (w *workload) now() int64 { return time.Since(w.start).Nanoseconds() }

func (w *workload) addrOf(id string) string {
	for _, n := range w.nodes {
		if n.id == id {
			return n.addr
		}
	}
	return ""
}

// run starts the rate limiter and the clients and returns when ctx is done
// and every client has finished its current operation.
func (w *workload) run(ctx context.Context, rate float64) {
	tokens := tokenSource(ctx, rate)
	var wg sync.WaitGroup
	var kinds []string
	if w.pinned {
		kinds = append(kinds, history.ClientPinned)
	}
	if w.failover {
		kinds = append(kinds, history.ClientFailover)
	}
	for k, kind := range kinds {
		for i := range w.concurrency {
			wg.Add(1)
			go func() {
				defer wg.Done()
				w.client(ctx, kind, k*w.concurrency+i, tokens)
			}()
		}
	}
	wg.Wait()
}

// processes is the number of client goroutines; a client's process id moves
// on by it after an op of unknown outcome, so ids never collide.
func (w *workload) processes() int {
	n := 0
	if w.pinned {
		n += w.concurrency
	}
	if w.failover {
		n += w.concurrency
	}
	return n
}

// seenKey is what a client last learned about a key.
type seenKey struct {
	known  bool
	exists bool
	modRev uint64
}

type client struct {
	w    *workload
	kind string
	// Pinned clients: the home node, the node the next op goes to, and a
	// connection per node.
	home   endpoint
	target endpoint
	conns  map[string]*grpc.ClientConn
	// Failover clients: the Go client, one per process as each user
	// process has its own.
	rw      *rwclient.Client
	process int
	seen    map[string]seenKey
	rng     *rand.Rand
}

func (c *client) conn(addr string) (*grpc.ClientConn, error) {
	if cc, ok := c.conns[addr]; ok {
		return cc, nil
	}
	cc, err := grpc.NewClient(addr, dialOptions()...)
	if err != nil {
		return nil, err
	}
	c.conns[addr] = cc
	return cc, nil
}

func (w *workload) client(ctx context.Context, kind string, i int, tokens <-chan struct{}) {
	home := w.nodes[i%len(w.nodes)]
	c := &client{w: w, kind: kind, home: home, target: home, conns: map[string]*grpc.ClientConn{}, process: i,
		seen: map[string]seenKey{}, rng: rand.New(rand.NewPCG(w.seed, uint64(i)+1))}
	if kind == history.ClientFailover {
		var eps []string
		// Each client lists the endpoints from a different one, as users'
		// configurations do not all start with the same node.
		for j := range w.nodes {
			eps = append(eps, w.nodes[(i+j)%len(w.nodes)].addr)
		}
		rw, err := rwclient.New(rwclient.Config{Endpoints: eps})
		if err != nil {
			panic(err) // the endpoints are the harness's own host:port addresses
		}
		c.rw = rw
		defer rw.Close()
	}
	defer func() {
		for _, cc := range c.conns {
			cc.Close()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tokens:
		}
		c.step()
	}
}

// step issues one operation and records its invocation and completion.
func (c *client) step() {
	w := c.w
	key := w.keys[c.rng.IntN(len(w.keys))]
	inv := history.Event{Type: history.Invoke, ID: int(w.nextID.Add(1)), Process: c.process, Key: key}
	r := c.rng.IntN(100)
	switch {
	case r < pctGet:
		inv.Op = history.OpGet
		inv.Consistency = strings.ToLower(w.consistency.String())
	case r < pctGet+pctPut:
		inv.Op = history.OpPut
	case r < pctGet+pctPut+pctCAS:
		inv.Op = history.OpCAS
		if s := c.seen[key]; s.known && s.exists {
			inv.CondRev = s.modRev
		} else {
			inv.CondAbsent = true
		}
	default:
		inv.Op = history.OpDelete
	}
	if inv.Op == history.OpPut || inv.Op == history.OpCAS {
		inv.Value = fmt.Sprintf("v%d", w.nextVal.Add(1))
	}
	inv.Client = c.kind
	var cc *grpc.ClientConn
	if c.kind == history.ClientPinned {
		if c.rng.Float64() < resetChance {
			c.target = c.home
		}
		ep := c.target
		if inv.Op == history.OpGet && w.consistency == pb.Consistency_SERIALIZABLE {
			ep = c.home // serializable reads are served locally: keep them spread
		}
		inv.Node = ep.id
		var err error
		if cc, err = c.conn(ep.addr); err != nil {
			panic(err) // NewClient only fails on a malformed target
		}
	}
	inv.Time = w.now()
	w.hist.Write(inv)

	ctx, cancel := context.WithTimeout(context.Background(), w.opTimeout)
	comp := inv
	comp.Type = history.OK
	comp.Value, comp.CondRev, comp.CondAbsent, comp.Consistency = "", 0, false, ""
	var err error
	if c.kind == history.ClientPinned {
		err = c.call(ctx, cc, inv, &comp)
	} else {
		err = c.callFailover(ctx, inv, &comp)
	}
	cancel()
	comp.Time = w.now()
	if err != nil {
		comp.Type, comp.Error = classify(err)
		if hint := notLeaderHint(err); hint != "" {
			if addr := w.addrOf(hint); addr != "" {
				c.target = endpoint{id: hint, addr: addr}
			}
		}
	}
	switch comp.Type {
	case history.OK:
		w.ok.Add(1)
	case history.Fail:
		w.fail.Add(1)
	default:
		w.info.Add(1)
		// The op may still be in flight: later ops of this client get a new
		// process id (as in Jepsen), and it goes back home.
		c.process += w.processes()
		c.target = c.home
	}
	w.hist.Write(comp)
}

func (c *client) call(ctx context.Context, cc *grpc.ClientConn, inv history.Event, comp *history.Event) error {
	kv := pb.NewKVClient(cc)
	key := []byte(inv.Key)
	switch inv.Op {
	case history.OpGet:
		resp, err := kv.Get(ctx, &pb.GetRequest{Key: key, Consistency: c.w.consistency})
		if err != nil {
			return err
		}
		c.readResult(inv.Key, resp, comp)
	case history.OpPut, history.OpCAS:
		req := &pb.PutRequest{Key: key, Value: []byte(inv.Value), PrevKv: true}
		if inv.Op == history.OpCAS {
			if inv.CondAbsent {
				req.Condition = &pb.Condition{Require: &pb.Condition_Absent{Absent: true}}
			} else {
				req.Condition = &pb.Condition{Require: &pb.Condition_ModRevision{ModRevision: inv.CondRev}}
			}
		}
		resp, err := kv.Put(ctx, req)
		if err != nil {
			return err
		}
		c.writeResult(inv, resp, comp)
		recordPrev(comp, resp.PrevKv)
	case history.OpDelete:
		resp, err := kv.Delete(ctx, &pb.DeleteRequest{Key: key, PrevKv: true})
		if err != nil {
			return err
		}
		comp.Revision, comp.Deleted = resp.Revision, resp.Deleted
		recordPrev(comp, resp.PrevKv)
		c.seen[inv.Key] = seenKey{known: true}
	}
	return nil
}

// recordPrev records a write's previous value (nil: the key was absent).
func recordPrev(comp *history.Event, p *pb.KeyValue) {
	comp.PrevKnown = true
	if p != nil {
		comp.PrevFound, comp.PrevValue = true, string(p.Value)
	}
}

// callFailover is call through the Go client, which picks the node.
func (c *client) callFailover(ctx context.Context, inv history.Event, comp *history.Event) error {
	key := []byte(inv.Key)
	switch inv.Op {
	case history.OpGet:
		var opts []rwclient.OpOption
		if c.w.consistency == pb.Consistency_SERIALIZABLE {
			opts = append(opts, rwclient.WithSerializable())
		}
		resp, err := c.rw.Get(ctx, key, opts...)
		if err != nil {
			return err
		}
		c.readResult(inv.Key, resp, comp)
	case history.OpPut, history.OpCAS:
		opts := []rwclient.OpOption{rwclient.WithPrevKV()}
		if inv.Op == history.OpCAS {
			if inv.CondAbsent {
				opts = append(opts, rwclient.WithAbsent())
			} else {
				opts = append(opts, rwclient.WithModRevision(inv.CondRev))
			}
		}
		resp, err := c.rw.Put(ctx, key, []byte(inv.Value), opts...)
		if err != nil {
			return err
		}
		c.writeResult(inv, resp, comp)
		recordPrev(comp, resp.PrevKv)
	case history.OpDelete:
		resp, err := c.rw.Delete(ctx, key, rwclient.WithPrevKV())
		if err != nil {
			return err
		}
		comp.Revision, comp.Deleted = resp.Revision, resp.Deleted
		recordPrev(comp, resp.PrevKv)
		c.seen[inv.Key] = seenKey{known: true}
	}
	return nil
}

// readResult records a get's response in comp and in what c has seen.
func (c *client) readResult(key string, resp *pb.GetResponse, comp *history.Event) {
	comp.Revision = resp.Revision
	if resp.Kv != nil {
		comp.Found, comp.ReadValue, comp.ModRev = true, string(resp.Kv.Value), resp.Kv.ModRevision
		c.seen[key] = seenKey{known: true, exists: true, modRev: resp.Kv.ModRevision}
	} else {
		c.seen[key] = seenKey{known: true}
	}
}

// writeResult records a put's or cas's response in comp and in what c has
// seen.
func (c *client) writeResult(inv history.Event, resp *pb.PutResponse, comp *history.Event) {
	comp.Revision, comp.ModRev = resp.Revision, resp.ModRevision
	comp.Succeeded = resp.Succeeded || inv.Op == history.OpPut
	if comp.Succeeded {
		c.seen[inv.Key] = seenKey{known: true, exists: true, modRev: resp.Revision}
	} else {
		c.seen[inv.Key] = seenKey{known: true, exists: resp.PrevKv != nil, modRev: resp.ModRevision}
	}
}

// classify maps an error to fail (definitely not applied) or info (unknown).
// It is conservative: only errors the contract says were not applied are
// fail (FAILED_PRECONDITION, INVALID_ARGUMENT, RESOURCE_EXHAUSTED, and
// UNAVAILABLE carrying the server's NOT_APPLIED marker); everything else,
// including transport errors and deadlines, is info. Reads are recorded the
// same way; the checker ignores reads that did not succeed.
func classify(err error) (string, string) {
	st, ok := status.FromError(err)
	if !ok {
		return history.Info, err.Error()
	}
	msg := st.Code().String() + ": " + st.Message()
	switch st.Code() {
	case codes.FailedPrecondition, codes.InvalidArgument, codes.ResourceExhausted:
		return history.Fail, msg
	case codes.Unavailable:
		// The server's NOT_APPLIED marker, or a connection that was never
		// established (the request never left this process): the same rule
		// the Go client uses before it retries a write.
		if rwclient.NotApplied(err) {
			return history.Fail, msg
		}
	}
	return history.Info, msg
}

// notLeaderHint returns the leader id from a NotLeader status detail.
func notLeaderHint(err error) string {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.FailedPrecondition {
		return ""
	}
	for _, d := range st.Details() {
		if nl, ok := d.(*pb.NotLeader); ok {
			return nl.LeaderId
		}
	}
	return ""
}
