package node

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/raftwatch/raftwatch/certs"
)

// Raft transport settings, as raft.NewTCPTransport's callers commonly set
// them: a few pooled connections per peer, and a 10 s I/O deadline.
const (
	raftMaxPool = 3
	raftTimeout = 10 * time.Second
)

// peerHandshakeTimeout bounds the TLS handshake of an accepted raft
// connection. raft reads accepted connections without a deadline, so a
// dialer that connects and stays silent would otherwise hold a goroutine
// and a file descriptor for good; a peer completes it in milliseconds.
const peerHandshakeTimeout = 5 * time.Second

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
// mutual TLS when cfg.PeerTLS is set, between node certificates only: a
// certificate that chains to the peer CA but is no node certificate
// (certs.NodeID), such as a client's, is refused at the handshake, in
// either direction.
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
	server, dial := nodesOnly(cfg.PeerTLS)
	stream := &tlsStreamLayer{Listener: tls.NewListener(lis, server), advertise: advertise, dial: dial, logger: logger}
	return raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: stream, MaxPool: raftMaxPool, Timeout: raftTimeout, Logger: logger,
	}), nil
}

// nodesOnly returns p's accepting config and dial configs with
// requireNodeCert added to their verification. A server config may hand
// each handshake a config of its own (GetConfigForClient, as tlsfiles
// does), which replaces the outer one: the check is added to those too.
func nodesOnly(p *TLS) (*tls.Config, func(serverName string) *tls.Config) {
	server := p.Server.Clone()
	server.VerifyConnection = requireNodeCert(server.VerifyConnection)
	if get := server.GetConfigForClient; get != nil {
		server.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			c, err := get(hello)
			if c == nil || err != nil {
				return c, err
			}
			c = c.Clone()
			c.VerifyConnection = requireNodeCert(c.VerifyConnection)
			return c, nil
		}
	}
	dial := func(serverName string) *tls.Config {
		c := p.Dial(serverName).Clone()
		c.VerifyConnection = requireNodeCert(c.VerifyConnection)
		return c
	}
	return server, dial
}

// requireNodeCert refuses a peer whose certificate, verified against the
// peer CA, is not a node certificate: every certificate the CA signed
// chains, clients' included, and only a node may speak raft. then, when
// set, is the check the config had already.
func requireNodeCert(then func(tls.ConnectionState) error) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("the raft peer presented no certificate")
		}
		leaf := cs.PeerCertificates[0]
		if _, ok := certs.NodeID(leaf); !ok {
			return fmt.Errorf("the raft peer's certificate (common name %q) is not a node certificate: it names no node in a %s URI; raft accepts node certificates only, not clients'",
				leaf.Subject.CommonName, certs.NodeURI("<id>"))
		}
		if then != nil {
			return then(cs)
		}
		return nil
	}
}

// tlsStreamLayer carries raft's connections over TLS. Accepted
// connections do their handshake on first read, in raft's goroutine for
// that connection, so a slow or hostile dialer never holds up the accept
// loop, and within peerHandshakeTimeout; one that fails it is logged and
// closed.
type tlsStreamLayer struct {
	net.Listener // a tls.NewListener
	advertise    net.Addr
	dial         func(serverName string) *tls.Config
	logger       hclog.Logger
}

// Accept returns the next connection, its handshake still to come within
// peerHandshakeTimeout.
func (s *tlsStreamLayer) Accept() (net.Conn, error) {
	for {
		c, err := s.Listener.Accept()
		if err != nil {
			return nil, err
		}
		// A connection whose deadline cannot be set (already reset by
		// its peer) is dropped here: an error from Accept would make raft
		// pause every accept, as if the listener had failed.
		if err := c.SetDeadline(time.Now().Add(peerHandshakeTimeout)); err != nil {
			c.Close()
			continue
		}
		return &acceptedConn{Conn: c.(*tls.Conn), logger: s.logger}, nil
	}
}

// acceptedConn is an accepted raft connection whose first use completes
// its TLS handshake, within the deadline Accept set, and then clears that
// deadline (raft expects none on accepted connections).
type acceptedConn struct {
	*tls.Conn
	logger hclog.Logger
	once   sync.Once
	err    error
}

func (c *acceptedConn) handshake() error {
	c.once.Do(func() {
		if err := c.Conn.Handshake(); err != nil {
			if errors.Is(err, io.EOF) {
				c.logger.Debug("raft connection closed before its TLS handshake", "remote", c.RemoteAddr())
			} else {
				c.logger.Warn("refused a raft connection at the TLS handshake", "remote", c.RemoteAddr(), "error", err)
			}
			// Reported: raft sees the end of the connection and closes it
			// without a second, vaguer line of its own.
			c.err = io.EOF
			return
		}
		c.err = c.Conn.SetDeadline(time.Time{})
	})
	return c.err
}

func (c *acceptedConn) Read(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

func (c *acceptedConn) Write(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

// Dial connects to a peer and completes the handshake (verifying that the
// peer's certificate chains to the peer CA and is a node certificate)
// within timeout.
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
		return nil, fmt.Errorf("raft peer %s: %w", address, err)
	}
	return c, nil
}

// Addr is the advertised address, which peers dial.
func (s *tlsStreamLayer) Addr() net.Addr { return s.advertise }
