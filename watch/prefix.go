package watch

import (
	"bytes"
	"fmt"
	"iter"
)

// separator ends every prefix a watcher can register, so that a prefix
// matches whole path segments: "/a/" matches "/a/x" but not "/ab".
const separator = '/'

// validateKey rejects the empty key, which no PUT or DELETE can carry.
func validateKey(key []byte) error {
	if len(key) == 0 {
		return fmt.Errorf("%w: a watched key must not be empty (to watch every key use the prefix \"/\")", ErrInvalidKey)
	}
	return nil
}

// validatePrefix accepts prefixes that start and end with '/', and explains
// how to fix any other.
func validatePrefix(p []byte) error {
	if len(p) > 0 && p[0] == separator && p[len(p)-1] == separator {
		return nil
	}
	return fmt.Errorf("%w %q: a prefix must start and end with '/' (try %q)", ErrInvalidPrefix, p, suggestPrefix(p))
}

// suggestPrefix returns the nearest valid prefix: p with a leading and a
// trailing '/' added where missing.
func suggestPrefix(p []byte) string {
	s := string(p)
	if len(s) == 0 || s[0] != separator {
		s = string(separator) + s
	}
	if s[len(s)-1] != separator {
		s += string(separator)
	}
	return s
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
