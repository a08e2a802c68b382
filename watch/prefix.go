package watch

import (
	"bytes"
	"iter"
	"math"

	"github.com/raftwatch/raftwatch/keyspace"
)

// separator ends every prefix a watcher can register, so that a prefix
// matches whole path segments: "/a/" matches "/a/x" but not "/ab".
const separator = keyspace.Separator

// validate checks a watched key or prefix against the key rule; the node
// has checked its size already.
func validate(key []byte, prefix bool) error {
	if prefix {
		return keyspace.CheckPrefix(key, math.MaxInt)
	}
	return keyspace.CheckKey(key, math.MaxInt)
}

// prefixSegments yields every '/'-terminated prefix of key, shortest first:
// "/config/db/host" yields "/", "/config/", "/config/db/"; "/config/" yields
// "/" and "/config/"; a key without '/' yields nothing. These are exactly the
// registered prefixes that can match key, so delivery costs O(depth) map
// lookups whatever the number of prefix watchers. The yielded slices alias
// key.
func prefixSegments(key []byte) iter.Seq[[]byte] {
	return func(yield func([]byte) bool) {
		for end := 0; end < len(key); {
			i := bytes.IndexByte(key[end:], separator)
			if i < 0 {
				return
			}
			end += i + 1
			if !yield(key[:end]) {
				return
			}
		}
	}
}
