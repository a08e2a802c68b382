package main

import (
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
node's id, a client's user name) and it is valid for both TLS server and
client authentication, for the --hosts given. For development and tests: a
production cluster should take its certificates from its own CA.`,
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
each node and client named, DIR/NAME.crt and DIR/NAME.key signed by it. A
directory that already holds a CA is refused: issue more certificates from
it with "raftwatch certs issue".`,
		Example: `  raftwatch certs create --dir .cluster/tls --nodes n1,n2,n3 --clients root,alice --hosts 127.0.0.1,localhost`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			names := append(splitList(nodes), splitList(clients)...)
			if len(names) == 0 {
				return errors.New("name at least one certificate with --nodes or --clients")
			}
			if err := checkNames(names); err != nil {
				return err
			}
			if _, err := os.Stat(filepath.Join(dir, "ca.key")); err == nil {
				return fmt.Errorf("%s already holds a CA (ca.key); issue more certificates with: raftwatch certs issue NAME --dir %s", dir, dir)
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
			return issueAll(out, ca, dir, names, splitList(hosts), validity)
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "directory to write the files to (created if missing; required)")
	f.StringVar(&nodes, "nodes", "", "comma-separated node ids to issue certificates for (common name = node id)")
	f.StringVar(&clients, "clients", "", "comma-separated client identities to issue certificates for (common name = identity)")
	f.StringVar(&hosts, "hosts", "127.0.0.1,localhost", "comma-separated IP addresses and DNS names the certificates are valid for")
	f.DurationVar(&validity, "validity", certs.DefaultValidity, "how long the certificates stay valid")
	cmd.MarkFlagRequired("dir")
	return cmd
}

func newCertsIssueCmd() *cobra.Command {
	var dir, caCert, caKey, hosts string
	var validity time.Duration
	cmd := &cobra.Command{
		Use:   "issue NAME...",
		Short: "Sign more certificates (or replacements) with an existing CA",
		Long: `Write DIR/NAME.crt and DIR/NAME.key for each NAME, signed by the CA in
--ca-cert and --ca-key (default DIR/ca.crt and DIR/ca.key). An existing pair
is replaced atomically, so a node using it picks the new one up without a
restart: this is how a certificate is rotated.`,
		Example: `  raftwatch certs issue n1 --dir .cluster/tls`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkNames(args); err != nil {
				return err
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
			return issueAll(cmd.OutOrStdout(), ca, dir, args, splitList(hosts), validity)
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "directory to write the files to (required)")
	f.StringVar(&caCert, "ca-cert", "", "the CA's certificate (default DIR/ca.crt)")
	f.StringVar(&caKey, "ca-key", "", "the CA's private key (default DIR/ca.key)")
	f.StringVar(&hosts, "hosts", "127.0.0.1,localhost", "comma-separated IP addresses and DNS names the certificates are valid for")
	f.DurationVar(&validity, "validity", certs.DefaultValidity, "how long the certificates stay valid")
	cmd.MarkFlagRequired("dir")
	return cmd
}

// issueAll writes a certificate for each name into dir, printing each path.
func issueAll(out io.Writer, ca *certs.CA, dir string, names, hosts []string, validity time.Duration) error {
	for _, name := range names {
		leaf, err := ca.Issue(name, hosts, validity)
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
