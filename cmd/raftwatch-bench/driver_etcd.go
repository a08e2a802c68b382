package main

import (
	"context"
	"errors"
	"fmt"
	"time"

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

func (d *etcdDriver) Close() error { return d.c.Close() }

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
