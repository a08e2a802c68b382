// Package keyspace states the one rule every key and prefix of the API
// obeys, and checks it. Put, Get, Delete, List and Watch all check their
// keys and prefixes here, so a request is refused the same way, with the
// same message, whichever call carries it.
//
// The rule:
//   - a key is 1 to max bytes and starts with '/'; any byte may follow;
//   - a prefix (List, and Watch with prefix set) is at most max bytes and
//     starts and ends with '/'; "/" is every key.
//
// So every key lies under the prefix "/", and a prefix matches whole path
// segments: "/a/" matches "/a/x" and "/a/" itself, not "/ab".
//
// The state machine does not check keys: entries committed before the rule
// was enforced must still apply the same way on replay.
package keyspace

import (
	"errors"
	"fmt"
	"strconv"
)

// Separator starts every key and starts and ends every prefix.
const Separator = '/'

var (
	// ErrInvalidKey is wrapped by every error CheckKey returns.
	ErrInvalidKey = errors.New("invalid key")
	// ErrInvalidPrefix is wrapped by every error CheckPrefix returns.
	ErrInvalidPrefix = errors.New("invalid prefix")
)

// quoteMax is how many bytes of an offending key an error quotes: enough to
// recognise it, never a 4 KiB line.
const quoteMax = 64

// CheckKey returns nil when key obeys the rule for keys of at most max
// bytes, otherwise an error wrapping ErrInvalidKey that says how to fix it.
func CheckKey(key []byte, max int) error {
	switch {
	case len(key) == 0:
		return fmt.Errorf("%w \"\": a key must not be empty and must start with '/'", ErrInvalidKey)
	case len(key) > max:
		return fmt.Errorf("%w %s: %d bytes, a key is at most %d", ErrInvalidKey, quote(key), len(key), max)
	case key[0] != Separator:
		return fmt.Errorf("%w %s: a key must start with '/'%s", ErrInvalidKey, quote(key),
			try(string(Separator)+string(key), max))
	}
	return nil
}

// CheckPrefix returns nil when p obeys the rule for prefixes of at most max
// bytes, otherwise an error wrapping ErrInvalidPrefix that says how to fix
// it.
func CheckPrefix(p []byte, max int) error {
	switch {
	case len(p) > max:
		return fmt.Errorf("%w %s: %d bytes, a prefix is at most %d", ErrInvalidPrefix, quote(p), len(p), max)
	case len(p) == 0 || p[0] != Separator || p[len(p)-1] != Separator:
		return fmt.Errorf("%w %s: a prefix must start and end with '/'%s", ErrInvalidPrefix, quote(p),
			try(SuggestPrefix(p), max))
	}
	return nil
}

// SuggestPrefix returns the nearest prefix to p: p with a leading and a
// trailing '/' added where missing.
func SuggestPrefix(p []byte) string {
	s := string(p)
	if len(s) == 0 || s[0] != Separator {
		s = string(Separator) + s
	}
	if s[len(s)-1] != Separator {
		s += string(Separator)
	}
	return s
}

// try suggests s when it fits in max bytes, so an error never suggests what
// would be refused in turn, and is short enough to quote whole.
func try(s string, max int) string {
	if len(s) > max || len(s) > quoteMax {
		return ""
	}
	return " (try " + quote([]byte(s)) + ")"
}

// quote returns b as a Go string literal, its first quoteMax bytes only.
func quote(b []byte) string {
	if len(b) > quoteMax {
		return strconv.Quote(string(b[:quoteMax])) + "..."
	}
	return strconv.Quote(string(b))
}
