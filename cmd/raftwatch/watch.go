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

// eventJSON is one watch message printed with --json.
type eventJSON struct {
	Type      string  `json:"type"`
	Key       string  `json:"key,omitempty"`
	Value     string  `json:"value,omitempty"`
	PrevValue *string `json:"prev_value,omitempty"`
	Revision  uint64  `json:"revision"`
	Version   uint64  `json:"version,omitempty"`
	Reason    string  `json:"reason,omitempty"`
}

func newWatchCmd(g *globalFlags) *cobra.Command {
	var prefix string
	var prevKV bool
	cmd := &cobra.Command{
		Use:   "watch KEY | watch --prefix PREFIX",
		Short: "Print changes to a key or a '/'-terminated prefix until interrupted",
		Long: `Watch a key, or with --prefix every key under a prefix that starts and ends
with '/'. The first line is CREATED with the revision the watch starts after;
then one line per PUT or DELETE, and PROGRESS heartbeats (every event at or
below a PROGRESS revision has been printed). Runs until interrupted (exit 0);
exits 3 when the server cancels the watch (CANCELED, with the reason) and 1
when the stream fails.`,
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
			w, err := c.Watch(ctx, []byte(key), opts...)
			if err != nil {
				return err
			}
			defer w.Close()
			printEvent(g, w.CreatedEvent())
			for {
				ev, err := w.Recv()
				if err != nil {
					if ctx.Err() != nil {
						return nil // interrupted
					}
					if errors.Is(err, io.EOF) {
						return exitError{code: 1, msg: "server closed the watch stream"}
					}
					return err
				}
				printEvent(g, ev)
				if ev.Type == pb.EventType_CANCELED {
					return exitError{code: 3, msg: "watch canceled by the server: " + ev.Reason}
				}
			}
		},
	}
	cmd.Flags().StringVar(&prefix, "prefix", "", "watch every key under this prefix (must start and end with '/')")
	cmd.Flags().BoolVar(&prevKV, "prev-kv", false, "include each key's previous value")
	return cmd
}

func printEvent(g *globalFlags, ev *pb.WatchResponse) {
	if g.json {
		out := eventJSON{Type: ev.Type.String(), Key: string(ev.Key), Value: string(ev.Value),
			Revision: ev.Revision, Version: ev.Version, Reason: ev.Reason}
		if ev.PrevValue != nil {
			p := string(ev.PrevValue)
			out.PrevValue = &p
		}
		printJSON(out)
		return
	}
	switch ev.Type {
	case pb.EventType_CREATED:
		fmt.Printf("CREATED %s (events after revision %d)\n", ev.Key, ev.Revision)
	case pb.EventType_PUT:
		fmt.Printf("PUT %s = %s (revision %d, version %d)%s\n", ev.Key, ev.Value, ev.Revision, ev.Version, prevText(ev))
	case pb.EventType_DELETE:
		fmt.Printf("DELETE %s (revision %d)%s\n", ev.Key, ev.Revision, prevText(ev))
	case pb.EventType_PROGRESS:
		fmt.Printf("PROGRESS revision %d\n", ev.Revision)
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
	return fmt.Sprintf(" [previous: %s]", ev.PrevValue)
}
