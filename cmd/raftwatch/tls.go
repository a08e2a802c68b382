package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"

	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/raftwatch/raftwatch/certs"
	"github.com/raftwatch/raftwatch/node"
	"github.com/raftwatch/raftwatch/tlsfiles"
)

// serveTLSFlags are serve's transport security flags, named as etcd's.
type serveTLSFlags struct {
	certFile, keyFile, trustedCAFile             string
	clientCertAuth                               bool
	peerCertFile, peerKeyFile, peerTrustedCAFile string
}

func addServeTLSFlags(f *pflag.FlagSet) *serveTLSFlags {
	s := &serveTLSFlags{}
	f.StringVar(&s.certFile, "cert-file", "", "serve the client API over TLS with this certificate (PEM; with --key-file); the node also presents it when it calls another member's client API, so with --auth it must be this node's node certificate (naming the node in a raftwatch://node/ID URI), by which the member recognises a member; reloaded when replaced on disk")
	f.StringVar(&s.keyFile, "key-file", "", "private key of --cert-file (PEM)")
	f.StringVar(&s.trustedCAFile, "trusted-ca-file", "", "CA certificates (PEM) that client certificates must chain to, and that verify other members' client APIs; reloaded when replaced")
	f.BoolVar(&s.clientCertAuth, "client-cert-auth", false, "require every client to present a certificate that chains to --trusted-ca-file (without it a client certificate is optional, but verified when given)")
	f.StringVar(&s.peerCertFile, "peer-cert-file", "", "carry raft traffic over mutual TLS with this node certificate (PEM; needs --peer-key-file and --peer-trusted-ca-file; it names this node in a raftwatch://node/ID URI): every peer must present a node certificate that chains to --peer-trusted-ca-file, and a peer without one (no certificate, another CA's, a client's) is refused; reloaded when replaced")
	f.StringVar(&s.peerKeyFile, "peer-key-file", "", "private key of --peer-cert-file (PEM)")
	f.StringVar(&s.peerTrustedCAFile, "peer-trusted-ca-file", "", "CA certificates (PEM) that peers' certificates must chain to")
	return s
}

// apply checks that the flags form a complete setting, loads the files,
// and returns the gRPC server options of the client API while setting
// cfg's raft and member-dial TLS. With no flag set it changes nothing.
// auth says roles are enforced (serve --auth): the members then recognise
// this node by its --cert-file, which must be its node certificate. The
// certificates are checked (clientCertCheck, peerCertCheck) here and at
// every reload.
func (s *serveTLSFlags) apply(cfg *node.Config, auth bool, log *slog.Logger) ([]grpc.ServerOption, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	// Both are loaded before cfg changes: a refusal leaves it as it was.
	var client, peer *tlsfiles.Source
	if s.certFile != "" {
		src, err := tlsfiles.LoadChecked(tlsfiles.Files{Cert: s.certFile, Key: s.keyFile, CA: s.trustedCAFile}, clientCertCheck(s.certFile, cfg.ID, auth), log.With("tls", "client"))
		if err != nil {
			return nil, fmt.Errorf("client TLS: %w", err)
		}
		client = src
	}
	if s.peerCertFile != "" {
		src, err := tlsfiles.LoadChecked(tlsfiles.Files{Cert: s.peerCertFile, Key: s.peerKeyFile, CA: s.peerTrustedCAFile}, peerCertCheck(s.peerCertFile, cfg.ID), log.With("tls", "peer"))
		if err != nil {
			return nil, fmt.Errorf("peer TLS: %w", err)
		}
		peer = src
	}
	var opts []grpc.ServerOption
	if client != nil {
		auth := tls.NoClientCert
		switch {
		case s.clientCertAuth:
			auth = tls.RequireAndVerifyClientCert
		case s.trustedCAFile != "":
			auth = tls.VerifyClientCertIfGiven
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(client.ServerConfig(auth, "h2"))))
		cfg.ClientAPITLS = client.ClientConfig
	}
	if peer != nil {
		cfg.PeerTLS = &node.TLS{Server: peer.ServerConfig(tls.RequireAndVerifyClientCert), Dial: peer.ClientConfig}
	}
	return opts, nil
}

// check refuses incomplete combinations, naming what is missing.
func (s *serveTLSFlags) check() error {
	switch {
	case s.certFile != "" && s.keyFile == "":
		return errors.New("--cert-file needs --key-file")
	case s.keyFile != "" && s.certFile == "":
		return errors.New("--key-file needs --cert-file")
	case s.clientCertAuth && s.trustedCAFile == "":
		return errors.New("--client-cert-auth needs --trusted-ca-file (the CA client certificates must chain to)")
	case (s.clientCertAuth || s.trustedCAFile != "") && s.certFile == "":
		return errors.New("--client-cert-auth and --trusted-ca-file need --cert-file and --key-file: client certificates are checked only over TLS")
	}
	peer := map[string]string{"--peer-cert-file": s.peerCertFile, "--peer-key-file": s.peerKeyFile, "--peer-trusted-ca-file": s.peerTrustedCAFile}
	var missing []string
	for _, name := range []string{"--peer-cert-file", "--peer-key-file", "--peer-trusted-ca-file"} {
		if peer[name] == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 && len(missing) < len(peer) {
		return fmt.Errorf("peer TLS needs all of --peer-cert-file, --peer-key-file and --peer-trusted-ca-file; missing %s", strings.Join(missing, ", "))
	}
	return nil
}

// peerCertCheck returns the check of --peer-cert-file (certFile): raft
// peers accept only a node certificate, and a node both serves and dials
// with it, so it must be node id's node certificate, valid for TLS server
// and client authentication.
func peerCertCheck(certFile, id string) func(*x509.Certificate) error {
	return func(leaf *x509.Certificate) error {
		if err := checkNodeCert("--peer-cert-file", certFile, leaf, id); err != nil {
			return err
		}
		return checkUsage("--peer-cert-file", certFile, leaf, "raft peers require serverAuth of the node they dial and clientAuth of the node dialing them",
			x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
	}
}

// clientCertCheck returns the check of --cert-file (certFile): clients
// verify it as a server certificate; with auth it must also be node id's
// node certificate, valid for client authentication, since the node
// presents it when it calls other members, which recognise a member by it.
func clientCertCheck(certFile, id string, auth bool) func(*x509.Certificate) error {
	return func(leaf *x509.Certificate) error {
		if !auth {
			return checkUsage("--cert-file", certFile, leaf, "clients require serverAuth of the client API", x509.ExtKeyUsageServerAuth)
		}
		if err := checkNodeCert("--cert-file", certFile, leaf, id); err != nil {
			return fmt.Errorf("with --auth, %w", err)
		}
		return checkUsage("--cert-file", certFile, leaf, "clients require serverAuth of the client API and, with --auth, members clientAuth of the node calling them",
			x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
	}
}

// checkNodeCert refuses the certificate leaf of certFile (flag's) when it
// is not node id's node certificate, saying how to make one.
func checkNodeCert(flag, certFile string, leaf *x509.Certificate, id string) error {
	got, ok := certs.NodeID(leaf)
	switch {
	case !ok:
		return fmt.Errorf("%s %s is not a node certificate: it must name this node in a URI subject alternative name %s (raftwatch certs issue --node %s --dir DIR-WITH-ca.key --hosts HOST,..., or with openssl -addext \"subjectAltName=IP:...,URI:%s\")",
			flag, certFile, certs.NodeURI(id), id, certs.NodeURI(id))
	case got != id:
		return fmt.Errorf("%s %s is the node certificate of %s, and this node is %s", flag, certFile, got, id)
	}
	return nil
}

// usageNames are the names of extended key usages, as openssl spells them.
var usageNames = map[x509.ExtKeyUsage]string{x509.ExtKeyUsageServerAuth: "serverAuth", x509.ExtKeyUsageClientAuth: "clientAuth"}

// checkUsage refuses the certificate leaf of certFile (flag's) when its
// extended key usage excludes any of usages, which the other side of a
// connection checks (why says who): it would fail the handshake there
// with no more than "bad certificate". A certificate without extended key
// usage is valid for any, as crypto/x509 verifies it.
func checkUsage(flag, certFile string, leaf *x509.Certificate, why string, usages ...x509.ExtKeyUsage) error {
	if len(leaf.ExtKeyUsage) == 0 && len(leaf.UnknownExtKeyUsage) == 0 {
		return nil
	}
	var missing, all []string
	for _, want := range usages {
		all = append(all, usageNames[want])
		if !slices.ContainsFunc(leaf.ExtKeyUsage, func(u x509.ExtKeyUsage) bool { return u == want || u == x509.ExtKeyUsageAny }) {
			missing = append(missing, usageNames[want])
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("%s %s lacks %s in its extended key usage (%s): reissue it with %s (openssl: -addext \"extendedKeyUsage=%s\")",
		flag, certFile, strings.Join(missing, " and "), why, strings.Join(all, " and "), strings.Join(all, ","))
}

// clientTLSFlags are the client commands' TLS flags, named as etcdctl's.
type clientTLSFlags struct {
	cacert, cert, key string
}

func addClientTLSFlags(f *pflag.FlagSet) *clientTLSFlags {
	c := &clientTLSFlags{}
	f.StringVar(&c.cacert, "cacert", os.Getenv("RAFTWATCH_CACERT"), "verify the nodes' certificates with these CA certificates (PEM) and connect over TLS; env RAFTWATCH_CACERT")
	f.StringVar(&c.cert, "cert", os.Getenv("RAFTWATCH_CERT"), "present this client certificate (PEM; with --key) and connect over TLS; env RAFTWATCH_CERT")
	f.StringVar(&c.key, "key", os.Getenv("RAFTWATCH_KEY"), "private key of --cert (PEM); env RAFTWATCH_KEY")
	return c
}

// config returns the TLS config the flags ask for, or nil when none is set
// (plaintext, unless an endpoint says https://).
func (c *clientTLSFlags) config() (*tls.Config, error) {
	switch {
	case c.cacert == "" && c.cert == "" && c.key == "":
		return nil, nil
	case c.cert != "" && c.key == "":
		return nil, errors.New("--cert needs --key")
	case c.key != "" && c.cert == "":
		return nil, errors.New("--key needs --cert")
	}
	src, err := tlsfiles.Load(tlsfiles.Files{Cert: c.cert, Key: c.key, CA: c.cacert}, nil)
	if err != nil {
		return nil, err
	}
	return src.ClientConfig(""), nil
}

// tlsHint says what to try when a failure looks like a plaintext client
// talking to a node that serves TLS: the node closes the connection before
// gRPC's preface, and all gRPC reports is that it read none.
func tlsHint(st *status.Status) string {
	if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "error reading server preface") {
		return ""
	}
	return "\nhint: a node serving TLS closes plaintext connections this way; give --cacert (and --cert and --key if it requires client certificates)"
}
