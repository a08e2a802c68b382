package main

import (
	"encoding/json"
	"math"
	"os"
	"sort"
	"sync"
	"time"
)

// Result is one measurement, written as one JSON line. Fields that do not
// apply to a workload are omitted.
type Result struct {
	Workload string `json:"workload"` // put, get, txn, keepalive, watch-latency, watch-throughput, memory, watch-mass, slow-watchers, watch-resume
	Case     string `json:"case"`     // the workload with its parameters; the table row key
	Target   string `json:"target"`
	Round    int    `json:"round"`
	// Curve names the scaling curve this result is a point of (--curve:
	// put-clients, watch-watchers, node-rss; see curves); such results are
	// left out of the workload tables, which compare like cases only.
	Curve string `json:"curve,omitempty"`

	Clients  int `json:"clients,omitempty"`
	Conns    int `json:"conns,omitempty"`
	Watchers int `json:"watchers,omitempty"`

	DurationS  float64 `json:"duration_s"`
	Ops        int64   `json:"ops,omitempty"`
	Errors     int64   `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	// TeardownError: the untimed cleanup after the run failed (e.g. the
	// keepalive workload's revokes); the measurement stands.
	TeardownError string `json:"teardown_error,omitempty"`

	Throughput float64 `json:"throughput,omitempty"` // completed ops per second
	P50Ms      float64 `json:"p50_ms,omitempty"`
	P99Ms      float64 `json:"p99_ms,omitempty"`
	MaxMs      float64 `json:"max_ms,omitempty"`

	// CompareFailed counts the completed transactions (in Ops) whose
	// compares did not hold (txn workload); see SuccessRate.
	CompareFailed int64 `json:"compare_failed,omitempty"`
	Accounts      int   `json:"accounts,omitempty"` // txn workload: keys the pairs are drawn from
	Leases        int   `json:"leases,omitempty"`   // keepalive workload: leases renewed round robin

	PutsPerS       float64 `json:"puts_per_s,omitempty"`
	Events         int64   `json:"events,omitempty"`          // PUT events delivered to watchers
	ExpectedEvents int64   `json:"expected_events,omitempty"` // acknowledged puts x watchers
	EventsPerS     float64 `json:"events_per_s,omitempty"`
	EndedStreams   int     `json:"ended_streams,omitempty"` // watch streams that ended early

	// Server CPU (user+system, from /proc/PID/stat) over the measured
	// window, when the run was given the nodes' --pids: seconds per node
	// in --pids order and their sum, and that sum per completed op and,
	// in the watch workloads, per delivered event, in microseconds. The
	// window is the one the ops are counted in (after the warmup; watch
	// workloads: from the first put to the end of the drain).
	NodeCPUS      []float64 `json:"node_cpu_s,omitempty"`
	ServerCPUS    float64   `json:"server_cpu_s,omitempty"`
	CPUPerOpUs    float64   `json:"cpu_per_op_us,omitempty"`
	CPUPerEventUs float64   `json:"cpu_per_event_us,omitempty"`

	IdleRSS         []int64 `json:"idle_rss_bytes,omitempty"` // per node, in --pids order
	HeldRSS         []int64 `json:"held_rss_bytes,omitempty"`
	BytesPerWatcher float64 `json:"bytes_per_watcher,omitempty"`

	Slow   *SlowWatchers `json:"slow_watchers,omitempty"`
	Resume *WatchResume  `json:"watch_resume,omitempty"`
	Mass   *MassWatchers `json:"mass_watchers,omitempty"`
}

// MassWatchers is what the watch-mass workload measures: many watchers
// held on one node (Watchers, over Conns client objects, each one stream),
// what they cost that node's memory, how fast they opened, and the put
// load on keys none of them watches before and while they are held.
type MassWatchers struct {
	Keys         string `json:"keys"` // one: every watcher on one key; distinct: each on a key of its own
	Node         int    `json:"node"` // endpoint index of the node holding them
	OpenParallel int    `json:"open_parallel"`
	// Opened watchers (acknowledged as created), in OpenS seconds.
	Opened   int     `json:"opened"`
	OpenS    float64 `json:"open_s"`
	OpenPerS float64 `json:"open_per_s"`
	// Failure says why the run stopped early (the node exited, opening
	// timed out or was refused); Opened is how far it got. Empty: survived.
	Failure string `json:"failure,omitempty"`
	// The node's VmRSS and RssAnon (medians of rssSamples readings) before
	// the first watcher and once all were open (after --settle), bytes.
	IdleRSS  int64 `json:"idle_rss_bytes"`
	IdleAnon int64 `json:"idle_anon_bytes"`
	HeldRSS  int64 `json:"held_rss_bytes,omitempty"`
	HeldAnon int64 `json:"held_anon_bytes,omitempty"`
	// The put load on keys no watcher watches, on the same cluster before
	// the watchers were opened (idle) and while they are held; nil: not run.
	PutIdle *PutSummary `json:"put_idle,omitempty"`
	PutHeld *PutSummary `json:"put_held,omitempty"`
}

// PutSummary is one put load's numbers.
type PutSummary struct {
	Clients    int     `json:"clients"`
	Conns      int     `json:"conns"`
	Throughput float64 `json:"throughput"`
	P50Ms      float64 `json:"p50_ms"`
	P99Ms      float64 `json:"p99_ms"`
	Errors     int64   `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	CPUPerOpUs float64 `json:"cpu_per_op_us,omitempty"`
}

// Survived reports whether every watcher opened and the node stayed up.
func (m *MassWatchers) Survived() bool { return m.Failure == "" }

// BytesPerWatcher is the node's VmRSS growth per held watcher (NaN when
// they were not all held).
func (m *MassWatchers) BytesPerWatcher(watchers int) float64 {
	if !m.Survived() || watchers == 0 {
		return math.NaN()
	}
	return float64(m.HeldRSS-m.IdleRSS) / float64(watchers)
}

// AnonPerWatcher is BytesPerWatcher for RssAnon.
func (m *MassWatchers) AnonPerWatcher(watchers int) float64 {
	if !m.Survived() || watchers == 0 {
		return math.NaN()
	}
	return float64(m.HeldAnon-m.IdleAnon) / float64(watchers)
}

// HeldRatio is put throughput while the watchers are held over before they
// were opened; NaN when either load did not run.
func (m *MassWatchers) HeldRatio() float64 {
	if m.PutIdle == nil || m.PutHeld == nil || m.PutIdle.Throughput == 0 {
		return math.NaN()
	}
	return m.PutHeld.Throughput / m.PutIdle.Throughput
}

// WatchResume is what the watch-resume workload measures besides the
// common fields, which hold: Watchers, Conns (clients they share), Ops and
// PutsPerS (acknowledged puts), Events and ExpectedEvents (puts delivered,
// acknowledged puts x watchers), EndedStreams (watches that ended or were
// canceled), and P50/P99/MaxMs: per watcher, the time from the kill to the
// first delivered put that was sent after the kill.
type WatchResume struct {
	KilledNode   int    `json:"killed_node"`   // endpoint index of the follower killed with SIGKILL
	KillRevision uint64 `json:"kill_revision"` // the last acknowledged revision before the kill
	// Resumes is the sum of Watcher.Resumes(); WatchersResumed how many
	// resumed at least once; NeverAfterKill how many delivered no put sent
	// after the kill (no resume latency: a failure).
	Resumes         int64 `json:"resumes"`
	WatchersResumed int64 `json:"watchers_resumed"`
	NeverAfterKill  int64 `json:"never_after_kill"`
	// Summed over watchers: acknowledged puts after the watch's start never
	// delivered (or at another revision), deliveries below an earlier
	// revision, puts delivered twice.
	Missing    int64 `json:"missing"`
	OutOfOrder int64 `json:"out_of_order"`
	Duplicates int64 `json:"duplicates"`
}

// Unbroken reports whether every watcher resumed with no gap, no duplicate
// and nothing out of order, and delivered a put written after the kill.
func (w *WatchResume) Unbroken(r Result) bool {
	return w.Missing == 0 && w.OutOfOrder == 0 && w.Duplicates == 0 && w.NeverAfterKill == 0 && r.EndedStreams == 0
}

// SlowWatchers is what the slow-watchers workload measures besides the
// common fields, which hold: Watchers and Conns (the watchers that never
// read), Ops and PutsPerS (acknowledged puts), Events, ExpectedEvents,
// EndedStreams and P50/P99/MaxMs (the live watchers: delivered puts,
// acknowledged puts x live watchers, streams that ended or were canceled,
// latency from send to delivery).
type SlowWatchers struct {
	Node int    `json:"node"` // endpoint index of the node holding every watcher
	Role string `json:"role"` // its role when the run started
	// Roles of every node when the run started, in --pids order: a
	// follower without watchers gets the same writes and serves as the
	// control.
	Roles []string `json:"roles"`
	Live  int      `json:"live_watchers"`
	// Per node, in --pids order, in bytes: before any watcher was opened,
	// once they were all open (before any put), the highest one-second
	// sample during the puts, and right after the last put. RSS is VmRSS
	// (with bbolt's resident file pages), Anon is RssAnon.
	RSSBefore  []int64 `json:"rss_before_bytes"`
	RSSHeld    []int64 `json:"rss_held_bytes"`
	RSSMax     []int64 `json:"rss_max_bytes"`
	RSSEnd     []int64 `json:"rss_end_bytes"`
	AnonBefore []int64 `json:"anon_before_bytes"`
	AnonHeld   []int64 `json:"anon_held_bytes"`
	AnonMax    []int64 `json:"anon_max_bytes"`
	AnonEnd    []int64 `json:"anon_end_bytes"`
	RSSSeries  []int64 `json:"rss_series_bytes"` // the watched node, one reading a second during the puts
	// From the watched node's Status right after the last put.
	WatchersAtEnd   uint64 `json:"watchers_at_end"`
	CatchingUpAtEnd uint64 `json:"catching_up_at_end"`
	// The live watchers, summed: acknowledged puts never delivered (or
	// delivered at another revision), deliveries below an earlier
	// revision, puts delivered twice, CANCELED received.
	LiveMissing    int64 `json:"live_missing"`
	LiveOutOfOrder int64 `json:"live_out_of_order"`
	LiveDuplicates int64 `json:"live_duplicates"`
	LiveCanceled   int64 `json:"live_canceled"`
}

// Control returns the index of a follower holding no watchers, or -1.
func (s *SlowWatchers) Control() int {
	for i, r := range s.Roles {
		if i != s.Node && r == "follower" {
			return i
		}
	}
	return -1
}

// LiveUnaffected reports whether the live watchers got every acknowledged
// put, in order, once, and were never canceled.
func (s *SlowWatchers) LiveUnaffected(r Result) bool {
	return s.LiveMissing == 0 && s.LiveOutOfOrder == 0 && s.LiveDuplicates == 0 && s.LiveCanceled == 0 &&
		r.EndedStreams == 0
}

// SuccessRate is the share of completed transactions whose compares held,
// in percent; NaN without completed ops.
func (r Result) SuccessRate() float64 {
	if r.Ops == 0 {
		return math.NaN()
	}
	return 100 * float64(r.Ops-r.CompareFailed) / float64(r.Ops)
}

var outMu sync.Mutex

// emit writes r as one JSON line to stdout, and appends it to path when set.
func emit(r Result, path string) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	outMu.Lock()
	defer outMu.Unlock()
	os.Stdout.Write(b)
	if path == "" {
		return nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.Write(b)
	return err
}

// latencies collects durations from many goroutines: each owns a slice
// and hands it over once, so recording takes no lock.
type latencies struct {
	mu  sync.Mutex
	all []time.Duration
}

func (l *latencies) add(part []time.Duration) {
	l.mu.Lock()
	l.all = append(l.all, part...)
	l.mu.Unlock()
}

// percentiles returns p50, p99 and max in milliseconds (nearest rank).
func (l *latencies) percentiles() (p50, p99, max float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.all) == 0 {
		return 0, 0, 0
	}
	sort.Slice(l.all, func(i, j int) bool { return l.all[i] < l.all[j] })
	at := func(q float64) float64 {
		i := int(q*float64(len(l.all))+0.5) - 1
		if i < 0 {
			i = 0
		}
		if i >= len(l.all) {
			i = len(l.all) - 1
		}
		return ms(l.all[i])
	}
	return at(0.50), at(0.99), ms(l.all[len(l.all)-1])
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// firstError keeps the first error message seen by any goroutine.
type firstError struct {
	once sync.Once
	msg  string
}

func (f *firstError) set(err error) { f.once.Do(func() { f.msg = err.Error() }) }
