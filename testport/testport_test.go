package testport

import (
	"net"
	"os"
	"strconv"
	"testing"
)

// A port's lock file keeps a second holder (another test process; here
// another open file description) off it until the first lets go.
func TestPortLockExcludesOthers(t *testing.T) {
	var port int
	var first *os.File
	for p := low; first == nil; p++ { // one no test process holds now
		if p == high {
			t.Fatal("every port of the test range is locked")
		}
		if f, ok := lockPort(p); ok {
			port, first = p, f
		}
	}
	if second, ok := lockPort(port); ok {
		second.Close()
		first.Close()
		t.Fatal("a locked port was locked again")
	}
	first.Close()
	again, ok := lockPort(port)
	if !ok {
		t.Fatal("a released port could not be locked again")
	}
	again.Close()
}

// Every address Addrs returns lies in the test range, below the
// kernel's ephemeral ports.
func TestAddrsStayInTheTestRange(t *testing.T) {
	for _, a := range Addrs(t, 20) {
		_, p, err := net.SplitHostPort(a)
		if err != nil {
			t.Fatal(err)
		}
		port, _ := strconv.Atoi(p)
		if port < low || port >= high {
			t.Fatalf("%s is outside [%d, %d)", a, low, high)
		}
	}
}

// Many one-address calls in a row never name the same port twice. Each
// listener is closed before the next call, so the kernel is free to give
// the same port again (a CI run lost a test to that: a node's metrics port
// was then handed out as another node's raft port).
func TestAddrsNeverRepeatAcrossCalls(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 500; i++ {
		a := Addrs(t, 1)[0]
		if seen[a] {
			t.Fatalf("call %d handed out %s again", i, a)
		}
		seen[a] = true
	}
}
