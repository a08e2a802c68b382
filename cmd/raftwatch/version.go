package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// versionInfo is what this binary knows of its own build.
type versionInfo struct {
	Version  string `json:"version"` // module version; "(devel)" when built outside a versioned module
	Commit   string `json:"commit"`  // vcs.revision; empty when built without VCS information
	Modified bool   `json:"modified"`
	Go       string `json:"go"`
}

func buildVersion() versionInfo {
	v := versionInfo{Version: "(unknown)", Go: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	if bi.Main.Version != "" {
		v.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Commit = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

func (v versionInfo) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "raftwatch %s (", v.Version)
	if v.Commit == "" {
		b.WriteString("commit unknown")
	} else {
		b.WriteString("commit " + v.Commit)
		if v.Modified {
			b.WriteString(", modified")
		}
	}
	fmt.Fprintf(&b, ", %s)", v.Go)
	return b.String()
}

func newVersionCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the module version and the commit this binary was built from",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if asJSON {
				return printJSON(buildVersion())
			}
			fmt.Println(buildVersion())
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}
