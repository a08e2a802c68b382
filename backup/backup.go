// Package backup is the format of a raftwatch snapshot file (raftwatch
// snapshot save / restore): a header naming the revision the copy is at,
// the state machine's bbolt database, and a SHA-256 trailer over both, so a
// file that was truncated or changed after it was written is refused
// before anything is made from it.
//
// Layout, integers big-endian:
//
//	magic   8 bytes  "RWSNAP\x00\x01"
//	index   8 bytes  the revision (applied raft index) of the copy
//	term    8 bytes  the source node's raft term when it was taken
//	size    8 bytes  length of the database that follows
//	db      size bytes
//	sha256 32 bytes  of everything above
package backup

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
)

// Magic starts every snapshot file; its last byte is the format version.
const Magic = "RWSNAP\x00\x01"

const (
	// HeaderSize is the length of the header before the database.
	HeaderSize = len(Magic) + 3*8
	// TrailerSize is the length of the checksum after it.
	TrailerSize = sha256.Size
)

// Header describes the database in a snapshot file.
type Header struct {
	Index uint64 // revision (applied raft index) of the copy
	Term  uint64 // the source node's raft term when the copy was taken
	Size  uint64 // bytes of database
}

// FileSize is the length of a complete file with this header.
func (h Header) FileSize() int64 { return int64(HeaderSize) + int64(h.Size) + TrailerSize }

func (h Header) encode() []byte {
	b := make([]byte, 0, HeaderSize)
	b = append(b, Magic...)
	b = binary.BigEndian.AppendUint64(b, h.Index)
	b = binary.BigEndian.AppendUint64(b, h.Term)
	return binary.BigEndian.AppendUint64(b, h.Size)
}

// ErrCorrupt is wrapped by every error about a file that is not a complete,
// intact snapshot file.
var ErrCorrupt = errors.New("snapshot file is corrupt")

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

// Writer writes a snapshot file: the header at once, then the database
// through Write, then the trailer at Close.
type Writer struct {
	w       io.Writer
	h       Header
	sum     hash.Hash
	written uint64
}

// NewWriter writes h's header to w and returns a Writer for the database.
func NewWriter(w io.Writer, h Header) (*Writer, error) {
	bw := &Writer{w: w, h: h, sum: sha256.New()}
	hdr := h.encode()
	bw.sum.Write(hdr)
	if _, err := w.Write(hdr); err != nil {
		return nil, fmt.Errorf("write snapshot header: %w", err)
	}
	return bw, nil
}

// Write writes database bytes; more than the header's size is an error.
func (w *Writer) Write(p []byte) (int, error) {
	if w.written+uint64(len(p)) > w.h.Size {
		return 0, fmt.Errorf("snapshot database is longer than the %d bytes announced", w.h.Size)
	}
	n, err := w.w.Write(p)
	w.sum.Write(p[:n])
	w.written += uint64(n)
	return n, err
}

// Close writes the trailer and returns the file's checksum. It fails if
// fewer bytes than announced were written.
func (w *Writer) Close() ([]byte, error) {
	if w.written != w.h.Size {
		return nil, fmt.Errorf("snapshot database ended after %d of the %d bytes announced", w.written, w.h.Size)
	}
	sum := w.sum.Sum(nil)
	if _, err := w.w.Write(sum); err != nil {
		return nil, fmt.Errorf("write snapshot checksum: %w", err)
	}
	return sum, nil
}

// Reader reads a snapshot file of known length: the header at once, then
// the database through Read, which returns io.EOF only after the trailer
// matched; a mismatch is an error wrapping ErrCorrupt instead.
type Reader struct {
	Header Header
	r      io.Reader
	sum    hash.Hash
	left   uint64
	done   bool
}

// NewReader reads the header of a file of fileSize bytes from r and checks
// that the length agrees with it.
func NewReader(r io.Reader, fileSize int64) (*Reader, error) {
	if fileSize < int64(HeaderSize+TrailerSize) {
		return nil, corrupt("%d bytes is shorter than a snapshot file's header and checksum (%d bytes): truncated or not a snapshot file",
			fileSize, HeaderSize+TrailerSize)
	}
	hdr := make([]byte, HeaderSize)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, fmt.Errorf("read snapshot header: %w", err)
	}
	if !bytes.Equal(hdr[:len(Magic)], []byte(Magic)) {
		return nil, corrupt("does not start with %q: not a raftwatch snapshot file (or one of another format version)", Magic)
	}
	h := Header{
		Index: binary.BigEndian.Uint64(hdr[len(Magic):]),
		Term:  binary.BigEndian.Uint64(hdr[len(Magic)+8:]),
		Size:  binary.BigEndian.Uint64(hdr[len(Magic)+16:]),
	}
	if h.Size > uint64(fileSize) || h.FileSize() != fileSize {
		return nil, corrupt("the file is %d bytes but its header announces a %d-byte database, so %d bytes in all: truncated or extended",
			fileSize, h.Size, h.FileSize())
	}
	rd := &Reader{Header: h, r: r, sum: sha256.New(), left: h.Size}
	rd.sum.Write(hdr)
	return rd, nil
}

// Read reads database bytes; at the end it checks the trailer.
func (r *Reader) Read(p []byte) (int, error) {
	if r.left == 0 {
		if err := r.finish(); err != nil {
			return 0, err
		}
		return 0, io.EOF
	}
	if uint64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.r.Read(p)
	r.sum.Write(p[:n])
	r.left -= uint64(n)
	if err == io.EOF && r.left > 0 {
		return n, corrupt("the database ends %d bytes early: truncated", r.left)
	}
	if err == io.EOF {
		err = nil
	}
	return n, err
}

func (r *Reader) finish() error {
	if r.done {
		return nil
	}
	want := make([]byte, TrailerSize)
	if _, err := io.ReadFull(r.r, want); err != nil {
		return corrupt("reading the checksum: %v: truncated", err)
	}
	if got := r.sum.Sum(nil); !bytes.Equal(got, want) {
		return corrupt("checksum mismatch: the file records SHA-256 %s but its contents hash to %s: the file was changed or damaged after it was written",
			hex.EncodeToString(want), hex.EncodeToString(got))
	}
	r.done = true
	return nil
}

// Verify reads the whole file of fileSize bytes from r and checks it,
// returning its header and checksum.
func Verify(r io.Reader, fileSize int64) (Header, []byte, error) {
	rd, err := NewReader(r, fileSize)
	if err != nil {
		return Header{}, nil, err
	}
	if _, err := io.Copy(io.Discard, rd); err != nil {
		return rd.Header, nil, err
	}
	return rd.Header, rd.Sum(), nil
}

// Sum is the file's checksum, once Read has returned io.EOF.
func (r *Reader) Sum() []byte {
	if !r.done {
		return nil
	}
	return r.sum.Sum(nil)
}
