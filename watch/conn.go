package watch

import "sync/atomic"

// Conn groups the streams of one client connection: their queued bytes
// share one budget (Config.ConnBytes) and their watchers one quota
// (Config.MaxWatchersPerConn), so one client, however many streams it
// opens, holds a bounded share of the node's memory and watcher slots.
// Create one with Registry.NewConn; it needs no closing (its streams do).
type Conn struct {
	reg *Registry
	// bytes counts what the Conn's streams hold: queued events and those
	// a consumer took with TakeBytes and may still be sending.
	bytes atomic.Int64
	// watchers counts the Conn's registered watchers plus registrations
	// in progress.
	watchers atomic.Int64
}

// NewConn returns a Conn with no streams.
func (r *Registry) NewConn() *Conn { return &Conn{reg: r} }

// NewStream returns an empty stream of c.
func (c *Conn) NewStream() *Stream {
	return &Stream{reg: c.reg, conn: c, ready: make(chan struct{}, 1), q: eventQueue{pool: &c.reg.blocks}}
}

// Bytes returns the bytes the streams of c hold (queued or in flight).
func (c *Conn) Bytes() int { return int(c.bytes.Load()) }

// Watchers returns the number of watchers registered on the streams of c.
func (c *Conn) Watchers() int { return int(c.watchers.Load()) }

// reserve takes a watcher slot of c if one is free; otherwise it returns
// how many c holds.
func (c *Conn) reserve() (int64, bool) {
	for {
		n := c.watchers.Load()
		if n >= c.reg.maxPerConn {
			return n, false
		}
		if c.watchers.CompareAndSwap(n, n+1) {
			return n + 1, true
		}
	}
}
