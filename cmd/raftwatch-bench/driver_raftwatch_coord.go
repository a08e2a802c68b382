//go:build !noraftwatch

package main

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/raftwatch/raftwatch/client"
	pb "github.com/raftwatch/raftwatch/proto"
)

// leaderConns is one gRPC connection per endpoint, made on first use, and
// the last node that answered as leader. Txn and lease calls go to the
// leader: like the Go client's writes, a call starts at the last known
// leader (else the first endpoint) and follows NotLeader hints; a hint
// without an address moves on to the next endpoint. A NotLeader answer
// guarantees the call was not applied, so following it is safe; any other
// error is the call's result.
type leaderConns struct {
	endpoints []string

	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	leader string
}

func newLeaderConns(endpoints []string) *leaderConns {
	return &leaderConns{endpoints: endpoints, conns: map[string]*grpc.ClientConn{}}
}

func (l *leaderConns) conn(addr string) (*grpc.ClientConn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if cc, ok := l.conns[addr]; ok {
		return cc, nil
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	l.conns[addr] = cc
	return cc, nil
}

func (l *leaderConns) guess() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.leader
}

func (l *leaderConns) setLeader(addr string) {
	l.mu.Lock()
	l.leader = addr
	l.mu.Unlock()
}

// maxHops bounds the NotLeader answers one call follows: enough to go
// round every endpoint twice.
func (l *leaderConns) maxHops() int { return 2*len(l.endpoints) + 1 }

// onLeader runs call on the leader's connection.
func (l *leaderConns) onLeader(call func(cc *grpc.ClientConn) error) error {
	addr := l.guess()
	for hop := 0; ; hop++ {
		if addr == "" {
			addr = l.endpoints[hop%len(l.endpoints)]
		}
		cc, err := l.conn(addr)
		if err == nil {
			err = call(cc)
		}
		if err == nil {
			l.setLeader(addr)
			return nil
		}
		hint, ok := client.NotLeaderHint(err)
		if !ok || hop+1 >= l.maxHops() {
			return err
		}
		l.setLeader("")
		addr = hint.LeaderAddr
	}
}

func (l *leaderConns) close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	for _, cc := range l.conns {
		errs = append(errs, cc.Close())
	}
	l.conns = map[string]*grpc.ClientConn{}
	return errors.Join(errs...)
}

func txnPut(key, value []byte) *pb.TxnOp {
	return &pb.TxnOp{Op: &pb.TxnOp_Put{Put: &pb.PutRequest{Key: key, Value: value}}}
}

func (d *raftwatchDriver) txn(ctx context.Context, req *pb.TxnRequest) (*pb.TxnResponse, error) {
	var resp *pb.TxnResponse
	err := d.raw.onLeader(func(cc *grpc.ClientConn) (err error) {
		resp, err = pb.NewKVClient(cc).Txn(ctx, req)
		return err
	})
	return resp, err
}

func (d *raftwatchDriver) PutAll(ctx context.Context, keys [][]byte, value []byte) (uint64, error) {
	req := &pb.TxnRequest{}
	for _, k := range keys {
		req.Success = append(req.Success, txnPut(k, value))
	}
	resp, err := d.txn(ctx, req)
	if err != nil {
		return 0, fmt.Errorf("raftwatch txn of %d puts: %w", len(keys), err)
	}
	return resp.GetRevision(), nil
}

func (d *raftwatchDriver) Txn2(ctx context.Context, a, b []byte, revA, revB uint64, value []byte) (TxnOutcome, error) {
	modRev := func(key []byte, rev uint64) *pb.Compare {
		return &pb.Compare{Key: key, Result: pb.Compare_EQUAL, Target: &pb.Compare_ModRevision{ModRevision: rev}}
	}
	get := func(key []byte) *pb.TxnOp { return &pb.TxnOp{Op: &pb.TxnOp_Get{Get: &pb.GetRequest{Key: key}}} }
	resp, err := d.txn(ctx, &pb.TxnRequest{
		Compares: []*pb.Compare{modRev(a, revA), modRev(b, revB)},
		Success:  []*pb.TxnOp{txnPut(a, value), txnPut(b, value)},
		Failure:  []*pb.TxnOp{get(a), get(b)},
	})
	if err != nil {
		return TxnOutcome{}, fmt.Errorf("raftwatch txn: %w", err)
	}
	if resp.GetSucceeded() {
		return TxnOutcome{Succeeded: true, RevA: resp.GetRevision(), RevB: resp.GetRevision()}, nil
	}
	res := resp.GetResults()
	if len(res) != 2 {
		return TxnOutcome{}, fmt.Errorf("raftwatch txn: failure branch answered %d results, want 2", len(res))
	}
	// An absent key has no kv: mod revision 0.
	return TxnOutcome{RevA: res[0].GetGet().GetKv().GetModRevision(), RevB: res[1].GetGet().GetKv().GetModRevision()}, nil
}

func (d *raftwatchDriver) Grant(ctx context.Context, ttl int64) (int64, error) {
	var resp *pb.LeaseGrantResponse
	err := d.raw.onLeader(func(cc *grpc.ClientConn) (err error) {
		resp, err = pb.NewLeaseClient(cc).Grant(ctx, &pb.LeaseGrantRequest{Ttl: ttl})
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("raftwatch lease grant: %w", err)
	}
	return resp.GetId(), nil
}

func (d *raftwatchDriver) Revoke(ctx context.Context, id int64) error {
	err := d.raw.onLeader(func(cc *grpc.ClientConn) error {
		_, err := pb.NewLeaseClient(cc).Revoke(ctx, &pb.LeaseRevokeRequest{Id: id})
		return err
	})
	if err != nil {
		return fmt.Errorf("raftwatch lease revoke %x: %w", id, err)
	}
	return nil
}

// KeepAliveStream returns a Lease.KeepAlive stream that is opened on the
// first keepalive, on the leader: the leader serves the stream, and a
// follower's NotLeader answer (at the first receive) moves it to the
// hinted node.
func (d *raftwatchDriver) KeepAliveStream(ctx context.Context) (KeepAliveStream, error) {
	life, kill := context.WithCancel(ctx)
	return &raftwatchKeepAlive{raw: d.raw, life: life, kill: kill}, nil
}

// raftwatchKeepAlive is used by one goroutine; only kill may be called
// from another (when a keepalive's context ends).
type raftwatchKeepAlive struct {
	raw  *leaderConns
	life context.Context // every stream it opens lives within it
	kill context.CancelFunc

	st     pb.Lease_KeepAliveClient
	addr   string
	cancel context.CancelFunc // the current stream's
}

func (k *raftwatchKeepAlive) KeepAlive(ctx context.Context, id int64) error {
	stop := context.AfterFunc(ctx, k.kill) // a late answer breaks the stream
	defer stop()
	for hop := 0; ; hop++ {
		if k.st == nil {
			if err := k.open(hop); err != nil {
				return err
			}
		}
		resp, err := k.roundTrip(id)
		if err == nil {
			if resp.GetId() != id {
				return fmt.Errorf("raftwatch keepalive %x: answer is for lease %x", id, resp.GetId())
			}
			if resp.GetTtl() <= 0 {
				return fmt.Errorf("raftwatch keepalive %x: lease not found", id)
			}
			k.raw.setLeader(k.addr)
			return nil
		}
		hint, ok := client.NotLeaderHint(err)
		if !ok || hop+1 >= k.raw.maxHops() {
			return fmt.Errorf("raftwatch keepalive %x: %w", id, err)
		}
		// A follower ended the stream: reopen it where the hint points.
		k.cancel()
		k.st, k.cancel = nil, nil
		k.raw.setLeader(hint.LeaderAddr)
	}
}

// open starts the stream on the last known leader, else endpoint hop.
func (k *raftwatchKeepAlive) open(hop int) error {
	addr := k.raw.guess()
	if addr == "" {
		addr = k.raw.endpoints[hop%len(k.raw.endpoints)]
	}
	cc, err := k.raw.conn(addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(k.life)
	st, err := pb.NewLeaseClient(cc).KeepAlive(ctx)
	if err != nil {
		cancel()
		return fmt.Errorf("raftwatch lease keepalive stream on %s: %w", addr, err)
	}
	k.st, k.addr, k.cancel = st, addr, cancel
	return nil
}

func (k *raftwatchKeepAlive) roundTrip(id int64) (*pb.LeaseKeepAliveResponse, error) {
	if err := k.st.Send(&pb.LeaseKeepAliveRequest{Id: id}); err != nil {
		// A failed Send means the stream ended; Recv returns its status.
		if _, rerr := k.st.Recv(); rerr != nil {
			return nil, rerr
		}
		return nil, err
	}
	return k.st.Recv()
}

func (k *raftwatchKeepAlive) Close() { k.kill() }
