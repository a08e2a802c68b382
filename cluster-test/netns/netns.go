// Package netns builds the test network: a bridge on the host and one network
// namespace per node, joined by veth pairs, and nftables drop rules inside the
// namespaces for partitions. It only ever touches the names and addresses it
// defines here.
package netns

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// Fixed addressing of the test network.
const (
	Bridge     = "rwbr0"
	HostAddr   = "10.77.0.1"
	prefixLen  = 24
	nodeIPBase = 10 // node i (1-based) gets 10.77.0.(10+i)
	// Table is the nftables table the nemesis owns inside each namespace.
	Table = "rwnemesis"
)

// Node is one node's network identity.
type Node struct {
	ID   string // n1
	NS   string // rw-n1
	IP   string // 10.77.0.11
	Veth string // host side of the veth pair, rwv-n1 (the namespace side is rwv-n1p)
}

// Network is the bridge plus the per-node namespaces.
type Network struct {
	Nodes []Node
	// created records what Setup made, so Teardown removes exactly that.
	bridge bool
	ns     []string
}

// New describes a network of n nodes (n1..nN); nothing is created yet.
func New(n int) *Network {
	nw := &Network{}
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("n%d", i)
		nw.Nodes = append(nw.Nodes, Node{ID: id, NS: "rw-" + id, IP: fmt.Sprintf("10.77.0.%d", nodeIPBase+i), Veth: "rwv-" + id})
	}
	return nw
}

// Node returns the node with the given id.
func (nw *Network) Node(id string) (Node, bool) {
	for _, n := range nw.Nodes {
		if n.ID == id {
			return n, true
		}
	}
	return Node{}, false
}

func run(name string, args ...string) error {
	var stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stderr = &stderr
	cmd.Stdout = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

func runIn(ns string, args ...string) error {
	return run("ip", append([]string{"netns", "exec", ns}, args...)...)
}

// Leftovers lists the bridge and namespaces of this network that already
// exist (from another run, or one that was killed before cleaning up).
func (nw *Network) Leftovers() []string {
	var out []string
	if exec.Command("ip", "link", "show", Bridge).Run() == nil {
		out = append(out, "bridge "+Bridge)
	}
	list, _ := exec.Command("ip", "netns", "list").Output()
	for _, n := range nw.Nodes {
		for _, line := range strings.Split(string(list), "\n") {
			if f := strings.Fields(line); len(f) > 0 && f[0] == n.NS {
				out = append(out, "namespace "+n.NS)
			}
		}
	}
	return out
}

// RemoveLeftovers deletes this network's bridge and namespaces if present.
func (nw *Network) RemoveLeftovers() error {
	var errs []error
	for _, l := range nw.Leftovers() {
		kind, name, _ := strings.Cut(l, " ")
		var err error
		if kind == "bridge" {
			err = run("ip", "link", "del", name)
		} else {
			err = run("ip", "netns", "del", name)
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Setup creates the bridge, namespaces and veth pairs. On error, whatever was
// created is still recorded for Teardown.
func (nw *Network) Setup() error {
	if err := run("ip", "link", "add", Bridge, "type", "bridge"); err != nil {
		return err
	}
	nw.bridge = true
	steps := [][]string{
		{"ip", "addr", "add", fmt.Sprintf("%s/%d", HostAddr, prefixLen), "dev", Bridge},
		{"ip", "link", "set", Bridge, "up"},
	}
	for _, s := range steps {
		if err := run(s[0], s[1:]...); err != nil {
			return err
		}
	}
	for _, n := range nw.Nodes {
		if err := run("ip", "netns", "add", n.NS); err != nil {
			return err
		}
		nw.ns = append(nw.ns, n.NS)
		peer := n.Veth + "p"
		steps := [][]string{
			{"ip", "link", "add", n.Veth, "type", "veth", "peer", "name", peer},
			{"ip", "link", "set", peer, "netns", n.NS},
			{"ip", "link", "set", n.Veth, "master", Bridge},
			{"ip", "link", "set", n.Veth, "up"},
			{"ip", "netns", "exec", n.NS, "ip", "addr", "add", fmt.Sprintf("%s/%d", n.IP, prefixLen), "dev", peer},
			{"ip", "netns", "exec", n.NS, "ip", "link", "set", peer, "up"},
			{"ip", "netns", "exec", n.NS, "ip", "link", "set", "lo", "up"},
		}
		for _, s := range steps {
			if err := run(s[0], s[1:]...); err != nil {
				return err
			}
		}
	}
	return nil
}

// Teardown removes the namespaces (which removes their veths and rules) and
// the bridge that Setup created.
func (nw *Network) Teardown() error {
	var errs []error
	for _, ns := range nw.ns {
		_ = runIn(ns, "nft", "delete", "table", "inet", Table)
		if err := run("ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	nw.ns = nil
	if nw.bridge {
		if err := run("ip", "link", "del", Bridge); err != nil {
			errs = append(errs, err)
		}
		nw.bridge = false
	}
	return errors.Join(errs...)
}

// Drop replaces the rules in node's namespace so that it drops every packet
// from and to peers (node ids). Packets vanish silently.
func (nw *Network) Drop(node string, peers []string) error {
	n, ok := nw.Node(node)
	if !ok {
		return fmt.Errorf("unknown node %q", node)
	}
	var ips []string
	for _, p := range peers {
		pn, ok := nw.Node(p)
		if !ok {
			return fmt.Errorf("unknown node %q", p)
		}
		ips = append(ips, pn.IP)
	}
	set := strings.Join(ips, ", ")
	// Delete-then-create in one nft transaction: "add table" first makes the
	// delete valid when the table does not exist yet.
	script := fmt.Sprintf(`add table inet %[1]s
delete table inet %[1]s
table inet %[1]s {
	chain input {
		type filter hook input priority 0; policy accept;
		ip saddr { %[2]s } drop
	}
	chain output {
		type filter hook output priority 0; policy accept;
		ip daddr { %[2]s } drop
	}
}
`, Table, set)
	cmd := exec.Command("ip", "netns", "exec", n.NS, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %w: %s", n.NS, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Heal removes the drop rules in every namespace.
func (nw *Network) Heal() error {
	var errs []error
	for _, n := range nw.Nodes {
		cmd := exec.Command("ip", "netns", "exec", n.NS, "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(fmt.Sprintf("add table inet %[1]s\ndelete table inet %[1]s\n", Table))
		if out, err := cmd.CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("nft in %s: %w: %s", n.NS, err, strings.TrimSpace(string(out))))
		}
	}
	return errors.Join(errs...)
}
