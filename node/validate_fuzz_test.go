package node

import (
	"bytes"
	"errors"
	"testing"

	"github.com/raftwatch/raftwatch/keyspace"
)

// FuzzCheckList: the List request check never panics, accepts only pages
// whose prefix obeys the key rule, whose start key is empty or a key under
// the prefix and whose bounds are not negative, and refuses the rest as
// invalid arguments.
func FuzzCheckList(f *testing.F) {
	const max = 64
	f.Add([]byte("/"), []byte(""), 0, 0)
	f.Add([]byte("/a/"), []byte("/a/b"), 2, 1<<20)
	f.Add([]byte("/a/"), []byte("/b"), 0, 0)
	f.Add([]byte("a"), []byte(""), 0, 0)
	f.Add([]byte("/a"), []byte("/a"), -1, 0)
	f.Add([]byte("/a/"), []byte("/a/"), 0, -1)
	f.Add([]byte(""), []byte("/"), 1, 1)
	f.Fuzz(func(t *testing.T, prefix, start []byte, limit, maxBytes int) {
		err := checkList(prefix, ListOptions{Start: start, Limit: limit, MaxBytes: maxBytes}, max)
		valid := keyspace.CheckPrefix(prefix, max) == nil &&
			(len(start) == 0 || bytes.HasPrefix(start, prefix) && len(start) <= max) &&
			limit >= 0 && maxBytes >= 0
		if valid != (err == nil) {
			t.Fatalf("checkList(%q, start %q, limit %d, bytes %d) = %v, rule says valid=%v", prefix, start, limit, maxBytes, err, valid)
		}
		if err != nil && !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("checkList refused with %v, which does not wrap ErrInvalidArgument", err)
		}
		if err == nil && len(start) > 0 && keyspace.CheckKey(start, max) != nil {
			t.Fatalf("checkList accepted start key %q, which the key rule refuses", start)
		}
	})
}
