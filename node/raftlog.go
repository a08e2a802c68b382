package node

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strconv"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// raftLogger routes hashicorp/raft's hclog output into log/slog, so a node
// writes one structured log. Raft's DEBUG chatter is kept at slog Debug.
type raftLogger struct {
	l     *slog.Logger
	name  string
	args  []interface{}
	level hclog.Level
}

func newRaftLogger(l *slog.Logger) hclog.Logger {
	return &raftLogger{l: l.With("component", "raft"), name: "raft", level: hclog.Info}
}

var _ hclog.Logger = (*raftLogger)(nil)

func toSlog(level hclog.Level) slog.Level {
	switch level {
	case hclog.Trace, hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

func (r *raftLogger) Log(level hclog.Level, msg string, args ...interface{}) {
	if level < r.level {
		return
	}
	lvl := toSlog(level)
	ctx := context.Background()
	if !r.l.Enabled(ctx, lvl) {
		return
	}
	all := append(append([]interface{}{}, r.args...), args...)
	for i, a := range all {
		all[i] = formatArg(a)
	}
	r.l.Log(ctx, lvl, msg, all...)
}

// formatArg renders hclog's formatting wrappers the way hclog would; slog
// would print hclog.Fmt("%+v", servers) as the slice "[%+v [...]]".
func formatArg(a interface{}) interface{} {
	switch v := a.(type) {
	case hclog.Format:
		if len(v) == 0 {
			return ""
		}
		if f, ok := v[0].(string); ok {
			return fmt.Sprintf(f, v[1:]...)
		}
		return fmt.Sprint(v...)
	case hclog.Hex:
		return "0x" + strconv.FormatInt(int64(v), 16)
	case hclog.Octal:
		return "0" + strconv.FormatInt(int64(v), 8)
	case hclog.Binary:
		return "0b" + strconv.FormatInt(int64(v), 2)
	case hclog.Quote:
		return strconv.Quote(string(v))
	}
	return a
}

func (r *raftLogger) Trace(msg string, args ...interface{}) { r.Log(hclog.Trace, msg, args...) }
func (r *raftLogger) Debug(msg string, args ...interface{}) { r.Log(hclog.Debug, msg, args...) }
func (r *raftLogger) Info(msg string, args ...interface{})  { r.Log(hclog.Info, msg, args...) }
func (r *raftLogger) Warn(msg string, args ...interface{})  { r.Log(hclog.Warn, msg, args...) }
func (r *raftLogger) Error(msg string, args ...interface{}) { r.Log(hclog.Error, msg, args...) }
func (r *raftLogger) IsTrace() bool                         { return r.level <= hclog.Trace }
func (r *raftLogger) IsDebug() bool                         { return r.level <= hclog.Debug }
func (r *raftLogger) IsInfo() bool                          { return r.level <= hclog.Info }
func (r *raftLogger) IsWarn() bool                          { return r.level <= hclog.Warn }
func (r *raftLogger) IsError() bool                         { return r.level <= hclog.Error }
func (r *raftLogger) ImpliedArgs() []interface{}            { return r.args }
func (r *raftLogger) Name() string                          { return r.name }
func (r *raftLogger) SetLevel(level hclog.Level)            { r.level = level }
func (r *raftLogger) GetLevel() hclog.Level                 { return r.level }

func (r *raftLogger) With(args ...interface{}) hclog.Logger {
	c := *r
	c.args = append(append([]interface{}{}, r.args...), args...)
	return &c
}

func (r *raftLogger) Named(name string) hclog.Logger {
	c := *r
	c.name = r.name + "." + name
	c.l = r.l.With("subsystem", c.name)
	return &c
}

func (r *raftLogger) ResetNamed(name string) hclog.Logger {
	c := *r
	c.name = name
	c.l = r.l.With("subsystem", name)
	return &c
}

func (r *raftLogger) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(r.StandardWriter(opts), "", 0)
}

func (r *raftLogger) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		r.Info(strings.TrimSpace(string(p)))
		return len(p), nil
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
