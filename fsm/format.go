package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// The data format of a state machine file, stored in meta under keyFormat.
// A file without the key was written before values carried checksums
// (format 1); opening it adds a checksum to every value in one transaction.
const formatChecksummed = 2

var keyFormat = []byte("format")

// allBuckets is every bucket the state machine keeps, in scrub order.
var allBuckets = [][]byte{bucketKV, bucketMembers, bucketMeta, bucketHistory, bucketHIndex, bucketHBase,
	bucketLeases, bucketLeaseKeys, bucketLeaseIdx, bucketAuthRoles, bucketAuthUsers}

// putMeta stores a meta integer with its checksum.
func putMeta(meta *bolt.Bucket, key []byte, v uint64) error {
	return meta.Put(key, sealed(key, u64(v)))
}

// getMeta reads a meta integer; found=false when the key is absent.
func getMeta(meta *bolt.Bucket, key []byte) (v uint64, found bool, err error) {
	raw := meta.Get(key)
	if raw == nil {
		return 0, false, nil
	}
	return getMetaValue(key, raw)
}

// prepareFormat runs first in the transaction that opens a file. A new file
// is marked checksummed; a file of format 1 gets a checksum on every value
// (sealedValues reports how many); any other format is refused.
func prepareFormat(tx *bolt.Tx) (sealedValues int, err error) {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		if tx.Bucket(bucketKV) != nil {
			return 0, errors.New("file has a kv bucket but no meta bucket: not a raftwatch state machine")
		}
		if meta, err = tx.CreateBucket(bucketMeta); err != nil {
			return 0, err
		}
		return 0, putMeta(meta, keyFormat, formatChecksummed)
	}
	f, found, err := getMeta(meta, keyFormat)
	switch {
	case err != nil:
		return 0, fmt.Errorf("data format: %w", err)
	case found && f == formatChecksummed:
		return 0, nil
	case found:
		return 0, fmt.Errorf("data format %d: this version of raftwatch reads format %d (and upgrades format 1)", f, formatChecksummed)
	}
	for _, name := range allBuckets {
		b := tx.Bucket(name)
		if b == nil {
			continue
		}
		// bbolt does not allow puts while iterating: collect, then seal.
		var keys, vals [][]byte
		if err := b.ForEach(func(k, v []byte) error {
			keys, vals = append(keys, clone(k)), append(vals, sealed(k, v))
			return nil
		}); err != nil {
			return 0, err
		}
		for i := range keys {
			if err := b.Put(keys[i], vals[i]); err != nil {
				return 0, fmt.Errorf("add checksum to bucket %s key %q: %w", name, keys[i], err)
			}
		}
		sealedValues += len(keys)
	}
	return sealedValues, putMeta(meta, keyFormat, formatChecksummed)
}

// verifyValue checks one stored value of bucket: its checksum, then that
// its payload decodes as the bucket's record type.
func verifyValue(bucket, key, stored []byte) error {
	switch string(bucket) {
	case string(bucketKV):
		_, err := decodeRecord(key, stored)
		return err
	case string(bucketHistory):
		_, err := decodeHistRecord(key, stored)
		return err
	case string(bucketHIndex):
		_, err := openHIndex(key, stored)
		return err
	case string(bucketHBase):
		_, _, err := decodeHBase(key, stored)
		return err
	case string(bucketMeta):
		_, _, err := getMetaValue(key, stored)
		return err
	case string(bucketLeases):
		_, err := decodeLease(key, stored)
		return err
	case string(bucketLeaseKeys):
		_, err := decodeLeaseOf(key, stored)
		return err
	case string(bucketAuthRoles):
		_, err := decodeRole(key, stored)
		return err
	case string(bucketAuthUsers):
		_, err := decodeUser(key, stored)
		return err
	}
	// members: a client address, any bytes.
	_, err := openValue(bucket, key, stored)
	return err
}

// getMetaValue verifies and decodes a stored meta integer.
func getMetaValue(key, stored []byte) (uint64, bool, error) {
	b, err := openValue(bucketMeta, key, stored)
	if err != nil {
		return 0, false, err
	}
	if len(b) != 8 {
		return 0, false, &CorruptError{Bucket: string(bucketMeta), Key: clone(key),
			Detail: fmt.Sprintf("meta value of %d bytes, want 8", len(b))}
	}
	return binary.BigEndian.Uint64(b), true, nil
}

// verifyAll checks every value in tx (a snapshot before it is sent or
// restored).
func verifyAll(tx *bolt.Tx) (int, error) {
	n := 0
	for _, name := range allBuckets {
		b := tx.Bucket(name)
		if b == nil {
			continue
		}
		if err := b.ForEach(func(k, v []byte) error {
			n++
			return verifyValue(name, k, v)
		}); err != nil {
			return n, err
		}
	}
	return n, nil
}
