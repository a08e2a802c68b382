package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Every value the state machine stores, in every bucket, ends with a
// CRC-32C (Castagnoli) of the value's key and the rest of the value:
//
//	stored value = payload | crc32c(key | payload) (4, big endian)
//
// The key is in the sum so that a value that lands under another key (a
// misdirected write, a swapped page) fails too. Every read verifies it
// (openValue) before decoding anything; a mismatch is a *CorruptError and
// is never served. CRC-32C detects every error burst up to 32 bits, so any
// one damaged byte is always caught; it is computed in hardware on amd64
// and arm64.
const sumLen = 4

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt is wrapped by every *CorruptError.
var ErrCorrupt = errors.New("stored data failed its checksum")

// CorruptError says which stored value failed its check and how.
type CorruptError struct {
	Bucket string // bbolt bucket
	Key    []byte
	Detail string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("%v: bucket %q key %q: %s", ErrCorrupt, e.Bucket, e.Key, e.Detail)
}

func (e *CorruptError) Unwrap() error { return ErrCorrupt }

// valueSum is the checksum of key and payload.
func valueSum(key, payload []byte) uint32 {
	return crc32.Update(crc32.Checksum(key, castagnoli), castagnoli, payload)
}

// sealValue appends the checksum of key and dst[start:] to dst: the caller
// has appended the payload at start.
func sealValue(dst []byte, start int, key []byte) []byte {
	return binary.BigEndian.AppendUint32(dst, valueSum(key, dst[start:]))
}

// sealed returns payload with its checksum, in a new slice.
func sealed(key, payload []byte) []byte {
	b := make([]byte, 0, len(payload)+sumLen)
	return sealValue(append(b, payload...), 0, key)
}

// openValue verifies a stored value of bucket and returns its payload,
// which aliases stored.
func openValue(bucket, key, stored []byte) ([]byte, error) {
	if len(stored) < sumLen {
		return nil, &CorruptError{Bucket: string(bucket), Key: clone(key),
			Detail: fmt.Sprintf("value of %d bytes is shorter than its checksum", len(stored))}
	}
	n := len(stored) - sumLen
	want, got := binary.BigEndian.Uint32(stored[n:]), valueSum(key, stored[:n])
	if want != got {
		return nil, &CorruptError{Bucket: string(bucket), Key: clone(key),
			Detail: fmt.Sprintf("checksum mismatch: stored %08x, computed %08x over %d bytes", want, got, n)}
	}
	return stored[:n], nil
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }
