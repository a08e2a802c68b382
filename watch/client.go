package watch

import (
	"fmt"
	"sync/atomic"
)

// Client groups the streams of one client, however many connections it
// opens them on: their queued bytes share one budget
// (Config.ClientBytes), their watchers one quota
// (Config.MaxWatchersPerClient), and it has at most
// Config.MaxStreamsPerClient streams open, so one client holds a bounded
// share of the node's memory and watcher slots. Who is one client is the
// caller's choice (the server: one certificate identity, or else one IP
// address). Create one with Registry.NewClient; it needs no closing (its
// streams do).
type Client struct {
	reg *Registry
	// bytes counts what the Client's streams hold: queued events and
	// those a consumer took with TakeBytes and may still be sending.
	bytes heldBytes
	// watchers counts the Client's registered watchers plus registrations
	// in progress.
	watchers atomic.Int64
	// streams counts its open streams.
	streams atomic.Int64
}

// NewClient returns a Client with no streams.
func (r *Registry) NewClient() *Client {
	c := &Client{reg: r}
	c.bytes.reg = r
	return c
}

// NewStream returns an empty stream of c, or an error wrapping
// ErrLimitExceeded when c has Config.MaxStreamsPerClient streams open.
func (c *Client) NewStream() (*Stream, error) {
	for {
		n := c.streams.Load()
		if n >= c.reg.maxStreams {
			return nil, fmt.Errorf("%w: this client has %d watch streams open, the limit is %d; carry many watches on one stream (the Go client does) or close unused streams",
				ErrLimitExceeded, n, c.reg.maxStreams)
		}
		if c.streams.CompareAndSwap(n, n+1) {
			break
		}
	}
	return &Stream{reg: c.reg, client: c, ready: make(chan struct{}, 1), q: eventQueue{pool: &c.reg.blocks}}, nil
}

// Bytes returns the bytes the streams of c hold (queued or in flight).
func (c *Client) Bytes() int { return int(c.bytes.Load()) }

// Watchers returns the number of watchers registered on the streams of c.
func (c *Client) Watchers() int { return int(c.watchers.Load()) }

// Streams returns the number of open streams of c.
func (c *Client) Streams() int { return int(c.streams.Load()) }

// reserve takes a watcher slot of c if one is free; otherwise it returns
// how many c holds.
func (c *Client) reserve() (int64, bool) {
	for {
		n := c.watchers.Load()
		if n >= c.reg.maxPerClient {
			return n, false
		}
		if c.watchers.CompareAndSwap(n, n+1) {
			return n + 1, true
		}
	}
}

// roomFor reports whether a stream of c holding held bytes may start
// queuing another revision under c's budget (Config.ClientBytes): always
// while c holds less; past it, only while the stream holds less than an
// equal share of the budget among c's open streams. So a client's stream
// that is not read cannot starve its streams that are: they hold little,
// keep their watchers live and catch up from history when they fell
// behind, while c as a whole holds less than twice its budget (each stream
// adds at most its share once past it).
func (c *Client) roomFor(held int) bool {
	return withinShare(int64(held), c.bytes.Load(), c.reg.clientBytes, c.streams.Load())
}

// heldBytes counts the bytes one Client holds and keeps the registry's
// node-wide total, and its count of clients holding any, in step.
type heldBytes struct {
	n   atomic.Int64
	reg *Registry
}

// Add adds d (never 0) and returns the new count.
func (b *heldBytes) Add(d int64) int64 {
	n := b.n.Add(d)
	b.reg.totalHeld.Add(d)
	switch {
	case d > 0 && n == d: // from nothing
		b.reg.holding.Add(1)
	case d < 0 && n == 0:
		b.reg.holding.Add(-1)
	}
	return n
}

// Load returns the count.
func (b *heldBytes) Load() int64 { return b.n.Load() }

// totalRoomFor reports whether a Client holding held bytes may start
// queuing another revision under the node-wide budget (Config.TotalBytes):
// always while all clients together hold less; past it, only while it holds
// less than an equal share of the budget among the clients holding bytes.
// So the clients holding the most fall behind first, a client that reads
// (and so holds little) keeps its watchers live, and the total stays under
// twice the budget (each client adds at most its share once past it).
func (r *Registry) totalRoomFor(held int64) bool {
	return withinShare(held, r.totalHeld.Load(), r.totalBytes, r.holding.Load())
}

// withinShare is the rule both shared budgets use: a holder of held bytes
// may queue more while all holders together hold less than budget, and
// past it only while it holds less than an equal share of budget among
// holders of them. Each holder adds at most its share once past the
// budget, so together they stay under twice it.
func withinShare(held, total, budget, holders int64) bool {
	return total < budget || held < budget/max(holders, 1)
}

// Bytes returns the bytes all the streams of r hold together (queued or
// in flight), which Config.TotalBytes bounds.
func (r *Registry) Bytes() int { return int(r.totalHeld.Load()) }
