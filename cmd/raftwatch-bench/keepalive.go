package main

import (
	"context"
	"fmt"
	"time"
)

// revokeTimeout bounds the teardown that revokes a run's leases.
const revokeTimeout = 2 * time.Minute

// runKeepAlive measures lease keepalives: setup (not timed) grants leases
// leases of ttl seconds; then every requester holds its own keepalive
// stream (the style both systems' clients keep leases alive with) on its
// client object, and sends one keepalive at a time, for lease number seq
// mod leases (round robin over all of them, shared by all requesters). A
// keepalive is complete when its answer arrived; an error closes the
// requester's stream and the next keepalive opens another. Teardown (not
// timed) revokes every lease, so later runs on the cluster do not carry
// them.
func runKeepAlive(ctx context.Context, cfg loadConfig, leases int, ttl int64) (Result, error) {
	if leases < 1 {
		return Result{}, fmt.Errorf("--leases %d: want at least 1", leases)
	}
	ids := make([]int64, leases)
	hooks := loadHooks{
		setup: func(ctx context.Context, pool []Driver) error {
			return forEachParallel(ctx, pool, cfg.clients, leases, func(ctx context.Context, d Driver, i int) error {
				id, err := d.Grant(ctx, ttl)
				if err != nil {
					return fmt.Errorf("grant lease %d of %d: %w", i+1, leases, err)
				}
				ids[i] = id
				return nil
			})
		},
		teardown: func(ctx context.Context, pool []Driver) error { return revokeAll(ctx, pool, cfg.clients, ids) },
	}
	r, err := runLoadEach(ctx, cfg, hooks, func(runCtx context.Context, d Driver) (clientOp, func()) {
		var ka KeepAliveStream
		op := func(ctx context.Context, seq int64) (bool, error) {
			if ka == nil {
				var err error
				if ka, err = d.KeepAliveStream(runCtx); err != nil {
					return false, err
				}
			}
			err := ka.KeepAlive(ctx, ids[seq%int64(leases)])
			if err != nil {
				ka.Close()
				ka = nil
			}
			return false, err
		}
		return op, func() {
			if ka != nil {
				ka.Close()
			}
		}
	})
	r.Workload = "keepalive"
	r.Leases = leases
	r.Case = fmt.Sprintf("keepalive stream, %d leases, %d clients/%d conns", leases, cfg.clients, cfg.conns)
	return r, err
}

// revokeAll revokes the granted leases (ids 0 were never granted).
func revokeAll(ctx context.Context, pool []Driver, workers int, ids []int64) error {
	ctx, cancel := context.WithTimeout(ctx, revokeTimeout)
	defer cancel()
	return forEachParallel(ctx, pool, workers, len(ids), func(ctx context.Context, d Driver, i int) error {
		if ids[i] == 0 {
			return nil
		}
		return d.Revoke(ctx, ids[i])
	})
}
