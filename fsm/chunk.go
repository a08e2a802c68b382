package fsm

import (
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/raftwatch/raftwatch/proto"
)

// The pb.Op fields decodeChunk decodes by hand (raftwatch.proto).
const (
	opKind            protowire.Number = 1
	opKey             protowire.Number = 2
	opValue           protowire.Number = 3
	opWantPrev        protowire.Number = 5
	opLease           protowire.Number = 7
	opMaxKeysPerLease protowire.Number = 12
	chunkOps          protowire.Number = 1
)

// decodeChunk decodes a log entry's Chunk. An entry of plain puts and
// deletes (the ops of the put and delete workloads: no condition, only the
// fields above) is decoded by hand into one slice of ops whose keys and
// values alias data, where proto.Unmarshal allocates every op and copies
// every key and value; anything else goes through proto.Unmarshal. Either
// way the result is the same Chunk. data must stay unchanged while the
// chunk is used: the caller copies what outlives the batch (the events).
func decodeChunk(data []byte) (*pb.Chunk, error) {
	if chunk, ok := decodePlainChunk(data); ok {
		return chunk, nil
	}
	chunk := &pb.Chunk{}
	if err := proto.Unmarshal(data, chunk); err != nil {
		return nil, err
	}
	return chunk, nil
}

// decodePlainChunk decodes data when it is a Chunk of plain puts and
// deletes; ok=false otherwise (including when data is malformed: then
// proto.Unmarshal says why).
func decodePlainChunk(data []byte) (*pb.Chunk, bool) {
	n := 0
	for b := data; len(b) > 0; {
		num, typ, l := protowire.ConsumeTag(b)
		if l < 0 || num != chunkOps || typ != protowire.BytesType {
			return nil, false
		}
		_, m := protowire.ConsumeBytes(b[l:])
		if m < 0 {
			return nil, false
		}
		b = b[l+m:]
		n++
	}
	ops := make([]pb.Op, n)
	chunk := &pb.Chunk{Ops: make([]*pb.Op, n)}
	for i, b := 0, data; len(b) > 0; i++ {
		_, _, l := protowire.ConsumeTag(b)
		msg, m := protowire.ConsumeBytes(b[l:])
		b = b[l+m:]
		if !decodePlainOp(msg, &ops[i]) {
			return nil, false
		}
		chunk.Ops[i] = &ops[i]
	}
	return chunk, true
}

// decodePlainOp decodes a PUT or DELETE op with none but the hand-decoded
// fields into op; a repeated field's last value wins, as in proto.Unmarshal.
func decodePlainOp(b []byte, op *pb.Op) bool {
	for len(b) > 0 {
		num, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return false
		}
		b = b[l:]
		switch {
		case typ == protowire.BytesType && (num == opKey || num == opValue):
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return false
			}
			if len(v) == 0 {
				v = nil // as proto.Unmarshal leaves an empty bytes field
			}
			if num == opKey {
				op.Key = v
			} else {
				op.Value = v
			}
			b = b[m:]
		case typ == protowire.VarintType && (num == opKind || num == opWantPrev || num == opLease || num == opMaxKeysPerLease):
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return false
			}
			switch num {
			case opKind:
				op.Kind = pb.Op_Kind(int32(v))
			case opWantPrev:
				op.WantPrev = protowire.DecodeBool(v)
			case opLease:
				op.Lease = int64(v)
			case opMaxKeysPerLease:
				op.MaxKeysPerLease = v
			}
			b = b[m:]
		default:
			return false
		}
	}
	return op.Kind == pb.Op_PUT || op.Kind == pb.Op_DELETE
}
