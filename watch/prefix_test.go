package watch

import (
	"errors"
	"slices"
	"testing"
)

func TestValidatePrefix(t *testing.T) {
	cases := []struct {
		prefix string
		ok     bool
		try    string
	}{
		{"/", true, ""},
		{"/config/", true, ""},
		{"/config/db/", true, ""},
		{"config", false, "/config/"},
		{"/config", false, "/config/"},
		{"config/", false, "/config/"},
		{"", false, "/"},
	}
	for _, tc := range cases {
		t.Run(tc.prefix, func(t *testing.T) {
			err := validatePrefix([]byte(tc.prefix))
			if tc.ok {
				if err != nil {
					t.Fatalf("validatePrefix(%q) = %v, want nil", tc.prefix, err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidPrefix) {
				t.Fatalf("validatePrefix(%q) = %v, want ErrInvalidPrefix", tc.prefix, err)
			}
			if got := suggestPrefix([]byte(tc.prefix)); got != tc.try {
				t.Fatalf("suggestPrefix(%q) = %q, want %q", tc.prefix, got, tc.try)
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
