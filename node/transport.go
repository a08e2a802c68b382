package node

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// Raft transport settings, as raft.NewTCPTransport's callers commonly set
// them: a few pooled connections per peer, and a 10 s I/O deadline.
const (
	raftMaxPool = 3
	raftTimeout = 10 * time.Second
)

// TLS secures one kind of connection between members.
type TLS struct {
	// Server is the config connections are accepted with. For raft it must
	// require and verify the dialer's certificate
	// (tls.RequireAndVerifyClientCert).
	Server *tls.Config
	// Dial returns the config to dial the member at host serverName with.
	// It is called for each connection, so it may hand out rotated
	// certificates.
	Dial func(serverName string) *tls.Config
}

// newTransport listens for raft traffic on cfg.RaftAddr: plain TCP, or
// mutual TLS when cfg.PeerTLS is set.
func newTransport(cfg Config, advertise *net.TCPAddr, logger hclog.Logger) (*raft.NetworkTransport, error) {
	if cfg.PeerTLS == nil {
		return raft.NewTCPTransportWithLogger(cfg.RaftAddr, advertise, raftMaxPool, raftTimeout, logger)
	}
	if advertise.IP == nil || advertise.IP.IsUnspecified() {
		return nil, fmt.Errorf("raft address %s cannot be advertised to peers: give the host's address, not an unspecified one", cfg.RaftAddr)
	}
	lis, err := net.Listen("tcp", cfg.RaftAddr)
	if err != nil {
		return nil, err
	}
	stream := &tlsStreamLayer{Listener: tls.NewListener(lis, cfg.PeerTLS.Server), advertise: advertise, dial: cfg.PeerTLS.Dial}
	return raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: stream, MaxPool: raftMaxPool, Timeout: raftTimeout, Logger: logger,
	}), nil
}

// tlsStreamLayer carries raft's connections over TLS. Accepted
// connections do their handshake on first read, in raft's goroutine for
// that connection, so a slow or hostile dialer never holds up the accept
// loop; one whose certificate does not verify is closed there (raft logs
// the handshake error).
type tlsStreamLayer struct {
	net.Listener // a tls.NewListener
	advertise    net.Addr
	dial         func(serverName string) *tls.Config
}

// Dial connects to a peer and completes the handshake (verifying the
// peer's certificate) within timeout.
func (s *tlsStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	host, _, err := net.SplitHostPort(string(address))
	if err != nil {
		return nil, fmt.Errorf("raft peer address %q: %w", address, err)
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", string(address), s.dial(host))
	if err != nil {
		var verr *tls.CertificateVerificationError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("raft peer %s: its certificate does not verify against the peer CA: %w", address, err)
		}
		return nil, err
	}
	return c, nil
}

// Addr is the advertised address, which peers dial.
func (s *tlsStreamLayer) Addr() net.Addr { return s.advertise }
