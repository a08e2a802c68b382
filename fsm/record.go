package fsm

import (
	"encoding/binary"
	"fmt"
)

// KeyValue is one stored key with its revisions, the same model as etcd's.
type KeyValue struct {
	Key            []byte
	Value          []byte
	CreateRevision uint64 // log index of the entry that created the key
	ModRevision    uint64 // log index of the entry that last changed it
	Version        uint64 // puts since creation; 1 after the first
	Lease          int64  // the lease the key is attached to (0 = none)
}

// recordHeader is the fixed part of a stored value: create, mod, version.
const recordHeader = 24

// appendRecord appends key's stored value to dst, laid out as
// create|mod|version|value|checksum (big endian; the checksum is over key
// and the rest, see checksum.go).
func appendRecord(dst, key []byte, create, mod, version uint64, value []byte) []byte {
	start := len(dst)
	dst = binary.BigEndian.AppendUint64(dst, create)
	dst = binary.BigEndian.AppendUint64(dst, mod)
	dst = binary.BigEndian.AppendUint64(dst, version)
	return sealValue(append(dst, value...), start, key)
}

// txBuf holds the values one write transaction hands to bbolt's Put: the
// key-value records and the history's. bbolt keeps a reference to a value
// until commit, so b only grows within a transaction (append never writes
// over bytes already handed out; when it moves b, the old array stays with
// bbolt). Reused from batch to batch, it saves an allocation per value.
type txBuf struct {
	b []byte
}

// record encodes key's stored value in the buffer and returns it, capped so
// that nothing appended later can reach into it.
func (t *txBuf) record(key []byte, create, mod, version uint64, value []byte) []byte {
	start := len(t.b)
	t.b = appendRecord(t.b, key, create, mod, version, value)
	end := len(t.b)
	return t.b[start:end:end]
}

// reusable returns the buffer emptied for the next transaction, or nil when
// it grew too large to keep.
func (t *txBuf) reusable() []byte {
	if cap(t.b) > txBufKeepMax {
		return nil
	}
	return t.b[:0]
}

// decodeRecord verifies and reads key's stored record. The returned Value
// aliases stored, which for bbolt is only valid inside the transaction;
// callers copy what they keep.
func decodeRecord(key, stored []byte) (KeyValue, error) {
	b, err := openValue(bucketKV, key, stored)
	if err != nil {
		return KeyValue{}, err
	}
	if len(b) < recordHeader {
		return KeyValue{}, &CorruptError{Bucket: string(bucketKV), Key: clone(key),
			Detail: fmt.Sprintf("record of %d bytes is shorter than its %d-byte header", len(b), recordHeader)}
	}
	return KeyValue{
		Key:            key,
		CreateRevision: binary.BigEndian.Uint64(b[0:]),
		ModRevision:    binary.BigEndian.Uint64(b[8:]),
		Version:        binary.BigEndian.Uint64(b[16:]),
		Value:          b[recordHeader:],
	}, nil
}

// clone returns a copy of kv whose byte slices do not alias bbolt memory.
func (kv KeyValue) clone() KeyValue {
	kv.Key = append([]byte(nil), kv.Key...)
	kv.Value = append([]byte{}, kv.Value...)
	return kv
}

func u64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}
