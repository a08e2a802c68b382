package main

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftwatch/raftwatch/client"
	"github.com/raftwatch/raftwatch/node"
	"github.com/raftwatch/raftwatch/nodetest"
)

func TestRebuildLimitAllowsMaxPerWindow(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := rebuildLimit{max: 3, window: time.Hour}
	for _, c := range []struct {
		at   time.Duration
		want bool
	}{
		{0, true},
		{time.Minute, true},
		{2 * time.Minute, true},
		{3 * time.Minute, false},  // a fourth within the hour
		{59 * time.Minute, false}, // refusals are not counted: still three
		{60 * time.Minute, true},  // the first left the window
		{61 * time.Minute, true},  // and the second
		{62 * time.Minute, true},  // and the third
		{63 * time.Minute, false},
	} {
		if got := l.take(t0.Add(c.at)); got != c.want {
			t.Fatalf("rebuild at +%v: allowed %v, want %v", c.at, got, c.want)
		}
	}
	if none := (rebuildLimit{max: 0, window: time.Hour}); none.take(t0) {
		t.Fatal("a limit of 0 allowed a rebuild")
	}
}

// servedNode is serve running in this process on a single-node cluster.
type servedNode struct {
	cfg    node.Config
	stop   chan os.Signal
	done   chan error
	logged *lockedBuffer
}

func startServe(t *testing.T, cfg node.Config, sc serveConfig) *servedNode {
	t.Helper()
	s := &servedNode{cfg: cfg, stop: make(chan os.Signal, 1), done: make(chan error, 1), logged: &lockedBuffer{}}
	log := slog.New(slog.NewTextHandler(s.logged, nil))
	cfg.Logger = log
	go func() { s.done <- serve(cfg, sc, s.stop, log) }()
	t.Cleanup(func() { s.shutdown(t) })
	return s
}

// shutdown sends SIGTERM (once) and waits for serve to return.
func (s *servedNode) shutdown(t *testing.T) {
	t.Helper()
	select {
	case s.stop <- syscall.SIGTERM:
	default:
	}
	select {
	case err, ok := <-s.done:
		if !ok {
			return
		}
		if err != nil {
			t.Errorf("serve: %v", err)
		}
		close(s.done)
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not return within 30 s of SIGTERM")
	}
}

func flipValue(t *testing.T, path string, value []byte) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, value) {
		t.Fatalf("%q not found in %s", value, path)
	}
	damaged := bytes.Clone(value)
	damaged[len(damaged)/2] ^= 0x01
	if err := os.WriteFile(path, bytes.ReplaceAll(b, value, damaged), 0o600); err != nil {
		t.Fatal(err)
	}
	return damaged
}

// getSerializable reads key from the node, giving up after a second.
func getSerializable(cl *client.Client, key string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	r, err := cl.Get(ctx, []byte(key), client.WithSerializable())
	if err != nil || r.Kv == nil {
		return "", err
	}
	return string(r.Kv.Value), nil
}

// A damaged value found while serving is repaired in the same process:
// serve reopens the node, which rebuilds its state machine from its log,
// on the same client and metrics addresses. Once the rebuilds allowed are
// spent, a damaged node stays unhealthy and says why.
func TestServeRebuildsADamagedStateMachineInProcess(t *testing.T) {
	addrs := nodetest.FreeAddrs(t, 3)
	cfg := node.DefaultConfig()
	cfg.ID, cfg.DataDir, cfg.RaftAddr, cfg.ClientAddr = "n1", t.TempDir(), addrs[0], addrs[1]
	cfg.InitialCluster = map[string]string{"n1": addrs[0]}
	cfg.ScrubInterval = 0 // the get below finds the damage
	sc := serveConfig{metricsAddr: addrs[2], rebuildOnDamage: true}
	key, value := "/d/k", []byte("a-value-the-disk-damages-0123456789")
	statePath := filepath.Join(cfg.DataDir, "state.db")

	sc.rebuilds = rebuildLimit{max: 1, window: time.Hour}
	s := startServe(t, cfg, sc)
	cl := nodetest.Client(t, cfg.ClientAddr)
	nodetest.Eventually(t, 20*time.Second, "the put to succeed", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := cl.Put(ctx, []byte(key), value)
		return err == nil
	})
	s.shutdown(t)
	damaged := flipValue(t, statePath, value)

	s = startServe(t, cfg, sc)
	nodetest.Eventually(t, 20*time.Second, "the damaged value to be found and then served rebuilt", func() bool {
		v, err := getSerializable(cl, key)
		if v == string(damaged) {
			t.Fatalf("served the damaged value %q", v)
		}
		return err == nil && v == string(value)
	})
	if !strings.Contains(s.logged.String(), "state machine damaged: restarting in-process to rebuild it") {
		t.Fatalf("the rebuild was not logged:\n%s", s.logged.String())
	}
	if st, err := cl.Status(ctxFor(t), cfg.ClientAddr); err != nil || !st.Healthy {
		t.Fatalf("status after the rebuild: %v, %v; want healthy", st, err)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "state.db.damaged")); !os.IsNotExist(err) {
		t.Fatalf("the damage marker is still there after the rebuild: %v", err)
	}
	resp, err := http.Get("http://" + sc.metricsAddr + "/readyz")
	if err != nil {
		t.Fatalf("the metrics server is not back on %s: %v", sc.metricsAddr, err)
	}
	resp.Body.Close()
	s.shutdown(t)

	// No rebuild left: the node stays unhealthy and says why.
	flipValue(t, statePath, value)
	sc.rebuilds = rebuildLimit{max: 0, window: time.Hour}
	s = startServe(t, cfg, sc)
	nodetest.Eventually(t, 20*time.Second, "a get of the damaged value to fail with DATA_LOSS", func() bool {
		_, err := getSerializable(cl, key)
		return status.Code(err) == codes.DataLoss
	})
	nodetest.Eventually(t, 10*time.Second, "the refused rebuild to be logged", func() bool {
		return strings.Contains(s.logged.String(), "state machine damaged, but not rebuilt")
	})
	if _, err := getSerializable(cl, key); status.Code(err) != codes.DataLoss {
		t.Fatalf("get after the refused rebuild: %v, want DATA_LOSS", err)
	}
	if strings.Contains(s.logged.String(), "restarting in-process") {
		t.Fatalf("rebuilt although no rebuild was left:\n%s", s.logged.String())
	}
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}
