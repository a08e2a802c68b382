package concurrency

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"

	"github.com/raftwatch/raftwatch/client"
)

// Mutex is a distributed lock under a key prefix: at most one session
// holds it at a time, contenders acquire it in the order they asked (see
// the package invariant), and each acquisition returns a fencing token. A
// Mutex is used by one goroutine at a time; several Mutexes (on one
// session or many) may contend for one prefix.
type Mutex struct {
	s      *Session
	prefix string
	key    string
	rev    uint64 // the key's create revision while held
	token  uint64
}

// NewMutex returns a Mutex of session s under prefix (a '/' is appended
// if it does not end with one). Its key is prefix + the session's lease id
// in hex.
func NewMutex(s *Session, prefix string) *Mutex {
	p := normPrefix(prefix)
	return &Mutex{s: s, prefix: p, key: contenderKey(p, s)}
}

// Lock waits until the lock is held and returns the fencing token: the
// revision of the Txn that confirmed it, strictly greater than every
// earlier holder's. When ctx ends or the session is lost while it waits,
// it withdraws (deletes the key it created) and returns the reason. The
// session holding the lock already (another Mutex of it under the same
// prefix) makes Lock return at once, with a new token: re-entrant.
func (m *Mutex) Lock(ctx context.Context) (uint64, error) { return m.lock(ctx, true) }

// TryLock is Lock without waiting: when another session holds the lock,
// it withdraws and returns ErrLocked.
func (m *Mutex) TryLock(ctx context.Context) (uint64, error) { return m.lock(ctx, false) }

func (m *Mutex) lock(ctx context.Context, wait bool) (uint64, error) {
	// Each attempt's key holds its own value, so that the cleanup of an
	// attempt whose create had an unknown outcome never deletes a later
	// attempt's key (see removeIfCreatedAfter).
	value := []byte(strconv.FormatUint(rand.Uint64(), 16))
	rev, created, err := enter(ctx, m.s, m.key, value)
	if err != nil {
		return 0, err
	}
	if wait {
		err = waitFirst(ctx, m.s, m.prefix, m.key, rev)
	} else {
		var first bool
		if first, err = isFirst(ctx, m.s, m.prefix, m.key, rev); err == nil && !first {
			err = ErrLocked
		}
	}
	var token uint64
	if err == nil {
		token, err = fence(ctx, m.s, m.key, value, rev)
	}
	if err != nil {
		if created {
			leaveDetached(ctx, m.s, m.key, rev)
		}
		return 0, err
	}
	m.rev, m.token = rev, token
	return token, nil
}

// Unlock releases the lock by deleting the key. When the key was already
// gone (the session was lost) nothing is held and it returns
// ErrSessionLost.
func (m *Mutex) Unlock(ctx context.Context) error {
	if m.rev == 0 {
		return ErrNotLocked
	}
	rev := m.rev
	ok, err := leave(ctx, m.s, m.key, rev)
	if err != nil {
		return err
	}
	m.rev, m.token = 0, 0
	if !ok {
		return fmt.Errorf("%w: the lock's key %q (created at revision %d) was gone before Unlock", ErrSessionLost, m.key, rev)
	}
	return nil
}

// Key returns the Mutex's key: prefix + the session's lease id in hex.
func (m *Mutex) Key() string { return m.key }

// Token returns the fencing token of the current acquisition, 0 when the
// lock is not held. While held, it is also the key's mod revision.
func (m *Mutex) Token() uint64 { return m.token }

// IsOwner is the compare that holds only while this acquisition's key
// exists: put it in the If of a Txn to fence a write, which then fails
// once the lock was lost, whatever this process believes.
func (m *Mutex) IsOwner() client.Cmp {
	return client.Compare(client.CreateRevision([]byte(m.key)), "=", m.rev)
}
