package node

import (
	"fmt"
	"strings"

	pb "github.com/raftwatch/raftwatch/proto"

	"github.com/hashicorp/raft"
)

// LogEntry is one committed raft log entry, decoded.
type LogEntry struct {
	Index, Term uint64
	Type        string
	Chunk       *pb.Chunk // command entries only
}

// CommittedLog calls fn for each committed entry from index from on, with
// the oldest index this node still holds (older entries are compacted into
// a snapshot), and returns that oldest index.
func (n *Node) CommittedLog(from uint64, fn func(oldest uint64, e LogEntry) error) (uint64, error) {
	first, err := n.logStore.FirstIndex()
	if err != nil {
		return 0, err
	}
	if from < first {
		from = first
	}
	commit := n.raft.CommitIndex()
	for i := from; i <= commit && i != 0; i++ {
		var l raft.Log
		if err := n.logStore.GetLog(i, &l); err != nil {
			return first, fmt.Errorf("read log entry %d: %w", i, err)
		}
		e := LogEntry{Index: l.Index, Term: l.Term, Type: strings.TrimPrefix(strings.ToLower(l.Type.String()), "log")}
		if l.Type == raft.LogCommand {
			e.Chunk = new(pb.Chunk)
			if err := unmarshal(l.Data, e.Chunk); err != nil {
				return first, fmt.Errorf("decode log entry %d: %w", i, err)
			}
		}
		if err := fn(first, e); err != nil {
			return first, err
		}
	}
	return first, nil
}
