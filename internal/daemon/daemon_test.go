package daemon_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/daemon"
	"github.com/batonhq/baton/internal/redistest"
	"github.com/batonhq/baton/limits"
)

// records is a slog.Handler that keeps every record's message and attributes.
type records struct {
	mu    *sync.Mutex
	lines *[]map[string]any
	attrs []slog.Attr
}

func newRecords() records { return records{mu: &sync.Mutex{}, lines: &[]map[string]any{}} }

func (r records) Enabled(context.Context, slog.Level) bool { return true }
func (r records) WithGroup(string) slog.Handler            { return r }
func (r records) WithAttrs(as []slog.Attr) slog.Handler {
	r.attrs = append(append([]slog.Attr{}, r.attrs...), as...)
	return r
}

func (r records) Handle(_ context.Context, rec slog.Record) error {
	m := map[string]any{"msg": rec.Message, "level": rec.Level.String()}
	for _, a := range r.attrs {
		m[a.Key] = a.Value.Any()
	}
	rec.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value.Any(); return true })
	r.mu.Lock()
	*r.lines = append(*r.lines, m)
	r.mu.Unlock()
	return nil
}

// wait returns the first record with message msg, waiting up to 20 s.
func (r records) wait(t *testing.T, msg string) map[string]any {
	t.Helper()
	for range 1000 {
		r.mu.Lock()
		for _, l := range *r.lines {
			if l["msg"] == msg {
				r.mu.Unlock()
				return l
			}
		}
		r.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no log %q within 20s", msg)
	return nil
}

func (r records) first() map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	return (*r.lines)[0]
}

type running struct {
	cancel context.CancelFunc
	done   chan error
	logs   records
	addr   string
}

func start(t *testing.T, cfg config.Config) *running {
	t.Helper()
	cfg.HTTPAddr = "127.0.0.1:0"
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1), logs: newRecords()}
	go func() { r.done <- daemon.Run(ctx, cfg, slog.New(r.logs), "test") }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(20 * time.Second):
			t.Error("daemon did not stop")
		}
	})
	r.addr = r.logs.wait(t, "http: listening")["http_addr"].(string)
	return r
}

func (r *running) status(t *testing.T, path string) int {
	t.Helper()
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Get("http://" + r.addr + path)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return within 20s of cancel")
	}
	r.done <- nil // for the cleanup
}

func TestEmbeddedRunAndShutdown(t *testing.T) {
	r := start(t, config.Defaults())
	if first := r.logs.first(); first["msg"] != "embedded redis: listening" || first["redis_addr"] == "" {
		t.Fatalf("first log: %v", first)
	}
	r.logs.wait(t, daemon.EmbeddedWarning)
	r.logs.wait(t, "ready: listening for completion events")
	for path, want := range map[string]int{"/readyz": 200, "/": 200, "/ui/app.js": 200, "/metrics": 200, "/api/v1/actions": 200, "/nothing": 404} {
		if got := r.status(t, path); got != want {
			t.Fatalf("%s: %d, want %d", path, got, want)
		}
	}
	r.stop(t)
	r.logs.wait(t, "stopped")
}

func TestInitialPoliciesKeepRuntimeChanges(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	c, err := coordinator.New(rdb, coordinator.Options{SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if err := c.SetConcurrencyLimit(ctx, limits.Action("core.http"), 7); err != nil {
		t.Fatal(err)
	}
	runtimeRate := limits.Rate{Limit: 1, Per: time.Second}
	if err := c.SetRateLimit(ctx, limits.Pack("slack"), runtimeRate); err != nil {
		t.Fatal(err)
	}

	cfg := config.Defaults()
	cfg.Redis.Address = mr.Addr()
	five, two := 5, 2
	rate := limits.Rate{Limit: 100, Per: time.Minute, Burst: 10}
	quota := limits.Quota{Limit: 10000, Window: limits.Day}
	cfg.Policies = []config.Policy{{Scope: limits.Global(), MaxConcurrent: &five}, {Scope: limits.Action("core.http"), MaxConcurrent: &two},
		// The rate set at run time is kept; the quota, a kind the scope does not set, is applied.
		{Scope: limits.Pack("slack"), Rate: &rate, Quota: &quota}}
	r := start(t, cfg)
	r.logs.wait(t, "ready: listening for completion events")
	p, err := c.Policies(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p.Limits[limits.Global()] != 5 || p.Limits[limits.Action("core.http")] != 7 {
		t.Fatalf("policies: %v", p.Limits)
	}
	if p.Rates[limits.Pack("slack")] != runtimeRate || p.Quotas[limits.Pack("slack")] != quota || len(p.Rates) != 1 || len(p.Quotas) != 1 {
		t.Fatalf("rates %v, quotas %v: want the run-time rate kept and the configured quota set", p.Rates, p.Quotas)
	}
	r.logs.wait(t, "policy: keeping the rate set at run time")
	r.stop(t)
}

// TestStartsBeforeRedis: the daemon serves /healthz and a 503 /readyz until
// Redis comes up, then finishes starting.
func TestStartsBeforeRedis(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	cfg := config.Defaults()
	cfg.Redis.Address = addr
	r := start(t, cfg)
	r.logs.wait(t, "redis: unreachable")
	if got := r.status(t, "/healthz"); got != 200 {
		t.Fatalf("/healthz: %d", got)
	}
	if got := r.status(t, "/readyz"); got != 503 {
		t.Fatalf("/readyz before Redis: %d", got)
	}
	// The port was free when picked; an outgoing connection may hold it as
	// its ephemeral port for a moment, so retry before failing.
	mr := miniredis.NewMiniRedis()
	for i := 0; ; i++ {
		err := mr.StartAddr(addr)
		if err == nil {
			break
		}
		if i == 50 {
			t.Fatalf("port %s stayed taken for 5s after it was picked: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	defer mr.Close()
	r.logs.wait(t, "ready: listening for completion events")
	// go-redis keeps returning its last dial error for a moment after
	// repeated failures, so readiness may lag a little behind.
	for i := 0; r.status(t, "/readyz") != 200; i++ {
		if i == 100 {
			t.Fatal("/readyz not 200 within 10s of Redis coming up")
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.stop(t)
}

// TestRefusedAfterStartingBeforeRedis: a daemon that started before Redis
// stops with Redis's own message when Redis comes up and refuses it, instead
// of retrying for ever.
func TestRefusedAfterStartingBeforeRedis(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg := config.Defaults()
	cfg.Redis.Address = addr
	cfg.Redis.Password = "wrong"
	cfg.HTTPAddr = "127.0.0.1:0"
	logs := newRecords()
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { done <- daemon.Run(ctx, cfg, slog.New(logs), "test") }()
	logs.wait(t, "redis: unreachable")

	mr := miniredis.NewMiniRedis()
	mr.RequireAuth("s3cret")
	for i := 0; ; i++ {
		if err := mr.StartAddr(addr); err == nil {
			break
		} else if i == 50 {
			t.Fatalf("port %s stayed taken for 5s after it was picked: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	defer mr.Close()
	select {
	case err := <-done:
		if err == nil || !daemon.PermanentRedisError(err) || !strings.Contains(err.Error(), "WRONGPASS") {
			t.Fatalf("Run: %v, want Redis's WRONGPASS", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run still retrying 30s after Redis refused it")
	}
}

// TestPermanentRedisError: only replies that retrying cannot fix count.
func TestPermanentRedisError(t *testing.T) {
	for _, err := range []error{errors.New("dial tcp: connection refused"), context.DeadlineExceeded, redis.Nil, nil} {
		if daemon.PermanentRedisError(err) {
			t.Errorf("PermanentRedisError(%v) = true", err)
		}
	}
}

// TestRedisOutageLoggedOnce: while a real Redis is down the daemon logs the
// outage once (its loops, go-redis's pool and failing requests are held
// back), and logs its end once when Redis is back.
func TestRedisOutageLoggedOnce(t *testing.T) {
	srv := redistest.Start(t)
	cfg := config.Defaults()
	cfg.Redis.Address = srv.Addr
	r := start(t, cfg)
	r.logs.wait(t, "ready: listening for completion events")

	srv.Stop()
	r.logs.wait(t, "redis: unreachable")
	for range 5 { // each failed request would have logged a WARN line
		if got := r.status(t, "/readyz"); got != 503 {
			t.Fatalf("/readyz with Redis down: %d", got)
		}
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	back := r.logs.wait(t, "redis: reachable again")
	if n, _ := back["held_back_lines"].(int64); n < 5 {
		t.Errorf("reachable again: %v; want at least the 5 failed requests held back", back)
	}
	r.logs.mu.Lock()
	var warns []map[string]any
	for _, l := range *r.logs.lines {
		if l["level"] == "WARN" && l["msg"] != daemon.EmbeddedWarning {
			warns = append(warns, l)
		}
	}
	r.logs.mu.Unlock()
	if len(warns) != 1 || warns[0]["msg"] != "redis: unreachable" {
		t.Fatalf("%d WARN lines, want only \"redis: unreachable\":\n%v", len(warns), warns)
	}
	r.stop(t)
}

// TestCompletionEventsFreeSlotsAndCount: the daemon's listener reads the
// completion stream of its key prefix, frees the slot and counts the
// outcome in /metrics.
func TestCompletionEventsFreeSlotsAndCount(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	cfg := config.Defaults()
	cfg.Redis.Address = mr.Addr()
	cfg.KeyPrefix = "custom"
	r := start(t, cfg)
	if got := r.logs.wait(t, "ready: listening for completion events")["stream"]; got != "custom:events:completed" {
		t.Fatalf("ready log names stream %v", got)
	}
	c, err := coordinator.New(rdb, coordinator.Options{Prefix: "custom", SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.EnqueueAndWait(ctx, "core.http", "e1"); err != nil {
		t.Fatal(err)
	}
	if err := coordinator.PublishCompletionWithPrefix(ctx, rdb, "custom", "core.http", "e1", "succeeded"); err != nil {
		t.Fatal(err)
	}
	if err := coordinator.PublishCompletionWithPrefix(ctx, rdb, "custom", "core.http", "e1", "succeeded"); err != nil {
		t.Fatal(err)
	}
	want := []string{`baton_completion_events_total{outcome="released"} 1`, `baton_completion_events_total{outcome="not_held"} 1`}
	var body string
	for i := 0; ; i++ {
		body = r.getOK(t, "/metrics")
		if strings.Contains(body, want[0]) && strings.Contains(body, want[1]) {
			break
		}
		if i == 200 {
			t.Fatalf("after 20s, /metrics lacks %q:\n%s", want, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	st, err := c.QueueStats(ctx, "core.http")
	if err != nil || st.TotalCompleted != 1 || st.ActiveCount != 0 {
		t.Fatalf("stats: %+v %v", st, err)
	}
	r.stop(t)
}

// getOK returns the body of a GET on the running daemon, which must
// answer 200.
func (r *running) getOK(t *testing.T, path string) string {
	t.Helper()
	code, body := r.get(t, path)
	if code != 200 {
		t.Fatalf("GET %s: %d %s", path, code, body)
	}
	return body
}

// TestShutdownEndsLongPolls: an acquire call waiting on a paused action
// answers at once when the daemon shuts down (202: the client calls again,
// elsewhere), so a long poll never holds the shutdown up to its wait.
func TestShutdownEndsLongPolls(t *testing.T) {
	cfg := config.Defaults()
	cfg.ShutdownTimeout = 20 * time.Second
	r := start(t, cfg)
	r.logs.wait(t, "ready: listening for completion events")
	client := &http.Client{Timeout: time.Minute}
	req, _ := http.NewRequest("PUT", "http://"+r.addr+"/api/v1/policies/action:core.http", strings.NewReader(`{"max_concurrent": 0}`))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	answered := make(chan int, 1)
	go func() {
		resp, err := client.Post("http://"+r.addr+"/api/v1/actions/core.http/executions/e1/acquire", "application/json",
			strings.NewReader(`{"wait": "50s"}`))
		if err != nil {
			answered <- 0
			return
		}
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	redistest.Eventually(t, 5*time.Second, "e1 waiting", func() bool {
		code, body := r.get(t, "/api/v1/actions/core.http/executions/e1")
		return code == 200 && strings.Contains(body, `"waiting"`)
	})
	stopped := time.Now()
	r.stop(t)
	select {
	case code := <-answered:
		if code != http.StatusAccepted {
			t.Fatalf("the waiting acquire answered %d at shutdown, want 202", code)
		}
	case <-time.After(redistest.SlowFloor):
		t.Fatal("the waiting acquire did not answer at shutdown")
	}
	if took := time.Since(stopped); took > 20*time.Second {
		t.Fatalf("shutdown with a long poll in flight took %s", took)
	}
}
