package keyspace

import (
	"bytes"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

const testMax = 16

func TestCheckKey(t *testing.T) {
	cases := []struct {
		name, key string
		ok        bool
		msg       string // the whole error message when not ok
	}{
		{"a key under a prefix", "/config/db", true, ""},
		{"the root key", "/", true, ""},
		{"a key ending in '/'", "/config/", true, ""},
		{"any byte after the '/'", "/a\x00b\xff", true, ""},
		{"a key at the size limit", "/" + strings.Repeat("k", testMax-1), true, ""},
		{"a key without '/' is refused and '/key' suggested", "probe", false,
			`invalid key "probe": a key must start with '/' (try "/probe")`},
		{"the empty key is refused", "", false, `invalid key "": a key must not be empty and must start with '/'`},
		{"a key over the limit is refused", "/" + strings.Repeat("k", testMax), false,
			`invalid key "/kkkkkkkkkkkkkkkk": 17 bytes, a key is at most 16`},
		{"no suggestion that would be over the limit", strings.Repeat("k", testMax), false,
			`invalid key "kkkkkkkkkkkkkkkk": a key must start with '/'`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckKey([]byte(tc.key), testMax)
			if tc.ok {
				if err != nil {
					t.Fatalf("CheckKey(%q) = %v, want nil", tc.key, err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidKey) || err.Error() != tc.msg {
				t.Fatalf("CheckKey(%q) = %v, want %q wrapping ErrInvalidKey", tc.key, err, tc.msg)
			}
		})
	}
}

func TestCheckPrefix(t *testing.T) {
	cases := []struct {
		name, prefix string
		ok           bool
		msg          string
	}{
		{"the root prefix is every key", "/", true, ""},
		{"a one-segment prefix", "/config/", true, ""},
		{"a two-segment prefix", "/config/db/", true, ""},
		{"no leading '/'", "probe", false, `invalid prefix "probe": a prefix must start and end with '/' (try "/probe/")`},
		{"no trailing '/'", "/probe", false, `invalid prefix "/probe": a prefix must start and end with '/' (try "/probe/")`},
		{"no leading '/' but a trailing one", "config/", false,
			`invalid prefix "config/": a prefix must start and end with '/' (try "/config/")`},
		{"the empty prefix is refused, '/' suggested", "", false,
			`invalid prefix "": a prefix must start and end with '/' (try "/")`},
		{"a prefix over the limit", "/" + strings.Repeat("p", testMax-1) + "/", false,
			`invalid prefix "/ppppppppppppppp/": 17 bytes, a prefix is at most 16`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckPrefix([]byte(tc.prefix), testMax)
			if tc.ok {
				if err != nil {
					t.Fatalf("CheckPrefix(%q) = %v, want nil", tc.prefix, err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidPrefix) || err.Error() != tc.msg {
				t.Fatalf("CheckPrefix(%q) = %v, want %q wrapping ErrInvalidPrefix", tc.prefix, err, tc.msg)
			}
		})
	}
}

func TestLongKeyIsQuotedShort(t *testing.T) {
	err := CheckKey(bytes.Repeat([]byte("x"), 5000), 4096)
	if err == nil || len(err.Error()) > 200 {
		t.Fatalf("CheckKey(5000 bytes) = %q, want a short message", err)
	}
}

// suggestion returns the value a message suggests with (try "..."), if any.
var suggestionRE = regexp.MustCompile(`\(try ("(?:[^"\\]|\\.)*")\)$`)

func suggestion(t *testing.T, msg string) (string, bool) {
	m := suggestionRE.FindStringSubmatch(msg)
	if m == nil {
		return "", false
	}
	s, err := strconv.Unquote(m[1])
	if err != nil {
		t.Fatalf("message %q suggests %s, which does not unquote: %v", msg, m[1], err)
	}
	return s, true
}

// FuzzCheckKey: CheckKey never panics, accepts exactly the keys the rule
// allows, and a refusal wraps ErrInvalidKey and suggests only a valid key.
func FuzzCheckKey(f *testing.F) {
	for _, s := range []string{"", "/", "/a", "a", "probe", "/config/db/host", "\x00", "/\x00", "//", "\xff/",
		strings.Repeat("k", testMax), "/" + strings.Repeat("k", testMax)} {
		f.Add([]byte(s), testMax)
	}
	f.Fuzz(func(t *testing.T, key []byte, max int) {
		if max < 0 {
			max = -max
		}
		max %= 1 << 12
		err := CheckKey(key, max)
		valid := len(key) > 0 && len(key) <= max && key[0] == '/'
		if valid != (err == nil) {
			t.Fatalf("CheckKey(%q, %d) = %v, rule says valid=%v", key, max, err, valid)
		}
		if err == nil {
			return
		}
		if !errors.Is(err, ErrInvalidKey) {
			t.Fatalf("CheckKey(%q, %d) = %v, does not wrap ErrInvalidKey", key, max, err)
		}
		if s, ok := suggestion(t, err.Error()); ok {
			if serr := CheckKey([]byte(s), max); serr != nil {
				t.Fatalf("CheckKey(%q, %d) suggests %q, itself refused: %v", key, max, s, serr)
			}
		}
	})
}

// FuzzCheckPrefix: CheckPrefix never panics, accepts exactly the prefixes
// the rule allows, and a refusal wraps ErrInvalidPrefix and suggests only a
// valid prefix.
func FuzzCheckPrefix(f *testing.F) {
	for _, s := range []string{"", "/", "//", "/a/", "/a", "a/", "probe", "/config/db/", "\x00", "/\x00/",
		"/" + strings.Repeat("p", testMax-2) + "/", "/" + strings.Repeat("p", testMax-1) + "/"} {
		f.Add([]byte(s), testMax)
	}
	f.Fuzz(func(t *testing.T, p []byte, max int) {
		if max < 0 {
			max = -max
		}
		max %= 1 << 12
		err := CheckPrefix(p, max)
		valid := len(p) > 0 && len(p) <= max && p[0] == '/' && p[len(p)-1] == '/'
		if valid != (err == nil) {
			t.Fatalf("CheckPrefix(%q, %d) = %v, rule says valid=%v", p, max, err, valid)
		}
		if err == nil {
			return
		}
		if !errors.Is(err, ErrInvalidPrefix) {
			t.Fatalf("CheckPrefix(%q, %d) = %v, does not wrap ErrInvalidPrefix", p, max, err)
		}
		if s, ok := suggestion(t, err.Error()); ok {
			if serr := CheckPrefix([]byte(s), max); serr != nil {
				t.Fatalf("CheckPrefix(%q, %d) suggests %q, itself refused: %v", p, max, s, serr)
			}
		}
	})
}
