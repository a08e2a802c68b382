// Package testport hands tests free loopback addresses for the nodes they
// start. Invariant: no address is handed out twice in one process, nor to
// two test processes of the machine within a minute, and none lies in the
// kernel's ephemeral port range (where an outgoing connection could take it
// before the node binds it).
package testport

import (
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Addrs returns n distinct 127.0.0.1 addresses that were free a moment
// ago, for processes a test starts. The ports are chosen at random in
// [low, high), below the kernel's ephemeral range: a port
// the kernel hands out (to bind(0), or as the source port of an outgoing
// connection) could be taken by another socket between this check and the
// node's bind, which then fails with "address already in use". None is
// handed out twice in one test process, nor, for a minute, to two test
// processes at once (a lock file per port, held by the process).
func Addrs(t testing.TB, n int) []string {
	t.Helper()
	ports.Lock()
	defer ports.Unlock()
	ports.release(time.Now().Add(-portHold))
	var out []string
	for tries := 0; len(out) < n; tries++ {
		if tries > 10000 {
			t.Fatalf("no free port in [%d, %d) after %d tries", low, high, tries)
		}
		port := low + rand.IntN(high-low)
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if ports.handedOut[addr] {
			continue
		}
		lock, ok := lockPort(port)
		if !ok {
			continue // another test process holds it
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			lock.Close()
			continue // in use
		}
		defer l.Close() // held until every address is chosen
		ports.handedOut[addr] = true
		ports.held = append(ports.held, heldPort{lock, time.Now()})
		out = append(out, addr)
	}
	return out
}

// The range Addrs takes ports from: below Linux's default ephemeral
// range (32768-60999), apart from what scripts/cluster.sh's test (20000-
// 29999), the dev cluster (7101-7203) and bench.sh (7301-7403) use.
const (
	low  = 10000
	high = 20000
)

// portHold is how long a port's lock file stays locked: long enough for
// the process it was chosen for to bind it.
const portHold = time.Minute

// ports is what Addrs handed out in this process.
var ports = portRegistry{handedOut: map[string]bool{}}

type portRegistry struct {
	sync.Mutex
	handedOut map[string]bool
	held      []heldPort // oldest first
}

type heldPort struct {
	lock *os.File
	at   time.Time
}

// release unlocks the ports chosen before cutoff (they stay handed out in
// this process).
func (r *portRegistry) release(cutoff time.Time) {
	i := 0
	for ; i < len(r.held) && r.held[i].at.Before(cutoff); i++ {
		r.held[i].lock.Close()
	}
	r.held = append(r.held[:0], r.held[i:]...)
}

// lockPort takes the lock file of port, shared by the test processes of
// this machine; the kernel releases it when the process ends, however it
// ends.
func lockPort(port int) (*os.File, bool) {
	dir := filepath.Join(os.TempDir(), "raftwatch-test-ports")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, false
	}
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, false
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, false
	}
	return f, true
}
