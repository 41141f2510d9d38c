package daemon

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// OutageReminder is how often a Redis outage is logged again while it lasts.
const OutageReminder = 30 * time.Second

// OutageHandler is a slog.Handler that logs a Redis outage once instead of
// once per failed call: while Redis is unreachable, records at WARN or below
// whose error is a connection failure (refused, reset, timed out, ...) are
// held back and counted. The outage is logged when it begins ("redis:
// unreachable"), at most every OutageReminder while it lasts ("redis: still
// unreachable"), and when Redis answers again ("redis: reachable again"),
// which Run's watch loop detects with a PING every second. Other records
// pass through unchanged.
type OutageHandler struct {
	inner slog.Handler
	st    *outageState
}

type outageState struct {
	log *slog.Logger // the wrapped handler: the outage's own lines
	now func() time.Time

	mu         sync.Mutex
	down       bool
	since      time.Time // the outage began
	noted      time.Time // last line about it
	suppressed int       // records held back since the outage began
	lastErr    string
}

// NewOutageHandler wraps h.
func NewOutageHandler(h slog.Handler) *OutageHandler {
	return &OutageHandler{inner: h, st: &outageState{log: slog.New(h), now: time.Now}}
}

// Enabled reports whether the wrapped handler handles level.
func (h *OutageHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.inner.Enabled(ctx, level)
}

// Handle holds back a connection failure during an outage; anything else
// goes to the wrapped handler.
func (h *OutageHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level <= slog.LevelWarn {
		if cause, ok := connectionFailure(r); ok {
			h.st.failed(cause, true)
			return nil
		}
	}
	return h.inner.Handle(ctx, r)
}

// WithAttrs returns a handler with attrs that shares the outage state.
func (h *OutageHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &OutageHandler{inner: h.inner.WithAttrs(attrs), st: h.st}
}

// WithGroup returns a handler with the group that shares the outage state.
func (h *OutageHandler) WithGroup(name string) slog.Handler {
	return &OutageHandler{inner: h.inner.WithGroup(name), st: h.st}
}

// Failed records that Redis did not answer: it logs the outage's start, or
// a reminder if the last line about it is OutageReminder old.
func (h *OutageHandler) Failed(err error) { h.st.failed(err.Error(), false) }

// Answered records that Redis answered: it logs the outage's end, if one
// was going on.
func (h *OutageHandler) Answered() { h.st.answered() }

func (s *outageState) failed(cause string, heldBack bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.lastErr = cause
	if heldBack {
		s.suppressed++
	}
	switch {
	case !s.down:
		s.down, s.since, s.noted = true, now, now
		s.log.Warn("redis: unreachable", slog.String("error", cause),
			slog.String("note", "further connection errors are held back until Redis answers; a reminder every "+
				OutageReminder.String()))
	case now.Sub(s.noted) >= OutageReminder:
		s.noted = now
		s.log.Warn("redis: still unreachable", slog.String("error", cause),
			slog.String("down_for", now.Sub(s.since).Round(time.Second).String()),
			slog.Int("held_back_lines", s.suppressed))
	}
}

func (s *outageState) answered() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.down {
		return
	}
	s.log.Info("redis: reachable again", slog.String("down_for", s.now().Sub(s.since).Round(time.Millisecond).String()),
		slog.Int("held_back_lines", s.suppressed), slog.String("last_error", s.lastErr))
	s.down, s.suppressed, s.lastErr = false, 0, ""
}

// connectionSigns are in the text of errors that mean Redis could not be
// reached (go-redis's own pool messages included).
var connectionSigns = []string{
	"connection refused", "connection reset", "broken pipe", "i/o timeout", "no route to host",
	"network is unreachable", "failed to dial", "connection pool timeout", "use of closed network connection",
	"dial tcp", "LOADING ",
}

// connectionFailure reports whether a record is about Redis being out of
// reach, and the error text.
func connectionFailure(r slog.Record) (string, bool) {
	cause, found := "", false
	r.Attrs(func(a slog.Attr) bool {
		if a.Key != "error" {
			return true
		}
		v := a.Value.Resolve().Any()
		if err, ok := v.(error); ok {
			cause = err.Error()
			found = isConnectionError(err)
		} else {
			cause = a.Value.String()
			found = hasConnectionSign(cause)
		}
		return false
	})
	if !found && hasConnectionSign(r.Message) { // go-redis's own lines carry the error in the message
		cause, found = r.Message, true
	}
	return cause, found
}

func isConnectionError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, redis.ErrPoolTimeout) || hasConnectionSign(err.Error())
}

func hasConnectionSign(s string) bool {
	for _, sign := range connectionSigns {
		if strings.Contains(s, sign) {
			return true
		}
	}
	return false
}

// outageHandler returns the OutageHandler log writes through, wrapping log
// in a new one if it has none.
func outageHandler(log *slog.Logger) (*slog.Logger, *OutageHandler) {
	if h, ok := log.Handler().(*OutageHandler); ok {
		return log, h
	}
	h := NewOutageHandler(log.Handler())
	return slog.New(h), h
}

// watchRedis pings Redis every second until ctx ends, telling h whether it
// answered: the outage's start even when nothing else calls Redis, its
// reminders, and its end.
func watchRedis(ctx context.Context, rdb redis.UniversalClient, h *OutageHandler) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := rdb.Ping(pctx).Err()
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			h.Failed(err)
		default:
			h.Answered()
		}
	}
}
