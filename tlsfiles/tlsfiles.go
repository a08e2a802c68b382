// Package tlsfiles loads a TLS certificate, its key and a CA bundle from
// files and reloads them when they change on disk, so certificates can be
// rotated without restarting a node.
//
// Invariant: every handshake uses a complete, consistent set of material
// (a certificate with its own key, a CA pool that parsed): a reload that
// fails (a half-rotated pair, an unreadable file) keeps the previous
// material and logs why. A certificate its Source's check refuses counts
// as a file that fails to load, at the first load as at every reload.
// Files are checked for changes (modification time
// and size) at most once per checkInterval, and read outside the lock, so
// handshakes never wait on the file system: they get the material of the
// last look while one is under way.
package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// checkInterval bounds how often the files are looked at: a stat of three
// files per handshake would cost little, but once a second is soon enough
// for a rotation and keeps a handshake storm off the file system.
const checkInterval = time.Second

// Files names the files of one side of a TLS connection. Cert and Key go
// together (both or neither); CA, when set, holds the PEM certificates
// trusted to sign the other side's certificate.
type Files struct {
	Cert, Key, CA string
}

// material is one consistent load of the files.
type material struct {
	cert *tls.Certificate // nil when Files has no Cert
	pool *x509.CertPool   // nil when Files has no CA
}

// stamp identifies a version of a file without reading it.
type stamp struct {
	mod  time.Time
	size int64
}

// Source hands out the current material of Files to TLS handshakes. It is
// safe for concurrent use.
type Source struct {
	files Files
	check func(leaf *x509.Certificate) error // nil: any certificate
	log   *slog.Logger

	mu       sync.Mutex
	cur      material
	checked  time.Time // when the files were last looked at
	checking bool      // a look is under way (outside mu)

	// Owned by the one goroutine that looks (checking), so not under mu.
	stamps [3]stamp // of Cert, Key, CA as last loaded, or as reported broken
	failed [3]stamp // of a load that failed once and is not reported yet
}

// Load reads files once; any error is returned (a node should not start
// on material it cannot read). log receives reload failures.
func Load(files Files, log *slog.Logger) (*Source, error) {
	return LoadChecked(files, nil, log)
}

// LoadChecked is Load with check run on the certificate of files.Cert at
// this load and at every reload: one it refuses is not loaded (here an
// error, later a failed reload that keeps the previous material), so a
// rotation cannot bring in a certificate the other side would refuse.
// check's error is returned or logged as it is: it should name the file
// and say what to fix.
func LoadChecked(files Files, check func(leaf *x509.Certificate) error, log *slog.Logger) (*Source, error) {
	if (files.Cert == "") != (files.Key == "") {
		return nil, errors.New("a certificate file needs its key file and a key file its certificate file")
	}
	if log == nil {
		log = slog.Default()
	}
	s := &Source{files: files, check: check, log: log, stamps: files.stamps(), checked: time.Now()}
	m, err := s.load()
	if err != nil {
		return nil, err
	}
	s.cur = m
	return s, nil
}

func (f Files) stamps() [3]stamp {
	var out [3]stamp
	for i, path := range []string{f.Cert, f.Key, f.CA} {
		if path == "" {
			continue
		}
		if fi, err := os.Stat(path); err == nil {
			out[i] = stamp{mod: fi.ModTime(), size: fi.Size()}
		}
	}
	return out
}

// load reads the files and runs the check on the certificate.
func (s *Source) load() (material, error) {
	f := s.files
	var m material
	if f.Cert != "" {
		cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return material{}, fmt.Errorf("load certificate %s and key %s: %w", f.Cert, f.Key, err)
		}
		if cert.Leaf == nil { // GODEBUG=x509keypairleaf=0
			if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
				return material{}, fmt.Errorf("parse certificate %s: %w", f.Cert, err)
			}
		}
		if s.check != nil {
			if err := s.check(cert.Leaf); err != nil {
				return material{}, err
			}
		}
		m.cert = &cert
	}
	if f.CA != "" {
		b, err := os.ReadFile(f.CA)
		if err != nil {
			return material{}, fmt.Errorf("read CA file: %w", err)
		}
		m.pool = x509.NewCertPool()
		if !m.pool.AppendCertsFromPEM(b) {
			return material{}, fmt.Errorf("CA file %s holds no PEM certificate", f.CA)
		}
	}
	return m, nil
}

// current returns the material, reloading it first when a file changed
// since the last look (at most once per checkInterval, by one handshake;
// the others meanwhile get the material of the last look).
func (s *Source) current() material {
	s.mu.Lock()
	if s.checking || time.Since(s.checked) < checkInterval {
		defer s.mu.Unlock()
		return s.cur
	}
	s.checking = true
	s.mu.Unlock()

	m, changed := s.look()

	s.mu.Lock()
	defer s.mu.Unlock()
	s.checking, s.checked = false, time.Now()
	if changed {
		s.cur = m
	}
	return s.cur
}

// look loads the files when they changed since they were last loaded, and
// reports whether it did. A certificate the check refuses fails the load
// like a file that does not parse. A rotation replaces key and certificate one
// after the other, and a look between the two finds a pair that does not
// match: a failed load is retried at the next look and reported only when
// it fails again on the same files (then once, until they change again).
func (s *Source) look() (material, bool) {
	st := s.files.stamps()
	if st == s.stamps {
		return material{}, false
	}
	m, err := s.load()
	if err != nil {
		if st != s.failed {
			s.failed = st
			return material{}, false
		}
		s.stamps = st
		s.log.Warn("TLS files changed but cannot be loaded; keeping the previous certificates (fix or finish replacing the files)", "err", err)
		return material{}, false
	}
	s.stamps, s.failed = st, [3]stamp{}
	s.log.Info("TLS files reloaded", "cert", s.files.Cert, "ca", s.files.CA)
	return m, true
}

// ServerConfig returns a server-side config presenting the current
// certificate and verifying client certificates (per clientAuth) against
// the current CA pool, both picked up anew for each handshake. nextProtos
// are the ALPN protocols the server speaks (gRPC: "h2"); they must be
// given here because the per-handshake config replaces the one gRPC's
// credentials add them to. Session tickets are off: every connection does
// a full handshake, so a client whose certificate no longer verifies (a
// CA file replaced to revoke it) cannot resume a session from before.
func (s *Source) ServerConfig(clientAuth tls.ClientAuthType, nextProtos ...string) *tls.Config {
	return &tls.Config{
		MinVersion:             tls.VersionTLS12,
		ClientAuth:             clientAuth,
		NextProtos:             nextProtos,
		SessionTicketsDisabled: true,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := s.current()
			if m.cert == nil {
				return nil, errors.New("no server certificate configured")
			}
			return &tls.Config{
				MinVersion:             tls.VersionTLS12,
				Certificates:           []tls.Certificate{*m.cert},
				ClientCAs:              m.pool,
				ClientAuth:             clientAuth,
				NextProtos:             nextProtos,
				SessionTicketsDisabled: true,
			}, nil
		},
	}
}

// ClientConfig returns a config for dialing the server named serverName
// (empty: gRPC fills in the host dialed). It trusts the current CA pool
// (the system roots when Files has no CA) and presents the current
// certificate, if any, when the server asks for one. Build one per
// connection to follow a rotated CA file.
func (s *Source) ClientConfig(serverName string) *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName, RootCAs: s.current().pool}
	if s.files.Cert != "" {
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return s.current().cert, nil
		}
	}
	return c
}
