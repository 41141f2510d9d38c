package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestOutageHandler: an outage is one line when it begins, one reminder per
// OutageReminder, one line when it ends; other records pass through.
func TestOutageHandler(t *testing.T) {
	var out bytes.Buffer
	h := NewOutageHandler(slog.NewTextHandler(&out, nil))
	clock := time.Unix(1_000_000, 0)
	h.st.now = func() time.Time { return clock }
	log := slog.New(h).With(slog.String("component", "coordinator"))
	refused := fmt.Errorf("baton: sweep: %w", errors.New("dial tcp 127.0.0.1:6379: connect: connection refused"))
	lines := func() []string {
		s := strings.TrimSpace(out.String())
		out.Reset()
		if s == "" {
			return nil
		}
		return strings.Split(s, "\n")
	}

	log.Info("before")
	for range 100 {
		log.Warn("baton: sweep", slog.Any("error", refused))
		log.Warn("redis: connection pool: failed to dial after 5 attempts: dial tcp 127.0.0.1:6379: connect: connection refused")
		clock = clock.Add(100 * time.Millisecond) // 10 s in all
	}
	log.Warn("baton: something else", slog.String("error", "ERR unknown command"))
	log.Error("baton: lost", slog.Any("error", refused))
	got := lines()
	if len(got) != 4 || !strings.Contains(got[0], "msg=before") ||
		!strings.Contains(got[1], `msg="redis: unreachable"`) || !strings.Contains(got[1], "connection refused") ||
		!strings.Contains(got[2], "something else") || !strings.Contains(got[3], "level=ERROR") {
		t.Fatalf("first 10 s of an outage: %d lines:\n%s", len(got), strings.Join(got, "\n"))
	}

	clock = clock.Add(OutageReminder)
	h.Failed(refused) // the watch loop's failed PING
	h.Failed(refused)
	log.Warn("baton: sweep", slog.Any("error", refused))
	got = lines()
	if len(got) != 1 || !strings.Contains(got[0], `msg="redis: still unreachable"`) || !strings.Contains(got[0], "down_for=40s") ||
		!strings.Contains(got[0], "held_back_lines=200") {
		t.Fatalf("after %s: %d lines:\n%s", OutageReminder, len(got), strings.Join(got, "\n"))
	}

	h.Answered()
	h.Answered()
	got = lines()
	if len(got) != 1 || !strings.Contains(got[0], `msg="redis: reachable again"`) || !strings.Contains(got[0], "held_back_lines=201") {
		t.Fatalf("end: %d lines:\n%s", len(got), strings.Join(got, "\n"))
	}
	log.Warn("baton: sweep", slog.Any("error", refused)) // a new outage
	if got = lines(); len(got) != 1 || !strings.Contains(got[0], `msg="redis: unreachable"`) {
		t.Fatalf("second outage: %v", got)
	}
	if !h.Enabled(context.Background(), slog.LevelInfo) || h.Enabled(context.Background(), slog.LevelDebug) {
		t.Fatal("Enabled does not follow the wrapped handler")
	}
}
