package httpapi_test

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/httpapi"
	"github.com/batonhq/baton/internal/keys"
)

func TestWaitingHoldersAndForget(t *testing.T) {
	f := newFixture(t)
	const a = "core.inspect"
	f.do("PUT", "/api/v1/policies/action:"+a, token, `{"max_concurrent": 1}`, 200)
	l1, err := f.c.EnqueueAndWait(t.Context(), a, "e1")
	if err != nil {
		t.Fatal(err)
	}
	// Waiters one at a time, so their order is known.
	for i := range 3 {
		go func() { _, _ = f.c.EnqueueAndWait(t.Context(), a, fmt.Sprintf("w%d", i)) }()
		waitFor(t, fmt.Sprintf("w%d queued", i), func() bool {
			st, _ := f.do("GET", "/api/v1/actions/"+a+"/queue-stats", "", "", 200)
			return st["queue_length"] == float64(i+1)
		})
	}

	base := "/api/v1/actions/" + a
	m, _ := f.do("GET", base+"/executions?state=waiting", "", "", 200)
	if m["total"] != 3.0 || m["state"] != "waiting" || m["offset"] != 0.0 || m["limit"] != 100.0 {
		t.Fatalf("waiting: %v", m)
	}
	execs := m["executions"].([]any)
	if len(execs) != 3 {
		t.Fatalf("executions: %v", execs)
	}
	for i, x := range execs {
		e := x.(map[string]any)
		if e["position"] != float64(i) || e["execution_id"] != fmt.Sprintf("w%d", i) || e["owner"] != f.c.Owner() {
			t.Fatalf("execution %d: %v", i, e)
		}
		if _, err := time.Parse(time.RFC3339, e["enqueued_at"].(string)); err != nil {
			t.Fatalf("execution %d enqueued_at: %v", i, e)
		}
		if s, ok := e["waiting_seconds"].(float64); !ok || s < 0 {
			t.Fatalf("execution %d waiting_seconds: %v", i, e)
		}
	}
	m, _ = f.do("GET", base+"/executions?offset=1&limit=1", "", "", 200)
	if execs := m["executions"].([]any); m["total"] != 3.0 || len(execs) != 1 || execs[0].(map[string]any)["execution_id"] != "w1" ||
		execs[0].(map[string]any)["position"] != 1.0 {
		t.Fatalf("offset 1, limit 1: %v", m)
	}
	for _, q := range []string{"state=running", "offset=-1", "offset=x", "limit=0", "limit=1001", "limit=" + strings.Repeat("9", 500)} {
		_, raw := f.do("GET", base+"/executions?"+q, "", "", 400)
		if len(raw) > 300 {
			t.Errorf("?%s: the error quotes too much: %d bytes", q, len(raw))
		}
	}
	f.doErr("GET", "/api/v1/actions/nodot/executions", "", "", 400, "invalid_argument")

	m, _ = f.do("GET", base+"/holders", "", "", 200)
	hs := m["holders"].([]any)
	if len(hs) != 1 {
		t.Fatalf("holders: %v", m)
	}
	h := hs[0].(map[string]any)
	if h["execution_id"] != "e1" || h["token"] != float64(l1.Token()) || h["owner"] != f.c.Owner() || h["acknowledged"] != true ||
		h["expired"] != false {
		t.Fatalf("holder: %v", h)
	}
	for _, field := range []string{"since", "lease_deadline"} {
		if _, err := time.Parse(time.RFC3339, h[field].(string)); err != nil {
			t.Fatalf("holder %s: %v", field, h)
		}
	}
	f.doErr("GET", "/api/v1/actions/nodot/holders", "", "", 400, "invalid_argument")

	f.doErr("DELETE", base, "", "", 401, "unauthorized")
	m, _ = f.do("DELETE", base, token, "", 409)
	if m["code"] != "not_idle" || !strings.Contains(m["error"].(string), "3 waiting and 1 holding") {
		t.Fatalf("forget while busy: %v", m)
	}
	for i := range 3 {
		f.do("POST", fmt.Sprintf("%s/executions/w%d/cancel", base, i), token, "", 200)
	}
	if err := l1.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	if m, _ := f.do("GET", base+"/holders", "", "", 200); len(m["holders"].([]any)) != 0 {
		t.Fatalf("holders after release: %v", m)
	}
	waitFor(t, "action listed", func() bool {
		page, _ := f.do("GET", "/api/v1/actions", "", "", 200)
		return len(page["actions"].([]any)) == 1
	})
	f.do("DELETE", base, token, "", 204)
	if page, _ := f.do("GET", "/api/v1/actions", "", "", 200); len(page["actions"].([]any)) != 0 {
		t.Fatalf("forgotten action still listed: %v", page)
	}
	f.doErr("DELETE", "/api/v1/actions/nodot", token, "", 400, "invalid_argument")
}

func TestDashboardRoutes(t *testing.T) {
	f := newFixture(t)
	f.doErr("GET", "/", "", "", 404, "not_found") // no dashboard given

	page := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "page "+r.URL.Path) })
	srv := httptest.NewServer(httpapi.New(httpapi.Options{Coordinator: f.c, Dashboard: page, Logger: slog.New(slog.DiscardHandler)}))
	t.Cleanup(srv.Close)
	get := func(path string, want int) string {
		t.Helper()
		resp, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Fatalf("GET %s: %d, want %d: %s", path, resp.StatusCode, want, body)
		}
		return string(body)
	}
	if got := get("/", 200); got != "page /" {
		t.Fatalf("GET /: %q", got)
	}
	if got := get("/ui/app.js", 200); got != "page /ui/app.js" {
		t.Fatalf("GET /ui/app.js: %q", got)
	}
	if got := get("/nothing/here", 404); !strings.Contains(got, `"not_found"`) {
		t.Fatalf("GET /nothing/here: %q", got)
	}
	get("/healthz", 200)
	get("/api/v1/policies", 200)
}

// waitFor polls cond until it holds, for at most 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestKeySchemaConflict: requests on an action whose keys a newer version of
// Baton keeps in another form answer 409 key_schema, on every endpoint.
func TestKeySchemaConflict(t *testing.T) {
	f := newFixture(t)
	const a = "core.newer"
	f.mr.HSet(keys.New("baton").Action(a).Meta(), "schema", "2")
	base := "/api/v1/actions/" + a
	f.doErr("GET", base+"/queue-stats", "", "", 409, "key_schema")
	f.doErr("GET", base+"/executions", "", "", 409, "key_schema")
	f.doErr("GET", base+"/holders", "", "", 409, "key_schema")
	f.doErr("DELETE", base, token, "", 409, "key_schema")
	f.doErr("POST", base+"/executions/e1/acquire", token, `{"wait": "1s"}`, 409, "key_schema")
	m, _ := f.do("GET", base+"/queue-stats", "", "", 409)
	if msg, _ := m["error"].(string); !strings.Contains(msg, "key schema 2") || !strings.Contains(msg, "upgrade") {
		t.Fatalf("the error does not say what to do: %v", m)
	}
	// The listing and the metrics name it apart, and still report the others.
	l, err := f.c.EnqueueAndWait(t.Context(), "core.mine", "e1")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release(t.Context())
	f.mr.SAdd("baton:actions", a)
	waitFor(t, "core.mine listed", func() bool {
		page, _ := f.do("GET", "/api/v1/actions", "", "", 200)
		return len(page["actions"].([]any)) == 1
	})
	page, raw := f.do("GET", "/api/v1/actions", "", "", 200)
	if acts := page["actions"].([]any); acts[0].(map[string]any)["action"] != "core.mine" {
		t.Fatalf("listing: %s", raw)
	}
	if newer, _ := page["newer_key_schema"].([]any); len(newer) != 1 || newer[0] != a {
		t.Fatalf("listing does not name the action of a newer key schema: %s", raw)
	}
	_, body := f.do("GET", "/metrics", "", "", 200)
	if !strings.Contains(body, "\nbaton_redis_up 1\n") || !strings.Contains(body, `action="core.mine"`) ||
		strings.Contains(body, `action="core.newer"`) {
		t.Fatalf("metrics with an action of a newer key schema:\n%s", body)
	}
}
