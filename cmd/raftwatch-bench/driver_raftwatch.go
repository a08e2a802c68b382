//go:build !noraftwatch

package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/raftwatch/raftwatch/client"
	raftwatchpb "github.com/raftwatch/raftwatch/proto"
)

// raftwatchDialTimeout bounds the wait for the first connection of a client.
const raftwatchDialTimeout = 5 * time.Second

func init() { drivers["raftwatch"] = dialRaftwatch }

// raftwatchDriver puts, gets and watches through the Go client; Txn and
// leases go through the generated gRPC stubs on the driver's own
// connections (raw), which follow the leader (driver_raftwatch_coord.go).
// Both connect lazily, so a workload opens only the connections it uses.
type raftwatchDriver struct {
	c   *client.Client
	raw *leaderConns
}

func dialRaftwatch(endpoints []string) (Driver, error) {
	c, err := client.New(client.Config{Endpoints: endpoints, DialTimeout: raftwatchDialTimeout})
	if err != nil {
		return nil, fmt.Errorf("raftwatch client for %v: %w", endpoints, err)
	}
	return &raftwatchDriver{c: c, raw: newLeaderConns(c.Endpoints())}, nil
}

func (d *raftwatchDriver) Put(ctx context.Context, key, value []byte) error {
	_, err := d.c.Put(ctx, key, value)
	return err
}

func (d *raftwatchDriver) Get(ctx context.Context, key []byte, serializable bool) error {
	var err error
	if serializable {
		_, err = d.c.Get(ctx, key, client.WithSerializable())
	} else {
		_, err = d.c.Get(ctx, key)
	}
	return err
}

func (d *raftwatchDriver) Watch(ctx context.Context, key []byte) (WatchStream, error) {
	w, err := d.c.Watch(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("raftwatch watch %q: %w", key, err)
	}
	return &raftwatchWatch{w: w}, nil
}

func (d *raftwatchDriver) Close() error { return errors.Join(d.c.Close(), d.raw.close()) }

type raftwatchWatch struct{ w *client.Watcher }

func (w *raftwatchWatch) Next() ([]byte, error) {
	for {
		resp, err := w.w.Recv()
		if err != nil {
			return nil, err
		}
		switch resp.GetType() {
		case raftwatchpb.EventType_PUT:
			return resp.GetValue(), nil
		case raftwatchpb.EventType_CANCELED:
			return nil, fmt.Errorf("raftwatch watch canceled by server: %s", resp.GetReason())
		}
	}
}

func (w *raftwatchWatch) Close() { w.w.Close() }
