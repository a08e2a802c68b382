package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// binary is the raftwatch executable built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "raftwatch-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "raftwatch")
	var flags []string
	if raceEnabled {
		flags = append(flags, "-race") // the nodes' own code is race-checked too
	}
	if err := buildRaftwatch(binary, flags...); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildRaftwatch builds cmd/raftwatch into the file out with go build's
// flags. TestMain builds the binary every test uses; a test needing
// another build (without the race detector, stamped with the commit)
// makes it with this.
func buildRaftwatch(out string, flags ...string) error {
	args := append(append([]string{"build"}, flags...), "-o", out, "../cmd/raftwatch")
	if b, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("building raftwatch: %v\n%s", err, b)
	}
	return nil
}
