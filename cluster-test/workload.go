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
	// notAppliedReason is the ErrorInfo reason the server attaches to an
	// UNAVAILABLE error whose request was certainly not applied.
	notAppliedReason = "NOT_APPLIED"
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

// workload runs the client processes. Every operation goes to one chosen node
// through the raw gRPC stubs, so its outcome is exactly what that node said.
type workload struct {
	start       time.Time
	hist        *history.Writer
	nodes       []endpoint
	keys        []string
	consistency pb.Consistency
	opTimeout   time.Duration
	concurrency int
	seed        uint64

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
	tokens := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Duration(float64(time.Second) / rate))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				select {
				case tokens <- struct{}{}:
				default: // every client busy: drop the token, keep the bound
				}
			}
		}
	}()
	var wg sync.WaitGroup
	for i := range w.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.client(ctx, i, tokens)
		}()
	}
	wg.Wait()
}

// seenKey is what a client last learned about a key.
type seenKey struct {
	known  bool
	exists bool
	modRev uint64
}

type client struct {
	w       *workload
	home    endpoint
	target  endpoint
	conns   map[string]*grpc.ClientConn
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

func (w *workload) client(ctx context.Context, i int, tokens <-chan struct{}) {
	home := w.nodes[i%len(w.nodes)]
	c := &client{w: w, home: home, target: home, conns: map[string]*grpc.ClientConn{}, process: i,
		seen: map[string]seenKey{}, rng: rand.New(rand.NewPCG(w.seed, uint64(i)+1))}
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
	if c.rng.Float64() < resetChance {
		c.target = c.home
	}
	ep := c.target
	if inv.Op == history.OpGet && w.consistency == pb.Consistency_SERIALIZABLE {
		ep = c.home // serializable reads are served locally: keep them spread
	}
	inv.Node = ep.id
	cc, err := c.conn(ep.addr)
	if err != nil {
		panic(err) // NewClient only fails on a malformed target
	}
	inv.Time = w.now()
	w.hist.Write(inv)

	ctx, cancel := context.WithTimeout(context.Background(), w.opTimeout)
	comp := inv
	comp.Type = history.OK
	comp.Value, comp.CondRev, comp.CondAbsent, comp.Consistency = "", 0, false, ""
	err = c.call(ctx, cc, inv, &comp)
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
		c.process += w.concurrency
		c.target = c.home
	}
	w.hist.Write(comp)
}

func (c *client) call(ctx context.Context, cc *grpc.ClientConn, inv history.Event, comp *history.Event) error {
	kv := pb.NewKVClient(cc)
	key := []byte(inv.Key)
	prev := func(p *pb.KeyValue) {
		comp.PrevKnown = true
		if p != nil {
			comp.PrevFound, comp.PrevValue = true, string(p.Value)
		}
	}
	switch inv.Op {
	case history.OpGet:
		resp, err := kv.Get(ctx, &pb.GetRequest{Key: key, Consistency: c.w.consistency})
		if err != nil {
			return err
		}
		comp.Revision = resp.Revision
		if resp.Kv != nil {
			comp.Found, comp.ReadValue, comp.ModRev = true, string(resp.Kv.Value), resp.Kv.ModRevision
			c.seen[inv.Key] = seenKey{known: true, exists: true, modRev: resp.Kv.ModRevision}
		} else {
			c.seen[inv.Key] = seenKey{known: true}
		}
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
		comp.Revision, comp.ModRev = resp.Revision, resp.ModRevision
		comp.Succeeded = resp.Succeeded || inv.Op == history.OpPut
		prev(resp.PrevKv)
		if comp.Succeeded {
			c.seen[inv.Key] = seenKey{known: true, exists: true, modRev: resp.Revision}
		} else {
			c.seen[inv.Key] = seenKey{known: true, exists: resp.PrevKv != nil, modRev: resp.ModRevision}
		}
	case history.OpDelete:
		resp, err := kv.Delete(ctx, &pb.DeleteRequest{Key: key, PrevKv: true})
		if err != nil {
			return err
		}
		comp.Revision, comp.Deleted = resp.Revision, resp.Deleted
		prev(resp.PrevKv)
		c.seen[inv.Key] = seenKey{known: true}
	}
	return nil
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
