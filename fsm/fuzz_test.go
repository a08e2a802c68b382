package fsm

import (
	"bytes"
	"errors"
	"testing"
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
