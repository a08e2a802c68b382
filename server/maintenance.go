package server

import (
	"crypto/sha256"
	"io"
	"log/slog"

	"github.com/raftwatch/raftwatch/node"
	pb "github.com/raftwatch/raftwatch/proto"
)

// snapshotChunkSize is the data carried by one SnapshotChunk message.
const snapshotChunkSize = 256 << 10

// maintenanceServer implements the Maintenance service.
type maintenanceServer struct {
	pb.UnimplementedMaintenanceServer
	node *node.Node
	log  *slog.Logger
}

// Snapshot implements Maintenance.Snapshot: a header message, the state
// machine's database in chunks, and its SHA-256.
//
// With roles enforced it is for admins only, refused before any byte is
// read (methodRules in auth.go).
func (m *maintenanceServer) Snapshot(_ *pb.SnapshotRequest, stream pb.Maintenance_SnapshotServer) error {
	sum := sha256.New()
	w := &chunkWriter{send: stream.Send, buf: make([]byte, 0, snapshotChunkSize)}
	var info node.BackupInfo
	err := m.node.Backup(io.MultiWriter(sum, w), func(i node.BackupInfo) error {
		info = i
		return stream.Send(&pb.SnapshotChunk{AppliedIndex: i.Index, Term: i.Term, Size: uint64(i.Size)})
	})
	if err == nil {
		err = w.flush()
	}
	if err == nil {
		err = stream.Send(&pb.SnapshotChunk{Sha256: sum.Sum(nil)})
	}
	if err != nil {
		m.log.Warn("snapshot stream failed", "applied_index", info.Index, "err", err)
		return toStatus(err)
	}
	m.log.Info("snapshot streamed", "applied_index", info.Index, "bytes", info.Size)
	return nil
}

// chunkWriter sends what is written to it in messages of up to
// snapshotChunkSize bytes.
type chunkWriter struct {
	send func(*pb.SnapshotChunk) error
	buf  []byte
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), cap(w.buf)-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		p = p[k:]
		if len(w.buf) == cap(w.buf) {
			if err := w.flush(); err != nil {
				return n - len(p), err
			}
		}
	}
	return n, nil
}

func (w *chunkWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	// The message owns its bytes until sent; Send has copied them on return.
	err := w.send(&pb.SnapshotChunk{Data: w.buf})
	w.buf = w.buf[:0]
	return err
}
