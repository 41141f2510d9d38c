package daemon_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/internal/redistest"
	"github.com/batonhq/baton/limits"
	"github.com/batonhq/baton/scripts"
)

// aclLine is the ACL SETUSER line of docs/security.md.
func aclLine(t *testing.T) []string {
	return redistest.DocsACLLine(t, filepath.Join("..", "..", "docs", "security.md"))
}

// aclLog returns the refusals ACL LOG holds, one line each.
func aclLog(ctx context.Context, t *testing.T, admin *redis.Client) []string {
	t.Helper()
	entries, err := admin.Do(ctx, "ACL", "LOG").Slice()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, fmt.Sprint(e))
	}
	return out
}

// TestACLUserOfTheDocs creates exactly the user docs/security.md gives and
// runs the library and the daemon (HTTP API, metrics, sweeper, completion
// listener, shutdown) with it. Any command or key the user may not use is
// recorded by ACL LOG, which must stay empty; and every command the line
// allows must have run (INFO commandstats), so the line stays minimal.
func TestACLUserOfTheDocs(t *testing.T) {
	srv := redistest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer admin.Close()
	line := createACLUser(ctx, t, []*redis.Client{admin}, "baton", nil)
	user := line[2]

	// The detector works: the user is refused what Baton must not need,
	// and ACL LOG says so.
	as := redis.NewClient(&redis.Options{Addr: srv.Addr, Username: user, Password: aclPassword})
	defer as.Close()
	for _, cmd := range [][]any{{"KEYS", "*"}, {"FLUSHDB"}, {"CONFIG", "GET", "maxmemory"}, {"GET", "other:key"},
		{"SCAN", "0"}, {"INFO"}} {
		if err := as.Do(ctx, cmd...).Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
			t.Fatalf("%v as %s: %v, want NOPERM", cmd, user, err)
		}
	}
	if len(aclLog(ctx, t, admin)) == 0 {
		t.Fatal("ACL LOG recorded none of the refusals")
	}
	if err := admin.Do(ctx, "ACL", "LOG", "RESET").Err(); err != nil {
		t.Fatal(err)
	}
	aclWorkload(ctx, t, []*redis.Client{admin}, line, "BATON_REDIS_ADDRESS="+srv.Addr)
}

// TestACLUserOnCluster: the same user, with the doc's Cluster addition and
// the test's key prefix, created on every node of the shared cluster, runs
// the same workload through a cluster client.
func TestACLUserOnCluster(t *testing.T) {
	cl := redistest.SharedCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var admins []*redis.Client
	for _, addr := range cl.Seeds() {
		admin := redis.NewClient(&redis.Options{Addr: addr})
		defer admin.Close()
		admins = append(admins, admin)
	}
	prefix := redistest.Prefix(t)
	line := createACLUser(ctx, t, admins, prefix, []string{"+cluster|slots", "+command"})
	for _, admin := range admins {
		if err := admin.Do(ctx, "ACL", "LOG", "RESET").Err(); err != nil {
			t.Fatal(err)
		}
	}
	aclWorkload(ctx, t, admins, line, "BATON_REDIS_CLUSTER_ADDRESSES="+strings.Join(cl.Seeds(), ","),
		"BATON_KEY_PREFIX="+prefix)
}

const aclPassword = "s3cret-for-the-test"

// createACLUser runs the doc's ACL SETUSER line on every admin connection,
// with the test's password, prefix and extra rules, and returns the line
// as run. Redis 7.2 added CLIENT SETINFO, which go-redis sends on connect:
// the docs tell 7.2 users to add +client|setinfo, and so does this.
func createACLUser(ctx context.Context, t *testing.T, admins []*redis.Client, prefix string, extra []string) []string {
	t.Helper()
	var line []string
	for _, f := range aclLine(t) {
		switch f {
		case ">CHANGE-ME":
			f = ">" + aclPassword
		case "~baton:*":
			f = "~" + prefix + ":*"
		}
		line = append(line, f)
	}
	line = append(line, extra...)
	if info, err := admins[0].Do(ctx, "COMMAND", "INFO", "client|setinfo").Slice(); err == nil && len(info) == 1 && info[0] != nil {
		line = append(line, "+client|setinfo")
	}
	args := make([]any, len(line))
	for i, f := range line {
		args[i] = f
	}
	for _, admin := range admins {
		if err := admin.Do(ctx, args...).Err(); err != nil {
			t.Fatalf("%s on %s: %v", strings.Join(line, " "), admin.Options().Addr, err)
		}
	}
	return line
}

// aclWorkload runs the library and the daemon as the user of line on the
// Redis that env selects, then checks every admin's ACL LOG is empty and
// every command line allows ran on some node.
func aclWorkload(ctx context.Context, t *testing.T, admins []*redis.Client, line []string, env ...string) {
	t.Helper()
	user := line[2]
	// The daemon, with short deadlines so that heartbeats, sweeps and claims
	// run during the test.
	cfg := load(t, append(env, "BATON_REDIS_USERNAME="+user, "BATON_REDIS_PASSWORD="+aclPassword,
		"BATON_LEASE_TTL=600ms", "BATON_LEASE_ACK_TIMEOUT=300ms", "BATON_SWEEP_INTERVAL=100ms",
		"BATON_COMPLETIONS_CLAIM_IDLE=100ms", "BATON_POLICIES=pack:core=3,action:core.http=1",
		"BATON_HTTP_AUTH_TOKEN=tok")...)
	ping(t, cfg) // PING and one admission, as the library
	r := serves(t, cfg)

	rdb, err := cfg.NewRedisClient()
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	c, err := coordinator.New(rdb, cfg.CoordinatorOptions(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.SetConcurrencyLimit(ctx, limits.Action("core.http"), 1); err != nil {
		t.Fatal(err)
	}
	first, err := c.EnqueueAndWait(ctx, "core.http", "acl-1")
	if err != nil {
		t.Fatal(err)
	}
	// One waiter queues behind it; one gives up (its context ends); one is
	// canceled through the API.
	second := make(chan error, 1)
	var secondLease *coordinator.Lease
	go func() {
		l, err := c.EnqueueAndWait(ctx, "core.http", "acl-2")
		secondLease = l
		second <- err
	}()
	waitQueued(ctx, t, c, "core.http", 1)
	short, stop := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = c.EnqueueAndWait(short, "core.http", "acl-3")
	stop()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("acl-3: %v, want the context's deadline", err)
	}
	// acl-4 waits in a process of its own, where it is the oldest waiter:
	// a process watches only its oldest waiter's grant key, so the cancel
	// of a younger one is noticed only when it becomes the oldest.
	c2, err := coordinator.New(rdb, cfg.CoordinatorOptions(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	third := make(chan error, 1)
	go func() {
		_, err := c2.EnqueueAndWait(ctx, "core.http", "acl-4")
		third <- err
	}()
	waitQueued(ctx, t, c, "core.http", 2)
	if code := r.do(t, "POST", "/api/v1/actions/core.http/executions/acl-4/cancel", ""); code != 200 {
		t.Fatalf("cancel acl-4 over HTTP: %d", code)
	}
	select {
	case err := <-third:
		if !errors.Is(err, coordinator.ErrCanceled) {
			t.Fatalf("acl-4: %v, want ErrCanceled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("acl-4 did not end within 30s of its cancel; ACL LOG: %v", aclLog(ctx, t, admins[0]))
	}

	// Reads, through the library and the daemon.
	if _, err := c.QueueStats(ctx, "core.http"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ExecutionState(ctx, "core.http", "acl-2"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Actions(ctx, 0, 10); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Policies(ctx); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/api/v1/actions/core.http/queue-stats", "/api/v1/actions/core.http/executions/acl-1",
		"/api/v1/actions/core.http/executions",
		"/api/v1/policies", "/api/v1/policies/pack:core", "/metrics"} {
		if code, body := r.get(t, path); code != 200 {
			t.Fatalf("GET %s: %d %s", path, code, body)
		}
	}
	if code := r.do(t, "PUT", "/api/v1/policies/pack:core", `{"max_concurrent": 2}`); code != 200 {
		t.Fatalf("PUT policy: %d", code)
	}

	// The holder lives through heartbeats (LeaseTTL/3 = 200 ms) and sweeps:
	// its lease deadline in Redis moves on twice; then it hands its slot to
	// acl-2.
	renewals, last := 0, time.Time{}
	redistest.Eventually(t, 5*time.Second, "two renewals of acl-1's lease deadline", func() bool {
		st, err := c.ExecutionState(ctx, "core.http", "acl-1")
		if err != nil {
			t.Fatal(err)
		}
		if !last.IsZero() && st.LeaseDeadline.After(last) {
			renewals++
		}
		last = st.LeaseDeadline
		return renewals >= 2
	})
	if err := first.Release(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-second:
		if err != nil {
			t.Fatalf("acl-2: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("acl-2 was not admitted within 30s of the release")
	}
	// A worker reports acl-2 finished; the daemon's listener releases it and
	// the holder's heartbeat notices the lease is gone.
	if err := coordinator.PublishCompletionWithPrefix(ctx, rdb, cfg.KeyPrefix, "core.http", "acl-2", "succeeded"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-secondLease.Lost():
	case <-time.After(30 * time.Second):
		t.Fatal("the listener did not release acl-2 within 30s of its completion event")
	}
	busyNotForgotten(ctx, t, c, admins, r)
	// A restart or failover empties the script cache: the sweep's EVALSHA
	// gets NOSCRIPT and sends the script with EVAL.
	for _, admin := range admins {
		if err := admin.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.ClearConcurrencyLimit(ctx, limits.Action("core.http")); err != nil {
		t.Fatal(err)
	}
	if code := r.do(t, "DELETE", "/api/v1/policies/pack:core", ""); code != 204 {
		t.Fatalf("DELETE policy: %d", code)
	}
	if code := r.do(t, "DELETE", "/api/v1/actions/core.http", ""); code != 204 {
		t.Fatalf("DELETE the idle action: %d; ACL LOG: %v", code, aclLog(ctx, t, admins[0]))
	}
	for _, c := range []*coordinator.Coordinator{c, c2} {
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	r.stop(t) // the listener forgets its consumer

	for _, admin := range admins {
		if log := aclLog(ctx, t, admin); len(log) > 0 {
			t.Fatalf("ACL LOG of %s recorded %d refusals for %s; docs/security.md's line misses:\n%s",
				admin.Options().Addr, len(log), user, strings.Join(log, "\n"))
		}
	}
	// And the line is minimal: this workload used every command it allows
	// (on some node), but for those of rarePaths, which the scripts must
	// still contain.
	for cmd, why := range rarePaths {
		if !strings.Contains(scripts.Library, "'"+strings.ToUpper(cmd)+"'") {
			t.Errorf("docs/security.md allows %s for %s, but the scripts no longer run it", cmd, why)
		}
	}
	for _, rule := range line {
		cmd, ok := strings.CutPrefix(rule, "+")
		if _, rare := rarePaths[cmd]; ok && !rare && !ranOn(ctx, t, admins, cmd) {
			t.Errorf("docs/security.md allows %s, which this workload never ran: is it still needed?", cmd)
		}
	}
}

// rarePaths are the commands of the doc's line that only a failure this
// in-process workload cannot cause runs, with that failure.
var rarePaths = map[string]string{
	"lpush": "putting a grant its live process never read back at the head of the queue",
}

// busyNotForgotten: an action with a holder cannot be forgotten (409),
// which counts its expired holders (ZCOUNT) under WATCH.
func busyNotForgotten(ctx context.Context, t *testing.T, c *coordinator.Coordinator, admins []*redis.Client, r *running) {
	t.Helper()
	fifth, err := c.EnqueueAndWait(ctx, "core.http", "acl-5")
	if err != nil {
		t.Fatal(err)
	}
	if code := r.do(t, "DELETE", "/api/v1/actions/core.http", ""); code != 409 {
		t.Fatalf("DELETE a busy action: %d, want 409; ACL LOG: %v", code, aclLog(ctx, t, admins[0]))
	}
	if err := fifth.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// ranOn reports whether cmd has run on some admin's node (INFO
// commandstats).
func ranOn(ctx context.Context, t *testing.T, admins []*redis.Client, cmd string) bool {
	t.Helper()
	for _, admin := range admins {
		s, err := admin.Info(ctx, "commandstats").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(s, "\n") {
			if strings.HasPrefix(l, "cmdstat_"+cmd+":calls=") && !strings.HasPrefix(l, "cmdstat_"+cmd+":calls=0,") {
				return true
			}
		}
	}
	return false
}

// waitQueued waits until n executions wait in action's queue.
func waitQueued(ctx context.Context, t *testing.T, c *coordinator.Coordinator, action string, n int64) {
	t.Helper()
	for i := 0; ; i++ {
		st, err := c.QueueStats(ctx, action)
		if err != nil {
			t.Fatal(err)
		}
		if st.QueueLength == n {
			return
		}
		if i == 1000 {
			t.Fatalf("%s: %d waiting after 20s, want %d", action, st.QueueLength, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// do sends a mutating request with the daemon's auth token and returns
// its status.
func (r *running) do(t *testing.T, method, path, body string) int {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+r.addr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
