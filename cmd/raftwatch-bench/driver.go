package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
)

// Driver is one client object of a target system: one connection per
// endpoint it talks to. A workload with N clients over M connections dials M
// drivers and shares each among N/M goroutines, for every target alike.
type Driver interface {
	// Put writes key=value and returns once the target acknowledged it.
	Put(ctx context.Context, key, value []byte) error
	// Get reads key, linearizably unless serializable is set.
	Get(ctx context.Context, key []byte, serializable bool) error
	// Watch opens a watch on the exact key, starting after the current
	// revision; it returns once the target confirmed the watch.
	Watch(ctx context.Context, key []byte) (WatchStream, error)
	// PutAll writes value to every key in one transaction with no compare
	// (setup, not timed) and returns the revision of that transaction.
	PutAll(ctx context.Context, keys [][]byte, value []byte) (uint64, error)
	// Txn2 runs one transaction over keys a and b: if a's mod revision is
	// revA and b's is revB, it puts value to both; otherwise it reads both.
	// A failed compare is a completed transaction, not an error.
	Txn2(ctx context.Context, a, b []byte, revA, revB uint64, value []byte) (TxnOutcome, error)
	// Grant creates a lease of ttl seconds and returns its id.
	Grant(ctx context.Context, ttl int64) (int64, error)
	// Revoke deletes lease id (teardown, not timed).
	Revoke(ctx context.Context, id int64) error
	// KeepAliveStream opens a lease keepalive stream for one requester: it
	// sends one keepalive at a time and waits for its answer.
	KeepAliveStream(ctx context.Context) (KeepAliveStream, error)
	Close() error
}

// TxnOutcome is what a Txn2 found and left: whether both compares held,
// and the mod revisions of a and b after it (0: the key does not exist).
type TxnOutcome struct {
	Succeeded  bool
	RevA, RevB uint64
}

// KeepAliveStream renews leases over one stream, one request in flight.
type KeepAliveStream interface {
	// KeepAlive renews lease id and returns once the target answered. A
	// lease the target no longer knows is an error. After an error the
	// stream may be broken (when ctx ended first, it is): close it and
	// open another.
	KeepAlive(ctx context.Context, id int64) error
	Close()
}

// WatchStream yields the values of the PUT events on a watched key.
type WatchStream interface {
	// Next blocks until the next PUT event and returns its value; it
	// returns an error once the stream has ended (canceled, broken).
	Next() ([]byte, error)
	Close()
}

// dialFunc builds one client object talking to endpoints (in that order of
// preference).
type dialFunc func(endpoints []string) (Driver, error)

// drivers holds the targets compiled into this binary, registered by the
// driver files' init functions.
var drivers = map[string]dialFunc{}

func targetNames() string {
	var names []string
	for n := range drivers {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, "|")
}

func dial(target string, endpoints []string) (Driver, error) {
	d, ok := drivers[target]
	if !ok {
		return nil, fmt.Errorf("unknown target %q: this binary knows %s", target, targetNames())
	}
	return d(endpoints)
}

// rotate returns endpoints starting at index i, so that client object i
// prefers endpoint i mod n and load that goes to "the first endpoint" is
// spread over the cluster in the same way for every target.
func rotate(endpoints []string, i int) []string {
	n := len(endpoints)
	out := make([]string, 0, n)
	for k := 0; k < n; k++ {
		out = append(out, endpoints[(i+k)%n])
	}
	return out
}

// dialPool dials conns client objects; object i gets the endpoint list
// produced by pick(i).
func dialPool(target string, conns int, pick func(i int) []string) ([]Driver, error) {
	pool := make([]Driver, 0, conns)
	for i := 0; i < conns; i++ {
		d, err := dial(target, pick(i))
		if err != nil {
			closePool(pool)
			return nil, fmt.Errorf("dial client object %d of %d: %w", i+1, conns, err)
		}
		pool = append(pool, d)
	}
	return pool, nil
}

func closePool(pool []Driver) {
	for _, d := range pool {
		d.Close()
	}
}
