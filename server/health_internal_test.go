package server

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
)

// Every raftwatch service the server registers has a health status, as the
// README promises ("" and each raftwatch.v1.* service).
func TestHealthCoversEveryService(t *testing.T) {
	g := grpc.NewServer()
	(&Server{}).Register(g)
	n := 0
	for name := range g.GetServiceInfo() {
		if !strings.HasPrefix(name, "raftwatch.v1.") {
			continue
		}
		n++
		if !slices.Contains(healthServices, name) {
			t.Errorf("service %s is registered but the health service does not answer for it", name)
		}
	}
	if n < 7 {
		t.Fatalf("only %d raftwatch services registered", n)
	}
}
