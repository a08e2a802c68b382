package metrics

import (
	"context"
	"fmt"
	"net/http"
	"time"

	gometrics "github.com/hashicorp/go-metrics"
	gmprom "github.com/hashicorp/go-metrics/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/raftwatch/raftwatch/fsm"
	"github.com/raftwatch/raftwatch/node"
	"github.com/raftwatch/raftwatch/watch"
)

// Metrics is one process's registry of metrics.
type Metrics struct {
	reg *prometheus.Registry

	requests     *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	applyEntries prometheus.Histogram
	applyTime    prometheus.Histogram
}

// New returns a registry with the Go runtime and process collectors, the
// request and apply metrics, and raft's go-metrics bridged into it. Raft
// reports to go-metrics' global instance, so a process has one Metrics.
func New() (*Metrics, error) {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "raftwatch_grpc_requests_total",
		Help: "gRPC requests finished, by full method name and status code.",
	}, []string{"method", "code"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "raftwatch_grpc_request_duration_seconds",
		Help:    "Time from the start of a gRPC request to its status (for streams: the stream's life), by method and code.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10), // 100 µs to 26 s
	}, []string{"method", "code"})
	m.applyEntries = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "raftwatch_apply_batch_entries",
		Help:    "Committed log entries the state machine applied in one transaction.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 12), // 1 to 2048
	})
	m.applyTime = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "raftwatch_apply_batch_duration_seconds",
		Help:    "Time the state machine took to apply one batch of committed entries (one bbolt transaction).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16), // 100 µs to 3.3 s
	})
	m.reg.MustRegister(m.requests, m.latency, m.applyEntries, m.applyTime,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// Raft's metrics: counters stay counters, timers and samples become
	// summaries (timers in milliseconds), gauges gauges; named
	// raftwatch_raft_..., e.g. raftwatch_raft_commitTime. They never expire:
	// raft sets some only on changes.
	sink, err := gmprom.NewPrometheusSinkFrom(gmprom.PrometheusOpts{Registerer: m.reg, Name: "raftwatch_gometrics_sink"})
	if err != nil {
		return nil, fmt.Errorf("register the go-metrics sink: %w", err)
	}
	cfg := gometrics.DefaultConfig("raftwatch")
	cfg.EnableHostname = false
	cfg.EnableRuntimeMetrics = false // the Go collector reports the runtime
	if _, err := gometrics.NewGlobal(cfg, sink); err != nil {
		return nil, fmt.Errorf("install the go-metrics sink: %w", err)
	}
	return m, nil
}

// ObserveApply records one applied batch; it is a node.ApplyObserver.
func (m *Metrics) ObserveApply(entries int, took time.Duration) {
	m.applyEntries.Observe(float64(entries))
	m.applyTime.Observe(took.Seconds())
}

// Handler serves the registry in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// ServerOptions are the interceptors that count and time every request.
func (m *Metrics) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(m.unary), grpc.ChainStreamInterceptor(m.stream)}
}

func (m *Metrics) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := h(ctx, req)
	m.observe(info.FullMethod, err, start)
	return resp, err
}

func (m *Metrics) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	start := time.Now()
	err := h(srv, ss)
	m.observe(info.FullMethod, err, start)
	return err
}

func (m *Metrics) observe(method string, err error, start time.Time) {
	code := status.Code(err).String()
	m.requests.WithLabelValues(method, code).Inc()
	m.latency.WithLabelValues(method, code).Observe(time.Since(start).Seconds())
}

// AddNode registers the figures of n, read at each scrape.
func (m *Metrics) AddNode(n *node.Node) error {
	return m.reg.Register(&nodeCollector{n: n})
}

// nodeCollector reads node.Figures once per scrape.
type nodeCollector struct{ n *node.Node }

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	descWatchers      = desc("raftwatch_watchers", "Watchers registered on this node, by state (live: fed as events commit; catching_up: reading history).", "state")
	descDelivered     = desc("raftwatch_watch_events_delivered_total", "Watch events (data, progress and CANCELED) handed to watch streams' consumers.")
	descCancels       = desc("raftwatch_watch_cancels_total", "Watchers canceled by this node, by reason.", "reason")
	descDispatcherLag = desc("raftwatch_watch_dispatcher_lag_revisions", "Revisions applied but not yet offered to live watchers.")
	descApplyLag      = desc("raftwatch_apply_lag_entries", "Committed log entries this node knows of and has not applied (commit index - applied index).")
	descCommit        = desc("raftwatch_commit_index", "Raft commit index this node knows.")
	descApplied       = desc("raftwatch_applied_index", "Index the state machine has applied (the current revision).")
	descTerm          = desc("raftwatch_term", "Raft term.")
	descLeader        = desc("raftwatch_is_leader", "1 when this node is the raft leader.")
	descReady         = desc("raftwatch_ready", "1 when this node is ready (knows a leader, applied what it heard committed): the health service's SERVING and /readyz.")
	descHealthy       = desc("raftwatch_healthy", "0 once this node found damaged stored data.")
	descHistEvents    = desc("raftwatch_history_events", "Events retained in the watch history.")
	descHistBytes     = desc("raftwatch_history_bytes", "Bytes of keys and values retained in the watch history.")
	descHistOldest    = desc("raftwatch_history_oldest_revision", "Oldest revision a watch can start at.")
	descStateDB       = desc("raftwatch_state_db_bytes", "Size of state.db (the state machine's bbolt file).")
	descRaftDB        = desc("raftwatch_raft_db_bytes", "Size of the raft log and stable store: raft.db (--log-store boltdb), or the files of the wal directory (--log-store wal, segments preallocated).")
	descLeases        = desc("raftwatch_leases", "Leases in the state machine.")
	descScrubPasses   = desc("raftwatch_scrub_passes_total", "Background scrub passes completed over data at rest, by store (state: state.db's values; log: the raft log's entries).", "store")
	descScrubVerified = desc("raftwatch_scrub_verified_total", "Records the background scrub verified, by store (values of state.db, entries of the raft log).", "store")
	descScrubBad      = desc("raftwatch_scrub_mismatches_total", "Records the background scrub found failing their checksum, by store; one marks the node unhealthy.", "store")
	descScrubLast     = desc("raftwatch_scrub_last_pass_timestamp_seconds", "When the last completed scrub pass of a store ended (Unix seconds); absent before the first.", "store")
)

func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descWatchers, descDelivered, descCancels, descDispatcherLag, descApplyLag,
		descCommit, descApplied, descTerm, descLeader, descReady, descHealthy, descHistEvents, descHistBytes,
		descHistOldest, descStateDB, descRaftDB, descLeases, descScrubPasses, descScrubVerified, descScrubBad,
		descScrubLast} {
		ch <- d
	}
}

func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	f := c.n.Figures()
	ready, _, _ := c.n.Ready()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge(descWatchers, float64(f.WatchersLive), "live")
	gauge(descWatchers, float64(f.WatchersCatchingUp), "catching_up")
	counter(descDelivered, float64(f.Watch.EventsTaken))
	for cause := watch.CauseShutdown; int(cause) < len(f.Watch.Cancels); cause++ {
		counter(descCancels, float64(f.Watch.Cancels[cause]), cause.String())
	}
	gauge(descDispatcherLag, float64(f.DispatcherLag))
	gauge(descApplyLag, float64(f.ApplyLag))
	gauge(descCommit, float64(f.CommitIndex))
	gauge(descApplied, float64(f.FSMIndex))
	gauge(descTerm, float64(f.Term))
	gauge(descLeader, b2f(f.Role == "leader"))
	gauge(descReady, b2f(ready))
	gauge(descHealthy, b2f(f.Healthy))
	gauge(descHistEvents, float64(f.HistoryEvents))
	gauge(descHistBytes, float64(f.HistoryBytes))
	gauge(descHistOldest, float64(f.HistoryOldest))
	if f.StateDBBytes >= 0 {
		gauge(descStateDB, float64(f.StateDBBytes))
	}
	if f.RaftDBBytes >= 0 {
		gauge(descRaftDB, float64(f.RaftDBBytes))
	}
	if f.Leases >= 0 {
		gauge(descLeases, float64(f.Leases))
	}
	for store, st := range map[string]fsm.ScrubStats{"state": f.Scrub, "log": f.LogScrub} {
		counter(descScrubPasses, float64(st.Passes), store)
		counter(descScrubVerified, float64(st.Values), store)
		counter(descScrubBad, float64(st.Mismatches), store)
		if !st.LastPassEnd.IsZero() {
			gauge(descScrubLast, float64(st.LastPassEnd.UnixNano())/1e9, store)
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
