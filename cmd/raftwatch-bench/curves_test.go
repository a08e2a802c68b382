package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// plantedCurves are three rounds of a put curve at two client counts for
// both targets, a watch curve point with a short delivery, and a node RSS
// curve where etcd did not survive the largest count.
func plantedCurves() []Result {
	put := func(target string, round, clients, conns int, tput, p99 float64) Result {
		return Result{Workload: "put", Case: "put", Curve: "put-clients", Target: target, Round: round,
			Clients: clients, Conns: conns, Throughput: tput, P99Ms: p99}
	}
	rss := func(target string, round, watchers int, heldMiB int64, failure string) Result {
		return Result{Workload: "watch-mass", Case: "mass", Curve: "node-rss", Target: target, Round: round,
			Watchers: watchers, Mass: &MassWatchers{Keys: massKeysOne, IdleRSS: 50 * mib, HeldRSS: heldMiB * mib, Failure: failure}}
	}
	return []Result{
		// Listed out of x order: the table sorts by x.
		put("raftwatch", 1, 64, 16, 3000, 40), put("etcd", 1, 64, 16, 1000, 90),
		put("raftwatch", 2, 64, 16, 2000, 30), put("etcd", 2, 64, 16, 1500, 80),
		put("raftwatch", 3, 64, 16, 4000, 50), put("etcd", 3, 64, 16, 2000, 100),
		put("raftwatch", 1, 1, 1, 300, 4), put("etcd", 1, 1, 1, 400, 3),
		put("raftwatch", 2, 1, 1, 330, 5), put("etcd", 2, 1, 1, 420, 3),
		put("raftwatch", 3, 1, 1, 310, 6), put("etcd", 3, 1, 1, 380, 3),
		{Workload: "watch-latency", Case: "wl", Curve: "watch-watchers", Target: "raftwatch", Round: 1,
			Watchers: 1000, P99Ms: 12, Events: 900, ExpectedEvents: 1000},
		{Workload: "watch-latency", Case: "wl", Curve: "watch-watchers", Target: "etcd", Round: 1,
			Watchers: 1000, P99Ms: 20, Events: 1000, ExpectedEvents: 1000},
		rss("raftwatch", 1, 10_000, 70, ""), rss("etcd", 1, 10_000, 80, ""),
		rss("raftwatch", 1, 1_000_000, 550, ""), rss("etcd", 1, 1_000_000, 0, "timed out: 400000 of 1000000 watchers open"),
		// Not a curve point: must not appear in any curve.
		{Workload: "put", Case: "put 64", Target: "raftwatch", Round: 1, Clients: 64, Conns: 16, Throughput: 99999},
	}
}

// Each curve's table has one row per x, in ascending order, with the
// median and min–max over rounds per target and their ratio; a target
// that did not survive a point has no value there and a note says so.
func TestCurveTables(t *testing.T) {
	var md strings.Builder
	writeCurves(&md, plantedCurves(), t.TempDir())
	out := md.String()
	for _, want := range []string{
		"### put throughput vs clients\n",
		"| 1 (1 conns) | 310.0 | 300.0–330.0 | 400.0 | 380.0–420.0 | 0.78 |\n| 64 (16 conns) | 3000 | 2000–4000 | 1500 | 1000–2000 | 2.00 |\n",
		"### put p99 latency vs clients\n",
		"| 64 (16 conns) | 40.0 | 30.0–50.0 | 90.0 | 80.0–100.0 | 0.44 |",
		"| 1000 | 12.0 | 12.0–12.0 | 20.0 | 20.0–20.0 | 0.60 |",
		"- 1000, raftwatch, round 1: delivered 900 of 1000 events",
		"| 10000 | 70.0 | 70.0–70.0 | 80.0 | 80.0–80.0 | 0.88 |",
		"| 1000000 | 550.0 | 550.0–550.0 | – | – | – |",
		"- 1000000, etcd, round 1: did not survive / timed out at 1000000 watchers: timed out: 400000 of 1000000 watchers open",
		"![node RSS vs watchers held on it](curve-node-rss.png)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("curves lack %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "99999") {
		t.Error("a result without --curve made it into a curve")
	}
}

// Every curve with results is plotted into a PNG in the output directory
// that the summary links; a curve without results gets neither.
func TestCurvePlotsWritten(t *testing.T) {
	dir := t.TempDir()
	results := plantedCurves()
	var md strings.Builder
	writeCurves(&md, results, dir)
	for _, c := range curves {
		b, err := os.ReadFile(filepath.Join(dir, c.file))
		if err != nil {
			t.Errorf("%s: %v", c.title, err)
			continue
		}
		if len(b) < 1000 || !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) {
			t.Errorf("%s: %s is not a PNG with a plot in it (%d bytes)", c.title, c.file, len(b))
		}
		if !strings.Contains(md.String(), "]("+c.file+")") {
			t.Errorf("summary does not link %s", c.file)
		}
	}
	if strings.Contains(md.String(), "plot not written") {
		t.Errorf("a plot failed:\n%s", md.String())
	}

	empty := t.TempDir()
	md.Reset()
	writeCurves(&md, results[:1], empty) // one put point of one target
	if _, err := os.Stat(filepath.Join(empty, "curve-watch-p99.png")); !os.IsNotExist(err) {
		t.Errorf("a curve without results was plotted (stat: %v)", err)
	}
	if _, err := os.Stat(filepath.Join(empty, "curve-put-throughput.png")); err != nil {
		t.Errorf("a curve of a single point was not plotted: %v\n%s", err, md.String())
	}
}

// The watchers-1m table holds raftwatch's node RSS at 1,000,000 watchers
// to 600 MiB and its put throughput held to 0.8 of idle, in every round;
// etcd's rows only report, and a run that did not survive is a note.
func TestMassTable(t *testing.T) {
	mass := func(target string, round int, heldMiB int64, idle, held float64, failure string) Result {
		m := &MassWatchers{Keys: massKeysOne, Opened: 1_000_000, OpenS: 20, OpenPerS: 50_000,
			IdleRSS: 40 * mib, HeldRSS: heldMiB * mib, IdleAnon: 30 * mib, HeldAnon: (heldMiB - 20) * mib,
			PutIdle: &PutSummary{Throughput: idle, P99Ms: 20}, PutHeld: &PutSummary{Throughput: held, P99Ms: 25}, Failure: failure}
		if failure != "" {
			m.Opened, m.HeldRSS, m.HeldAnon, m.PutHeld = 300_000, 0, 0, nil
		}
		return Result{Workload: "watch-mass", Case: "mass 1M", Target: target, Round: round, Watchers: 1_000_000, Conns: 100, Mass: m}
	}
	tests := []struct {
		name            string
		results         []Result
		wantRSS, wantPt string
	}{
		{"both met", []Result{mass("raftwatch", 1, 500, 1000, 900, ""), mass("raftwatch", 2, 520, 1000, 850, "")}, "yes", "yes"},
		{"RSS over in one round", []Result{mass("raftwatch", 1, 500, 1000, 900, ""), mass("raftwatch", 2, 640, 1000, 850, "")}, "**no**", "yes"},
		{"put held too slow", []Result{mass("raftwatch", 1, 500, 1000, 700, "")}, "yes", "**no**"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := map[string]soloRow{}
			for _, r := range massRows(tc.results) {
				got[r.name] = r
			}
			if r := got["node VmRSS held (MiB)"]; r.met() != tc.wantRSS || r.target != "< 600" {
				t.Errorf("RSS row met %q target %q (values %v), want %q", r.met(), r.target, r.vals, tc.wantRSS)
			}
			if r := got["put throughput held / idle"]; r.met() != tc.wantPt {
				t.Errorf("held/idle row met %q (values %v), want %q", r.met(), r.vals, tc.wantPt)
			}
		})
	}

	results := []Result{mass("raftwatch", 1, 500, 1000, 900, ""), mass("etcd", 1, 0, 800, 0, "timed out: 300000 of 1000000 watchers open")}
	var md strings.Builder
	writeMassTable(&md, results)
	out := md.String()
	for _, want := range []string{
		"| mass 1M, raftwatch | VmRSS growth per watcher (B) | 482 | 482–482 |  |  |",
		"| mass 1M, raftwatch | put throughput held / idle | 0.90 | 0.90–0.90 | ≥ 0.8 | yes |",
		"| mass 1M, etcd | watchers opened | 300000 | 300000–300000 |  |  |",
		"| mass 1M, etcd | node VmRSS held (MiB) | – | – |  |  |",
		"- mass 1M, etcd, round 1: did not survive / timed out at 1000000 watchers: timed out: 300000 of 1000000 watchers open",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

// The distinct-keys case gives every watcher a key of its own that no put
// of the held put load writes and that the one-key case does not use, so
// the put load while held is on keys no watcher watches.
func TestMassKeysAreDistinctAndUnwatchedByPuts(t *testing.T) {
	const n = 1_000_000
	seen := make(map[string]bool, n)
	for w := 0; w < n; w++ {
		k := string(massKey(w))
		if len(k) != len("/w/0000000") {
			t.Fatalf("watcher %d: key %q is not 10 bytes", w, k)
		}
		if seen[k] {
			t.Fatalf("watcher %d: key %q repeats", w, k)
		}
		seen[k] = true
	}
	for _, k := range makeKeys() {
		if seen[string(k)] {
			t.Fatalf("put key %q is a watched key", k)
		}
	}
	if seen[watchKeyName] {
		t.Fatalf("the one-key case's key %q is also a distinct key", watchKeyName)
	}
}
