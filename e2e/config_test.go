package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/raftwatch/raftwatch/proto"
)

// cleanEnv is the test's environment without any RAFTWATCH_ variable.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RAFTWATCH_") {
			out = append(out, kv)
		}
	}
	return out
}

// nodeStatus asks the node serving clients on addr for its status.
func nodeStatus(addr string) (*pb.StatusResponse, error) {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return pb.NewClusterClient(cc).Status(ctx, &pb.StatusRequest{})
}

// runServe starts bin serve with args and env, waits until a node leads on
// clientAddr with id, and returns a func that stops it with SIGTERM.
func runServe(t *testing.T, bin string, env []string, clientAddr, id string, args ...string) (stop func()) {
	t.Helper()
	var log strings.Builder
	cmd := exec.Command(bin, append([]string{"serve"}, args...)...)
	cmd.Env, cmd.Stdout, cmd.Stderr = env, &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop = func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Errorf("serve did not exit within 15 s of SIGTERM")
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := nodeStatus(clientAddr)
		if err == nil && (st.Id != id || st.ClientAddr != clientAddr) {
			stop()
			t.Fatalf("node on %s: id %q, client addr %q; want %q and %s", clientAddr, st.Id, st.ClientAddr, id, clientAddr)
		}
		// A restart with a new client address leads first and records the
		// address through the log just after.
		if err == nil && st.Role == "leader" && st.LeaderAddr == clientAddr {
			return stop
		}
		select {
		case err := <-exited:
			t.Fatalf("serve exited (%v) before leading on %s:\n%s", err, clientAddr, log.String())
		default:
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("no leader on %s after 20 s:\n%s", clientAddr, log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A real node takes its settings from --config, the environment wins over
// the file, and a flag wins over both; a file with an unknown key stops it
// before it opens anything.
func TestServeReadsConfigFileEnvAndFlags(t *testing.T) {
	bin := binary
	addrs := freePorts(t, 4)
	raftAddr, fileAddr, envAddr, flagAddr := addrs[0], addrs[1], addrs[2], addrs[3]
	dir := t.TempDir()
	config := filepath.Join(dir, "raftwatch.yaml")
	yaml := fmt.Sprintf(`# a single-node cluster
id: n1
data-dir: %s
raft-addr: %s
client-addr: %s
initial-cluster: n1=%s
heartbeat-timeout: 300ms
election-timeout: 300ms
leader-lease-timeout: 200ms
`, filepath.Join(dir, "n1"), raftAddr, fileAddr, raftAddr)
	if err := os.WriteFile(config, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("file", func(t *testing.T) {
		runServe(t, bin, cleanEnv(), fileAddr, "n1", "--config", config)()
	})
	t.Run("env over file, file named by RAFTWATCH_CONFIG", func(t *testing.T) {
		env := append(cleanEnv(), "RAFTWATCH_CONFIG="+config, "RAFTWATCH_CLIENT_ADDR="+envAddr)
		stop := runServe(t, bin, env, envAddr, "n1")
		defer stop()
		if _, err := nodeStatus(fileAddr); err == nil {
			t.Errorf("the file's client address %s answers too", fileAddr)
		}
	})
	t.Run("flag over env and file", func(t *testing.T) {
		env := append(cleanEnv(), "RAFTWATCH_CLIENT_ADDR="+envAddr)
		stop := runServe(t, bin, env, flagAddr, "n1", "--config", config, "--client-addr", flagAddr)
		defer stop()
		for _, a := range []string{fileAddr, envAddr} {
			if _, err := nodeStatus(a); err == nil {
				t.Errorf("client address %s answers too", a)
			}
		}
	})
	t.Run("unknown key stops serve before it opens anything", func(t *testing.T) {
		testServeRefusesUnknownConfigKey(t, bin)
	})
}

func testServeRefusesUnknownConfigKey(t *testing.T, bin string) {
	dir := t.TempDir()
	config := filepath.Join(dir, "raftwatch.yaml")
	dataDir := filepath.Join(dir, "n1")
	yaml := "id: n1\ndata-dir: " + dataDir + "\nraft-addr: 127.0.0.1:1\nclient-adr: 127.0.0.1:2\n"
	if err := os.WriteFile(config, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "--config", config)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); err == nil || code != 1 {
		t.Fatalf("exit code %d (%v), want 1:\n%s", code, err, out)
	}
	want := fmt.Sprintf("error: config file %s, line 4: unknown key \"client-adr\": no such flag of serve (did you mean client-addr?)\n", config)
	if string(out) != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Errorf("data dir %s was created (%v)", dataDir, err)
	}
}
