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
	Close() error
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
