// Command etcd is etcd's server, built from its Go module at the version
// this module's go.mod requires, so that scripts/bench.sh compares raftwatch
// with the etcd release the repository pins (the newest when last updated)
// rather than whatever etcd the machine happens to have.
//
// It is a module of its own so that etcd's server and its dependencies never
// enter raftwatch's module graph. The invariant: this binary is exactly
// etcd's own (main is etcd's server/main.go); what to change is the version
// in go.mod (go get go.etcd.io/etcd/server/v3@vX.Y.Z && go mod tidy), never
// the code.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
