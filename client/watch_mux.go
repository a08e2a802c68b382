package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/raftwatch/raftwatch/proto"
)

// watchMux is one shared watch stream to one endpoint. It carries the
// server side of any number of watches; it only routes: what a watch does
// with its messages, and what it does when the stream ends, is the
// Watcher's business. Its reading goroutine never blocks on a watch.
type watchMux struct {
	client *Client
	cc     *grpc.ClientConn
	addr   string             // the endpoint, as in Config.Endpoints
	cancel context.CancelFunc // ends the stream
	opened chan struct{}      // closed once stream is set, or the open failed (err)
	stream pb.Watch_WatchClient
	sendMu sync.Mutex // grpc streams allow one sender at a time
	// lastRecv is when the last message arrived (unix nanoseconds).
	lastRecv atomic.Int64

	// progress is the newest stream PROGRESS (watch_id 0) read, numbered:
	// a watch takes it lazily, when its queue is next touched
	// (Watcher.streamProgressLocked), so a heartbeat costs the reading
	// goroutine nothing per watch. Never nil; only read() replaces it.
	progress atomic.Pointer[muxProgress]

	mu       sync.Mutex
	watchers map[uint64]*Watcher // server watch id -> watch
	creating map[uint64]*Watcher // request_id -> watch awaiting CREATED
	err      error               // the stream has ended (or never opened)
}

// muxProgress is one stream PROGRESS of a watchMux: the seq'th read on
// it (0: none yet, r nil). next is closed when a newer one replaces it,
// which wakes the consumers blocked in Recv.
type muxProgress struct {
	r    *pb.WatchResponse
	seq  uint64
	next chan struct{}
}

// publishProgress makes r the stream's newest PROGRESS; only read() calls
// it, in the order the stream delivered its messages.
func (m *watchMux) publishProgress(r *pb.WatchResponse) {
	old := m.progress.Load()
	m.progress.Store(&muxProgress{r: r, seq: old.seq + 1, next: make(chan struct{})})
	close(old.next)
}

// watchMux returns the shared watch stream to cc, opening it if need be.
// One caller opens it and the others wait, so the watches of a broken
// stream, resuming together, open one new stream, not one each.
func (c *Client) watchMux(cc *grpc.ClientConn, addr string) (*watchMux, error) {
	c.mu.Lock()
	m, ok := c.muxes[cc]
	if !ok {
		ctx, cancel := context.WithCancel(c.watches.context())
		m = &watchMux{client: c, cc: cc, addr: addr, cancel: cancel, opened: make(chan struct{}),
			watchers: map[uint64]*Watcher{}, creating: map[uint64]*Watcher{}}
		m.progress.Store(&muxProgress{next: make(chan struct{})})
		c.muxes[cc] = m
		c.mu.Unlock()
		m.open(ctx)
	} else {
		c.mu.Unlock()
		<-m.opened
	}
	if err := m.error(); err != nil {
		return nil, err
	}
	return m, nil
}

// open opens the stream within DialTimeout: a resuming watch then moves on
// to the next endpoint instead of waiting out gRPC's connect timeout.
func (m *watchMux) open(ctx context.Context) {
	defer close(m.opened)
	timeout := m.client.cfg.DialTimeout
	timer := time.AfterFunc(timeout, m.cancel)
	stream, err := pb.NewWatchClient(m.cc).Watch(ctx)
	if !timer.Stop() {
		err = status.Errorf(codes.Unavailable, "client: no watch stream to %s within %v", m.addr, timeout)
	}
	if m.client.watches.context().Err() != nil {
		err = errClientClosed
	}
	if err != nil {
		m.fail(err)
		return
	}
	m.mu.Lock()
	m.stream = stream
	m.mu.Unlock()
	m.lastRecv.Store(time.Now().UnixNano())
	go m.read()
	go m.watchdog(ctx)
}

// A stream silent for watchQuiet gets a progress request for all its
// watches; one still silent watchSilence after its last message is
// treated as broken, and its watches resume elsewhere. That catches what
// no transport error reports: a node that is paused, or cut off from the
// client without a reset (gRPC keepalive pings come no more often than
// every 10 s). A server answers a progress request at once, whatever its
// heartbeat interval.
const (
	watchQuiet   = 2 * time.Second
	watchSilence = 5 * time.Second
)

// watchdog fails the stream once it has been silent for watchSilence
// while carrying watches. It ends with the stream.
func (m *watchMux) watchdog(ctx context.Context) {
	t := time.NewTicker(watchQuiet / 4)
	defer t.Stop()
	asked := int64(0) // lastRecv when progress was last requested
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.mu.Lock()
		idle := len(m.watchers) == 0 && len(m.creating) == 0
		m.mu.Unlock()
		last := m.lastRecv.Load()
		quiet := time.Since(time.Unix(0, last))
		switch {
		case idle:
		case quiet >= watchSilence:
			m.fail(status.Errorf(codes.Unavailable, "client: no message from %s for %v (node paused or unreachable)", m.addr, quiet.Round(time.Second)))
			return
		case quiet >= watchQuiet && asked != last:
			asked = last
			m.requestProgress(0)
		}
	}
}

func (m *watchMux) send(req *pb.WatchRequest) error {
	m.sendMu.Lock()
	defer m.sendMu.Unlock()
	return m.stream.Send(req)
}

// sendCreate registers w as the watch awaiting the CREATED for c, then
// sends c. If the stream breaks afterwards, fail tells w.
func (m *watchMux) sendCreate(w *Watcher, c *pb.WatchCreate) error {
	m.mu.Lock()
	if m.err != nil {
		err := m.err
		m.mu.Unlock()
		return err
	}
	m.creating[c.RequestId] = w
	m.mu.Unlock()
	if err := m.send(&pb.WatchRequest{Request: &pb.WatchRequest_Create{Create: c}}); err != nil {
		m.fail(err)
	}
	return nil
}

// forgetCreate drops a create whose watch no longer waits for it; a
// CREATED arriving later is then an orphan, and canceled.
func (m *watchMux) forgetCreate(requestID uint64) {
	m.mu.Lock()
	delete(m.creating, requestID)
	m.mu.Unlock()
}

// cancelWatch stops routing a server watch's messages and, if the server
// still has it (no CANCELED of it came back), asks the server to end it.
// The reading goroutine passes wait=false: it must never block on a send.
func (m *watchMux) cancelWatch(id uint64, wait bool) {
	m.mu.Lock()
	_, live := m.watchers[id]
	delete(m.watchers, id)
	live = live && m.err == nil
	m.mu.Unlock()
	if !live {
		return
	}
	req := &pb.WatchRequest{Request: &pb.WatchRequest_Cancel{Cancel: &pb.WatchCancelRequest{WatchId: id}}}
	if wait {
		m.send(req) // a failure breaks the stream, which ends the watch there anyway
		return
	}
	go m.send(req)
}

// requestProgress asks for a PROGRESS on one server watch, without
// blocking the caller (which may be the reading goroutine).
func (m *watchMux) requestProgress(id uint64) {
	go m.send(&pb.WatchRequest{Request: &pb.WatchRequest_Progress{Progress: &pb.WatchProgressRequest{WatchId: id}}})
}

// read routes the stream's messages to their watches until it ends.
func (m *watchMux) read() {
	type delivery struct {
		w *Watcher // nil: r is a stream PROGRESS
		r *pb.WatchResponse
	}
	var out []delivery
	for {
		b, err := m.stream.Recv()
		m.lastRecv.Store(time.Now().UnixNano())
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = status.Error(codes.Unavailable, "the server ended the watch stream")
			}
			m.fail(err)
			return
		}
		// Route the whole batch under one lock, then hand it over in order.
		m.mu.Lock()
		for _, r := range b.Responses {
			if r.Type == pb.EventType_PROGRESS && r.WatchId == 0 {
				// A stream PROGRESS: one message, the PROGRESS of every
				// watch whose CREATED came before it. Published in order,
				// taken by each watch when it next touches its queue.
				out = append(out, delivery{r: r})
				continue
			}
			if w := m.routeLocked(r); w != nil {
				out = append(out, delivery{w: w, r: r})
			}
		}
		m.mu.Unlock()
		for i, d := range out {
			if d.w == nil {
				m.publishProgress(d.r)
			} else {
				d.w.push(m, d.r)
			}
			out[i] = delivery{}
		}
		out = out[:0]
	}
}

// routeLocked returns the watch a message is for (nil when it is for none).
// A CREATED is routed to its creator, and its watch id mapped before the
// watch's events can arrive; a CANCELED unmaps its watch id. m.mu is held.
func (m *watchMux) routeLocked(r *pb.WatchResponse) *Watcher {
	if r.Type == pb.EventType_CREATED || (r.Type == pb.EventType_CANCELED && r.WatchId == 0) {
		w := m.creating[r.RequestId]
		delete(m.creating, r.RequestId)
		if r.Type == pb.EventType_CREATED {
			if w == nil {
				// The creator gave up; end the orphan on the server.
				go m.send(&pb.WatchRequest{Request: &pb.WatchRequest_Cancel{Cancel: &pb.WatchCancelRequest{WatchId: r.WatchId}}})
				return nil
			}
			m.watchers[r.WatchId] = w
		}
		return w
	}
	w := m.watchers[r.WatchId]
	if r.Type == pb.EventType_CANCELED {
		delete(m.watchers, r.WatchId)
	}
	return w
}

// fail ends the stream and tells every watch on it, which resumes
// elsewhere (or ends, if the client is closing).
func (m *watchMux) fail(err error) {
	m.mu.Lock()
	if m.err != nil {
		m.mu.Unlock()
		return
	}
	m.err = err
	affected := map[*Watcher]struct{}{}
	for _, w := range m.watchers {
		affected[w] = struct{}{}
	}
	for _, w := range m.creating {
		affected[w] = struct{}{}
	}
	m.watchers, m.creating = map[uint64]*Watcher{}, map[uint64]*Watcher{}
	m.mu.Unlock()
	m.cancel()
	m.client.mu.Lock()
	if m.client.muxes[m.cc] == m {
		delete(m.client.muxes, m.cc)
	}
	m.client.mu.Unlock()
	for w := range affected {
		w.streamFailed(m)
	}
}

// error returns why the stream ended (nil while it is up).
func (m *watchMux) error() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

func (m *watchMux) String() string { return fmt.Sprintf("watch stream to %s", m.addr) }
