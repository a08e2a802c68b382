package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/raftwatch/raftwatch/proto"
)

// SnapshotInfo describes a snapshot streamed by Snapshot.
type SnapshotInfo struct {
	Endpoint string // the node that sent it
	Index    uint64 // the revision (applied index) it is at
	Term     uint64 // the node's raft term when it was taken
	Size     int64  // bytes of database
}

// Snapshot streams a consistent copy of one node's state machine (the first
// endpoint that answers) into w, calling begin with its description before
// writing the first byte. It checks the length and the SHA-256 the node
// sent; on a mismatch it returns an error (DATA_LOSS) after the bytes were
// written, so the caller must discard them. An endpoint that fails before
// begin is called is passed over for the next; once bytes were written, a
// broken stream is an ABORTED error and nothing is retried.
func (c *Client) Snapshot(ctx context.Context, w io.Writer, begin func(SnapshotInfo) error) (SnapshotInfo, error) {
	var info SnapshotInfo
	err := c.onAny(ctx, func(ctx context.Context, cc *grpc.ClientConn) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := pb.NewMaintenanceClient(cc).Snapshot(ctx, &pb.SnapshotRequest{})
		if err != nil {
			return err
		}
		first, err := stream.Recv()
		if err != nil {
			return err // nothing written yet: another endpoint may serve it
		}
		info = SnapshotInfo{Endpoint: cc.Target(), Index: first.AppliedIndex, Term: first.Term, Size: int64(first.Size)}
		if err := begin(info); err != nil {
			return &begunError{err}
		}
		if err := receiveSnapshot(stream, w, info); err != nil {
			return &begunError{err}
		}
		return nil
	})
	var be *begunError
	if errors.As(err, &be) {
		err = be.err
	}
	return info, err
}

// begunError is an error once begin was called: returned as it is, never
// retried on another endpoint (bytes may already be in w).
type begunError struct{ err error }

func (e *begunError) Error() string { return e.err.Error() }

// GRPCStatus makes onAny return the error rather than try another endpoint.
func (e *begunError) GRPCStatus() *status.Status { return status.New(codes.Aborted, e.err.Error()) }

func receiveSnapshot(stream pb.Maintenance_SnapshotClient, w io.Writer, info SnapshotInfo) error {
	sum := sha256.New()
	var got int64
	for {
		msg, err := stream.Recv()
		if err != nil {
			if err == io.EOF {
				err = errors.New("stream ended without a checksum")
			}
			return status.Errorf(codes.Aborted, "snapshot from %s broke after %d of %d bytes: %v", info.Endpoint, got, info.Size, err)
		}
		if msg.Sha256 != nil {
			if got != info.Size {
				return status.Errorf(codes.DataLoss, "snapshot from %s: received %d bytes, the node announced %d", info.Endpoint, got, info.Size)
			}
			if mine := sum.Sum(nil); !bytes.Equal(mine, msg.Sha256) {
				return status.Errorf(codes.DataLoss, "snapshot from %s: received data hashes to SHA-256 %s, the node sent %s",
					info.Endpoint, hex.EncodeToString(mine), hex.EncodeToString(msg.Sha256))
			}
			return nil
		}
		if got+int64(len(msg.Data)) > info.Size {
			return status.Errorf(codes.DataLoss, "snapshot from %s: more than the %d bytes announced", info.Endpoint, info.Size)
		}
		if _, err := w.Write(msg.Data); err != nil {
			return fmt.Errorf("write snapshot: %w", err)
		}
		sum.Write(msg.Data)
		got += int64(len(msg.Data))
	}
}
