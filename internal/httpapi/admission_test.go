package httpapi_test

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/internal/httpapi"
	"github.com/batonhq/baton/internal/redistest"
	"github.com/batonhq/baton/limits"
)

// The admission tests run on two tiers, miniredis and a real redis-server
// (BATON_REQUIRE_REDIS=1: a server that cannot start fails them), each with
// two daemons (Coordinator and API handler) on one Redis, as behind a load
// balancer.

var admPrefix atomic.Int64

// daemons is one test's Redis and its daemons.
type daemons struct {
	t      *testing.T
	addr   string
	prefix string
	rdb    *redis.Client
	d      []*fixture      // the daemons; d[0].c also reads stats
	stops  []chan struct{} // each daemon's Options.Stop
}

func admTiers(t *testing.T, opts coordinator.Options, fn func(t *testing.T, ds *daemons)) {
	t.Run("miniredis", func(t *testing.T) {
		mr := miniredis.RunT(t)
		fn(t, newDaemons(t, mr.Addr(), "baton", opts))
	})
	t.Run("redis", func(t *testing.T) {
		srv := redistest.SharedServer(t)
		fn(t, newDaemons(t, srv.Addr, fmt.Sprintf("adm%d", admPrefix.Add(1)), opts))
	})
}

func newDaemons(t *testing.T, addr, prefix string, opts coordinator.Options) *daemons {
	ds := &daemons{t: t, addr: addr, prefix: prefix}
	ds.rdb = redis.NewClient(&redis.Options{Addr: addr, ReadTimeout: 30 * time.Second})
	t.Cleanup(func() { ds.rdb.Close() })
	log := redistest.NewLog(t)
	for i := range 2 {
		rdb := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 32, ReadTimeout: 30 * time.Second})
		t.Cleanup(func() { rdb.Close() })
		o := opts
		o.Prefix = prefix
		o.Logger = log.Logger(fmt.Sprintf("daemon%d", i))
		if o.SweepInterval == 0 {
			o.SweepInterval = 50 * time.Millisecond
		}
		c, err := coordinator.New(rdb, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		o = o.WithDefaults()
		stop := make(chan struct{})
		ds.stops = append(ds.stops, stop)
		h := httpapi.New(httpapi.Options{Coordinator: c, AuthToken: token, MaxBodyBytes: 1024,
			Logger: slog.New(slog.DiscardHandler), LeaseTTL: o.LeaseTTL, AckTimeout: o.AckTimeout, Stop: stop})
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		ds.d = append(ds.d, &fixture{t: t, c: c, srv: srv})
	}
	return ds
}

func execPath(action, id, call string) string {
	return "/api/v1/actions/" + action + "/executions/" + id + "/" + call
}

// acquire calls acquire on daemon i and checks the status.
func (ds *daemons) acquire(i int, action, id, wait string, want int) map[string]any {
	ds.t.Helper()
	m, _ := ds.d[i].do("POST", execPath(action, id, "acquire"), token, `{"wait": "`+wait+`"}`, want)
	return m
}

func (ds *daemons) call(i int, action, id, call string, tok int64, want int) map[string]any {
	ds.t.Helper()
	m, _ := ds.d[i].do("POST", execPath(action, id, call), token, fmt.Sprintf(`{"token": %d}`, tok), want)
	return m
}

func (ds *daemons) stats(action string) coordinator.QueueStats {
	ds.t.Helper()
	st, err := ds.d[0].c.QueueStats(redistest.Context(ds.t), action)
	if err != nil {
		ds.t.Fatal(err)
	}
	return st
}

func (ds *daemons) limit(action string, n int) {
	ds.t.Helper()
	if err := ds.d[0].c.SetConcurrencyLimit(redistest.Context(ds.t), limits.Action(action), n); err != nil {
		ds.t.Fatal(err)
	}
}

func tokenOf(t *testing.T, m map[string]any) int64 {
	t.Helper()
	f, ok := m["token"].(float64)
	if !ok || f < 1 {
		t.Fatalf("no token in %v", m)
	}
	return int64(f)
}

// position is a 202's queue position (-1 when null).
func position(t *testing.T, m map[string]any) int {
	t.Helper()
	if m["status"] != "waiting" {
		t.Fatalf("not waiting: %v", m)
	}
	if m["position"] == nil {
		return -1
	}
	return int(m["position"].(float64))
}

// async runs an acquire in the background and returns its status and body.
type acquireResult struct {
	status int
	body   map[string]any
	err    error
}

func (ds *daemons) acquireAsync(i int, action, id, wait string) <-chan acquireResult {
	out := make(chan acquireResult, 1)
	go func() {
		req, _ := http.NewRequest("POST", ds.d[i].srv.URL+execPath(action, id, "acquire"), strings.NewReader(`{"wait": "`+wait+`"}`))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := (&http.Client{Timeout: 2 * time.Minute}).Do(req)
		if err != nil {
			out <- acquireResult{err: err}
			return
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var m map[string]any
		err = json.Unmarshal(raw, &m)
		out <- acquireResult{status: resp.StatusCode, body: m, err: err}
	}()
	return out
}

func recv(t *testing.T, ch <-chan acquireResult, what string) acquireResult {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("%s: %v", what, r.err)
		}
		return r
	case <-time.After(redistest.SlowFloor):
		t.Fatalf("%s: no answer within %s", what, redistest.SlowFloor)
	}
	return acquireResult{}
}

// TestAdmissionLifecycle: acquire, wait in order, re-attach by retrying,
// heartbeat and release by token, and the statuses of each, on one daemon.
func TestAdmissionLifecycle(t *testing.T) {
	admTiers(t, coordinator.Options{LeaseTTL: 20 * time.Second, AckTimeout: 2 * time.Second}, func(t *testing.T, ds *daemons) {
		const a = "adm.life"
		ds.limit(a, 1)
		m := ds.acquire(0, a, "e1", "0s", 200)
		tok := tokenOf(t, m)
		if m["status"] != "admitted" || m["lease_ttl_seconds"] != 20.0 || m["heartbeat_interval_seconds"] == nil || m["lease_deadline"] == nil {
			t.Fatalf("admission: %v", m)
		}
		// A retried acquire (its reply lost) re-attaches: the same lease, not a second admission.
		if again := ds.acquire(0, a, "e1", "0s", 200); tokenOf(t, again) != tok {
			t.Fatalf("retried acquire: token %v, want %d", again["token"], tok)
		}
		if p := position(t, ds.acquire(0, a, "e2", "50ms", 202)); p != 0 {
			t.Fatalf("e2 position %d, want 0", p)
		}
		if p := position(t, ds.acquire(0, a, "e3", "0s", 202)); p != 1 {
			t.Fatalf("e3 position %d, want 1", p)
		}
		if p := position(t, ds.acquire(0, a, "e2", "0s", 202)); p != 0 { // re-attached, same place
			t.Fatalf("e2 position after re-attach %d, want 0", p)
		}
		// A long poll whose connection drops: the retry finds the same place.
		req, _ := http.NewRequest("POST", ds.d[0].srv.URL+execPath(a, "e3", "acquire"), strings.NewReader(`{"wait": "30s"}`))
		req.Header.Set("Authorization", "Bearer "+token)
		if resp, err := (&http.Client{Timeout: 200 * time.Millisecond}).Do(req); err == nil {
			resp.Body.Close()
			t.Fatalf("a 30 s long poll answered %d within 200 ms", resp.StatusCode)
		}
		if p := position(t, ds.acquire(0, a, "e3", "0s", 202)); p != 1 {
			t.Fatalf("e3 position after a dropped poll %d, want 1", p)
		}
		if st := ds.stats(a); st.TotalEnqueued != 3 || st.TotalAdmitted != 1 || st.QueueLength != 2 {
			t.Fatalf("stats: %+v", st)
		}

		hb := ds.call(0, a, "e1", "heartbeat", tok, 200)
		if hb["status"] != "held" || hb["lease_deadline"] == nil {
			t.Fatalf("heartbeat: %v", hb)
		}
		ds.call(0, a, "e1", "heartbeat", tok, 200) // a retry is harmless
		ds.d[0].doErr("POST", execPath(a, "e1", "heartbeat"), token, fmt.Sprintf(`{"token": %d}`, tok+100), 409, "lease_lost")
		ds.d[0].doErr("POST", execPath(a, "e1", "release"), token, fmt.Sprintf(`{"token": %d}`, tok+100), 409, "lease_lost")
		if st := ds.stats(a); st.ActiveCount != 1 || st.TotalCompleted != 0 {
			t.Fatalf("a stale token freed something: %+v", st)
		}
		waiting := ds.acquireAsync(0, a, "e2", "30s")
		if r := ds.call(0, a, "e1", "release", tok, 200); r["status"] != "released" {
			t.Fatalf("release: %v", r)
		}
		ds.d[0].doErr("POST", execPath(a, "e1", "release"), token, fmt.Sprintf(`{"token": %d}`, tok), 409, "lease_lost") // retry: nothing freed twice
		ds.d[0].doErr("POST", execPath(a, "e1", "heartbeat"), token, fmt.Sprintf(`{"token": %d}`, tok), 409, "lease_lost")
		r := recv(t, waiting, "e2's long poll")
		if r.status != 200 || tokenOf(t, r.body) <= tok {
			t.Fatalf("e2's long poll: %d %v", r.status, r.body)
		}
		tok2 := tokenOf(t, r.body)
		ds.call(0, a, "e2", "release", tok2, 200)
		r = recv(t, ds.acquireAsync(0, a, "e3", "30s"), "e3")
		if r.status != 200 {
			t.Fatalf("e3: %d %v", r.status, r.body)
		}
		ds.call(0, a, "e3", "release", tokenOf(t, r.body), 200)
		if st := ds.stats(a); st.ActiveCount != 0 || st.QueueLength != 0 || st.TotalAdmitted != 3 || st.TotalCompleted != 3 {
			t.Fatalf("stats after: %+v", st)
		}
	})
}

// TestAdmissionReattachThroughAnotherDaemon: a client's calls may reach any
// daemon. Waiting, it keeps its place; granted while it polled elsewhere,
// it gets its lease from the other daemon; its heartbeats and release work
// through either.
func TestAdmissionReattachThroughAnotherDaemon(t *testing.T) {
	ack := 2 * time.Second // long enough for the client's next call to come in time on a slow machine
	admTiers(t, coordinator.Options{LeaseTTL: 20 * time.Second, AckTimeout: ack}, func(t *testing.T, ds *daemons) {
		const a = "adm.two"
		ds.limit(a, 1)
		tok := tokenOf(t, ds.acquire(0, a, "e1", "0s", 200))
		position(t, ds.acquire(0, a, "e2", "0s", 202))
		position(t, ds.acquire(0, a, "e3", "0s", 202))
		for i, d := range []int{1, 0, 1, 0} {
			if p := position(t, ds.acquire(d, a, "e2", "0s", 202)); p != 0 {
				t.Fatalf("poll %d through daemon %d: e2 position %d, want 0", i, d, p)
			}
		}
		if st := ds.stats(a); st.TotalEnqueued != 3 || st.QueueLength != 2 {
			t.Fatalf("re-attaching enqueued again: %+v", st)
		}
		ds.call(1, a, "e1", "heartbeat", tok, 200)
		ds.call(1, a, "e1", "release", tok, 200) // e2's grant goes to daemon 0, where no call waits
		r := recv(t, ds.acquireAsync(1, a, "e2", "30s"), "e2 through daemon 1")
		if r.status != 200 {
			t.Fatalf("e2 through daemon 1: %d %v", r.status, r.body)
		}
		tok2 := tokenOf(t, r.body)
		// Daemon 0 forgets the grant it kept at its acknowledgement deadline;
		// the lease, now the client's, stays.
		time.Sleep(ack + 500*time.Millisecond)
		ds.call(0, a, "e2", "heartbeat", tok2, 200)
		if st := ds.stats(a); st.ActiveCount != 1 || st.QueueLength != 1 || st.TotalReclaimed != 0 || st.TotalAdmitted != 2 {
			t.Fatalf("stats: %+v", st)
		}
		ds.call(0, a, "e2", "release", tok2, 200)
		r = recv(t, ds.acquireAsync(1, a, "e3", "30s"), "e3")
		ds.call(1, a, "e3", "release", tokenOf(t, r.body), 200)
	})
}

// TestAdmissionUnclaimedGrant: a grant that arrives while no acquire call
// waits is kept for the acknowledgement deadline only; when nobody comes for
// it, it is reclaimed and the slot passes on.
func TestAdmissionUnclaimedGrant(t *testing.T) {
	admTiers(t, coordinator.Options{LeaseTTL: 20 * time.Second, AckTimeout: 300 * time.Millisecond}, func(t *testing.T, ds *daemons) {
		const a = "adm.unclaimed"
		ds.limit(a, 1)
		tok := tokenOf(t, ds.acquire(0, a, "e1", "0s", 200))
		position(t, ds.acquire(0, a, "e2", "0s", 202)) // then never comes back
		next := ds.acquireAsync(1, a, "e3", "30s")
		redistest.Eventually(t, 5*time.Second, "e3 queued", func() bool { return ds.stats(a).QueueLength == 2 })
		ds.call(0, a, "e1", "release", tok, 200)
		r := recv(t, next, "e3 after e2's unclaimed grant")
		if r.status != 200 {
			t.Fatalf("e3: %d %v", r.status, r.body)
		}
		if st := ds.stats(a); st.TotalReclaimed != 1 || st.ActiveCount != 1 || st.QueueLength != 0 {
			t.Fatalf("stats: %+v", st)
		}
		// e2's request ended (reclaimed): its next acquire is a new request, behind nobody.
		if p := position(t, ds.acquire(0, a, "e2", "0s", 202)); p != 0 {
			t.Fatalf("e2 again: position %d", p)
		}
		ds.call(1, a, "e3", "release", tokenOf(t, r.body), 200)
		r = recv(t, ds.acquireAsync(0, a, "e2", "30s"), "e2 anew")
		ds.call(0, a, "e2", "release", tokenOf(t, r.body), 200)
		if st := ds.stats(a); st.TotalEnqueued != 4 || st.TotalAdmitted != 4 || st.TotalCompleted != 3 || st.TotalReclaimed != 1 {
			t.Fatalf("stats after: %+v", st)
		}
	})
}

// TestAdmissionHeartbeats: heartbeats keep the lease past its TTL, through
// either daemon; once they stop, the slot is reclaimed after the TTL,
// though both daemons live and heartbeat themselves.
func TestAdmissionHeartbeats(t *testing.T) {
	ttl := 3 * time.Second
	admTiers(t, coordinator.Options{LeaseTTL: ttl, AckTimeout: 300 * time.Millisecond}, func(t *testing.T, ds *daemons) {
		const a = "adm.hb"
		ds.limit(a, 1)
		tok := tokenOf(t, ds.acquire(0, a, "e1", "0s", 200))
		next := ds.acquireAsync(1, a, "e2", "50s")
		start := time.Now()
		for i := 0; time.Since(start) < 2*ttl; i++ {
			ds.call(i%2, a, "e1", "heartbeat", tok, 200)
			time.Sleep(ttl / 5)
		}
		select {
		case r := <-next:
			t.Fatalf("e2 admitted while e1 heartbeats: %v", r)
		default:
		}
		stopped := time.Now()
		r := recv(t, next, "e2 after e1's heartbeats stopped")
		if r.status != 200 {
			t.Fatalf("e2: %d %v", r.status, r.body)
		}
		t.Logf("e2 admitted %s after e1's last heartbeat (lease TTL %s)", time.Since(stopped).Round(time.Millisecond), ttl)
		ds.d[0].doErr("POST", execPath(a, "e1", "heartbeat"), token, fmt.Sprintf(`{"token": %d}`, tok), 409, "lease_lost")
		if st := ds.stats(a); st.TotalReclaimed != 1 {
			t.Fatalf("stats: %+v", st)
		}
	})
}

// TestAdmissionEnds: queue full (429 with Retry-After), and queue timeout
// (410) with a call attached or between polls.
func TestAdmissionEnds(t *testing.T) {
	admTiers(t, coordinator.Options{LeaseTTL: 20 * time.Second, MaxQueueLength: 2, QueueTimeout: 500 * time.Millisecond},
		func(t *testing.T, ds *daemons) {
			const a = "adm.ends"
			ds.limit(a, 1)
			tok := tokenOf(t, ds.acquire(0, a, "e1", "0s", 200))
			position(t, ds.acquire(0, a, "e2", "0s", 202))
			position(t, ds.acquire(0, a, "e3", "0s", 202))
			for range 2 { // a retry is refused the same way; nothing is queued
				req, _ := http.NewRequest("POST", ds.d[1].srv.URL+execPath(a, "e4", "acquire"), strings.NewReader(`{"wait": "1s"}`))
				req.Header.Set("Authorization", "Bearer "+token)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				raw, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(raw), `"queue_full"`) {
					t.Fatalf("queue full: %d Retry-After %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), raw)
				}
			}
			// e2 times out while its call waits; e3 while its client is between polls.
			r := recv(t, ds.acquireAsync(0, a, "e2", "30s"), "e2")
			if r.status != 410 || r.body["code"] != "queue_timeout" {
				t.Fatalf("e2: %d %v", r.status, r.body)
			}
			redistest.Eventually(t, 5*time.Second, "e3 timed out", func() bool { return ds.stats(a).TotalTimedOut == 2 })
			ds.d[0].doErr("POST", execPath(a, "e3", "acquire"), token, `{"wait": "0s"}`, 410, "queue_timeout")
			if st := ds.stats(a); st.TotalRejected != 2 || st.TotalTimedOut != 2 || st.QueueLength != 0 || st.TotalEnqueued != 3 {
				t.Fatalf("stats: %+v", st)
			}

			ds.call(0, a, "e1", "release", tok, 200)
		})
}

// TestAdmissionBadInput: bad refs, IDs, bodies and tokens are 400s naming
// the problem, a missing or wrong bearer token is 401, and nothing is
// written to Redis.
func TestAdmissionBadInput(t *testing.T) {
	admTiers(t, coordinator.Options{}, func(t *testing.T, ds *daemons) {
		before, err := ds.rdb.Keys(redistest.Context(t), ds.prefix+":*").Result()
		if err != nil {
			t.Fatal(err)
		}
		f := ds.d[0]
		long := strings.Repeat("x", 300)
		for _, c := range []struct{ path, auth, body, code, field string }{
			{execPath("a.b", "e1", "acquire"), "", `{"wait": "1s"}`, "unauthorized", ""},
			{execPath("a.b", "e1", "acquire"), "wrong", `{"wait": "1s"}`, "unauthorized", ""},
			{execPath("a.b", "e1", "heartbeat"), "", `{"token": 1}`, "unauthorized", ""},
			{execPath("a.b", "e1", "release"), "", `{"token": 1}`, "unauthorized", ""},
			{execPath("a.b", long, "acquire"), token, `{"wait": "1s"}`, "invalid_argument", "execution ID"},
			{execPath(long, "e1", "acquire"), token, `{"wait": "1s"}`, "invalid_argument", "ref"},
			{execPath("a.b", "e1", "acquire"), token, `{"wait": "forever"}`, "invalid_argument", "wait"},
			{execPath("a.b", "e1", "acquire"), token, `{"wait": "2h"}`, "invalid_argument", "wait"},
			{execPath("a.b", "e1", "acquire"), token, `{"wait": "-1s"}`, "invalid_argument", "wait"},
			{execPath("a.b", "e1", "acquire"), token, `{"wait": 30}`, "invalid_argument", "wait"},
			{execPath("a.b", "e1", "acquire"), token, `{"timeout": "1s"}`, "invalid_argument", "timeout"},
			{execPath("a.b", "e1", "acquire"), token, `{"wait": "1s"} {}`, "invalid_argument", "after"},
			{execPath("a.b", "e1", "acquire"), token, `[1]`, "invalid_argument", "array"},
			{execPath("a.b", "e1", "heartbeat"), token, ``, "invalid_argument", "empty"},
			{execPath("a.b", "e1", "heartbeat"), token, `{}`, "invalid_argument", "token is missing"},
			{execPath("a.b", "e1", "heartbeat"), token, `{"token": 0}`, "invalid_argument", "token"},
			{execPath("a.b", "e1", "release"), token, `{"token": "7"}`, "invalid_argument", "token"},
			{execPath("a.b", "e1", "release"), token, `{"token": 1.5}`, "invalid_argument", "token"},
			{execPath("a.b", "e1", "release"), token, `{"token": 1, "token": 2}`, "invalid_argument", "twice"},
			{execPath("a.b", "e1", "release"), token, `{"token": 1`, "invalid_argument", "ends early"},
		} {
			want := 400
			if c.code == "unauthorized" {
				want = 401
			}
			m, raw := f.do("POST", c.path, c.auth, c.body, want)
			if m["code"] != c.code || !strings.Contains(fmt.Sprint(m["error"]), c.field) {
				t.Errorf("POST %.60s %s: %s, want code %s naming %q", c.path, c.body, raw, c.code, c.field)
			}
		}
		f.doErr("POST", execPath("a.b", "e1", "acquire"), token, `{"wait": "`+strings.Repeat("1", 2000)+`s"}`, 413, "body_too_large")
		after, err := ds.rdb.Keys(redistest.Context(t), ds.prefix+":*").Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(after) != len(before) {
			t.Fatalf("bad input wrote keys: before %v, after %v", before, after)
		}
	})
}

// TestAdmissionReattachedAndShutdown: a call left behind when its
// execution is re-attached through another daemon answers 409 reattached;
// a daemon's Stop answers its waiting calls at once (202); a daemon whose
// Coordinator closed answers 503, and the client's next call through
// another daemon is a new request.
func TestAdmissionReattachedAndShutdown(t *testing.T) {
	admTiers(t, coordinator.Options{LeaseTTL: 20 * time.Second}, func(t *testing.T, ds *daemons) {
		const a = "adm.stop"
		ds.limit(a, 1)
		tok := tokenOf(t, ds.acquire(0, a, "e1", "0s", 200))
		left := ds.acquireAsync(0, a, "e2", "50s")
		redistest.Eventually(t, 5*time.Second, "e2 queued", func() bool { return ds.stats(a).QueueLength == 1 })
		if p := position(t, ds.acquire(1, a, "e2", "0s", 202)); p != 0 {
			t.Fatalf("e2 through daemon 1: position %d", p)
		}
		if r := recv(t, left, "e2's call left on daemon 0"); r.status != 409 || r.body["code"] != "reattached" {
			t.Fatalf("e2's call left on daemon 0: %d %v", r.status, r.body)
		}

		closing := ds.acquireAsync(1, a, "e3", "50s")
		redistest.Eventually(t, 5*time.Second, "e3 queued", func() bool { return ds.stats(a).QueueLength == 2 })
		if err := ds.d[1].c.Close(); err != nil {
			t.Fatal(err)
		}
		if r := recv(t, closing, "e3 as daemon 1 closes"); r.status != 503 || r.body["code"] != "unavailable" {
			t.Fatalf("e3 as daemon 1 closes: %d %v", r.status, r.body)
		}
		if st := ds.stats(a); st.QueueLength != 0 || st.TotalCanceled != 2 {
			t.Fatalf("daemon 1's waits (e2 between calls, e3 in one) were not given up at close: %+v", st)
		}

		waiting := ds.acquireAsync(0, a, "e3", "50s") // anew, through daemon 0
		redistest.Eventually(t, 5*time.Second, "e3 queued anew", func() bool { return ds.stats(a).QueueLength == 1 })
		close(ds.stops[0])
		if r := recv(t, waiting, "e3 after daemon 0's Stop"); r.status != 202 || r.body["status"] != "waiting" || r.body["position"] != 0.0 {
			t.Fatalf("e3 after Stop: %d %v", r.status, r.body)
		}
		ds.call(0, a, "e1", "release", tok, 200)
		var tok3 int64
		redistest.Eventually(t, 5*time.Second, "e3 admitted", func() bool { // every call answers at once after Stop
			r := recv(t, ds.acquireAsync(0, a, "e3", "0s"), "e3")
			if r.status == 200 {
				tok3 = tokenOf(t, r.body)
			}
			return r.status == 200
		})
		ds.call(0, a, "e3", "release", tok3, 200)
	})
}

// TestAdmissionCanceled: an operator's cancel ends a waiting call with 409
// canceled; a cancel while the client is between polls is told to its next
// acquire through the same daemon.
func TestAdmissionCanceled(t *testing.T) {
	admTiers(t, coordinator.Options{LeaseTTL: 20 * time.Second}, func(t *testing.T, ds *daemons) {
		const a = "adm.cancel"
		ds.limit(a, 1)
		tok := tokenOf(t, ds.acquire(0, a, "e1", "0s", 200))
		waiting := ds.acquireAsync(1, a, "e5", "30s")
		redistest.Eventually(t, 5*time.Second, "e5 queued", func() bool { return ds.stats(a).QueueLength == 1 })
		ds.d[0].do("POST", execPath(a, "e5", "cancel"), token, "", 200)
		if r := recv(t, waiting, "e5"); r.status != 409 || r.body["code"] != "canceled" {
			t.Fatalf("e5: %d %v", r.status, r.body)
		}
		position(t, ds.acquire(1, a, "e6", "0s", 202))
		ds.d[0].do("POST", execPath(a, "e6", "cancel"), token, "", 200)
		redistest.Eventually(t, 5*time.Second, "e6's wait ended", func() bool { return ds.stats(a).TotalCanceled == 2 })
		ds.d[1].doErr("POST", execPath(a, "e6", "acquire"), token, `{"wait": "0s"}`, 409, "canceled")
		ds.call(0, a, "e1", "release", tok, 200)
		if st := ds.stats(a); st.TotalEnqueued != 3 || st.TotalCanceled != 2 || st.ActiveCount != 0 || st.QueueLength != 0 {
			t.Fatalf("stats: %+v", st)
		}
	})
}
