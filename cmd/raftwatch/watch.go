package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"

	"github.com/raftwatch/raftwatch/client"
	pb "github.com/raftwatch/raftwatch/proto"
)

// eventJSON is one watch message printed with --json. Key, value and
// prev_value are standard base64.
type eventJSON struct {
	Type      string  `json:"type"`
	Key       *string `json:"key,omitempty"`        // CREATED, PUT, DELETE
	Value     *string `json:"value,omitempty"`      // PUT
	PrevValue *string `json:"prev_value,omitempty"` // with --prev-kv; "" when the key did not exist before
	Revision  uint64  `json:"revision"`
	Version   uint64  `json:"version,omitempty"`
	Reason    string  `json:"reason,omitempty"`
}

func newWatchCmd() *cobra.Command {
	var prefix string
	var prevKV, progress, requireLeader bool
	var rev uint64
	var g *clientFlags
	cmd := &cobra.Command{
		Use:   "watch KEY | watch --prefix PREFIX",
		Short: "Print changes to a key or a '/'-terminated prefix until interrupted",
		Long: `Watch a key, or with --prefix every key under a prefix that starts and ends
with '/'. The first line is CREATED with the revision the watch starts after;
then one line per PUT or DELETE (keys and values as Go string literals).
PROGRESS heartbeats (every event at or below a PROGRESS revision has been
printed) are shown with --progress, and always with --json.

With --rev N the watch starts at revision N: every matching event with a
revision >= N still in the node's history is printed first, then live
events, with no gap and no duplicate (e.g. N = a list's revision + 1).

The watch survives its node: when the node dies, shuts down or cannot serve
it, the watch resumes on another endpoint of --endpoints from the last
revision it printed, and says so on stderr; nothing is printed twice and
nothing is skipped. It runs until interrupted (exit 0). It exits 3 when the
history it needs has been compacted (a --rev older than the oldest retained
revision, or a resume that fell that far behind): re-list and watch again.
--timeout bounds only opening the watch.`,
		Example: `  raftwatch watch /config/db/host
  raftwatch watch --prefix /config/ --prev-kv --json`,
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case prefix == "" && len(args) != 1:
				return fmt.Errorf("watch needs a KEY, or --prefix PREFIX")
			case prefix != "" && len(args) != 0:
				return fmt.Errorf("give either a KEY or --prefix, not both")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			key, opts := prefix, []client.OpOption{}
			if prefix != "" {
				opts = append(opts, client.WithPrefix())
			} else {
				key = args[0]
			}
			if prevKV {
				opts = append(opts, client.WithPrevKV())
			}
			if rev > 0 {
				opts = append(opts, client.WithStartRevision(rev))
			}
			if requireLeader {
				opts = append(opts, client.WithRequireLeader())
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			// The watch lives until interrupted; the client's retry timeout
			// (--timeout) bounds its opening.
			w, err := c.Watch(ctx, []byte(key), opts...)
			var ce *client.CompactedError
			if errors.As(err, &ce) {
				return exitCode{code: exitWatchCanceled, msg: fmt.Sprintf("revision %d has been compacted: the oldest revision still retained is %d; re-list, or watch from --rev %d", rev, ce.Oldest, ce.Oldest)}
			}
			if err != nil {
				return err
			}
			defer w.Close()
			p := eventPrinter{json: g.json, progress: progress}
			p.print(w.CreatedEvent())
			resumes := 0
			for {
				ev, err := w.Recv()
				if err != nil {
					switch {
					case ctx.Err() != nil:
						return nil // interrupted
					case errors.As(err, &ce):
						return exitCode{code: exitWatchCanceled, msg: fmt.Sprintf("watch canceled: the history it needs has been compacted (the oldest revision still retained is %d); re-list and watch again", ce.Oldest)}
					case errors.Is(err, io.EOF):
						return exitCode{code: exitError, msg: "the watch ended"}
					}
					return err
				}
				if n := w.Resumes(); n != resumes {
					resumes = n
					fmt.Fprintf(os.Stderr, "watch resumed on another node (resume %d); nothing was missed\n", n)
				}
				p.print(ev)
				if ev.Type == pb.EventType_CANCELED && ev.Code != int32(codes.OutOfRange) {
					return exitCode{code: exitWatchCanceled, msg: "watch canceled by the server: " + ev.Reason}
				}
			}
		},
	}
	g = addClientFlags(cmd)
	cmd.Flags().StringVar(&prefix, "prefix", "", "watch every key under this prefix (must start and end with '/')")
	cmd.Flags().BoolVar(&prevKV, "prev-kv", false, "include each key's previous value")
	cmd.Flags().BoolVar(&progress, "progress", false, "also print PROGRESS heartbeats (always printed with --json)")
	cmd.Flags().Uint64Var(&rev, "rev", 0, "start at this revision: print every matching event with a revision >= it from history first (0 = from now)")
	cmd.Flags().BoolVar(&requireLeader, "require-leader", false, "move the watch to another node whenever its node loses touch with the leader")
	return cmd
}

// eventPrinter prints watch messages in the chosen format.
type eventPrinter struct {
	json     bool
	progress bool // print PROGRESS in the human format
}

func (p eventPrinter) print(ev *pb.WatchResponse) {
	if p.json {
		out := eventJSON{Type: ev.Type.String(), Revision: ev.Revision, Version: ev.Version, Reason: ev.Reason}
		switch ev.Type {
		case pb.EventType_CREATED, pb.EventType_PUT, pb.EventType_DELETE:
			k := b64(ev.Key)
			out.Key = &k
		}
		if ev.Type == pb.EventType_PUT {
			v := b64(ev.Value)
			out.Value = &v
		}
		if ev.PrevValue != nil {
			pv := b64(ev.PrevValue)
			out.PrevValue = &pv
		}
		printJSON(out)
		return
	}
	switch ev.Type {
	case pb.EventType_CREATED:
		fmt.Printf("CREATED %s (events after revision %d)\n", quote(ev.Key), ev.Revision)
	case pb.EventType_PUT:
		fmt.Printf("PUT %s = %s (revision %d, version %d)%s\n", quote(ev.Key), quote(ev.Value), ev.Revision, ev.Version, prevText(ev))
	case pb.EventType_DELETE:
		fmt.Printf("DELETE %s (revision %d)%s\n", quote(ev.Key), ev.Revision, prevText(ev))
	case pb.EventType_PROGRESS:
		if p.progress {
			fmt.Printf("PROGRESS revision %d\n", ev.Revision)
		}
	case pb.EventType_CANCELED:
		fmt.Printf("CANCELED: %s\n", ev.Reason)
	}
}

func prevText(ev *pb.WatchResponse) string {
	switch {
	case ev.PrevValue == nil:
		return ""
	case len(ev.PrevValue) == 0:
		return " [no previous value]"
	}
	return fmt.Sprintf(" [previous: %s]", quote(ev.PrevValue))
}
