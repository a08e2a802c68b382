// Package client is the Go client of raftwatch. A Client talks to any node
// of a cluster: it sends writes and linearizable reads to the leader,
// following the leader hints that followers answer with, and serves
// serializable reads and watches from the first node that answers.
//
// Invariant: the client retries a write only when the server or the
// transport guarantees it was not applied (a leader hint, a NOT_APPLIED
// error, or a connection that was never established), so a retry can never
// apply a write twice. Any other failure is returned to the caller, whose
// write may or may not have been applied.
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"iter"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/raftwatch/raftwatch/proto"
)

// maxMessage is the client's bound on the messages it sends and receives:
// gRPC's own ceiling. The nodes' configured key, value and txn sizes (which
// a client cannot know) bound what they accept and send, and a node refuses
// what is too large with INVALID_ARGUMENT or RESOURCE_EXHAUSTED; a tighter
// client-side bound would only refuse what a node configured with a larger
// --max-value-size serves. A caller who wants one anyway passes
// grpc.WithDefaultCallOptions in Config.DialOptions, which come later and
// win.
const maxMessage = math.MaxInt32

// retryBackoff is the pause before trying again when no leader is known.
const retryBackoff = 50 * time.Millisecond

// maxHintHops is how many leader hints are followed back to back before
// pausing for retryBackoff.
const maxHintHops = 3

// DefaultDialTimeout bounds the wait for a connection to one endpoint: a
// loopback or LAN handshake takes milliseconds even on a loaded machine, and
// a dead endpoint should cost a command seconds, not its whole timeout.
const DefaultDialTimeout = 2 * time.Second

// probeTimeout bounds the Status call that checks whether a suspect
// endpoint answers again: a live node answers it from memory in
// milliseconds, a stopped one never does.
const probeTimeout = 250 * time.Millisecond

// suspectRetry is how long a suspect endpoint that failed its probe is
// passed over before it is probed again.
const suspectRetry = 500 * time.Millisecond

// DefaultRetryTimeout bounds how long a request without a deadline keeps
// following hints and waiting for a leader: several election timeouts.
const DefaultRetryTimeout = 10 * time.Second

// Config configures a Client.
type Config struct {
	// Endpoints are the client addresses of one or more nodes, each
	// host:port, http://host:port or https://host:port (etcdctl's form).
	// https:// means TLS (with TLS, or the system's roots when TLS is nil);
	// http:// means plaintext, and may not be mixed with https:// nor given
	// with TLS. A bare host:port follows the others.
	Endpoints []string
	// TLS, when set, makes every connection TLS with this config (its
	// RootCAs verify the nodes, its Certificates or GetClientCertificate
	// authenticate the client). Its ServerName, when empty, is each
	// endpoint's host.
	TLS *tls.Config
	// DialTimeout bounds the wait for a connection to one endpoint (default
	// DefaultDialTimeout). An endpoint that does not connect in time is
	// passed over for the next; a request fails once every endpoint has.
	DialTimeout time.Duration
	// RetryTimeout bounds how long a request keeps following hints and
	// waiting for a leader when the context has no deadline (default
	// DefaultRetryTimeout; negative: until the context ends).
	RetryTimeout time.Duration
	DialOptions  []grpc.DialOption
}

// Client is safe for concurrent use. It keeps one connection per endpoint.
type Client struct {
	cfg Config

	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	muxes  map[*grpc.ClientConn]*watchMux // one shared watch stream per connection
	leader string                         // last known leader client address
	// suspects: endpoints that left a request unanswered until its
	// deadline (a stopped or wedged node keeps its connections open), and
	// when each may be probed again.
	suspects map[string]time.Time

	watches watchSet // live watches and their resume loops (watch_resume.go)

	// closed is closed by Close: background work (KeepAlive) stops and no
	// connection is made any more.
	closed    chan struct{}
	closeOnce sync.Once
}

// New returns a client; connections are made on first use.
func New(cfg Config) (*Client, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("client: at least one endpoint is required")
	}
	eps := make([]string, len(cfg.Endpoints))
	schemes := map[string]bool{}
	for i, ep := range cfg.Endpoints {
		var err error
		if eps[i], err = NormalizeEndpoint(ep); err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
		if scheme, _, ok := strings.Cut(strings.TrimSpace(ep), "://"); ok {
			schemes[strings.ToLower(scheme)] = true
		}
	}
	switch {
	case schemes["http"] && schemes["https"]:
		return nil, errors.New("client: endpoints mix http:// and https://: a cluster serves either plaintext or TLS")
	case schemes["http"] && cfg.TLS != nil:
		return nil, errors.New("client: http:// endpoints are plaintext, but a TLS config is given: use https:// or host:port")
	case schemes["https"] && cfg.TLS == nil:
		cfg.TLS = &tls.Config{} // the system's roots, no client certificate
	}
	cfg.Endpoints = eps
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.RetryTimeout == 0 {
		cfg.RetryTimeout = DefaultRetryTimeout
	}
	return &Client{cfg: cfg, conns: map[string]*grpc.ClientConn{}, muxes: map[*grpc.ClientConn]*watchMux{},
		suspects: map[string]time.Time{}, closed: make(chan struct{})}, nil
}

// NormalizeEndpoint turns host:port, http://host:port or https://host:port
// (with or without a trailing slash) into host:port; New reads the scheme
// before it is dropped.
func NormalizeEndpoint(endpoint string) (string, error) {
	s := strings.TrimSpace(endpoint)
	if scheme, rest, ok := strings.Cut(s, "://"); ok {
		switch strings.ToLower(scheme) {
		case "http", "https":
			s = strings.TrimSuffix(rest, "/")
		default:
			return "", fmt.Errorf("endpoint %q: scheme %q is not supported (want host:port, http://host:port or https://host:port)", endpoint, scheme)
		}
	}
	host, port, err := net.SplitHostPort(s)
	if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("endpoint %q: want host:port, http://host:port or https://host:port (e.g. 127.0.0.1:7101)", endpoint)
	}
	return s, nil
}

// Endpoints returns the configured endpoints in host:port form.
func (c *Client) Endpoints() []string { return append([]string(nil), c.cfg.Endpoints...) }

// Close closes every connection and stops background work (KeepAlive); a
// call made afterwards fails.
func (c *Client) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	c.watches.close()
	c.mu.Lock()
	muxes := c.muxes
	c.muxes = map[*grpc.ClientConn]*watchMux{}
	c.mu.Unlock()
	for _, m := range muxes {
		m.fail(status.Error(codes.Canceled, "client closed"))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, cc := range c.conns {
		errs = append(errs, cc.Close())
	}
	c.conns = map[string]*grpc.ClientConn{}
	return errors.Join(errs...)
}

// connectMargin is how much longer a gRPC connection attempt may last than
// DialTimeout; see conn.
const connectMargin = 250 * time.Millisecond

func (c *Client) conn(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cc, ok := c.conns[addr]; ok {
		return cc, nil
	}
	select {
	case <-c.closed:
		return nil, errors.New("client closed")
	default:
	}
	creds := insecure.NewCredentials()
	if c.cfg.TLS != nil {
		creds = credentials.NewTLS(c.cfg.TLS)
	}
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessage), grpc.MaxCallSendMsgSize(maxMessage)),
		neverSentMarker,
		// A connection attempt (TCP and HTTP/2 handshake) gives up shortly
		// after DialTimeout instead of gRPC's default 20 s. The margin lets
		// connect's own timer fire first on a wedged endpoint, so the error
		// says "no connection within the dial timeout" rather than whatever
		// gRPC saw as it tore the attempt down.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.DefaultConfig, MinConnectTimeout: c.cfg.DialTimeout + connectMargin}),
	}, c.cfg.DialOptions...)
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("client: connect to %s: %w", addr, err)
	}
	c.conns[addr] = cc
	return cc, nil
}

// DialError reports an endpoint this client could not connect to. A
// request that got it was never sent.
type DialError struct {
	Endpoint string
	Err      error
}

func (e *DialError) Error() string {
	if st, ok := status.FromError(e.Err); ok {
		return e.Endpoint + ": " + st.Message()
	}
	return e.Endpoint + ": " + e.Err.Error()
}

func (e *DialError) Unwrap() error { return e.Err }

// GRPCStatus makes a DialError an UNAVAILABLE status.
func (e *DialError) GRPCStatus() *status.Status { return status.New(codes.Unavailable, e.Error()) }

// UnreachableError is returned when no endpoint could be connected to: it
// lists each endpoint tried and why it failed.
type UnreachableError struct {
	Tried []*DialError
}

func (e *UnreachableError) Error() string {
	parts := make([]string, len(e.Tried))
	for i, d := range e.Tried {
		parts[i] = d.Error()
	}
	return fmt.Sprintf("no endpoint reachable; tried %d: %s", len(e.Tried), strings.Join(parts, "; "))
}

func (e *UnreachableError) Unwrap() []error {
	out := make([]error, len(e.Tried))
	for i, d := range e.Tried {
		out[i] = d
	}
	return out
}

// GRPCStatus makes an UnreachableError an UNAVAILABLE status.
func (e *UnreachableError) GRPCStatus() *status.Status {
	return status.New(codes.Unavailable, e.Error())
}

// connect returns the connection to addr once it is ready, or a *DialError
// when it does not become ready within DialTimeout or its last attempt
// failed.
func (c *Client) connect(ctx context.Context, addr string) (*grpc.ClientConn, error) {
	cc, err := c.conn(addr)
	if err != nil {
		return nil, &DialError{Endpoint: addr, Err: err}
	}
	dctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	for {
		s := cc.GetState()
		switch s {
		case connectivity.Ready:
			return cc, nil
		case connectivity.TransientFailure:
			// gRPC fails calls at once in this state, with the reason of the
			// last attempt; a call without side effects fetches it (and
			// succeeds if the connection has come back meanwhile).
			if _, err := pb.NewClusterClient(cc).Status(dctx, &pb.StatusRequest{}); err != nil {
				return nil, &DialError{Endpoint: addr, Err: err}
			}
			return cc, nil
		case connectivity.Shutdown:
			return nil, &DialError{Endpoint: addr, Err: errors.New("client closed")}
		case connectivity.Idle:
			cc.Connect()
		}
		if !cc.WaitForStateChange(dctx, s) {
			if err := ctx.Err(); err != nil {
				return nil, status.FromContextError(err).Err() // the request's own time is up
			}
			return nil, &DialError{Endpoint: addr, Err: fmt.Errorf("no connection within the dial timeout (%v)", c.cfg.DialTimeout)}
		}
	}
}

// unreachable tracks the endpoints a request could not connect to.
type unreachable struct {
	endpoints []string
	failed    map[string]*DialError
}

// note records the outcome of an attempt on addr and returns the error to
// end the request with once every endpoint has failed to connect.
func (u *unreachable) note(addr string, err error) error {
	var de *DialError
	if !errors.As(err, &de) {
		delete(u.failed, addr)
		return nil
	}
	if u.failed == nil {
		u.failed = map[string]*DialError{}
	}
	u.failed[addr] = de
	out := &UnreachableError{}
	for _, ep := range u.endpoints {
		if u.failed[ep] == nil {
			return nil
		}
		out.Tried = append(out.Tried, u.failed[ep])
	}
	return out
}

func (c *Client) leaderGuess() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leader
}

func (c *Client) setLeader(addr string) {
	c.mu.Lock()
	c.leader = addr
	c.mu.Unlock()
}

// suspectIfStuck marks addr suspect when err says the request's deadline
// passed with no answer from it: later requests probe it before they use it,
// instead of each waiting out its own deadline on a stopped node. The last
// known leader is forgotten if it is addr.
func (c *Client) suspectIfStuck(addr string, err error) {
	if status.Code(err) != codes.DeadlineExceeded {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.suspects[addr] = time.Now()
	if c.leader == addr {
		c.leader = ""
	}
}

// usable reports whether a request may go to addr: it is not suspect, or
// it answers a probe now. A suspect endpoint is probed at most once per
// suspectRetry (by one request at a time), and is passed over in between.
// With one endpoint there is nowhere else to go: it is always usable.
func (c *Client) usable(ctx context.Context, addr string) bool {
	if len(c.cfg.Endpoints) == 1 {
		return true
	}
	now := time.Now()
	c.mu.Lock()
	due, suspect := c.suspects[addr]
	if suspect && !now.Before(due) {
		c.suspects[addr] = now.Add(probeTimeout + suspectRetry) // others pass it over meanwhile
	}
	c.mu.Unlock()
	if !suspect {
		return true
	}
	if now.Before(due) {
		return false
	}
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	cc, err := c.conn(addr)
	if err == nil {
		_, err = pb.NewClusterClient(cc).Status(pctx, &pb.StatusRequest{})
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.suspects[addr] = time.Now().Add(suspectRetry)
		return false
	}
	delete(c.suspects, addr)
	return true
}

// rotation walks the endpoints round robin for one request, passing over
// those not usable, and pauses for retryBackoff after each full round.
type rotation struct {
	c    *Client
	next int
}

// pick returns the next usable endpoint, or ctx's error once it is done.
func (r *rotation) pick(ctx context.Context) (string, error) {
	eps := r.c.cfg.Endpoints
	for {
		if r.next > 0 && r.next%len(eps) == 0 {
			select {
			case <-time.After(retryBackoff):
			case <-ctx.Done():
				return "", ctx.Err()
			}
		}
		addr := eps[r.next%len(eps)]
		r.next++
		if r.c.usable(ctx, addr) {
			return addr, nil
		}
	}
}

// NotLeaderHint returns the leader hint carried by err, if any.
func NotLeaderHint(err error) (*pb.NotLeader, bool) {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.FailedPrecondition {
		return nil, false
	}
	for _, d := range st.Details() {
		if nl, ok := d.(*pb.NotLeader); ok {
			return nl, true
		}
	}
	return nil, false
}

// Removed reports whether err is the answer of a node removed from the
// cluster: it applies nothing, and another endpoint should be used.
func Removed(err error) bool {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.FailedPrecondition {
		return false
	}
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.Reason == pb.ReasonRemoved {
			return true
		}
	}
	return false
}

// refusedBy reports whether err is a node's refusal to serve a call at all:
// it was removed from the cluster, or (DATA_LOSS, only ever a read's answer)
// it found damaged stored data. Another endpoint may serve it.
func refusedBy(err error) bool {
	return Removed(err) || status.Code(err) == codes.DataLoss
}

// refusals collects the endpoints that refused one call (refusedBy).
type refusals struct {
	endpoints []string
	by        map[string]bool
}

// note records addr's refusal and reports whether every endpoint has now
// refused.
func (r *refusals) note(addr string) bool {
	if r.by == nil {
		r.by = map[string]bool{}
	}
	r.by[addr] = true
	for _, e := range r.endpoints {
		if !r.by[e] {
			return false
		}
	}
	return true
}

// NotApplied reports whether err guarantees the request was not applied:
// a leader hint, a removed node's refusal, an UNAVAILABLE carrying the
// NOT_APPLIED reason, or a request that never left this process (a
// connection that was never established). It looks at codes, details and
// error types only, never at message text.
func NotApplied(err error) bool {
	if _, ok := NotLeaderHint(err); ok || Removed(err) {
		return true
	}
	var de *DialError
	var ns *neverSentError
	if errors.As(err, &de) || errors.As(err, &ns) {
		return true
	}
	st, ok := status.FromError(err)
	if !ok {
		return false
	}
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.Reason == pb.ReasonNotApplied {
			return true
		}
	}
	return false
}

// onLeader runs call against the leader: it starts at the last known leader
// (else the first endpoint), follows hints, and moves on to the next
// endpoint when a node is unreachable or leaderless, for as long as the
// context (or RetryTimeout) allows and only while retrying is safe.
func (c *Client) onLeader(ctx context.Context, call func(context.Context, *grpc.ClientConn) error) error {
	ctx, cancel := c.retryContext(ctx)
	defer cancel()
	rr := rotation{c: c}
	addr, hops := c.leaderGuess(), 0
	down := unreachable{endpoints: c.cfg.Endpoints}
	refused := refusals{endpoints: c.cfg.Endpoints}
	var err error
	for {
		if addr == "" || !c.usable(ctx, addr) {
			var perr error
			if addr, perr = rr.pick(ctx); perr != nil {
				if err == nil {
					err = status.FromContextError(perr).Err()
				}
				return err
			}
		}
		var cc *grpc.ClientConn
		cc, err = c.connect(ctx, addr)
		if err == nil {
			err = call(ctx, cc)
		}
		if err == nil {
			c.setLeader(addr)
			return nil
		}
		c.suspectIfStuck(addr, err)
		if all := down.note(addr, err); all != nil {
			return all
		}
		if refusedBy(err) {
			// This node cannot serve the call at all (removed from the
			// cluster, or a read on a node that found damaged data, refused
			// before anything was read): the next endpoint, and the
			// refusal once every endpoint gave one.
			if refused.note(addr) {
				return err
			}
			addr = ""
			continue
		}
		if !NotApplied(err) {
			return err
		}
		if ctx.Err() != nil {
			return err
		}
		if hint, ok := NotLeaderHint(err); ok && hint.LeaderAddr != "" && hint.LeaderAddr != addr {
			// Nodes with stale views can point at each other during an
			// election; pause after a few hops instead of spinning.
			if hops++; hops%maxHintHops == 0 {
				select {
				case <-time.After(retryBackoff):
				case <-ctx.Done():
					return err
				}
			}
			// A hint to a suspect node that does not answer its probe is
			// stale (followers point at a stopped leader until they elect
			// another): the rotation goes on instead.
			addr = hint.LeaderAddr
			continue
		}
		// Unreachable, leaderless or no usable hint: the next endpoint.
		addr = ""
	}
}

// onAny runs call against the endpoints in order until one answers
// without a transport failure; a node removed from the cluster, or one that
// found damaged stored data (DATA_LOSS), is passed over, and such a refusal
// is returned when every endpoint gave one.
func (c *Client) onAny(ctx context.Context, call func(context.Context, *grpc.ClientConn) error) error {
	ctx, cancel := c.retryContext(ctx)
	defer cancel()
	var err error
	down := unreachable{endpoints: c.cfg.Endpoints}
	for round := 0; ; round++ {
		refused := 0 // endpoints that cannot serve this call: removed, or damaged data
		var refusal error
		for _, addr := range c.cfg.Endpoints {
			if !c.usable(ctx, addr) {
				continue
			}
			var cc *grpc.ClientConn
			if cc, err = c.connect(ctx, addr); err == nil {
				err = call(ctx, cc)
			}
			c.suspectIfStuck(addr, err)
			if refusedBy(err) {
				refused++
				refusal = err
				continue
			}
			if err == nil || status.Code(err) != codes.Unavailable {
				return err
			}
			if all := down.note(addr, err); all != nil {
				return all
			}
		}
		if refused == len(c.cfg.Endpoints) {
			return refusal
		}
		select {
		case <-time.After(retryBackoff):
		case <-ctx.Done():
			if err == nil { // every endpoint was passed over as suspect
				err = status.FromContextError(ctx.Err()).Err()
			}
			return err
		}
	}
}

func (c *Client) retryContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok || c.cfg.RetryTimeout < 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, c.cfg.RetryTimeout)
}

// Put writes key=value.
func (c *Client) Put(ctx context.Context, key, value []byte, opts ...OpOption) (*pb.PutResponse, error) {
	o := buildOps(opts)
	req := &pb.PutRequest{Key: key, Value: value, PrevKv: o.prevKV, Condition: o.condition(), Lease: o.lease}
	var resp *pb.PutResponse
	err := c.onLeader(ctx, func(ctx context.Context, cc *grpc.ClientConn) (err error) {
		resp, err = pb.NewKVClient(cc).Put(ctx, req)
		return err
	})
	return resp, err
}

// Delete removes key.
func (c *Client) Delete(ctx context.Context, key []byte, opts ...OpOption) (*pb.DeleteResponse, error) {
	o := buildOps(opts)
	req := &pb.DeleteRequest{Key: key, PrevKv: o.prevKV, Condition: o.condition()}
	var resp *pb.DeleteResponse
	err := c.onLeader(ctx, func(ctx context.Context, cc *grpc.ClientConn) (err error) {
		resp, err = pb.NewKVClient(cc).Delete(ctx, req)
		return err
	})
	return resp, err
}

// Get reads key (linearizable unless WithSerializable).
func (c *Client) Get(ctx context.Context, key []byte, opts ...OpOption) (*pb.GetResponse, error) {
	o := buildOps(opts)
	req := &pb.GetRequest{Key: key, Consistency: o.consistency}
	var resp *pb.GetResponse
	call := func(ctx context.Context, cc *grpc.ClientConn) (err error) {
		resp, err = pb.NewKVClient(cc).Get(ctx, req)
		return err
	}
	if o.consistency == pb.Consistency_SERIALIZABLE {
		return resp, c.onAny(ctx, call)
	}
	return resp, c.onLeader(ctx, call)
}

// listRestarts is how many times List starts over when history no longer
// reaches the revision its first page was read at (the server compacted
// it while the pages were read): each restart reads at a newer revision,
// so only a prefix larger than the history's retention keeps failing.
const listRestarts = 3

// List reads every key under prefix (which starts and ends with '/'), at
// one revision: it asks for the pages the server bounds each response to
// (see ListPages) and returns them as one response. WithLimit caps the
// total; More and NextKey then say whether and where to go on. When the
// server can no longer serve the first page's revision before the last
// page is read (OUT_OF_RANGE), List starts over, up to listRestarts times.
func (c *Client) List(ctx context.Context, prefix []byte, opts ...OpOption) (*pb.ListResponse, error) {
	for restart := 0; ; restart++ {
		var out *pb.ListResponse
		var err error
		for page, perr := range c.ListPages(ctx, prefix, opts...) {
			if err = perr; err != nil {
				break
			}
			if out == nil {
				out = &pb.ListResponse{Revision: page.Revision}
			}
			out.Kvs = append(out.Kvs, page.Kvs...)
			out.More, out.NextKey = page.More, page.NextKey
		}
		if err == nil {
			return out, nil
		}
		if out == nil || status.Code(err) != codes.OutOfRange || restart == listRestarts || buildOps(opts).revision != 0 {
			return nil, err
		}
	}
}

// ListPages yields the pages of the keys under prefix, in key order, all
// read at the revision of the first (which is linearizable unless
// WithSerializable): each page asks for the keys after the previous one's,
// pinned to that revision. WithLimit caps the total. A page that fails is
// yielded as an error and ends the sequence; an OUT_OF_RANGE error means
// history no longer reaches that revision: start over. Each page is one
// request and follows leader hints (or moves to another endpoint) on its
// own.
func (c *Client) ListPages(ctx context.Context, prefix []byte, opts ...OpOption) iter.Seq2[*pb.ListResponse, error] {
	o := buildOps(opts)
	return func(yield func(*pb.ListResponse, error) bool) {
		req := &pb.ListRequest{Prefix: prefix, Limit: o.limit, Consistency: o.consistency, Revision: o.revision}
		for {
			var resp *pb.ListResponse
			call := func(ctx context.Context, cc *grpc.ClientConn) (err error) {
				resp, err = pb.NewKVClient(cc).List(ctx, req)
				return err
			}
			var err error
			if o.consistency == pb.Consistency_SERIALIZABLE {
				err = c.onAny(ctx, call)
			} else {
				err = c.onLeader(ctx, call)
			}
			if err != nil {
				yield(nil, err)
				return
			}
			if o.limit > 0 {
				req.Limit -= min(req.Limit, uint64(len(resp.Kvs)))
			}
			last := !resp.More || o.limit > 0 && req.Limit == 0
			if !yield(resp, nil) || last {
				return
			}
			if len(resp.NextKey) == 0 {
				yield(nil, fmt.Errorf("client: the server said more keys follow %q but not where (an older server that cannot page?)", prefix))
				return
			}
			req.StartKey, req.Revision = resp.NextKey, resp.Revision
		}
	}
}

// Status asks one endpoint (in any form Config.Endpoints accepts) for its
// status.
func (c *Client) Status(ctx context.Context, endpoint string) (*pb.StatusResponse, error) {
	addr, err := NormalizeEndpoint(endpoint)
	if err != nil {
		return nil, err
	}
	cc, err := c.connect(ctx, addr)
	if err != nil {
		return nil, err
	}
	return pb.NewClusterClient(cc).Status(ctx, &pb.StatusRequest{})
}

// Members lists the cluster's members as the first answering node sees them.
func (c *Client) Members(ctx context.Context) (*pb.MembersResponse, error) {
	var resp *pb.MembersResponse
	err := c.onAny(ctx, func(ctx context.Context, cc *grpc.ClientConn) (err error) {
		resp, err = pb.NewClusterClient(cc).Members(ctx, &pb.MembersRequest{})
		return err
	})
	return resp, err
}

// AddVoter adds a member through the leader: as a non-voter until it has
// caught up, then as a voter (see the Cluster service). The call lasts
// until then, within ctx's deadline. WithForce skips the quorum check.
func (c *Client) AddVoter(ctx context.Context, id, raftAddr, clientAddr string, opts ...OpOption) (*pb.AddVoterResponse, error) {
	req := &pb.AddVoterRequest{Id: id, RaftAddr: raftAddr, ClientAddr: clientAddr, Force: buildOps(opts).force}
	var resp *pb.AddVoterResponse
	err := c.onLeader(ctx, func(ctx context.Context, cc *grpc.ClientConn) (err error) {
		resp, err = pb.NewClusterClient(cc).AddVoter(ctx, req)
		return err
	})
	return resp, err
}

// RemoveServer removes a member through the leader; NOT_FOUND when id is no
// member, FAILED_PRECONDITION when too few reachable voters would remain,
// unless WithForce.
func (c *Client) RemoveServer(ctx context.Context, id string, opts ...OpOption) (*pb.RemoveServerResponse, error) {
	req := &pb.RemoveServerRequest{Id: id, Force: buildOps(opts).force}
	var resp *pb.RemoveServerResponse
	err := c.onLeader(ctx, func(ctx context.Context, cc *grpc.ClientConn) (err error) {
		resp, err = pb.NewClusterClient(cc).RemoveServer(ctx, req)
		return err
	})
	return resp, err
}
