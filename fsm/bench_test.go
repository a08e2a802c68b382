package fsm

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	pb "github.com/raftwatch/raftwatch/proto"
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

// benchFSM opens an FSM the way node does (no fsync per commit) and writes
// every key once, so the measured batches overwrite existing keys.
func benchFSM(b *testing.B, opts Options, chunks [][]byte) (*FSM, uint64) {
	b.Helper()
	opts.NoSync = true
	f, err := Open(filepath.Join(b.TempDir(), "state.db"), nil, slog.New(slog.DiscardHandler), opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	var index uint64
	for _, data := range chunks {
		index++
		f.ApplyBatch([]*raft.Log{{Index: index, Type: raft.LogCommand, Data: data}})
	}
	return f, index
}

// BenchmarkApplyBatch applies one log entry of ops puts per iteration, the
// largest entry 64 and 256 concurrent clients can form (each has one write
// in flight). ns/put is the state machine's share of a put's cost.
func BenchmarkApplyBatch(b *testing.B) {
	for _, ops := range []int{64, 256} {
		b.Run(fmt.Sprintf("ops=%d", ops), func(b *testing.B) {
			chunks := benchChunks(b, ops)
			f, index := benchFSM(b, Options{}, chunks)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				index++
				f.ApplyBatch([]*raft.Log{{Index: index, Type: raft.LogCommand, Data: chunks[i%len(chunks)]}})
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*ops), "ns/put")
		})
	}
}
