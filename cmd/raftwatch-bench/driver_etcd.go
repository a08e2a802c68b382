package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	etcdpb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// etcdDialTimeout bounds the wait for the first connection of a client.
const etcdDialTimeout = 5 * time.Second

func init() { drivers["etcd"] = dialEtcd }

type etcdDriver struct{ c *clientv3.Client }

func dialEtcd(endpoints []string) (Driver, error) {
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: etcdDialTimeout,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client for %v: %w", endpoints, err)
	}
	return &etcdDriver{c: c}, nil
}

func (d *etcdDriver) Put(ctx context.Context, key, value []byte) error {
	_, err := d.c.Put(ctx, string(key), string(value))
	return err
}

func (d *etcdDriver) Get(ctx context.Context, key []byte, serializable bool) error {
	var opts []clientv3.OpOption
	if serializable {
		opts = append(opts, clientv3.WithSerializable())
	}
	_, err := d.c.Get(ctx, string(key), opts...)
	return err
}

func (d *etcdDriver) Watch(ctx context.Context, key []byte) (WatchStream, error) {
	ctx, cancel := context.WithCancel(ctx)
	// WithCreatedNotify makes the first response the creation ack, so the
	// watch is known to be registered before the workload starts writing.
	ch := d.c.Watch(ctx, string(key), clientv3.WithCreatedNotify())
	resp, ok := <-ch
	if !ok {
		cancel()
		return nil, fmt.Errorf("etcd watch %q: channel closed before creation: %w", key, ctx.Err())
	}
	if err := resp.Err(); err != nil {
		cancel()
		return nil, fmt.Errorf("etcd watch %q: %w", key, err)
	}
	if !resp.Created {
		cancel()
		return nil, fmt.Errorf("etcd watch %q: first response is not the creation ack", key)
	}
	return &etcdWatch{ch: ch, cancel: cancel}, nil
}

func (d *etcdDriver) PutAll(ctx context.Context, keys [][]byte, value []byte) (uint64, error) {
	ops := make([]clientv3.Op, len(keys))
	for i, k := range keys {
		ops[i] = clientv3.OpPut(string(k), string(value))
	}
	resp, err := d.c.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return 0, err
	}
	return uint64(resp.Header.Revision), nil
}

func (d *etcdDriver) Txn2(ctx context.Context, a, b []byte, revA, revB uint64, value []byte) (TxnOutcome, error) {
	ka, kb, v := string(a), string(b), string(value)
	resp, err := d.c.Txn(ctx).If(
		clientv3.Compare(clientv3.ModRevision(ka), "=", int64(revA)),
		clientv3.Compare(clientv3.ModRevision(kb), "=", int64(revB)),
	).Then(clientv3.OpPut(ka, v), clientv3.OpPut(kb, v)).Else(clientv3.OpGet(ka), clientv3.OpGet(kb)).Commit()
	if err != nil {
		return TxnOutcome{}, err
	}
	if resp.Succeeded {
		rev := uint64(resp.Header.Revision)
		return TxnOutcome{Succeeded: true, RevA: rev, RevB: rev}, nil
	}
	if len(resp.Responses) != 2 {
		return TxnOutcome{}, fmt.Errorf("etcd txn: failure branch answered %d results, want 2", len(resp.Responses))
	}
	modRev := func(r *etcdpb.ResponseOp) uint64 {
		if kvs := r.GetResponseRange().GetKvs(); len(kvs) > 0 {
			return uint64(kvs[0].ModRevision)
		}
		return 0
	}
	return TxnOutcome{RevA: modRev(resp.Responses[0]), RevB: modRev(resp.Responses[1])}, nil
}

func (d *etcdDriver) Grant(ctx context.Context, ttl int64) (int64, error) {
	resp, err := d.c.Grant(ctx, ttl)
	if err != nil {
		return 0, err
	}
	return int64(resp.ID), nil
}

func (d *etcdDriver) Revoke(ctx context.Context, id int64) error {
	_, err := d.c.Revoke(ctx, clientv3.LeaseID(id))
	return err
}

// KeepAliveStream opens etcd's LeaseKeepAlive stream on the client's
// connection, the stream clientv3's own KeepAlive uses (with require-leader
// set, as clientv3 does); clientv3 offers no call that sends keepalives at
// the caller's pace on one stream.
func (d *etcdDriver) KeepAliveStream(ctx context.Context) (KeepAliveStream, error) {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	st, err := etcdpb.NewLeaseClient(d.c.ActiveConnection()).LeaseKeepAlive(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("etcd lease keepalive stream: %w", err)
	}
	return &etcdKeepAlive{st: st, cancel: cancel}, nil
}

func (d *etcdDriver) Close() error { return d.c.Close() }

type etcdKeepAlive struct {
	st     etcdpb.Lease_LeaseKeepAliveClient
	cancel context.CancelFunc
}

func (k *etcdKeepAlive) KeepAlive(ctx context.Context, id int64) error {
	stop := context.AfterFunc(ctx, k.cancel) // a late answer breaks the stream
	defer stop()
	if err := k.st.Send(&etcdpb.LeaseKeepAliveRequest{ID: id}); err != nil {
		return fmt.Errorf("etcd keepalive %x: send: %w", id, err)
	}
	resp, err := k.st.Recv()
	if err != nil {
		return fmt.Errorf("etcd keepalive %x: %w", id, err)
	}
	if resp.ID != id {
		return fmt.Errorf("etcd keepalive %x: answer is for lease %x", id, resp.ID)
	}
	if resp.TTL <= 0 {
		return fmt.Errorf("etcd keepalive %x: lease not found", id)
	}
	return nil
}

func (k *etcdKeepAlive) Close() {
	k.st.CloseSend()
	k.cancel()
}

type etcdWatch struct {
	ch      clientv3.WatchChan
	pending []*clientv3.Event
	cancel  context.CancelFunc
}

func (w *etcdWatch) Next() ([]byte, error) {
	for {
		for len(w.pending) > 0 {
			ev := w.pending[0]
			w.pending = w.pending[1:]
			if ev.Type == clientv3.EventTypePut {
				return ev.Kv.Value, nil
			}
		}
		resp, ok := <-w.ch
		if !ok {
			return nil, errors.New("etcd watch channel closed")
		}
		if err := resp.Err(); err != nil {
			return nil, fmt.Errorf("etcd watch ended: %w", err)
		}
		w.pending = resp.Events
	}
}

func (w *etcdWatch) Close() { w.cancel() }
