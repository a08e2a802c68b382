package metrics

import (
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/raftwatch/raftwatch/node"
)

// TestScrubSeriesFollowTheNodesScrubs scrapes a one-node cluster with a
// short scrub interval: both stores' scrub series are exported, and the
// passes counted are the ones Status reports.
func TestScrubSeriesFollowTheNodesScrubs(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg := node.DefaultConfig()
	cfg.ID, cfg.DataDir, cfg.RaftAddr, cfg.ClientAddr = "n1", t.TempDir(), addr, "127.0.0.1:1"
	cfg.InitialCluster = map[string]string{"n1": addr}
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.ScrubInterval = 20 * time.Millisecond
	n, err := node.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	m, err := New()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.AddNode(n); err != nil {
		t.Fatal(err)
	}

	scrape := func() string {
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return rec.Body.String()
	}
	value := func(body, series string) (float64, bool) {
		re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
		sm := re.FindStringSubmatch(body)
		if sm == nil {
			return 0, false
		}
		v, err := strconv.ParseFloat(sm[1], 64)
		return v, err == nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		before := n.Status().LogScrub.Passes
		body := scrape()
		after := n.Status().LogScrub.Passes
		logPasses, ok1 := value(body, `raftwatch_scrub_passes_total{store="log"}`)
		statePasses, ok2 := value(body, `raftwatch_scrub_passes_total{store="state"}`)
		last, ok3 := value(body, `raftwatch_scrub_last_pass_timestamp_seconds{store="log"}`)
		bad, ok4 := value(body, `raftwatch_scrub_mismatches_total{store="log"}`)
		if ok1 && ok2 && ok3 && ok4 && logPasses >= 2 && statePasses >= 2 {
			if logPasses < float64(before) || logPasses > float64(after) || bad != 0 {
				t.Fatalf("log scrub series: passes %v (status %d before the scrape, %d after), mismatches %v",
					logPasses, before, after, bad)
			}
			if age := time.Since(time.Unix(0, int64(last*1e9))); age < 0 || age > time.Minute {
				t.Fatalf("last log scrub pass %v ago, want just now", age)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no two scrub passes of each store in /metrics:\n%s", body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
