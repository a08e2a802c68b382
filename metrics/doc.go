// Package metrics exposes a node's figures in the Prometheus text format:
// raft's own go-metrics (bridged through go-metrics' Prometheus sink), the
// gRPC requests per method and code (server interceptors), the state
// machine's apply batches (node.ApplyObserver), and, read at each scrape,
// the watchers, history, lags, file sizes and scrubs (node.Node.Figures).
//
// Hot paths pay only atomic adds: the interceptors and the apply observer
// update Prometheus counters and histograms (lock-free), the watch package
// keeps its own atomic totals, and everything else is read when scraped.
package metrics
