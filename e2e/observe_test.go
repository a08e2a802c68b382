package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/raftwatch/raftwatch/client"
)

// startObservedCluster starts three nodes, each with its own --metrics-addr.
func startObservedCluster(t *testing.T) (*testCluster, map[*proc]string) {
	t.Helper()
	ports := freePorts(t, 3)
	addrs := map[string]string{"n1": ports[0], "n2": ports[1], "n3": ports[2]}
	c := startClusterPerNode(t, binary, func(p *proc) []string { return []string{"--metrics-addr", addrs[p.id]} })
	out := map[*proc]string{}
	for _, p := range c.nodes {
		out[p] = addrs[p.id]
	}
	return c, out
}

// scrape fetches and parses http://addr/metrics.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %s", addr, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse the metrics of %s: %v", addr, err)
	}
	return fams
}

// value is the value of the series of family name whose labels include
// want, and whether it exists (counters, gauges, and histograms' counts).
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		case m.Summary != nil:
			return float64(m.Summary.GetSampleCount()), true
		}
	}
	return 0, false
}

func httpStatus(addr, path string) (int, string) {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestMetricsScrapeMoves: /metrics of a real node parses, has raft's,
// the requests', apply's, watch and size series, and they move with load.
func TestMetricsScrapeMoves(t *testing.T) {
	c, maddr := startObservedCluster(t)
	leader := c.waitLeader()
	follower := c.followers()[0]
	put := map[string]string{"method": "/raftwatch.v1.KV/Put", "code": "OK"}

	before := scrape(t, maddr[leader])
	putsBefore, _ := value(before, "raftwatch_grpc_requests_total", put)

	// A watch on a follower, so events are delivered there.
	ctx := ctxT(t, 30*time.Second)
	wcl := c.client(follower.clientAddr)
	w, err := wcl.Watch(ctx, []byte("/obs/"), client.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	events := collect(w)

	cl := c.client(leader.clientAddr)
	const puts = 20
	for i := range puts {
		if _, err := cl.Put(ctx, []byte(fmt.Sprintf("/obs/k%d", i)), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	for range puts {
		nextData(t, events, 10*time.Second)
	}

	after := scrape(t, maddr[leader])
	putsAfter, ok := value(after, "raftwatch_grpc_requests_total", put)
	if !ok || putsAfter-putsBefore < puts {
		t.Errorf("Put OK requests counted %v before and %v (present %v) after %d puts", putsBefore, putsAfter, ok, puts)
	}
	if n, ok := value(after, "raftwatch_grpc_request_duration_seconds", put); !ok || n < puts {
		t.Errorf("Put latency histogram has %v observations (present %v), want >= %d", n, ok, puts)
	}
	if n, ok := value(after, "raftwatch_apply_batch_entries", nil); !ok || n == 0 {
		t.Errorf("apply batch histogram has %v observations (present %v)", n, ok)
	}
	if n, ok := value(after, "raftwatch_apply_batch_duration_seconds", nil); !ok || n == 0 {
		t.Errorf("apply latency histogram has %v observations (present %v)", n, ok)
	}
	// Raft's own go-metrics, bridged: the leader times every commit.
	if n, ok := value(after, "raftwatch_raft_commitTime", nil); !ok || n == 0 {
		var raftNames []string
		for name := range after {
			if strings.HasPrefix(name, "raftwatch_raft_") {
				raftNames = append(raftNames, name)
			}
		}
		t.Errorf("raftwatch_raft_commitTime has %v samples (present %v); raft series present: %v", n, ok, raftNames)
	}
	for _, name := range []string{"raftwatch_state_db_bytes", "raftwatch_raft_db_bytes", "raftwatch_history_events", "raftwatch_applied_index"} {
		if v, ok := value(after, name, nil); !ok || v <= 0 {
			t.Errorf("%s = %v (present %v), want > 0", name, v, ok)
		}
	}
	if _, ok := value(after, "raftwatch_leases", nil); !ok {
		t.Error("raftwatch_leases missing")
	}
	if v, ok := value(after, "raftwatch_is_leader", nil); !ok || v != 1 {
		t.Errorf("raftwatch_is_leader on the leader = %v (present %v)", v, ok)
	}

	f := scrape(t, maddr[follower])
	if v, ok := value(f, "raftwatch_watchers", map[string]string{"state": "live"}); !ok || v < 1 {
		t.Errorf("live watchers on the follower = %v (present %v), want >= 1", v, ok)
	}
	if v, ok := value(f, "raftwatch_watch_events_delivered_total", nil); !ok || v < puts {
		t.Errorf("events delivered on the follower = %v (present %v), want >= %d", v, ok, puts)
	}
	if _, ok := value(f, "raftwatch_watch_cancels_total", map[string]string{"reason": "no_leader"}); !ok {
		t.Error("raftwatch_watch_cancels_total{reason=no_leader} missing")
	}
	if _, ok := value(f, "raftwatch_watch_dispatcher_lag_revisions", nil); !ok {
		t.Error("raftwatch_watch_dispatcher_lag_revisions missing")
	}

	// raftwatch status carries the same figures.
	st, err := c.status(leader)
	if err != nil {
		t.Fatal(err)
	}
	if st.StateDbBytes <= 0 || st.RaftDbBytes <= 0 || !st.Ready || st.Leases < 0 {
		t.Errorf("status figures: state_db_bytes=%d raft_db_bytes=%d ready=%v (%q) leases=%d",
			st.StateDbBytes, st.RaftDbBytes, st.Ready, st.NotReadyReason, st.Leases)
	}
}

func checkHealth(c *testCluster, p *proc, service string) (healthpb.HealthCheckResponse_ServingStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	r, err := healthpb.NewHealthClient(c.conn(p)).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return 0, err
	}
	return r.Status, nil
}

// TestHealthFollowsContactWithTheCluster: every node of a healthy
// cluster is SERVING (and /readyz 200); a follower whose two peers are
// paused becomes NOT_SERVING (and /readyz 503) within a bound, and
// SERVING again once they resume. /healthz stays 200 throughout.
func TestHealthFollowsContactWithTheCluster(t *testing.T) {
	c, maddr := startObservedCluster(t)
	c.waitLeader()
	for _, p := range c.nodes {
		for _, svc := range []string{"", "raftwatch.v1.KV"} {
			eventually(t, 10*time.Second, p.id+" SERVING "+svc, func() bool {
				st, err := checkHealth(c, p, svc)
				return err == nil && st == healthpb.HealthCheckResponse_SERVING
			})
		}
		if code, body := httpStatus(maddr[p], "/readyz"); code != http.StatusOK {
			t.Errorf("%s /readyz = %d %q while SERVING", p.id, code, body)
		}
	}

	cut := c.followers()[0]
	var paused []*proc
	for _, p := range c.nodes {
		if p != cut {
			paused = append(paused, p)
		}
	}
	t.Cleanup(func() {
		for _, p := range paused {
			p.cmd.Process.Signal(syscall.SIGCONT)
		}
	})
	for _, p := range paused {
		if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	// Heartbeat timeout 750 ms, then one 100 ms readiness check; the
	// bound leaves room for a loaded machine.
	const bound = 5 * time.Second
	eventually(t, bound, cut.id+" NOT_SERVING once cut off", func() bool {
		st, err := checkHealth(c, cut, "")
		return err == nil && st == healthpb.HealthCheckResponse_NOT_SERVING
	})
	t.Logf("%s NOT_SERVING %v after its peers were paused", cut.id, time.Since(start).Round(time.Millisecond))
	if code, body := httpStatus(maddr[cut], "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "leader") {
		t.Errorf("/readyz of the cut-off node = %d %q, want 503 naming the missing leader", code, body)
	}
	if code, _ := httpStatus(maddr[cut], "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz of the cut-off (but running) node = %d, want 200", code)
	}

	for _, p := range paused {
		p.cmd.Process.Signal(syscall.SIGCONT)
	}
	eventually(t, 15*time.Second, cut.id+" SERVING again", func() bool {
		st, err := checkHealth(c, cut, "")
		return err == nil && st == healthpb.HealthCheckResponse_SERVING
	})
	eventually(t, 5*time.Second, cut.id+" /readyz 200 again", func() bool {
		code, _ := httpStatus(maddr[cut], "/readyz")
		return code == http.StatusOK
	})
}

// TestReflectionListsTheServices: server reflection names every raftwatch
// service and the health service.
func TestReflectionListsTheServices(t *testing.T) {
	c := startCluster(t)
	ctx := ctxT(t, 10*time.Second)
	s, err := rpb.NewServerReflectionClient(c.conn(c.nodes[0])).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	r, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, svc := range r.GetListServicesResponse().GetService() {
		got[svc.Name] = true
	}
	for _, want := range []string{"raftwatch.v1.KV", "raftwatch.v1.Watch", "raftwatch.v1.Cluster", "raftwatch.v1.Lease", "raftwatch.v1.Debug", "grpc.health.v1.Health"} {
		if !got[want] {
			t.Errorf("reflection does not list %s; it lists %v", want, got)
		}
	}
}
