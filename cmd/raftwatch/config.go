package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// envPrefix starts the environment variable of every flag: --data-dir is
// RAFTWATCH_DATA_DIR (the client commands' --endpoints already reads
// RAFTWATCH_ENDPOINTS).
const envPrefix = "RAFTWATCH_"

// configFlag names the flag giving the YAML file.
const configFlag = "config"

// maxSuggestDistance is the largest edit distance at which an unknown key
// or variable is offered the closest flag name: enough for a dropped or
// swapped dash or letter, not so much that unrelated names are suggested.
const maxSuggestDistance = 3

// configHelp is appended to a command's long help by addConfigFlag.
const configHelp = `Configuration: every flag may also be given in the environment, as
RAFTWATCH_ followed by the flag name upper-cased with '-' as '_'
(--data-dir is RAFTWATCH_DATA_DIR; an empty variable counts as unset), and
in a YAML file named by --config (or RAFTWATCH_CONFIG) whose keys are the
flag names and whose values are written as on the command line, e.g.

  id: n1
  data-dir: /var/lib/raftwatch
  initial-cluster: n1=10.0.0.1:7201,n2=10.0.0.2:7201,n3=10.0.0.3:7201
  heartbeat-timeout: 750ms

A flag on the command line wins over the environment, which wins over the
file, which wins over the default. An unknown key in the file, or a value
(in the file or the environment) that does not parse, is an error; a
RAFTWATCH_ variable that names no flag of any raftwatch command is only
warned about on stderr, since the environment is shared with other programs.`

// addConfigFlag gives cmd --config and makes it take every flag not given
// on the command line from the environment, then from the file, before it
// runs (before cobra checks required flags, so those may come from either).
// It covers every flag cmd has when it runs, whoever added it.
func addConfigFlag(cmd *cobra.Command) {
	cmd.Flags().String(configFlag, "", "read flags from this YAML file (keys are flag names; see above); env RAFTWATCH_CONFIG")
	cmd.Long += "\n\n" + configHelp
	prev := cmd.PreRunE
	cmd.PreRunE = func(cmd *cobra.Command, args []string) error {
		if err := loadConfig(cmd.Flags(), os.Environ(), otherFlagEnvNames(cmd), cmd.ErrOrStderr()); err != nil {
			return err
		}
		if prev != nil {
			return prev(cmd, args)
		}
		return nil
	}
}

// envName is the environment variable of the flag called name.
func envName(name string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// configurable reports whether a flag may come from the environment or the
// file: all but --help (and a file may not give --config).
func configurable(name string) bool { return name != "help" }

// otherFlagEnvNames returns the variables of the flags of every command in
// cmd's tree that cmd itself does not have: a shell that exports RAFTWATCH_ENDPOINTS for the
// client commands is not warned about when it runs serve.
func otherFlagEnvNames(cmd *cobra.Command) map[string]bool {
	out := map[string]bool{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c != cmd {
			c.Flags().VisitAll(func(f *pflag.Flag) { out[envName(f.Name)] = true })
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(cmd.Root())
	// A flag serve shares with another command (snapshot restore's
	// --data-dir, say) is serve's own: it is applied, not just tolerated.
	cmd.Flags().VisitAll(func(f *pflag.Flag) { delete(out, envName(f.Name)) })
	return out
}

// loadConfig sets every configurable flag of fs not already set (on the
// command line) from its RAFTWATCH_ variable in environ ("KEY=value"
// entries), else from the YAML file named by --config or RAFTWATCH_CONFIG.
// A variable with the prefix that names no flag of fs nor is in others is
// reported on warn.
func loadConfig(fs *pflag.FlagSet, environ []string, others map[string]bool, warn io.Writer) error {
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, envPrefix) {
			env[k] = v
		}
	}
	ours := map[string]bool{}
	var names []string
	fs.VisitAll(func(f *pflag.Flag) {
		if configurable(f.Name) {
			ours[envName(f.Name)] = true
			names = append(names, f.Name)
		}
	})
	var unknown []string
	for k := range env {
		if !ours[k] && !others[k] {
			unknown = append(unknown, k)
		}
	}
	sort.Strings(unknown)
	for _, k := range unknown {
		fmt.Fprintf(warn, "warning: environment variable %s names no flag of %s; ignored%s\n",
			k, fs.Name(), suggest(k, names, envName))
	}

	// The environment first: it may name the file.
	for _, name := range names {
		k := envName(name)
		f, v := fs.Lookup(name), env[k]
		if f.Changed || v == "" {
			continue
		}
		if err := fs.Set(f.Name, v); err != nil {
			return fmt.Errorf("environment variable %s=%q: %s", k, v, invalid(f, err))
		}
	}
	path := fs.Lookup(configFlag).Value.String()
	if path == "" {
		return nil
	}
	file, err := readConfigFile(path, fs, names)
	if err != nil {
		return err
	}
	for _, e := range file {
		f := fs.Lookup(e.key)
		if f.Changed {
			continue
		}
		if err := fs.Set(f.Name, e.value); err != nil {
			return fmt.Errorf("config file %s, line %d: %s: %s", path, e.line, e.key, invalid(f, err))
		}
	}
	return nil
}

// configEntry is one key of a config file.
type configEntry struct {
	key, value string
	line       int
}

// readConfigFile parses the YAML mapping at path into its entries, in file
// order, refusing keys that name no configurable flag of fs and values
// that are not scalars.
func readConfigFile(path string, fs *pflag.FlagSet, names []string) ([]configEntry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil // an empty file sets nothing
		}
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("config file %s: want one YAML document, found more", path)
	}
	if len(doc.Content) == 0 {
		return nil, nil // only comments
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("config file %s, line %d: want a mapping of flag names to values (e.g. data-dir: /var/lib/raftwatch)", path, root.Line)
	}
	var out []configEntry
	seen := map[string]int{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		name := k.Value
		if name == configFlag {
			return nil, fmt.Errorf("config file %s, line %d: %s: a config file may not name another", path, k.Line, name)
		}
		if first, dup := seen[name]; dup {
			return nil, fmt.Errorf("config file %s, line %d: %s given twice (first on line %d)", path, k.Line, name, first)
		}
		seen[name] = k.Line
		if f := fs.Lookup(name); f == nil || !configurable(name) {
			return nil, fmt.Errorf("config file %s, line %d: unknown key %q: no such flag of %s%s",
				path, k.Line, name, fs.Name(), suggest(name, names, func(s string) string { return s }))
		}
		switch {
		case v.Kind != yaml.ScalarNode:
			return nil, fmt.Errorf("config file %s, line %d: %s: want a single value written as on the command line (e.g. initial-cluster: n1=host:port,n2=host:port), not a YAML list or mapping", path, v.Line, name)
		case v.Tag == "!!null":
			return nil, fmt.Errorf("config file %s, line %d: %s has no value (remove the key for the default, or write \"\" for an empty string)", path, v.Line, name)
		}
		out = append(out, configEntry{key: name, value: v.Value, line: k.Line})
	}
	return out, nil
}

// invalid says why a value was refused for f, without pflag's repetition
// of the value and flag.
func invalid(f *pflag.Flag, err error) string {
	if cause := errors.Unwrap(err); cause != nil {
		err = cause
	}
	return fmt.Sprintf("not a valid %s for --%s: %v", f.Value.Type(), f.Name, err)
}

// suggest returns " (did you mean X?)" for the flag name whose form (the
// name itself, or its variable) is closest to got, or "" if none is close.
func suggest(got string, names []string, form func(string) string) string {
	best, bestD := "", maxSuggestDistance+1
	for _, n := range names {
		if d := editDistance(got, form(n)); d < bestD {
			best, bestD = form(n), d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %s?)", best)
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
