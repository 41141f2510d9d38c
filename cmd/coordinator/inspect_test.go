package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/limits"
)

func TestExecutionsCancelAndTop(t *testing.T) {
	mr := miniredis.RunT(t)
	env := []string{"BATON_REDIS_URL=redis://" + mr.Addr()}
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	c, err := coordinator.New(rdb, coordinator.Options{SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const a = "core.http"
	if err := c.SetConcurrencyLimit(ctx, limits.Action(a), 1); err != nil {
		t.Fatal(err)
	}
	if _, err := c.EnqueueAndWait(ctx, a, "running-1"); err != nil {
		t.Fatal(err)
	}
	ended := map[string]chan error{}
	for i := range 3 {
		id := fmt.Sprintf("w%d", i)
		ended[id] = make(chan error, 1)
		go func() { _, err := c.EnqueueAndWait(ctx, a, id); ended[id] <- err }()
		waitUntil(t, id+" queued", func() bool {
			st, err := c.QueueStats(ctx, a)
			return err == nil && st.QueueLength == int64(i+1)
		})
	}

	expect := func(want int, args ...string) (string, string) {
		t.Helper()
		code, out, errOut := runCLI(t, env, args...)
		if code != want {
			t.Fatalf("%v: exit %d, want %d; stdout %q, stderr %q", args, code, want, out, errOut)
		}
		return out, errOut
	}

	out, _ := expect(0, "executions", a)
	t.Logf("executions:\n%s", out)
	if !regexp.MustCompile(`(?s)core.http: 3 waiting\nPOSITION +EXECUTION +OWNER.*\n0 +w0 +` + c.Owner() + ` .*\n1 +w1 .*\n2 +w2 `).MatchString(out) {
		t.Fatalf("executions:\n%s", out)
	}
	out, _ = expect(0, "executions", a, "--offset", "1", "--limit", "1")
	// Match whole columns: the owner ID is random and may contain "w0".
	if !regexp.MustCompile(`\n1 +w1 +`).MatchString(out) || regexp.MustCompile(`\n\d+ +w[02] `).MatchString(out) || !strings.Contains(out, "(more: --offset 2)") {
		t.Fatalf("executions --offset 1 --limit 1:\n%s", out)
	}
	out, _ = expect(0, "executions", a, "--json")
	var page struct {
		Total      int64
		Executions []struct {
			Position    int64
			ExecutionID string `json:"execution_id"`
		}
	}
	if err := json.Unmarshal([]byte(out), &page); err != nil || page.Total != 3 || len(page.Executions) != 3 || page.Executions[2].ExecutionID != "w2" {
		t.Fatalf("executions --json: %v %+v\n%s", err, page, out)
	}

	out, _ = expect(0, "top", "--once")
	t.Logf("top --once:\n%s", out)
	if strings.Contains(out, clearScreen) || !regexp.MustCompile(`\ncore.http +3 +1 +1 +action:core.http +\S+ +- +1 +0 +0`).MatchString(out) {
		t.Fatalf("top --once:\n%q", out)
	}
	out, _ = expect(0, "top", "-n", "2", "--interval", "100ms")
	frames := strings.Split(out, clearScreen)
	if len(frames) != 3 || frames[0] != "" {
		t.Fatalf("top -n 2: want 2 frames each after a clear, got %q", out)
	}
	if !regexp.MustCompile(`\ncore.http +3 +1 +1 +action:core.http +\S+ +0\.0 +1 `).MatchString(frames[2]) {
		t.Fatalf("top's second frame lacks a rate:\n%s", frames[2])
	}

	out, _ = expect(0, "cancel", a, "w1")
	if out != "core.http w1 canceled\n" {
		t.Fatalf("cancel: %q", out)
	}
	if _, errOut := expect(exitFailure, "cancel", a, "w1"); !strings.Contains(errOut, "not waiting") {
		t.Fatalf("second cancel: %q", errOut)
	}
	if out, _ := expect(0, "executions", a); !strings.Contains(out, "2 waiting") || regexp.MustCompile(`\n\d+ +w1 `).MatchString(out) {
		t.Fatalf("executions after cancel:\n%s", out)
	}
	// A process hears of a cancel once its older waiters of the action are
	// done (it waits on its oldest waiter's key only): cancel the head too.
	expect(0, "cancel", a, "w0")
	for _, id := range []string{"w0", "w1"} {
		select {
		case err := <-ended[id]:
			if !errors.Is(err, coordinator.ErrCanceled) {
				t.Fatalf("%s: %v, want ErrCanceled", id, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s still waiting after cancel", id)
		}
	}

	for _, args := range [][]string{
		{"cancel", a},
		{"cancel", "nodot", "x"},
		{"executions"},
		{"executions", a, "--limit", "0"},
		{"executions", a, "--offset", "-1"},
		{"top", "extra"},
		{"top", "--interval", "1ms"},
		{"top", "-n", "-1"},
	} {
		// The usage (for a wrong argument count) comes first, the error last.
		_, errOut := expect(exitUsage, args...)
		lines := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n")
		if last := lines[len(lines)-1]; !strings.HasPrefix(last, "coordinator: ") || strings.Count(errOut, "coordinator: ") != 1 {
			t.Errorf("%v: stderr %q, want one message, last", args, errOut)
		}
	}
	if _, errOut := expect(exitUsage, "executions", a, "--limit", "5000"); !strings.Contains(errOut, "--limit 5000: want 1 to 1000") {
		t.Errorf("--limit 5000: %q", errOut)
	}
	if code, _, errOut := runCLI(t, nil, "top"); code != exitUsage || !strings.Contains(errOut, "no Redis configured") {
		t.Fatalf("top without Redis: %d %q", code, errOut)
	}
}

// TestTopStopsOnCtrlC: top redraws until its context (SIGINT in main) ends.
func TestTopStopsOnCtrlC(t *testing.T) {
	mr := miniredis.RunT(t)
	env := []string{"BATON_REDIS_URL=redis://" + mr.Addr()}
	ctx, cancel := context.WithCancel(context.Background())
	w := &frameCounter{frames: make(chan struct{}, 100)}
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"top", "--interval", "100ms"}, env, w, &strings.Builder{}) }()
	for range 2 {
		select {
		case <-w.frames:
		case <-time.After(10 * time.Second):
			t.Fatal("top drew no frame within 10 s")
		}
	}
	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("top after Ctrl-C: exit %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("top did not stop within 10 s of Ctrl-C")
	}
}

// frameCounter signals every screen clear written to it.
type frameCounter struct{ frames chan struct{} }

func (f *frameCounter) Write(p []byte) (int, error) {
	if strings.Contains(string(p), clearScreen) {
		select {
		case f.frames <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestInspectCommandsRedisRefuses: executions, cancel and top warn about a
// mistyped BATON_* variable, and a Redis that refuses them (here: a password
// is required) ends them with Redis's words and exit 1, not a usage error.
func TestInspectCommandsRedisRefuses(t *testing.T) {
	mr := miniredis.RunT(t)
	mr.RequireAuth("s3cret")
	env := []string{"BATON_REDIS_URL=redis://" + mr.Addr(), "BATON_LOG_LEVL=debug"}
	for _, args := range [][]string{{"executions", "core.http"}, {"cancel", "core.http", "x"}, {"top", "--once"}} {
		code, _, errOut := runCLI(t, env, args...)
		if code != exitFailure || !strings.Contains(errOut, "NOAUTH") ||
			!strings.Contains(errOut, "coordinator: warning: unknown environment variable BATON_LOG_LEVL is ignored") {
			t.Errorf("%v: exit %d, stderr %q: want 1, the warning and Redis's NOAUTH", args, code, errOut)
		}
	}
}
