package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/internal/httpapi"
	"github.com/batonhq/baton/internal/keys"
	"github.com/batonhq/baton/internal/metrics"
	"github.com/batonhq/baton/limits"
)

const token = "s3cret"

type fixture struct {
	t   *testing.T
	mr  *miniredis.Miniredis
	c   *coordinator.Coordinator
	srv *httptest.Server
}

func newFixture(t *testing.T) *fixture {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1, DialTimeout: time.Second})
	t.Cleanup(func() { rdb.Close() })
	c, err := coordinator.New(rdb, coordinator.Options{SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	log := slog.New(slog.DiscardHandler)
	h := httpapi.New(httpapi.Options{Coordinator: c, AuthToken: token, MaxBodyBytes: 1024,
		Metrics: metrics.New(c, log).Handler(), Logger: log, Version: "test"})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &fixture{t: t, mr: mr, c: c, srv: srv}
}

// do sends a request and checks its status; it returns the decoded JSON
// body (nil when empty) and the raw body.
func (f *fixture) do(method, path, auth, body string, want int) (map[string]any, string) {
	f.t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		f.t.Fatalf("%s %s: status %d, want %d; body %s", method, path, resp.StatusCode, want, raw)
	}
	var m map[string]any
	if len(raw) > 0 && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &m); err != nil {
			f.t.Fatalf("%s %s: body %s: %v", method, path, raw, err)
		}
	}
	return m, string(raw)
}

// doErr checks an error response: its status and code.
func (f *fixture) doErr(method, path, auth, body string, want int, code string) {
	f.t.Helper()
	m, raw := f.do(method, path, auth, body, want)
	if m["code"] != code || m["error"] == "" || m["error"] == nil {
		f.t.Fatalf("%s %s: body %s, want code %q and an error message", method, path, raw, code)
	}
}

func TestHealthAndRouting(t *testing.T) {
	f := newFixture(t)
	if m, _ := f.do("GET", "/healthz", "", "", 200); m["status"] != "ok" {
		t.Fatal(m)
	}
	if m, _ := f.do("GET", "/readyz", "", "", 200); m["status"] != "ready" {
		t.Fatal(m)
	}
	f.doErr("GET", "/nothing/here", "", "", 404, "not_found")
	f.doErr("DELETE", "/healthz", token, "", 405, "method_not_allowed")
}

func TestPolicies(t *testing.T) {
	f := newFixture(t)
	path := "/api/v1/policies/action:core.http"
	f.doErr("PUT", path, "", `{"max_concurrent": 1}`, 401, "unauthorized")
	f.doErr("PUT", path, "wrong", `{"max_concurrent": 1}`, 401, "unauthorized")
	if m, _ := f.do("PUT", path, token, `{"max_concurrent": 1}`, 200); m["max_concurrent"] != 1.0 || m["scope"] != "action:core.http" {
		t.Fatal(m)
	}
	if m, _ := f.do("GET", path, "", "", 200); m["max_concurrent"] != 1.0 {
		t.Fatal(m)
	}
	if m, _ := f.do("GET", "/api/v1/policies", "", "", 200); len(m["policies"].([]any)) != 1 {
		t.Fatal(m)
	}
	f.doErr("GET", "/api/v1/policies/pack:nope", "", "", 404, "not_found")
	f.doErr("GET", "/api/v1/policies/galaxy", "", "", 400, "invalid_argument")
	f.doErr("PUT", path, token, `{"max_concurrent": -5}`, 400, "invalid_argument")
	f.doErr("PUT", path, token, `{}`, 400, "invalid_argument")
	f.doErr("PUT", path, token, `{"max_concurrent": 1, "colour": "red"}`, 400, "invalid_argument")
	f.doErr("PUT", path, token, `not json`, 400, "invalid_argument")
	f.doErr("PUT", path, token, `{"max_concurrent": 1, "pad": "`+strings.Repeat("x", 2000)+`"}`, 413, "body_too_large")
	f.doErr("DELETE", path, "", "", 401, "unauthorized")
	f.do("DELETE", path, token, "", 204)
	f.doErr("DELETE", path, token, "", 404, "not_found")
	f.do("PUT", "/api/v1/policies/global", token, `{"max_concurrent": -1}`, 200)
}

func TestQueueStatsExecutionsAndCancel(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f.do("PUT", "/api/v1/policies/action:core.http", token, `{"max_concurrent": 1}`, 200)
	if _, err := f.c.EnqueueAndWait(ctx, "core.http", "e1"); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() {
		_, err := f.c.EnqueueAndWait(ctx, "core.http", "e2")
		waited <- err
	}()
	var st map[string]any
	for range 500 {
		st, _ = f.do("GET", "/api/v1/actions/core.http/queue-stats", "", "", 200)
		if st["queue_length"] == 1.0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st["queue_length"] != 1.0 || st["active_count"] != 1.0 || st["max_concurrent"] != 1.0 ||
		st["limit_source"] != "action:core.http" || st["total_enqueued"] != 2.0 || st["total_completed"] != 0.0 {
		t.Fatalf("stats: %v", st)
	}
	if _, err := time.Parse(time.RFC3339, st["oldest_enqueued_at"].(string)); err != nil {
		t.Fatalf("oldest_enqueued_at: %v", st["oldest_enqueued_at"])
	}
	if st, _ := f.do("GET", "/api/v1/actions/core.idle/queue-stats", "", "", 200); st["oldest_enqueued_at"] != nil {
		t.Fatalf("empty queue: %v", st)
	}
	f.doErr("GET", "/api/v1/actions/nodot/queue-stats", "", "", 400, "invalid_argument")

	if m, _ := f.do("GET", "/api/v1/actions/core.http/executions/e2", "", "", 200); m["status"] != "waiting" || m["position"] != 0.0 {
		t.Fatal(m)
	}
	if m, _ := f.do("GET", "/api/v1/actions/core.http/executions/e1", "", "", 200); m["status"] != "running" || m["lease_deadline"] == nil {
		t.Fatal(m)
	}
	if m, _ := f.do("GET", "/api/v1/actions/core.http/executions/zz", "", "", 200); m["status"] != "unknown" {
		t.Fatal(m)
	}

	var page map[string]any
	for range 500 {
		page, _ = f.do("GET", "/api/v1/actions?count=10", "", "", 200)
		if len(page["actions"].([]any)) > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if acts := page["actions"].([]any); len(acts) != 1 || acts[0].(map[string]any)["action"] != "core.http" || page["next_cursor"] != 0.0 {
		t.Fatalf("actions: %v", page)
	}
	f.doErr("GET", "/api/v1/actions?count=0", "", "", 400, "invalid_argument")
	f.doErr("GET", "/api/v1/actions?cursor=-1", "", "", 400, "invalid_argument")

	cancelPath := "/api/v1/actions/core.http/executions/e2/cancel"
	f.doErr("POST", cancelPath, "", "", 401, "unauthorized")
	if m, _ := f.do("POST", cancelPath, token, "", 200); m["canceled"] != true {
		t.Fatal(m)
	}
	select {
	case err := <-waited:
		if !errors.Is(err, coordinator.ErrCanceled) {
			t.Fatalf("e2: %v, want ErrCanceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("e2 still waiting after cancel")
	}
	f.doErr("POST", cancelPath, token, "", 409, "not_waiting")
	f.doErr("POST", "/api/v1/actions/core.http/executions/%20x%0A/cancel", token, "", 400, "invalid_argument")

	_, body := f.do("GET", "/metrics", "", "", 200)
	for _, want := range []string{
		`baton_queue_length{action="core.http"} 0`,
		`baton_running{action="core.http"} 1`,
		`baton_limit{action="core.http"} 1`,
		`baton_grants_total{action="core.http"} 1`,
		`baton_cancels_total{action="core.http"} 1`,
		`baton_wait_seconds_bucket{action="core.http",le="+Inf"}`,
		`baton_redis_up 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestRedisDown(t *testing.T) {
	f := newFixture(t)
	f.mr.Close()
	f.doErr("GET", "/readyz", "", "", 503, "unavailable")
	f.doErr("GET", "/api/v1/actions/core.http/queue-stats", "", "", 503, "unavailable")
	f.doErr("PUT", "/api/v1/policies/global", token, `{"max_concurrent": 2}`, 503, "unavailable")
	if _, body := f.do("GET", "/metrics", "", "", 200); !strings.Contains(body, "baton_redis_up 0") {
		t.Fatal("metrics do not report Redis down")
	}
}

// TestLimitBounds: a limit reads back exactly as it was set; limits beyond
// limits.MaxLimit (which a double, Lua's number, would round) are refused by
// the API and the library alike, and nothing is written.
func TestLimitBounds(t *testing.T) {
	f := newFixture(t)
	path := "/api/v1/policies/action:core.http"
	max := fmt.Sprint(limits.MaxLimit)
	if m, _ := f.do("PUT", path, token, `{"max_concurrent": `+max+`}`, 200); m["max_concurrent"] != float64(limits.MaxLimit) {
		t.Fatal(m)
	}
	if st, _ := f.do("GET", "/api/v1/actions/core.http/queue-stats", "", "", 200); st["max_concurrent"] != float64(limits.MaxLimit) {
		t.Fatalf("read back %v, want %d", st["max_concurrent"], limits.MaxLimit)
	}
	for _, n := range []string{fmt.Sprint(limits.MaxLimit + 1), "9007199254740993", "9223372036854775807"} {
		_, raw := f.do("PUT", path, token, `{"max_concurrent": `+n+`}`, 400)
		if !strings.Contains(raw, max) {
			t.Errorf("PUT %s: %s does not name the maximum", n, raw)
		}
	}
	if m, _ := f.do("GET", path, "", "", 200); m["max_concurrent"] != float64(limits.MaxLimit) {
		t.Fatalf("a refused PUT changed the policy: %v", m)
	}
	err := f.c.SetConcurrencyLimit(context.Background(), limits.Global(), limits.MaxLimit+1)
	if !errors.Is(err, coordinator.ErrInvalidArgument) {
		t.Fatalf("library: SetConcurrencyLimit(MaxLimit+1) = %v, want ErrInvalidArgument", err)
	}
}

// TestPolicyBodyStrict: a policy body is one JSON object with exactly the
// field max_concurrent; anything else is a 400 in the API's own words (no
// Go type names) and changes nothing.
func TestPolicyBodyStrict(t *testing.T) {
	f := newFixture(t)
	path := "/api/v1/policies/pack:core"
	f.do("PUT", path, token, `{"max_concurrent": 2}`, 200)
	cases := []struct{ body, want string }{
		{`{"max_concurrent":3} x`, "data after the JSON object"},
		{`{"max_concurrent":3}{"max_concurrent":4}`, "data after the JSON object"},
		{`{"max_concurrent":3} {}`, "data after the JSON object"},
		{`{"MAX_CONCURRENT":3}`, `unknown field "MAX_CONCURRENT"`},
		{`{"Max_Concurrent":3}`, `unknown field "Max_Concurrent"`},
		{`{"max_concurrent":3,"max_concurrent":4}`, "appears twice"},
		{`{"max_concurrent":3, "colour": "red"}`, `unknown field "colour"`},
		{`[{"max_concurrent":3}]`, "want a JSON object such as {\"max_concurrent\": 3}, "},
		{`[{"max_concurrent":3}]`, "; got an array"},
		{`3`, `got the number "3"`},
		{`null`, "got null"},
		{``, "body: empty"},
		{`{"max_concurrent":`, "the JSON ends early"},
		{`{"max_concurrent":3,}`, "not valid JSON at byte"},
		{`{}`, "none of max_concurrent, rate and quota is given"},
		{`{"max_concurrent":null}`, "want a whole number from 0 to 1000000000, or -1 (unlimited); got null"},
		{`{"max_concurrent":"3"}`, `got the string "3"`},
		{`{"max_concurrent":[3]}`, "got an array"},
		{`{"max_concurrent":{"n":3}}`, "got an object"},
		{`{"max_concurrent":true}`, "got true or false"},
		{`{"max_concurrent":2.5}`, `got the number "2.5"`},
		{`{"max_concurrent":1e3}`, `got the number "1e3"`},
		{`{"max_concurrent":-2}`, `got "-2"`},
		{`{"max_concurrent":99999999999999999999}`, `got "99999999999999999999"`},
	}
	for _, tc := range cases {
		_, raw := f.do("PUT", path, token, tc.body, 400)
		var m map[string]string
		if err := json.Unmarshal([]byte(raw), &m); err != nil || m["code"] != "invalid_argument" {
			t.Errorf("%s: %s", tc.body, raw)
			continue
		}
		if !strings.Contains(m["error"], tc.want) {
			t.Errorf("%s: error %q, want it to contain %q", tc.body, m["error"], tc.want)
		}
		for _, leak := range []string{"Go value", "Go struct", "json:", "struct {", "*int"} {
			if strings.Contains(m["error"], leak) {
				t.Errorf("%s: error %q leaks Go internals (%q)", tc.body, m["error"], leak)
			}
		}
	}
	if m, _ := f.do("GET", path, "", "", 200); m["max_concurrent"] != 2.0 {
		t.Fatalf("a refused body changed the policy: %v", m)
	}
	if m, _ := f.do("PUT", path, token, " {\"max_concurrent\" : -1}\n", 200); m["max_concurrent"] != -1.0 {
		t.Fatal(m)
	}
}

// TestInvisibleCharactersAndShortEchoes: refs, pack names and execution IDs
// with invisible or direction-changing characters, spaces at either end or
// invalid UTF-8 are a 400 naming the character and its offset; no error
// echoes a huge input back, and nothing is written.
func TestInvisibleCharactersAndShortEchoes(t *testing.T) {
	f := newFixture(t)
	before := f.mr.Keys() // the coordinator's owner key
	cases := []struct{ method, path, want string }{
		{"GET", "/api/v1/actions/core.ht%E2%80%8Btp/queue-stats", "U+200B (ZERO WIDTH SPACE) at byte 7"},
		{"GET", "/api/v1/actions/core.%E2%80%AEhttp/executions/e1", "U+202E (RIGHT-TO-LEFT OVERRIDE) at byte 5"},
		{"GET", "/api/v1/actions/core.http/executions/e%FF1", "not valid UTF-8: byte 0xff at byte 1"},
		{"POST", "/api/v1/actions/core.http/executions/e%E2%80%8F/cancel", "U+200F (RIGHT-TO-LEFT MARK) at byte 1"},
		{"POST", "/api/v1/actions/core.http/executions/%20e1/cancel", "leading space U+0020 (SPACE) at byte 0"},
		{"GET", "/api/v1/actions/core.http%20/queue-stats", "trailing space U+0020 (SPACE) at byte 9"},
		{"PUT", "/api/v1/policies/pack:co%E2%81%A6re", "U+2066 (LEFT-TO-RIGHT ISOLATE) at byte 2"},
		{"PUT", "/api/v1/policies/action:core.http%C2%A0", "trailing space U+00A0 (NO-BREAK SPACE) at byte 9"},
	}
	for _, tc := range cases {
		_, raw := f.do(tc.method, tc.path, token, `{"max_concurrent": 1}`, 400)
		if !strings.Contains(raw, tc.want) || !strings.Contains(raw, `"invalid_argument"`) {
			t.Errorf("%s %s: %s, want %q", tc.method, tc.path, raw, tc.want)
		}
	}
	if keys := f.mr.Keys(); len(keys) != len(before) {
		t.Fatalf("refused requests wrote keys: %v, before %v", keys, before)
	}

	huge := strings.Repeat("x", 512<<10)
	for _, path := range []string{"/api/v1/policies/" + huge, "/api/v1/policies/pack:" + huge,
		"/api/v1/actions/" + huge + "/queue-stats", "/nothing/" + huge} {
		resp, err := f.srv.Client().Get(f.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 4 || len(raw) > 400 {
			t.Errorf("GET %.40s... (%d bytes): status %d, %d-byte reply %.400s", path, len(path), resp.StatusCode, len(raw), raw)
		}
	}
}

// TestErrorExampleInDocs: docs/api.md shows the real reply for a bad scope.
func TestErrorExampleInDocs(t *testing.T) {
	f := newFixture(t)
	m, _ := f.do("GET", "/api/v1/policies/galaxy", "", "", 400)
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "api.md"))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(m["error"])
	example := fmt.Sprintf(`{"error": %s, "code": %q}`, want, m["code"])
	if !strings.Contains(string(doc), example) {
		t.Fatalf("docs/api.md lacks the real reply %s", example)
	}
}

// TestEmptySegmentsAndDotSegments: a path with an empty segment is a 400, one
// with "." or ".." segments a 404, never a redirect.
func TestEmptySegmentsAndDotSegments(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct{ method, path string }{
		{"GET", "/api/v1/actions//queue-stats"},
		{"POST", "/api/v1/actions/core.http/executions//cancel"},
		{"GET", "/api/v1/actions/core.http/executions/"},
		{"PUT", "/api/v1/policies//"},
		{"GET", "//api/v1/policies"},
	} {
		want, code := 400, "invalid_argument"
		if !strings.Contains(tc.path, "//") {
			want, code = 404, "not_found"
		}
		f.doErr(tc.method, tc.path, token, `{"max_concurrent": 1}`, want, code)
	}
	for _, path := range []string{"/api/v1/actions/./core.http/queue-stats", "/api/v1/policies/../policies"} {
		req, err := http.NewRequest("GET", f.srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.URL.Opaque = path // keep the dot segments: the client would clean them
		resp, err := f.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 404 || resp.Header.Get("Location") != "" {
			t.Errorf("GET %s: status %d, Location %q; want 404", path, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
}

// TestBearerSchemeIsCaseInsensitive: "bearer", "BEARER" and "Bearer" all
// carry the token; a wrong token or another scheme does not.
func TestBearerSchemeIsCaseInsensitive(t *testing.T) {
	f := newFixture(t)
	send := func(auth string) int {
		t.Helper()
		req, err := http.NewRequest("PUT", f.srv.URL+"/api/v1/policies/global", strings.NewReader(`{"max_concurrent": 3}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", auth)
		resp, err := f.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, auth := range []string{"Bearer " + token, "bearer " + token, "BEARER " + token, "bEaReR  " + token} {
		if got := send(auth); got != 200 {
			t.Errorf("Authorization: %q: status %d, want 200", auth, got)
		}
	}
	for _, auth := range []string{"bearer wrong", "Basic " + token, "Bearer", "bearer" + token, token, ""} {
		if got := send(auth); got != 401 {
			t.Errorf("Authorization: %q: status %d, want 401", auth, got)
		}
	}
}

// TestMetricsWithAMalformedAction: one bad member of the actions set does
// not turn baton_redis_up to 0, nor hide the other actions.
func TestMetricsWithAMalformedAction(t *testing.T) {
	f := newFixture(t)
	f.do("PUT", "/api/v1/policies/action:core.http", token, `{"max_concurrent": 4}`, 200)
	if _, err := f.mr.SAdd(keys.New("").Actions(), "nodot", "core.http"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		_, body := f.do("GET", "/metrics", "", "", 200)
		if !strings.Contains(body, "\nbaton_redis_up 1\n") || !strings.Contains(body, `baton_limit{action="core.http"} 4`) {
			t.Fatalf("metrics with a malformed action:\n%s", body)
		}
	}
	if page, _ := f.do("GET", "/api/v1/actions", "", "", 200); len(page["actions"].([]any)) != 1 {
		t.Fatalf("actions: %v", page)
	}
}

// TestPolicyForAnUnusedActionWritesNoActionKey: setting and clearing the
// policy of an action that was never used creates no per-action key (a
// baton:{a.b:c}:meta without a TTL would stay for ever).
// apply_policy.lua leaves an action with no state in Redis alone.
func TestPolicyForAnUnusedActionWritesNoActionKey(t *testing.T) {
	f := newFixture(t)
	actionKeys := func() []string {
		var out []string
		for _, k := range f.mr.Keys() {
			if strings.Contains(k, "{") {
				out = append(out, k)
			}
		}
		return out
	}
	f.do("PUT", "/api/v1/policies/action:a.b:c", token, `{"max_concurrent": 3}`, 200)
	if keys := actionKeys(); len(keys) != 0 {
		t.Errorf("PUT on an unused action created %v", keys)
	}
	f.do("DELETE", "/api/v1/policies/action:a.b:c", token, "", 204)
	if keys := actionKeys(); len(keys) != 0 {
		t.Errorf("PUT and DELETE on an unused action left %v", keys)
	}
	// The limit still applies once the action is used.
	f.do("PUT", "/api/v1/policies/action:a.b:c", token, `{"max_concurrent": 3}`, 200)
	if st, _ := f.do("GET", "/api/v1/actions/a.b:c/queue-stats", "", "", 200); st["max_concurrent"] != 3.0 {
		t.Fatalf("stats: %v", st)
	}
}
