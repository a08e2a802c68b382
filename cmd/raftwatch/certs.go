package main

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/raftwatch/raftwatch/certs"
)

func newCertsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Issue a throwaway CA and certificates for a local or test cluster",
		Long: `Issue a certificate authority and the certificates a TLS cluster needs,
without openssl. Each certificate's subject common name is its identity (a
node's id, a client's user name). A node certificate is valid for TLS server
and client authentication on the --hosts given and names its node in a
raftwatch://node/ID URI: raft accepts only node certificates from peers, and
with roles enforced a node calling another member is recognised by it. A
client certificate is valid for client authentication only and names no
host. For development and tests: a production cluster should take its
certificates from its own CA.`,
	}
	cmd.AddCommand(newCertsCreateCmd(), newCertsIssueCmd())
	return cmd
}

func newCertsCreateCmd() *cobra.Command {
	var dir, nodes, clients, hosts string
	var validity time.Duration
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a CA and certificates for nodes and clients in a directory",
		Long: `Create a CA (DIR/ca.crt, and DIR/ca.key readable by its owner only) and, for
each node and client named, DIR/NAME.crt and DIR/NAME.key signed by it: node
certificates for --nodes (valid for --hosts), client certificates for
--clients. A directory that already holds a CA is refused: issue more
certificates from it with "raftwatch certs issue".`,
		Example: `  raftwatch certs create --dir .cluster/tls --nodes n1,n2,n3 --clients root,alice --hosts 127.0.0.1,localhost`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			nodeIDs, clientIDs := splitList(nodes), splitList(clients)
			names := append(append([]string(nil), nodeIDs...), clientIDs...)
			if len(names) == 0 {
				return errors.New("name at least one certificate with --nodes or --clients")
			}
			if err := checkNames(names); err != nil {
				return err
			}
			if _, err := os.Stat(filepath.Join(dir, "ca.key")); err == nil {
				return fmt.Errorf("%s already holds a CA (ca.key); issue more certificates with: raftwatch certs issue [--node] NAME --dir %s", dir, dir)
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			ca, err := certs.NewCA("raftwatch-ca", validity)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			for _, write := range []func(string) (string, error){ca.WriteKey, ca.WriteCA} {
				path, err := write(dir)
				if err != nil {
					return err
				}
				fmt.Fprintln(out, path)
			}
			if err := issueAll(out, dir, nodeIDs, nodeIssuer(ca, splitList(hosts), validity)); err != nil {
				return err
			}
			return issueAll(out, dir, clientIDs, clientIssuer(ca, validity))
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "directory to write the files to (created if missing; required)")
	f.StringVar(&nodes, "nodes", "", "comma-separated node ids to issue certificates for (common name = node id)")
	f.StringVar(&clients, "clients", "", "comma-separated client identities to issue certificates for (common name = identity)")
	f.StringVar(&hosts, "hosts", "127.0.0.1,localhost", "comma-separated IP addresses and DNS names the node certificates are valid for")
	f.DurationVar(&validity, "validity", certs.DefaultValidity, "how long the certificates stay valid")
	cmd.MarkFlagRequired("dir")
	return cmd
}

func newCertsIssueCmd() *cobra.Command {
	var dir, caCert, caKey, hosts string
	var validity time.Duration
	var node bool
	cmd := &cobra.Command{
		Use:   "issue [--node] NAME...",
		Short: "Sign more certificates (or replacements) with an existing CA",
		Long: `Write DIR/NAME.crt and DIR/NAME.key for each NAME, signed by the CA in
--ca-cert and --ca-key (default DIR/ca.crt and DIR/ca.key): client
certificates for the identities named, or with --node node certificates for
the node ids named (valid for --hosts). An existing pair is replaced
atomically, so a node using it picks the new one up without a restart: this
is how a certificate is rotated. Replacing a node certificate with a client
certificate, or the reverse, is refused.`,
		Example: `  raftwatch certs issue --node n4 --dir .cluster/tls --hosts 10.0.0.4
  raftwatch certs issue alice --dir .cluster/tls`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkNames(args); err != nil {
				return err
			}
			if !node && cmd.Flags().Changed("hosts") {
				return errors.New("--hosts is for node certificates (--node): a client certificate names no host")
			}
			for _, name := range args {
				if err := checkSameKind(dir, name, node); err != nil {
					return err
				}
			}
			if caCert == "" {
				caCert = filepath.Join(dir, "ca.crt")
			}
			if caKey == "" {
				caKey = filepath.Join(dir, "ca.key")
			}
			ca, err := certs.LoadCA(caCert, caKey)
			if err != nil {
				return err
			}
			issue := clientIssuer(ca, validity)
			if node {
				issue = nodeIssuer(ca, splitList(hosts), validity)
			}
			return issueAll(cmd.OutOrStdout(), dir, args, issue)
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "directory to write the files to (required)")
	f.StringVar(&caCert, "ca-cert", "", "the CA's certificate (default DIR/ca.crt)")
	f.StringVar(&caKey, "ca-key", "", "the CA's private key (default DIR/ca.key)")
	f.BoolVar(&node, "node", false, "issue node certificates: each NAME is a node id")
	f.StringVar(&hosts, "hosts", "127.0.0.1,localhost", "with --node, comma-separated IP addresses and DNS names the certificates are valid for")
	f.DurationVar(&validity, "validity", certs.DefaultValidity, "how long the certificates stay valid")
	cmd.MarkFlagRequired("dir")
	return cmd
}

// An issuer signs the certificate of one name.
type issuer func(name string) (certs.Leaf, error)

func nodeIssuer(ca *certs.CA, hosts []string, validity time.Duration) issuer {
	return func(id string) (certs.Leaf, error) { return ca.IssueNode(id, hosts, validity) }
}

func clientIssuer(ca *certs.CA, validity time.Duration) issuer {
	return func(identity string) (certs.Leaf, error) { return ca.IssueClient(identity, validity) }
}

// issueAll writes a certificate for each name into dir, printing each path.
func issueAll(out io.Writer, dir string, names []string, issue issuer) error {
	for _, name := range names {
		leaf, err := issue(name)
		if err != nil {
			return err
		}
		certPath, keyPath, err := leaf.Write(dir, name)
		if err != nil {
			return err
		}
		fmt.Fprintln(out, certPath)
		fmt.Fprintln(out, keyPath)
	}
	return nil
}

// checkSameKind refuses to replace dir/name.crt with a certificate of the
// other kind: a node given a client certificate could no longer serve, a
// client given a node certificate would pass as a node. A missing or
// unreadable file is no objection.
func checkSameKind(dir, name string, node bool) error {
	b, err := os.ReadFile(filepath.Join(dir, name+".crt"))
	if err != nil {
		return nil
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil
	}
	switch _, isNode := certs.NodeID(cert); {
	case isNode && !node:
		return fmt.Errorf("%s.crt is a node certificate: reissue it with --node", name)
	case !isNode && node:
		return fmt.Errorf("%s.crt is not a node certificate: reissue it without --node, or pick another name", name)
	}
	return nil
}

// checkNames refuses names that would not make a file name of their own
// or that collide with the CA's files or each other.
func checkNames(names []string) error {
	seen := map[string]bool{}
	for _, n := range names {
		switch {
		case n == "ca":
			return errors.New(`"ca" names the CA's own files; pick another name`)
		case strings.ContainsAny(n, `/\`) || n == "." || n == "..":
			return fmt.Errorf("%q: a name may not contain a path separator", n)
		case seen[n]:
			return fmt.Errorf("%q named twice", n)
		}
		seen[n] = true
	}
	return nil
}

// splitList splits a comma-separated flag value, dropping empty entries.
func splitList(s string) []string {
	var out []string
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}
