package watch

import (
	"testing"
	"unsafe"
)

// A node may hold a million watchers: a Watcher stays in the 96-byte size
// class (a field added past it costs 16 bytes per watcher; reorder to pack
// or raise this knowingly).
func TestWatcherSize(t *testing.T) {
	if size := unsafe.Sizeof(Watcher{}); size > 96 {
		t.Fatalf("Watcher is %d bytes, want at most 96", size)
	}
}

// The watchers of one key share one copy of it, and a watcher's key does
// not alias the caller's buffer.
func TestWatchersOfAKeyShareIt(t *testing.T) {
	h := newHarness(t, Config{}, false)
	s, _ := h.stream()
	buf := []byte("/shared/key")
	a, err := s.Register(buf, Options{})
	if err != nil {
		t.Fatal(err)
	}
	copy(buf, "/changed/ke")
	buf = []byte("/shared/key")
	b, err := s.Register(buf, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if a.key != "/shared/key" || b.key != a.key {
		t.Fatalf("keys %q and %q, want both /shared/key", a.key, b.key)
	}
	if unsafe.StringData(a.key) != unsafe.StringData(b.key) {
		t.Fatal("the two watchers of one key hold two copies of it")
	}
	p, err := s.Register([]byte("/shared/"), Options{Prefix: true})
	if err != nil {
		t.Fatal(err)
	}
	if p.key != "/shared/" || !p.prefix {
		t.Fatalf("prefix watcher has key %q (prefix %v)", p.key, p.prefix)
	}
}
