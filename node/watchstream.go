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
	// StreamProgress: the consumer takes a PROGRESS with WatchID 0 as this
	// watch's (watch.Options.StreamProgress).
	StreamProgress bool
}

func (o WatchOptions) watchOptions() watch.Options {
	return watch.Options{Prefix: o.Prefix, PrevKV: o.PrevKV, StartRevision: o.StartRevision, RequireLeader: o.RequireLeader,
		StreamProgress: o.StreamProgress}
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

// NewWatchClient returns a group for the watch streams of one client,
// over all its connections: they share one byte budget
// (Config.Watch.ClientBytes), one watcher quota
// (Config.Watch.MaxWatchersPerClient) and one stream quota
// (Config.Watch.MaxStreamsPerClient).
func (n *Node) NewWatchClient() *watch.Client { return n.registry.NewClient() }

// NewWatchStreamOn returns an empty stream of c, or an error wrapping
// watch.ErrLimitExceeded when c has its maximum of streams open; Close it
// when the consumer goes.
func (n *Node) NewWatchStreamOn(c *watch.Client) (*WatchStream, error) {
	s, err := c.NewStream()
	if err != nil {
		return nil, err
	}
	return &WatchStream{Stream: s, n: n}, nil
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
