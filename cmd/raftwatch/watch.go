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
	var prevKV, progress bool
	var g *clientFlags
	cmd := &cobra.Command{
		Use:   "watch KEY | watch --prefix PREFIX",
		Short: "Print changes to a key or a '/'-terminated prefix until interrupted",
		Long: `Watch a key, or with --prefix every key under a prefix that starts and ends
with '/'. The first line is CREATED with the revision the watch starts after;
then one line per PUT or DELETE (keys and values as Go string literals).
PROGRESS heartbeats (every event at or below a PROGRESS revision has been
printed) are shown with --progress, and always with --json. Runs until
interrupted (exit 0); exits 3 when the server cancels the watch (CANCELED,
with the reason) and 1 when the stream fails. --timeout bounds only opening
the watch.`,
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
			if err != nil {
				return err
			}
			defer w.Close()
			p := eventPrinter{json: g.json, progress: progress}
			p.print(w.CreatedEvent())
			for {
				ev, err := w.Recv()
				if err != nil {
					if ctx.Err() != nil {
						return nil // interrupted
					}
					if errors.Is(err, io.EOF) {
						return exitCode{code: exitError, msg: "server closed the watch stream"}
					}
					return err
				}
				p.print(ev)
				if ev.Type == pb.EventType_CANCELED {
					return exitCode{code: exitWatchCanceled, msg: "watch canceled by the server: " + ev.Reason}
				}
			}
		},
	}
	g = addClientFlags(cmd)
	cmd.Flags().StringVar(&prefix, "prefix", "", "watch every key under this prefix (must start and end with '/')")
	cmd.Flags().BoolVar(&prevKV, "prev-kv", false, "include each key's previous value")
	cmd.Flags().BoolVar(&progress, "progress", false, "also print PROGRESS heartbeats (always printed with --json)")
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
