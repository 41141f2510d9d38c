package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/lmittmann/tint"

	"github.com/batonhq/baton/internal/config"
)

// newLogger builds the process logger: colored text (tint) when format is
// "text", or "auto" and w is a terminal; JSON otherwise.
func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	terminal := isTerminal(w)
	if cfg.LogFormat == "text" || (cfg.LogFormat == "auto" && terminal) {
		return slog.New(tint.NewTextHandler(w, &tint.Options{Level: cfg.LogLevel, TimeFormat: time.TimeOnly, NoColor: !terminal}))
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: cfg.LogLevel}))
}

func isTerminal(w io.Writer) bool {
	if s, ok := w.(*syncWriter); ok {
		w = s.w
	}
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// redisLogger sends go-redis's own messages (pool dial failures, ...) to
// the process logger, so every line on stderr has the same format.
type redisLogger struct{ log *slog.Logger }

func (r redisLogger) Printf(_ context.Context, format string, v ...any) {
	r.log.Warn(fmt.Sprintf(format, v...), slog.String("component", "go-redis"))
}
