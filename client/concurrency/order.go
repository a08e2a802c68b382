package concurrency

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/raftwatch/raftwatch/client"
	pb "github.com/raftwatch/raftwatch/proto"
)

// contenderOrder is the one order of contenders everything here uses:
// by create revision, then by key, so two keys created by one log entry
// (one Txn) are still ordered, the same way by every contender.
func contenderOrder(a, b *pb.KeyValue) int {
	if c := cmp.Compare(a.CreateRevision, b.CreateRevision); c != 0 {
		return c
	}
	return bytes.Compare(a.Key, b.Key)
}

// sortContenders sorts kvs (as List returns them, in key order) into
// contender order.
func sortContenders(kvs []*pb.KeyValue) { slices.SortFunc(kvs, contenderOrder) }

// normPrefix makes prefix end with '/', as the key rule wants of a prefix.
func normPrefix(prefix string) string {
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return prefix
}

// contenderKey is the session's key under prefix.
func contenderKey(prefix string, s *Session) string {
	return prefix + strconv.FormatInt(s.id, 16)
}

// enter makes sure the session has its key under prefix: it creates it
// with value, attached to the session's lease, unless it exists (the same
// session entered before: re-entrant). It returns the key's create
// revision and whether this call created it.
func enter(ctx context.Context, s *Session, key string, value []byte) (uint64, bool, error) {
	if err := s.Err(); err != nil {
		return 0, false, err
	}
	k := []byte(key)
	// The revision the key is known not to have been created after: if the
	// create below fails with an unknown outcome, a key created after it
	// is this attempt's, and must not stay behind holding everyone up.
	g, err := s.c.Get(ctx, k)
	if err != nil {
		return 0, false, sessionErr(s, fmt.Errorf("concurrency: read contender key %q: %w", key, err))
	}
	r, err := s.c.Txn(ctx).
		If(client.Compare(client.CreateRevision(k), "=", 0)).
		Then(client.OpPut(k, value, client.WithLease(s.id))).
		Else(client.OpGet(k)).
		Commit()
	switch {
	case err != nil:
		if g.Kv == nil {
			removeIfCreatedAfter(ctx, s, k, value, g.Revision)
		}
		return 0, false, sessionErr(s, fmt.Errorf("concurrency: create contender key %q: %w", key, err))
	case r.Succeeded:
		return r.Revision, true, nil
	}
	kv := r.Results[0].GetGet().GetKv()
	if kv.GetLease() != s.id {
		return 0, false, fmt.Errorf("concurrency: contender key %q exists on lease %x, not on this session's lease %x", key, kv.GetLease(), s.id)
	}
	return kv.CreateRevision, false, nil
}

// removeIfCreatedAfter deletes key if it was created after revision rev
// and holds value: the cleanup of a create whose outcome is unknown. The
// create may still be on its way (the node handles requests concurrently,
// so it can apply after the cleanup), so the cleanup runs once at once and
// then again a few times in the background until cleanupTimeout; if all of
// that fails, the key goes with the session's lease. The value tells this
// attempt's key from a later attempt's: a Mutex gives each attempt its own.
func removeIfCreatedAfter(ctx context.Context, s *Session, key, value []byte, rev uint64) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	remove := func() {
		s.c.Txn(cctx).
			If(client.Compare(client.CreateRevision(key), ">", rev), client.Compare(client.Value(key), "=", value)).
			Then(client.OpDelete(key)).
			Commit()
	}
	remove()
	go func() {
		defer cancel()
		for _, d := range []time.Duration{50 * time.Millisecond, 200 * time.Millisecond, time.Second} {
			select {
			case <-time.After(d):
				remove()
			case <-cctx.Done():
				return
			case <-s.Done():
				return
			}
		}
	}()
}

// sessionErr returns ErrSessionLost (or ErrSessionClosed) when the
// session has ended: that, not the request's failure, is what happened.
func sessionErr(s *Session, err error) error {
	if serr := s.Err(); serr != nil {
		return fmt.Errorf("%w: %v", serr, err)
	}
	return err
}

// contenders reads the keys under prefix, in contender order, and the
// revision they were read at: now, or at revision at when it is not 0.
func contenders(ctx context.Context, c *client.Client, prefix string, at ...uint64) ([]*pb.KeyValue, uint64, error) {
	var opts []client.OpOption
	if len(at) > 0 && at[0] != 0 {
		opts = append(opts, client.WithRevision(at[0]))
	}
	r, err := c.List(ctx, []byte(prefix), opts...)
	if err != nil {
		return nil, 0, fmt.Errorf("concurrency: list contenders under %q: %w", prefix, err)
	}
	// Only direct children contend: the lock "a" is not held up by the
	// holder of "a/b", whose keys are under the same prefix.
	kvs := slices.DeleteFunc(r.Kvs, func(kv *pb.KeyValue) bool {
		return strings.Contains(string(kv.Key[len(prefix):]), "/")
	})
	sortContenders(kvs)
	return kvs, r.Revision, nil
}

// place returns the index of key (created at rev) among kvs, or -1.
func place(kvs []*pb.KeyValue, key string, rev uint64) int {
	for i, kv := range kvs {
		if string(kv.Key) == key && kv.CreateRevision == rev {
			return i
		}
	}
	return -1
}

// waitFirst returns once key (created at rev) is the first contender
// under prefix. It waits for the key just before it to be deleted, then
// reads the order again: the one before may have gone while another
// before it is still there.
func waitFirst(ctx context.Context, s *Session, prefix, key string, rev uint64) error {
	for {
		kvs, at, err := contenders(ctx, s.c, prefix)
		if err != nil {
			return sessionErr(s, err)
		}
		i := place(kvs, key, rev)
		switch {
		case i < 0:
			return fmt.Errorf("%w: contender key %q (created at revision %d) is gone", ErrSessionLost, key, rev)
		case i == 0:
			return nil
		}
		if err := waitDeleted(ctx, s, key, kvs[i-1].Key, at); err != nil {
			return err
		}
	}
}

// isFirst reports whether key (created at rev) is the first contender.
func isFirst(ctx context.Context, s *Session, prefix, key string, rev uint64) (bool, error) {
	kvs, _, err := contenders(ctx, s.c, prefix)
	if err != nil {
		return false, sessionErr(s, err)
	}
	i := place(kvs, key, rev)
	if i < 0 {
		return false, fmt.Errorf("%w: contender key %q (created at revision %d) is gone", ErrSessionLost, key, rev)
	}
	return i == 0, nil
}

// testHookWatch, when set (by tests), is told of every watch a waiter
// opens: its own key and the key it watches.
var testHookWatch func(waiter string, watched []byte)

// waitDeleted returns once key, which existed at revision at, is deleted:
// it watches the key from the revision after at, so a deletion between the
// read and the watch is seen. It returns early, with nil, when history no
// longer reaches that far (the caller reads the order again).
func waitDeleted(ctx context.Context, s *Session, waiter string, key []byte, at uint64) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()
	if testHookWatch != nil {
		testHookWatch(waiter, key)
	}
	w, err := s.c.Watch(wctx, key, client.WithStartRevision(at+1))
	for err == nil {
		var ev *pb.WatchResponse
		if ev, err = w.Recv(); err == nil && ev.Type == pb.EventType_DELETE {
			w.Close()
			return nil
		}
	}
	switch {
	case errors.Is(err, client.ErrCompacted):
		return nil
	case s.ctx.Err() != nil: // the session ended; Err is set once done is closed
		<-s.done
		return s.Err()
	case ctx.Err() != nil:
		return ctx.Err()
	}
	return fmt.Errorf("concurrency: watch %q for its deletion: %w", key, err)
}

// fence commits, as the first contender, a put of key's value conditioned
// on its create revision still being rev, and returns the Txn's revision:
// the fencing token. A failed compare means the key is gone: the session
// was lost.
func fence(ctx context.Context, s *Session, key string, value []byte, rev uint64) (uint64, error) {
	k := []byte(key)
	r, err := s.c.Txn(ctx).
		If(client.Compare(client.CreateRevision(k), "=", rev)).
		Then(client.OpPut(k, value, client.WithLease(s.id))).
		Commit()
	switch {
	case err != nil:
		return 0, sessionErr(s, fmt.Errorf("concurrency: fence %q: %w", key, err))
	case !r.Succeeded:
		return 0, fmt.Errorf("%w: contender key %q (created at revision %d) is gone", ErrSessionLost, key, rev)
	}
	return r.Revision, nil
}

// leave deletes key if it is still the one created at rev.
func leave(ctx context.Context, s *Session, key string, rev uint64) (bool, error) {
	k := []byte(key)
	r, err := s.c.Txn(ctx).
		If(client.Compare(client.CreateRevision(k), "=", rev)).
		Then(client.OpDelete(k)).
		Commit()
	if err != nil {
		return false, fmt.Errorf("concurrency: delete contender key %q: %w", key, err)
	}
	return r.Succeeded, nil
}

// leaveDetached is leave for a Lock or Campaign that failed: it runs even
// when ctx has ended, bounded by cleanupTimeout.
func leaveDetached(ctx context.Context, s *Session, key string, rev uint64) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	leave(cctx, s, key, rev)
}
