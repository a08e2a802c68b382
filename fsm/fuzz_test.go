package fsm

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/raftwatch/raftwatch/proto"
)

// FuzzDecodeRecord feeds the stored-record decoders arbitrary bytes (they
// must never panic), and checks that a record sealed from the input decodes
// back to it while the same record with any one byte of key or value
// changed is always rejected as corrupt.
func FuzzDecodeRecord(f *testing.F) {
	f.Add([]byte("/config/a"), appendRecord(nil, []byte("/config/a"), 3, 7, 2, []byte("value")), uint(5), byte(0x01))
	f.Add([]byte("/k"), []byte{}, uint(0), byte(0xff))
	f.Add(histKeyOf(9, 1), sealed(histKeyOf(9, 1), appendHistRecord(nil, histPut, 2, 1, 5, []byte("/k"), []byte("v"))), uint(40), byte(0x80))
	f.Add([]byte("/b"), sealed([]byte("/b"), u64(42)), uint(2), byte(0x10))
	f.Fuzz(func(t *testing.T, key, stored []byte, pos uint, xor byte) {
		// Arbitrary stored bytes: any outcome but a panic.
		for _, b := range allBuckets {
			verifyValue(b, key, stored)
		}
		decodeRecord(key, stored)
		decodeHistRecord(key, stored)
		decodeHBase(key, stored)
		openHIndex(key, stored)

		// A sealed record round-trips, and every one-byte change fails.
		if xor == 0 {
			xor = 1
		}
		rec := appendRecord(nil, key, 11, 12, 13, stored)
		kv, err := decodeRecord(key, rec)
		if err != nil || !bytes.Equal(kv.Value, stored) || kv.CreateRevision != 11 || kv.ModRevision != 12 || kv.Version != 13 {
			t.Fatalf("sealed record did not round-trip: %+v, %v", kv, err)
		}
		k, r := bytes.Clone(key), bytes.Clone(rec)
		if i := int(pos % uint(len(k)+len(r))); i < len(k) {
			k[i] ^= xor
		} else {
			r[i-len(k)] ^= xor
		}
		if _, err := decodeRecord(k, r); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("a record with one byte changed was accepted: key %q record %x: %v", k, r, err)
		}
		for _, b := range allBuckets {
			if err := verifyValue(b, k, r); err == nil {
				t.Fatalf("bucket %s accepted a record with one byte changed", b)
			}
		}
	})
}

// FuzzDecodeChunk checks that decodeChunk, hand-decoded or not, agrees with
// proto.Unmarshal on any input: both fail, or both give equal chunks.
func FuzzDecodeChunk(f *testing.F) {
	for _, c := range []*pb.Chunk{
		{},
		{Ops: []*pb.Op{{Kind: pb.Op_PUT, Key: []byte("/a"), Value: []byte("1")}, {Kind: pb.Op_DELETE, Key: []byte("/b"), WantPrev: true}}},
		{Ops: []*pb.Op{{Kind: pb.Op_PUT, Key: []byte("/a"), Lease: 7, MaxKeysPerLease: 3}}},
		{Ops: []*pb.Op{{Kind: pb.Op_PUT, Key: []byte("/a"), Lease: -5}}},
		{Ops: []*pb.Op{{Kind: pb.Op_PUT, Key: []byte("/empty")}}}, // empty value
		{Ops: []*pb.Op{{Kind: pb.Op_PUT, Key: []byte("/a"), Condition: &pb.Condition{Require: &pb.Condition_Absent{Absent: true}}}}},
		{Ops: []*pb.Op{{Kind: pb.Op_SET_MEMBER, Key: []byte("n1"), Value: []byte("127.0.0.1:1")}}},
		{Ops: []*pb.Op{{Kind: pb.Op_LEASE_GRANT, Lease: 1, Ttl: 60}}},
		{Ops: []*pb.Op{{Kind: pb.Op_TXN, Txn: &pb.TxnRequest{}}}},
	} {
		data, err := proto.Marshal(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	// A repeated key field (the last wins), an unknown field, a kind past
	// the enum, a truncated op.
	f.Add([]byte{0x0a, 0x08, 0x12, 0x02, '/', 'a', 0x12, 0x02, '/', 'b'})
	f.Add([]byte{0x0a, 0x05, 0x12, 0x01, 'k', 0xa0, 0x06, 0x01})
	f.Add([]byte{0x0a, 0x02, 0x08, 0x63})
	f.Add([]byte{0x0a, 0x05, 0x12, 0x07, 'k'})
	f.Fuzz(func(t *testing.T, data []byte) {
		got, gotErr := decodeChunk(data)
		var want pb.Chunk
		wantErr := proto.Unmarshal(data, &want)
		if (gotErr != nil) != (wantErr != nil) {
			t.Fatalf("decodeChunk error %v, proto.Unmarshal error %v", gotErr, wantErr)
		}
		if wantErr == nil && !proto.Equal(got, &want) {
			t.Fatalf("decodeChunk = %v, proto.Unmarshal = %v", got, &want)
		}
		if wantErr == nil {
			for i, op := range got.Ops {
				w := want.Ops[i]
				if (op.Key == nil) != (w.Key == nil) || (op.Value == nil) != (w.Value == nil) {
					t.Fatalf("op %d: nil-ness of key/value differs: %q/%q vs %q/%q", i, op.Key, op.Value, w.Key, w.Value)
				}
			}
		}
	})
}
