package nodetest

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
	for p := testPortLow; first == nil; p++ { // one no test process holds now
		if p == testPortHigh {
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

// Every address FreeAddrs returns lies in the test range, below the
// kernel's ephemeral ports.
func TestFreeAddrsStayInTheTestRange(t *testing.T) {
	for _, a := range FreeAddrs(t, 20) {
		_, p, err := net.SplitHostPort(a)
		if err != nil {
			t.Fatal(err)
		}
		port, _ := strconv.Atoi(p)
		if port < testPortLow || port >= testPortHigh {
			t.Fatalf("%s is outside [%d, %d)", a, testPortLow, testPortHigh)
		}
	}
}
