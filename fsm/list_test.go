package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/raft"

	pb "github.com/raftwatch/raftwatch/proto"
	"github.com/raftwatch/raftwatch/watch"
)

// listModel is the state after each revision, kept whole.
type listModel struct {
	cur    map[string]KeyValue
	states map[uint64]map[string]KeyValue
}

func (m *listModel) apply(rev uint64, ops []*pb.Op) {
	for _, op := range ops {
		k := string(op.Key)
		if op.Kind == pb.Op_DELETE {
			delete(m.cur, k)
			continue
		}
		kv, ok := m.cur[k]
		if !ok {
			kv = KeyValue{Key: op.Key, CreateRevision: rev}
		}
		kv.Value, kv.ModRevision, kv.Version = op.Value, rev, kv.Version+1
		m.cur[k] = kv
	}
	m.states[rev] = maps.Clone(m.cur)
}

// under returns the model's keys under prefix at rev, in key order.
func (m *listModel) under(rev uint64, prefix string) []KeyValue {
	var out []KeyValue
	for _, k := range slices.Sorted(maps.Keys(m.states[rev])) {
		if strings.HasPrefix(k, prefix) {
			out = append(out, m.states[rev][k])
		}
	}
	return out
}

// listAll reads every page of prefix at rev, checking each page's bounds.
func listAll(t *testing.T, f *FSM, prefix string, rev uint64, limit, maxBytes int) ([]KeyValue, error) {
	t.Helper()
	var out []KeyValue
	o := ListOptions{Revision: rev, Limit: limit, MaxBytes: maxBytes}
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatalf("list %s at %d: more than 1000 pages", prefix, rev)
		}
		p, err := f.List([]byte(prefix), o)
		if err != nil {
			return nil, err
		}
		if p.Revision != rev {
			t.Fatalf("page read at revision %d, asked %d", p.Revision, rev)
		}
		if p.Next != nil && len(p.KVs) == 0 {
			t.Fatalf("an empty page with a next key %q", p.Next)
		}
		size := 0
		for _, kv := range p.KVs {
			size += len(kv.Key) + len(kv.Value) + KVOverhead
		}
		if limit > 0 && len(p.KVs) > limit || maxBytes > 0 && size > maxBytes && len(p.KVs) > 1 {
			t.Fatalf("page of %d pairs, %d bytes: over limit %d or %d bytes", len(p.KVs), size, limit, maxBytes)
		}
		out = append(out, p.KVs...)
		if p.Next == nil {
			return out, nil
		}
		if !bytes.HasPrefix(p.Next, []byte(prefix)) || bytes.Compare(p.Next, p.KVs[len(p.KVs)-1].Key) <= 0 {
			t.Fatalf("next key %q after %q under %q", p.Next, p.KVs[len(p.KVs)-1].Key, prefix)
		}
		o.Start = p.Next
	}
}

func sameKVs(t *testing.T, what string, got, want []KeyValue) {
	t.Helper()
	str := func(kvs []KeyValue) string {
		var b strings.Builder
		for _, kv := range kvs {
			fmt.Fprintf(&b, "%s=%q c%d m%d v%d; ", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version)
		}
		return b.String()
	}
	if g, w := str(got), str(want); g != w {
		t.Fatalf("%s:\n got  %s\n want %s", what, g, w)
	}
}

// TestListAtPastRevisionMatchesModel: a List paged at any revision that
// history still reaches returns exactly that revision's keys, whole
// (value, create and mod revision, version), whatever the page bounds; one
// at a revision history no longer reaches is refused as compacted. A small
// history makes previous values come from the history base too.
func TestListAtPastRevisionMatchesModel(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			f := openWith(t, filepath.Join(t.TempDir(), "state.db"), &recordingSink{}, Options{HistoryMaxEvents: 60})
			m := &listModel{cur: map[string]KeyValue{}, states: map[uint64]map[string]KeyValue{}}
			keys := []string{"/p/", "/p/a", "/p/b", "/p/b/c", "/p/d", "/p/e", "/p/f", "/q", "/p0"}
			const revs = 300
			for rev := uint64(1); rev <= revs; rev++ {
				var ops []*pb.Op
				for _, i := range rng.Perm(len(keys))[:1+rng.IntN(3)] {
					if rng.IntN(3) == 0 {
						ops = append(ops, del(keys[i]))
					} else {
						ops = append(ops, put(keys[i], strings.Repeat("v", rng.IntN(40))+fmt.Sprint(rev)))
					}
				}
				f.ApplyBatch([]*raft.Log{entry(t, rev, ops...)})
				m.apply(rev, ops)
			}
			oldest := f.OldestRevision()
			if oldest < 100 {
				t.Fatalf("history starts at %d: too little compaction for the test to mean anything", oldest)
			}
			for rev := uint64(1); rev <= revs; rev++ {
				limit, maxBytes := rng.IntN(4), 0
				if rng.IntN(2) == 0 {
					maxBytes = 1 + rng.IntN(150)
				}
				got, err := listAll(t, f, "/p/", rev, limit, maxBytes)
				if rev+1 < oldest {
					var ue *RevisionUnavailableError
					if !errors.As(err, &ue) || !errors.Is(err, watch.ErrCompacted) || ue.Oldest != oldest-1 {
						t.Fatalf("list at %d with history from %d: %v, want RevisionUnavailableError{Oldest: %d}", rev, oldest, err, oldest-1)
					}
					continue
				}
				if err != nil {
					t.Fatalf("list at %d (history from %d): %v", rev, oldest, err)
				}
				sameKVs(t, fmt.Sprintf("list /p/ at %d, limit %d, %d bytes", rev, limit, maxBytes), got, m.under(rev, "/p/"))
			}
		})
	}
}

// TestListStartKeySkipsEarlierKeys: Start is inclusive and keys before it
// are left out, also at a past revision.
func TestListStartKeySkipsEarlierKeys(t *testing.T) {
	f := openTest(t, filepath.Join(t.TempDir(), "state.db"), &recordingSink{})
	f.ApplyBatch([]*raft.Log{entry(t, 1, put("/p/a", "1"), put("/p/b", "2"), put("/p/c", "3"))})
	f.ApplyBatch([]*raft.Log{entry(t, 2, del("/p/b"), put("/p/a", "x"))})
	for _, tc := range []struct {
		rev   uint64
		start string
		want  string
	}{
		{0, "/p/b", "/p/c"},
		{1, "/p/b", "/p/b /p/c"},
		{1, "/p/bb", "/p/c"},
		{1, "", "/p/a /p/b /p/c"},
		{2, "/p/a", "/p/a /p/c"},
	} {
		p, err := f.List([]byte("/p/"), ListOptions{Start: []byte(tc.start), Revision: tc.rev})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, kv := range p.KVs {
			got = append(got, string(kv.Key))
		}
		if strings.Join(got, " ") != tc.want {
			t.Fatalf("list /p/ from %q at %d = %q, want %q", tc.start, tc.rev, got, tc.want)
		}
	}
}

// TestListNotYetAppliedRevisionIsAnError: the FSM does not wait; the node
// waits for the revision before it asks.
func TestListNotYetAppliedRevisionIsAnError(t *testing.T) {
	f := openTest(t, filepath.Join(t.TempDir(), "state.db"), &recordingSink{})
	f.ApplyBatch([]*raft.Log{entry(t, 1, put("/p/a", "1"))})
	if _, err := f.List([]byte("/p/"), ListOptions{Revision: 2}); err == nil {
		t.Fatal("list at a revision not applied yet succeeded")
	}
}
