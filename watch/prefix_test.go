package watch

import (
	"errors"
	"slices"
	"testing"
)

// TestValidateFollowsTheKeyRule: a watch refuses what the key rule refuses
// (package keyspace has the rule's own tests), with its errors.
func TestValidateFollowsTheKeyRule(t *testing.T) {
	cases := []struct {
		name   string
		key    string
		prefix bool
		want   error
	}{
		{"prefix / is every key", "/", true, nil},
		{"prefix /config/", "/config/", true, nil},
		{"prefix without leading '/'", "config/", true, ErrInvalidPrefix},
		{"prefix without trailing '/'", "/config", true, ErrInvalidPrefix},
		{"empty prefix", "", true, ErrInvalidPrefix},
		{"key /config/db", "/config/db", false, nil},
		{"key without leading '/'", "probe", false, ErrInvalidKey},
		{"empty key", "", false, ErrInvalidKey},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := validate([]byte(tc.key), tc.prefix)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("validate(%q, prefix=%v) = %v, want %v", tc.key, tc.prefix, err, tc.want)
			}
		})
	}
}

func TestPrefixSegments(t *testing.T) {
	cases := []struct {
		key  string
		want []string
	}{
		{"/config/db/host", []string{"/", "/config/", "/config/db/"}},
		{"/", []string{"/"}},
		{"/config", []string{"/"}},
		{"/config/", []string{"/", "/config/"}},
		{"config", nil},
		{"a/b", []string{"a/"}},
		{"//", []string{"/", "//"}},
	}
	for _, tc := range cases {
		t.Run(tc.key, func(t *testing.T) {
			var got []string
			for p := range prefixSegments([]byte(tc.key)) {
				got = append(got, string(p))
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("prefixSegments(%q) = %q, want %q", tc.key, got, tc.want)
			}
		})
	}
}

func TestPrefixMatching(t *testing.T) {
	cases := []struct {
		name   string
		prefix string
		key    string
		match  bool
	}{
		{"prefix /a/ matches /a/x", "/a/", "/a/x", true},
		{"prefix /a/ matches /a/b/c", "/a/", "/a/b/c", true},
		{"prefix /a/ matches the key /a/ itself", "/a/", "/a/", true},
		{"prefix /a/ does not match /ab", "/a/", "/ab", false},
		{"prefix /a/ does not match /a", "/a/", "/a", false},
		{"prefix /a/ does not match /b/a/x", "/a/", "/b/a/x", false},
		{"prefix /a/b/ does not match /a/bc", "/a/b/", "/a/bc", false},
		{"prefix / matches /ab", "/", "/ab", true},
		{"prefix / matches /a/b/c", "/", "/a/b/c", true},
		{"prefix / does not match a key without a leading slash", "/", "ab/c", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{}, true)
			w := h.register(tc.prefix, true, false)
			h.publish(1, put(tc.key, 1))
			// A marker the watcher surely matches: the first event it
			// receives tells whether the key above was delivered.
			h.publish(2, put(tc.prefix+"zz-marker", 2))
			ev := recv(t, w)
			if got := ev.Revision == 1; got != tc.match {
				t.Fatalf("prefix %q, key %q: delivered=%v, want %v (first event %q@%d)", tc.prefix, tc.key, got, tc.match, ev.Key, ev.Revision)
			}
		})
	}
}
