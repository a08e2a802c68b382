package node

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

func TestRaftLoggerFormatsHclogWrappers(t *testing.T) {
	var buf bytes.Buffer
	l := newRaftLogger(slog.New(slog.NewTextHandler(&buf, nil)))
	type server struct{ ID, Address string }
	l.With("servers", hclog.Fmt("%+v", []server{{"n1", "127.0.0.1:7201"}})).
		Info("initial configuration", "index", 1, "flags", hclog.Hex(255), "mode", hclog.Octal(8),
			"bits", hclog.Binary(5), "name", hclog.Quote("a b"))
	got := buf.String()
	for _, want := range []string{
		`servers="[{ID:n1 Address:127.0.0.1:7201}]"`, "flags=0xff", "mode=010", "bits=0b101", `name="\"a b\""`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("log line lacks %s:\n%s", want, got)
		}
	}
	if strings.Contains(got, "%+v") {
		t.Errorf("a format verb was printed unformatted:\n%s", got)
	}
}
