package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/raftwatch/raftwatch/client"
	"github.com/raftwatch/raftwatch/client/concurrency"
)

// Prefixes the lock and elect commands derive from NAME.
const (
	lockPrefix     = "/raftwatch/locks/"
	electionPrefix = "/raftwatch/elections/"
)

// recipePrefix is base + NAME + "/"; NAME is a path of one or more
// segments ("db", "billing/db").
func recipePrefix(base, name string) (string, error) {
	if name == "" || strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/") || strings.Contains(name, "//") {
		return "", fmt.Errorf("name %q: want a non-empty name without a leading or trailing '/' or an empty segment, e.g. db or billing/db", name)
	}
	return base + name + "/", nil
}

// sessionFlags are --ttl of lock and elect.
type sessionFlags struct{ ttl string }

func (s *sessionFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&s.ttl, "ttl", strconv.Itoa(concurrency.DefaultTTL),
		"TTL of the session lease, in seconds or as a duration (90s, 5m): how long after this process stops "+
			"renewing it (crash, pause, partition) the cluster releases what it holds")
}

// open starts a session on c.
func (s *sessionFlags) open(g *clientFlags, c *client.Client) (*concurrency.Session, error) {
	ttl, err := parseTTL(s.ttl)
	if err != nil {
		return nil, fmt.Errorf("--ttl: %w", err)
	}
	ctx, cancel := g.ctx()
	defer cancel()
	return concurrency.NewSession(ctx, c, concurrency.WithTTL(ttl))
}

// closeSession revokes the session's lease (deleting its keys), saying so
// on stderr if it fails.
func closeSession(s *concurrency.Session) {
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "warning:", describe(err), "- the lease expires by itself after its TTL")
	}
}

// lostMessage is what lock and elect say, loudly, when the session is
// lost while they hold something.
func lostMessage(s *concurrency.Session, what string) string {
	return fmt.Sprintf("SESSION LOST: lease %s %v; %s is NO LONGER HELD", leaseHex(s.Lease()), s.Err(), what)
}

func newLockCmd() *cobra.Command {
	var g *clientFlags
	var sf sessionFlags
	cmd := &cobra.Command{
		Use:   "lock NAME [-- CMD ARGS...]",
		Short: "Acquire a distributed lock, run CMD while holding it (or hold it until interrupted)",
		Long: `Acquire the lock NAME (key prefix /raftwatch/locks/NAME/), waiting in line
behind earlier contenders (first come, first served), then print its key and
fencing token and:

  - with CMD: run it with RAFTWATCH_LOCK_KEY and RAFTWATCH_LOCK_TOKEN in its
    environment, release the lock when it exits, and exit with its exit code
    (128+N if it died of signal N). The lock line goes to stderr, leaving
    stdout to CMD. CMD runs in its own process group, which gets the
    SIGINT and SIGTERM lock gets; on Linux it is killed if lock dies.
  - without CMD: hold the lock until SIGINT or SIGTERM, then release it and
    exit 0.

The lock is held through a session: a lease of --ttl seconds, renewed in the
background. If this process stops renewing it (crash, SIGSTOP, partition),
the cluster releases the lock once the TTL has passed; the next contender
gets it. If the session is lost while CMD runs, lock says so on stderr,
sends CMD's process group SIGTERM, then SIGKILL 3 s later if it is still
running, and exits 1 once CMD has exited (killing what it left running): from
that moment another contender may hold the lock.

A lock alone cannot stop a paused holder from writing after it lost the
lock. Fence writes instead: the token is the lock key's mod revision while
the lock is held, and it grows with every acquisition, so a write in a
transaction whose compare is mod("$RAFTWATCH_LOCK_KEY") = $RAFTWATCH_LOCK_TOKEN
happens only while this acquisition holds the lock (raftwatch txn exits 2
when it does not).

While waiting, interrupting it withdraws from the line and exits 1.`,
		Example: `  raftwatch lock backup -- sh -c 'pg_dump app > /backups/app.sql'
  raftwatch lock --ttl 10s db   # hold it until Ctrl-C

  # a write fenced by the lock, inside CMD
  raftwatch lock db -- sh -c 'printf "%s\n" \
    "mod(\"$RAFTWATCH_LOCK_KEY\") = $RAFTWATCH_LOCK_TOKEN" "" \
    "put /app/config v2" | raftwatch txn'`,
		Args: func(cmd *cobra.Command, args []string) error {
			dash := cmd.ArgsLenAtDash()
			switch {
			case dash == -1 && len(args) != 1, dash != -1 && dash != 1:
				return fmt.Errorf("lock takes one NAME, then optionally -- CMD ARGS...")
			case dash == 1 && len(args) == 1:
				return fmt.Errorf("nothing after --: give a command to run, or drop the --")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			prefix, err := recipePrefix(lockPrefix, args[0])
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			defer c.Close()
			sigs := make(chan os.Signal, 4)
			signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
			defer signal.Stop(sigs)
			s, err := sf.open(g, c)
			if err != nil {
				return err
			}
			defer closeSession(s)
			m := concurrency.NewMutex(s, prefix)
			lctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() {
				select {
				case <-sigs:
					cancel()
				case <-lctx.Done():
				}
			}()
			token, err := m.Lock(lctx)
			if err != nil {
				if lctx.Err() != nil {
					return exitCode{code: exitError, msg: "interrupted before the lock " + args[0] + " was acquired"}
				}
				return err
			}
			cancel()
			out := io.Writer(os.Stdout)
			if len(args) > 1 {
				out = os.Stderr
			}
			if g.json {
				fmt.Fprintln(out, jsonLine(map[string]any{"key": b64([]byte(m.Key())), "token": token, "lease": leaseHex(s.Lease())}))
			} else {
				fmt.Fprintf(out, "locked %s: key %s, fencing token %d\n", args[0], quote([]byte(m.Key())), token)
			}
			var code int
			if len(args) > 1 {
				code, err = runLocked(args[1:], m, s, sigs)
			} else {
				err = holdUntilSignal(s, sigs, "the lock "+args[0])
			}
			if s.Err() == nil { // else the key is gone already
				ctx, cancel := g.ctx()
				if uerr := m.Unlock(ctx); uerr != nil && err == nil {
					err = fmt.Errorf("release the lock: %w", uerr)
				}
				cancel()
			}
			if err != nil {
				return err
			}
			if code != 0 {
				return exitCode{code: code}
			}
			return nil
		},
	}
	g = addClientFlags(cmd)
	sf.add(cmd)
	return cmd
}

// holdUntilSignal waits for SIGINT/SIGTERM (nil) or the session's loss.
func holdUntilSignal(s *concurrency.Session, sigs <-chan os.Signal, what string) error {
	select {
	case <-sigs:
		return nil
	case <-s.Done():
		return exitCode{code: exitError, msg: lostMessage(s, what)}
	}
}

// lockKillAfter is how long CMD's process group has, after the SIGTERM
// that says the lock was lost, before it gets SIGKILL: beyond the lock's
// loss, every moment CMD runs it may overlap the next holder.
const lockKillAfter = 3 * time.Second

// runLocked runs argv while m is held and returns its exit code. CMD runs
// in its own process group, which receives the signals lock receives, and
// dies with lock (Linux: parent-death signal). When the session is lost
// first, the group gets SIGTERM, then SIGKILL after lockKillAfter, and the
// error says so.
func runLocked(argv []string, m *concurrency.Mutex, s *concurrency.Session, sigs <-chan os.Signal) (int, error) {
	child := exec.Command(argv[0], argv[1:]...)
	child.Stdin, child.Stdout, child.Stderr = os.Stdin, os.Stdout, os.Stderr
	child.Env = append(os.Environ(), "RAFTWATCH_LOCK_KEY="+m.Key(), "RAFTWATCH_LOCK_TOKEN="+strconv.FormatUint(m.Token(), 10))
	child.SysProcAttr = childProcAttr()
	if err := child.Start(); err != nil {
		return 0, fmt.Errorf("run %s: %w", argv[0], err)
	}
	group := -child.Process.Pid // the child leads its own group
	exited := make(chan error, 1)
	go func() { exited <- child.Wait() }()
	lost := s.Done()
	var lostErr error
	var kill <-chan time.Time
	for {
		select {
		case err := <-exited:
			if lostErr != nil {
				syscall.Kill(group, syscall.SIGKILL) // what CMD left running
				return 0, lostErr
			}
			return exitStatus(err)
		case sig := <-sigs:
			syscall.Kill(group, sig.(syscall.Signal))
		case <-lost:
			lost = nil
			msg := lostMessage(s, "the lock")
			fmt.Fprintf(os.Stderr, "\n!!! raftwatch lock: %s; sending SIGTERM to %s (process group %d), SIGKILL in %v\n\n",
				msg, argv[0], child.Process.Pid, lockKillAfter)
			syscall.Kill(group, syscall.SIGTERM)
			kill = time.After(lockKillAfter)
			lostErr = exitCode{code: exitError, msg: msg + "; " + argv[0] + " was sent SIGTERM"}
		case <-kill:
			kill = nil
			fmt.Fprintf(os.Stderr, "!!! raftwatch lock: %s still running %v after the lock was lost; sending SIGKILL\n", argv[0], lockKillAfter)
			syscall.Kill(group, syscall.SIGKILL)
		}
	}
}

// exitStatus turns Wait's result into an exit code: the command's own, or
// 128+N when signal N ended it, as shells report it.
func exitStatus(err error) (int, error) {
	var ee *exec.ExitError
	if err == nil {
		return 0, nil
	}
	if !errors.As(err, &ee) {
		return 0, err
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return ee.ExitCode(), nil
}

// jsonLine encodes v as one line of JSON.
func jsonLine(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
