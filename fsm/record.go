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

// encodeRecord lays out a key's value as create|mod|version|value|checksum
// (big endian; the checksum is over key and the rest, see checksum.go).
func encodeRecord(key []byte, create, mod, version uint64, value []byte) []byte {
	b := make([]byte, recordHeader, recordHeader+len(value)+sumLen)
	binary.BigEndian.PutUint64(b[0:], create)
	binary.BigEndian.PutUint64(b[8:], mod)
	binary.BigEndian.PutUint64(b[16:], version)
	return sealValue(append(b, value...), 0, key)
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
