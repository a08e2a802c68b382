package backup

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

func writeFile(t *testing.T, h Header, db []byte) ([]byte, []byte) {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, h)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(db); err != nil {
		t.Fatal(err)
	}
	sum, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), sum
}

func TestRoundTrip(t *testing.T) {
	db := bytes.Repeat([]byte("database "), 1000)
	h := Header{Index: 12345, Term: 7, Size: uint64(len(db))}
	file, sum := writeFile(t, h, db)
	if int64(len(file)) != h.FileSize() {
		t.Fatalf("file of %d bytes, want %d", len(file), h.FileSize())
	}
	r, err := NewReader(bytes.NewReader(file), int64(len(file)))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, db) || r.Header != h || !bytes.Equal(r.Sum(), sum) {
		t.Fatalf("read back: header %+v, %d bytes, err %v", r.Header, len(got), err)
	}
}

// TestEveryDamageIsRefused flips each byte of a file, and cuts it at every
// length, and finds each refused with ErrCorrupt.
func TestEveryDamageIsRefused(t *testing.T) {
	db := []byte("a small database of some bytes")
	file, _ := writeFile(t, Header{Index: 9, Term: 2, Size: uint64(len(db))}, db)
	for i := range file {
		bad := append([]byte(nil), file...)
		bad[i] ^= 1
		if _, _, err := Verify(bytes.NewReader(bad), int64(len(bad))); !errors.Is(err, ErrCorrupt) {
			t.Errorf("byte %d flipped: %v, want ErrCorrupt", i, err)
		}
	}
	for n := 0; n < len(file); n++ {
		if _, _, err := Verify(bytes.NewReader(file[:n]), int64(n)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("cut to %d bytes: %v, want ErrCorrupt", n, err)
		}
	}
	// A reader that ends before the length it was given (the file shrank).
	if _, _, err := Verify(bytes.NewReader(file[:len(file)-5]), int64(len(file))); !errors.Is(err, ErrCorrupt) {
		t.Errorf("file shorter than its stat: %v, want ErrCorrupt", err)
	}
	if _, _, err := Verify(bytes.NewReader(file), int64(len(file))); err != nil {
		t.Fatalf("intact file: %v", err)
	}
}

func TestWriterRefusesWrongLength(t *testing.T) {
	w, _ := NewWriter(io.Discard, Header{Size: 4})
	if _, err := w.Write([]byte("12345")); err == nil {
		t.Error("wrote more than announced")
	}
	w.Write([]byte("12"))
	if _, err := w.Close(); err == nil {
		t.Error("closed short of the announced size")
	}
}
