package fsm

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	pb "github.com/raftwatch/raftwatch/proto"
	"github.com/raftwatch/raftwatch/watch"
)

// The shapes of raftwatch-bench's put workload: 8-byte keys over a key space
// of 100000, 256-byte values.
const (
	benchKeySpace  = 100_000
	benchValueSize = 256
)

// benchChunks returns the encoded chunks of ops puts each that together
// write every key of the key space once, in order.
func benchChunks(b *testing.B, ops int) [][]byte {
	b.Helper()
	value := make([]byte, benchValueSize)
	for i := range value {
		value[i] = 'a' + byte(i%26)
	}
	var chunks [][]byte
	for start := 0; start < benchKeySpace; start += ops {
		chunk := &pb.Chunk{}
		for k := start; k < start+ops && k < benchKeySpace; k++ {
			chunk.Ops = append(chunk.Ops, &pb.Op{Kind: pb.Op_PUT, Key: fmt.Appendf(nil, "%08d", k), Value: value})
		}
		data, err := proto.Marshal(chunk)
		if err != nil {
			b.Fatal(err)
		}
		chunks = append(chunks, data)
	}
	return chunks
}

// benchHistory is the history the benchmarks keep: as many events as the
// key space has keys, so that after benchFSM every batch also compacts
// (the steady state of a busy node), without the default million events
// making each benchmark's setup long.
const benchHistory = benchKeySpace

// benchFSM opens an FSM the way node does (no fsync per commit) and writes
// every key once, so the measured batches overwrite existing keys.
func benchFSM(b *testing.B, opts Options, history bool, chunks [][]byte) (*FSM, uint64) {
	b.Helper()
	opts.NoSync = true
	f, err := Open(filepath.Join(b.TempDir(), "state.db"), nil, slog.New(slog.DiscardHandler), opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	f.noHistory = !history
	var index uint64
	for _, data := range chunks {
		index++
		f.ApplyBatch([]*raft.Log{{Index: index, Type: raft.LogCommand, Data: data}})
	}
	return f, index
}

// processCPU returns the CPU time the process has used (user and system,
// garbage collection included). On a shared machine it varies far less
// than elapsed time, which counts the waits for a core.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkApplyBatch applies one log entry of ops puts per iteration, the
// largest entry 64 and 256 concurrent clients can form (each has one write
// in flight), for each history state: none kept, filling (under its
// limits), and full, where every batch also compacts as many events as it
// adds (the steady state of a busy node). ns/put is the state machine's
// share of a put's cost in elapsed time, cpu-ns/put in CPU time.
func BenchmarkApplyBatch(b *testing.B) {
	histories := []struct {
		name    string
		history bool
		opts    Options
	}{
		{"off", false, Options{}},
		{"filling", true, Options{}}, // the default million events: not reached here
		{"full", true, Options{HistoryMaxEvents: benchHistory}},
	}
	for _, ops := range []int{64, 256} {
		chunks := benchChunks(b, ops)
		for _, h := range histories {
			b.Run(fmt.Sprintf("ops=%d/history=%s", ops, h.name), func(b *testing.B) {
				f, index := benchFSM(b, h.opts, h.history, chunks)
				b.ReportAllocs()
				b.ResetTimer()
				cpu := processCPU(b)
				for i := range b.N {
					index++
					f.ApplyBatch([]*raft.Log{{Index: index, Type: raft.LogCommand, Data: chunks[i%len(chunks)]}})
				}
				cpu = processCPU(b) - cpu
				b.StopTimer()
				b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*ops), "cpu-ns/put")
				if _, events, _ := f.HistoryStats(); h.name == "filling" && events >= DefaultHistoryMaxEvents {
					b.Fatalf("history reached its limit (%d events): run fewer iterations", events)
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*ops), "ns/put")
			})
		}
	}
}

// BenchmarkReadHistory reads 10 entries of 256 puts (a watcher catching up)
// and reports ns/event (and CPU time), for each place a prev value can come
// from.
func BenchmarkReadHistory(b *testing.B) {
	const ops, readEntries = 256, 10
	chunks := benchChunks(b, ops)
	cycle := uint64(len(chunks)) // entries that write every key once
	// Three writes of every key, then readEntries entries that all write
	// the first chunk's keys (hot), then readEntries entries of random keys
	// (scattered), with room for two writes of every key.
	f, index := benchFSM(b, Options{HistoryMaxEvents: 2 * benchHistory}, true, chunks)
	apply := func(data []byte) {
		index++
		f.ApplyBatch([]*raft.Log{{Index: index, Type: raft.LogCommand, Data: data}})
	}
	for range 2 {
		for _, data := range chunks {
			apply(data)
		}
	}
	hot := index + 1
	for range readEntries {
		apply(chunks[0])
	}
	scattered := index + 1
	rng := rand.New(rand.NewPCG(1, 1))
	value := make([]byte, benchValueSize)
	for range readEntries {
		chunk := &pb.Chunk{}
		for _, k := range rng.Perm(benchKeySpace)[:ops] {
			chunk.Ops = append(chunk.Ops, &pb.Op{Kind: pb.Op_PUT, Key: fmt.Appendf(nil, "%08d", k), Value: value})
		}
		data, err := proto.Marshal(chunk)
		if err != nil {
			b.Fatal(err)
		}
		apply(data)
	}
	oldest := f.OldestRevision() // the first write and 2*readEntries entries of the second are compacted
	if oldest != cycle+2*readEntries+1 {
		b.Fatalf("oldest %d, want %d", oldest, cycle+2*readEntries+1)
	}
	cases := []struct {
		name     string
		from     uint64
		withPrev bool
	}{
		{"prev=none", oldest + cycle, false},
		// The previous versions were compacted: read from hbase.
		{"prev=hbase", oldest, true},
		// The previous versions are in history before from, found through
		// hidx: each entry's in one earlier entry...
		{"prev=history", oldest + cycle, true},
		// ... or each in a different entry (no locality at all).
		{"prev=history-scattered", scattered, true},
		// All but the first entry's previous versions are in entries the
		// read has passed (hot pages).
		{"prev=read", hot, true},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			n := 0
			b.ReportAllocs()
			b.ResetTimer()
			cpu := processCPU(b)
			for range b.N {
				err := f.ReadHistory(tc.from, tc.from+readEntries-1, tc.withPrev, func(*watch.Event) bool { n++; return true })
				if err != nil {
					b.Fatal(err)
				}
			}
			cpu = processCPU(b) - cpu
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/event")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(n), "cpu-ns/event")
		})
	}
}

// BenchmarkGet reads one existing key per iteration, the state machine's
// share of a get; its allocations are what matters (-benchmem).
func BenchmarkGet(b *testing.B) {
	chunks := benchChunks(b, 256)
	f, _ := benchFSM(b, Options{}, true, chunks)
	key := []byte("00004242")
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		kv, _, err := f.Get(key)
		if err != nil || kv == nil {
			b.Fatalf("get: %v, %v", kv, err)
		}
	}
}
