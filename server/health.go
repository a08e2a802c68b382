package server

import (
	"context"
	"net/http"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/raftwatch/raftwatch/node"
	pb "github.com/raftwatch/raftwatch/proto"
)

// Health is the standard gRPC health service (grpc.health.v1) for a node,
// and the /healthz and /readyz HTTP handlers. The overall service ("") and
// each raftwatch service are SERVING exactly while the node is ready
// (node.Node.Ready: it knows a leader and has applied what it heard
// committed), NOT_SERVING otherwise.
type Health struct {
	node *node.Node
	srv  *health.Server
}

// healthServices are the names the health service answers for.
var healthServices = []string{"", pb.KV_ServiceDesc.ServiceName, pb.Watch_ServiceDesc.ServiceName,
	pb.Cluster_ServiceDesc.ServiceName, pb.Lease_ServiceDesc.ServiceName, pb.Maintenance_ServiceDesc.ServiceName,
	pb.Auth_ServiceDesc.ServiceName, pb.Debug_ServiceDesc.ServiceName}

// NewHealth returns the health service of n, NOT_SERVING until Run sees
// the node ready.
func NewHealth(n *node.Node) *Health {
	h := &Health{node: n, srv: health.NewServer()}
	for _, s := range healthServices {
		h.srv.SetServingStatus(s, healthpb.HealthCheckResponse_NOT_SERVING)
	}
	return h
}

// Register adds the health service to g (before g serves).
func (h *Health) Register(g *grpc.Server) { healthpb.RegisterHealthServer(g, h.srv) }

// Run follows the node's readiness until ctx ends, then sets every
// service NOT_SERVING for good (watchers of the health stream learn it).
func (h *Health) Run(ctx context.Context) {
	for {
		ready, _, changed := h.node.Ready()
		st := healthpb.HealthCheckResponse_NOT_SERVING
		if ready {
			st = healthpb.HealthCheckResponse_SERVING
		}
		for _, s := range healthServices {
			h.srv.SetServingStatus(s, st)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			h.srv.Shutdown()
			return
		}
	}
}

// Healthz answers 200 while the process serves HTTP at all.
func (h *Health) Healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("ok\n"))
}

// Readyz answers 200 when the node is ready, 503 with the reason when not:
// the same rule as the health service.
func (h *Health) Readyz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	ready, reason, _ := h.node.Ready()
	if !ready {
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte("not ready: " + reason + "\n"))
		return
	}
	w.Write([]byte("ready\n"))
}
