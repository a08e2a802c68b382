// Package e2e tests raftwatch as users run it: real processes of the
// raftwatch binary (serve and every client subcommand) and the scripts
// under scripts/, talking over loopback TCP, killed, restarted and
// checked from the outside. Its tests build the binary once per test run
// (TestMain, with the race detector when the tests have it, so the nodes'
// own code is race-checked too); tests of one package's logic in one
// process belong to that package.
//
// Invariant: every process a test starts is gone when the test ends.
package e2e
