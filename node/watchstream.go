package node

import "github.com/raftwatch/raftwatch/watch"

// WatchOptions select what a watch delivers.
type WatchOptions struct {
	Prefix bool // key is a prefix that starts and ends with '/'
	PrevKV bool // events carry the previous value
	// StartRevision: deliver every matching event with revision >= it,
	// from history, then live events. 0 = from now. Below the oldest
	// retained revision: a *watch.CompactedError. In the future: waits.
	StartRevision uint64
	// RequireLeader: cancel the watch (watch.CauseNoLeader) when this node
	// loses touch with the leader, so the client resumes elsewhere.
	RequireLeader bool
}

func (o WatchOptions) watchOptions() watch.Options {
	return watch.Options{Prefix: o.Prefix, PrevKV: o.PrevKV, StartRevision: o.StartRevision, RequireLeader: o.RequireLeader}
}

// WatchStream multiplexes many watchers for one consumer (a gRPC stream, or
// an embedding program): their events share one bounded queue, taken with
// Take or, one at a time, Next.
type WatchStream struct {
	*watch.Stream
	n *Node
}

// NewWatchStream returns an empty stream; Close it when the consumer goes.
func (n *Node) NewWatchStream() *WatchStream {
	return &WatchStream{Stream: n.registry.NewStream(), n: n}
}

// NewWatchConn returns a group for the watch streams of one client
// connection: they share one byte budget (Config.Watch.ConnBytes) and one
// watcher quota (Config.Watch.MaxWatchersPerConn).
func (n *Node) NewWatchConn() *watch.Conn { return n.registry.NewConn() }

// NewWatchStreamOn returns an empty stream of c; Close it when the
// consumer goes.
func (n *Node) NewWatchStreamOn(c *watch.Conn) *WatchStream {
	return &WatchStream{Stream: c.NewStream(), n: n}
}

// Watch registers a watcher on the stream. Its Start() is the revision the
// watch starts after; the stream then carries every later matching event
// for it (Event.WatchID), or a CANCELED event.
func (s *WatchStream) Watch(key []byte, opt WatchOptions) (*watch.Watcher, error) {
	if err := s.n.Serving(); err != nil {
		return nil, err
	}
	if err := s.n.checkWatchKey(key, opt); err != nil {
		return nil, err
	}
	if err := s.n.writable(); err != nil {
		return nil, err
	}
	if _, id := s.n.raft.LeaderWithID(); opt.RequireLeader && id == "" {
		return nil, ErrNoLeader
	}
	return s.Stream.Register(key, opt.watchOptions())
}

func (n *Node) checkWatchKey(key []byte, opt WatchOptions) error {
	if !opt.Prefix {
		return n.checkKey(key)
	}
	return checkPrefix(key, n.cfg.MaxKeySize)
}
