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
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/raftwatch/raftwatch/proto"
)

// maxMessageSize admits a 1 MiB value with its key and framing.
const maxMessageSize = 1<<20 + 4<<10 + 64<<10

// retryBackoff is the pause before trying again when no leader is known.
const retryBackoff = 50 * time.Millisecond

// maxHintHops is how many leader hints are followed back to back before
// pausing for retryBackoff.
const maxHintHops = 3

// Config configures a Client.
type Config struct {
	Endpoints   []string // host:port of one or more nodes
	DialTimeout time.Duration
	// RetryTimeout bounds how long a request keeps following hints and
	// waiting for a leader when the context has no deadline (default 10 s).
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

	watches watchSet // live watches and their resume loops (watch_resume.go)
}

// New returns a client; connections are made on first use.
func New(cfg Config) (*Client, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("client: at least one endpoint is required")
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 2 * time.Second
	}
	if cfg.RetryTimeout == 0 {
		cfg.RetryTimeout = 10 * time.Second
	}
	return &Client{cfg: cfg, conns: map[string]*grpc.ClientConn{}, muxes: map[*grpc.ClientConn]*watchMux{}}, nil
}

// Close closes every connection.
func (c *Client) Close() error {
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

func (c *Client) conn(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cc, ok := c.conns[addr]; ok {
		return cc, nil
	}
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageSize), grpc.MaxCallSendMsgSize(maxMessageSize)),
	}, c.cfg.DialOptions...)
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("client: connect to %s: %w", addr, err)
	}
	c.conns[addr] = cc
	return cc, nil
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

// NotApplied reports whether err guarantees the request was not applied.
func NotApplied(err error) bool {
	if _, ok := NotLeaderHint(err); ok {
		return true
	}
	st, ok := status.FromError(err)
	if !ok {
		return false
	}
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.Reason == "NOT_APPLIED" {
			return true
		}
	}
	return neverSent(err)
}

// neverSent reports a failure to establish the connection: the request
// never left this process. gRPC fails such calls fast with UNAVAILABLE and
// a dial error.
func neverSent(err error) bool {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable {
		return false
	}
	m := st.Message()
	return strings.Contains(m, "while dialing") || strings.Contains(m, "connection refused") ||
		strings.Contains(m, "no such host")
}

// onLeader runs call against the leader: it starts at the last known leader
// (else the first endpoint), follows hints, and moves on to the next
// endpoint when a node is unreachable or leaderless, for as long as the
// context (or RetryTimeout) allows and only while retrying is safe.
func (c *Client) onLeader(ctx context.Context, call func(context.Context, *grpc.ClientConn) error) error {
	ctx, cancel := c.retryContext(ctx)
	defer cancel()
	addr := c.leaderGuess()
	next, hops := 0, 0
	if addr == "" {
		addr, next = c.cfg.Endpoints[0], 1
	}
	for {
		cc, err := c.conn(addr)
		if err != nil {
			return err
		}
		err = call(ctx, cc)
		if err == nil {
			c.setLeader(addr)
			return nil
		}
		if !NotApplied(err) {
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
			addr = hint.LeaderAddr
			continue
		}
		// Unreachable, leaderless or no usable hint: try the next endpoint,
		// pausing after each full round.
		addr = c.cfg.Endpoints[next%len(c.cfg.Endpoints)]
		next++
		if next%len(c.cfg.Endpoints) == 0 {
			select {
			case <-time.After(retryBackoff):
			case <-ctx.Done():
				return err
			}
		}
		if ctx.Err() != nil {
			return err
		}
	}
}

// onAny runs call against the endpoints in order until one answers
// without a transport failure.
func (c *Client) onAny(ctx context.Context, call func(context.Context, *grpc.ClientConn) error) error {
	ctx, cancel := c.retryContext(ctx)
	defer cancel()
	var err error
	for round := 0; ; round++ {
		for _, addr := range c.cfg.Endpoints {
			cc, cerr := c.conn(addr)
			if cerr != nil {
				return cerr
			}
			if err = call(ctx, cc); err == nil || status.Code(err) != codes.Unavailable {
				return err
			}
		}
		select {
		case <-time.After(retryBackoff):
		case <-ctx.Done():
			return err
		}
	}
}

func (c *Client) retryContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, c.cfg.RetryTimeout)
}

// Put writes key=value.
func (c *Client) Put(ctx context.Context, key, value []byte, opts ...OpOption) (*pb.PutResponse, error) {
	o := buildOps(opts)
	req := &pb.PutRequest{Key: key, Value: value, PrevKv: o.prevKV, Condition: o.condition()}
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

// List reads the keys under prefix.
func (c *Client) List(ctx context.Context, prefix []byte, opts ...OpOption) (*pb.ListResponse, error) {
	o := buildOps(opts)
	req := &pb.ListRequest{Prefix: prefix, Limit: o.limit, Consistency: o.consistency}
	var resp *pb.ListResponse
	call := func(ctx context.Context, cc *grpc.ClientConn) (err error) {
		resp, err = pb.NewKVClient(cc).List(ctx, req)
		return err
	}
	if o.consistency == pb.Consistency_SERIALIZABLE {
		return resp, c.onAny(ctx, call)
	}
	return resp, c.onLeader(ctx, call)
}

// Status asks one endpoint for its status.
func (c *Client) Status(ctx context.Context, endpoint string) (*pb.StatusResponse, error) {
	cc, err := c.conn(endpoint)
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

// DialLeader opens a plain connection to addr for calls the Client does not
// wrap (membership changes).
func DialLeader(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
}
