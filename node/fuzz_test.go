package node

import (
	"bytes"
	"testing"

	"github.com/hashicorp/raft"

	pb "github.com/raftwatch/raftwatch/proto"
)

// FuzzDecodeLogEntry feeds the log-entry decoders (the checksum check of
// checkedLogStore, then the Chunk decoder the state machine applies)
// arbitrary entries: they must never panic. An entry sealed from the input
// must read back as it was, and the same entry with any one byte of its
// data or stored extensions changed, or another index, term or type, must
// be rejected.
func FuzzDecodeLogEntry(f *testing.F) {
	chunk := mustMarshal(&pb.Chunk{Ops: []*pb.Op{{Kind: pb.Op_PUT, Key: []byte("/a"), Value: []byte("1")}}})
	sealedExt := sealLog(&raft.Log{Index: 7, Term: 2, Type: raft.LogCommand, Data: chunk}).Extensions
	f.Add(uint64(7), uint64(2), uint8(raft.LogCommand), chunk, sealedExt, uint(3), byte(1))
	f.Add(uint64(1), uint64(1), uint8(raft.LogNoop), []byte{}, []byte{}, uint(0), byte(0x80))
	f.Add(uint64(9), uint64(3), uint8(raft.LogCommand), []byte{0xff, 0xff}, []byte("rwc1\x00\x00\x00\x00"), uint(9), byte(0xff))
	f.Fuzz(func(t *testing.T, index, term uint64, typ uint8, data, ext []byte, pos uint, xor byte) {
		// Arbitrary stored entries: any outcome but a panic.
		raw := raft.Log{Index: index, Term: term, Type: raft.LogType(typ), Data: bytes.Clone(data), Extensions: bytes.Clone(ext)}
		openLog(&raw, index, 0)
		raw = raft.Log{Index: index, Term: term, Type: raft.LogType(typ), Data: data, Extensions: bytes.Clone(ext)}
		openLog(&raw, index, index+1)
		var c pb.Chunk
		unmarshal(data, &c)

		orig := raft.Log{Index: index, Term: term, Type: raft.LogType(typ), Data: data, Extensions: ext}
		if len(ext) == 0 {
			orig.Extensions = nil
		}
		stored := sealLog(&orig)
		got := stored
		got.Extensions = bytes.Clone(stored.Extensions)
		if err := openLog(&got, index, 0); err != nil || !bytes.Equal(got.Data, data) || !bytes.Equal(got.Extensions, orig.Extensions) {
			t.Fatalf("sealed entry did not read back: %+v, %v", got, err)
		}

		if xor == 0 {
			xor = 1
		}
		bad := stored
		bad.Data, bad.Extensions = bytes.Clone(stored.Data), bytes.Clone(stored.Extensions)
		switch n := uint(len(bad.Data) + len(bad.Extensions)); {
		case pos%4 == 0:
			bad.Term ^= uint64(xor)
		case pos%4 == 1:
			bad.Type ^= raft.LogType(xor)
		case pos%4 == 2:
			bad.Index ^= uint64(xor)
		default:
			if i := (pos / 4) % n; i < uint(len(bad.Data)) {
				bad.Data[i] ^= xor
			} else {
				bad.Extensions[i-uint(len(bad.Data))] ^= xor
			}
		}
		if err := openLog(&bad, index, 0); err == nil {
			t.Fatalf("an entry with one field or byte changed was accepted: %+v from %+v", bad, stored)
		}
	})
}
