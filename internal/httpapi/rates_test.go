package httpapi_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/internal/httpapi"
	"github.com/batonhq/baton/internal/metrics"
	"github.com/batonhq/baton/internal/redistest"
	"github.com/batonhq/baton/limits"
)

// onBothTiers runs fn on miniredis and on the shared redis-server (under a
// key prefix of its own).
func onBothTiers(t *testing.T, fn func(t *testing.T, f *fixture)) {
	t.Run("miniredis", func(t *testing.T) {
		fn(t, newFixture(t))
	})
	t.Run("redis-server", func(t *testing.T) {
		srv := redistest.SharedServer(t)
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, DialTimeout: time.Second})
		t.Cleanup(func() { rdb.Close() })
		fn(t, newFixtureOn(t, rdb, nil, redistest.Prefix(t)))
	})
}

// newFixtureOn is newFixture on a given client.
func newFixtureOn(t *testing.T, rdb redis.UniversalClient, mr *miniredis.Miniredis, prefix string) *fixture {
	c, err := coordinator.New(rdb, coordinator.Options{SweepInterval: -1, Prefix: prefix})
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

// jsonOf renders a decoded body back as compact JSON, for comparisons.
func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestPolicyKinds: a scope carries max_concurrent, rate and quota; PUT sets
// the kinds it gives and leaves the others; GET and the list show all
// three; DELETE ?kind= clears one kind, DELETE alone all of them; the
// action's queue-stats shows each kind in force with its source.
func TestPolicyKinds(t *testing.T) {
	onBothTiers(t, func(t *testing.T, f *fixture) {
		pack := "/api/v1/policies/pack:slack"
		m, _ := f.do("PUT", pack, token, `{"rate": {"limit": 100, "per": "1m", "burst": 10}}`, 200)
		if got := jsonOf(t, m); got != `{"rate":{"burst":10,"limit":100,"per":"1m"},"scope":"pack:slack"}` {
			t.Fatalf("PUT rate: %s", got)
		}
		m, _ = f.do("PUT", pack, token, `{"quota": {"limit": 10000, "window": "day"}}`, 200)
		if got := jsonOf(t, m); got != `{"quota":{"limit":10000,"window":"day"},"rate":{"burst":10,"limit":100,"per":"1m"},"scope":"pack:slack"}` {
			t.Fatalf("PUT quota kept the rate? %s", got)
		}
		m, _ = f.do("PUT", pack, token, `{"max_concurrent": 4, "rate": {"limit": 5, "per": "1s"}}`, 200)
		want := `{"max_concurrent":4,"quota":{"limit":10000,"window":"day"},"rate":{"burst":0,"limit":5,"per":"1s"},"scope":"pack:slack"}`
		if got := jsonOf(t, m); got != want {
			t.Fatalf("PUT two kinds: %s, want %s", got, want)
		}
		if m, _ := f.do("GET", pack, "", "", 200); jsonOf(t, m) != want {
			t.Fatalf("GET: %s, want %s", jsonOf(t, m), want)
		}
		f.do("PUT", "/api/v1/policies/action:slack.post", token, `{"quota": {"limit": 3, "window": "minute"}}`, 200)
		m, _ = f.do("GET", "/api/v1/policies", "", "", 200)
		list := jsonOf(t, m["policies"])
		wantList := `[{"quota":{"limit":3,"window":"minute"},"scope":"action:slack.post"},` + want + `]`
		if list != wantList {
			t.Fatalf("list: %s, want %s", list, wantList)
		}

		// The action's stats: the limit and rate from the pack, the quota from the action.
		st, _ := f.do("GET", "/api/v1/actions/slack.post/queue-stats", "", "", 200)
		for field, want := range map[string]string{
			"max_concurrent": "4", "limit_source": `"pack:slack"`,
			"rate": `{"burst":0,"limit":5,"per":"1s"}`, "rate_source": `"pack:slack"`,
			"quota": `{"limit":3,"window":"minute"}`, "quota_source": `"action:slack.post"`,
			"quota_used": "0", "throttled_until": "null", "total_throttled": "0", "total_quota_rejected": "0",
		} {
			if got := jsonOf(t, st[field]); got != want {
				t.Errorf("queue-stats %s = %s, want %s", field, got, want)
			}
		}
		if _, ok := st["quota_reset_at"]; !ok {
			t.Errorf("queue-stats has no quota_reset_at: %v", st)
		}

		// Clearing one kind at a time; a kind not set is a 404 that changes nothing.
		f.do("DELETE", pack+"?kind=rate", token, "", 204)
		f.doErr("DELETE", pack+"?kind=rate", token, "", 404, "not_found")
		want = `{"max_concurrent":4,"quota":{"limit":10000,"window":"day"},"scope":"pack:slack"}`
		if m, _ := f.do("GET", pack, "", "", 200); jsonOf(t, m) != want {
			t.Fatalf("after clearing the rate: %s, want %s", jsonOf(t, m), want)
		}
		st, _ = f.do("GET", "/api/v1/actions/slack.post/queue-stats", "", "", 200)
		if st["rate"] != nil || st["rate_source"] != "default" {
			t.Fatalf("queue-stats after clearing the rate: rate %v from %v", st["rate"], st["rate_source"])
		}
		f.doErr("DELETE", pack+"?kind=burst", token, "", 400, "invalid_argument")
		f.doErr("DELETE", pack+"?kind=rate&kind=quota", token, "", 400, "invalid_argument")
		f.do("DELETE", pack+"?kind=max_concurrent", token, "", 204)
		f.do("DELETE", pack, token, "", 204) // the quota, all that is left
		f.doErr("GET", pack, "", "", 404, "not_found")
		f.doErr("DELETE", pack, token, "", 404, "not_found")
		f.do("DELETE", "/api/v1/policies/action:slack.post?kind=quota", token, "", 204)
		if m, _ := f.do("GET", "/api/v1/policies", "", "", 200); jsonOf(t, m["policies"]) != "[]" {
			t.Fatalf("policies left: %v", m)
		}
	})
}

// TestRateAndQuotaBodiesStrict: every bad rate or quota is a 400 whose
// message names the field, and nothing is written (not even the valid
// kinds beside it: the policy version does not move).
func TestRateAndQuotaBodiesStrict(t *testing.T) {
	onBothTiers(t, func(t *testing.T, f *fixture) {
		path := "/api/v1/policies/pack:core"
		f.do("PUT", path, token, `{"max_concurrent": 2, "rate": {"limit": 1, "per": "1s"}}`, 200)
		before, _ := f.do("GET", "/api/v1/policies", "", "", 200)
		cases := []struct{ body, want string }{
			{`{"rate": null}`, `rate: want an object such as {"limit": 100, "per": "1m", "burst": 10}; got null`},
			{`{"rate": 5}`, `rate: want an object`},
			{`{"rate": {}}`, "rate.limit is missing"},
			{`{"rate": {"limit": 5}}`, "rate.per is missing"},
			{`{"rate": {"limit": 5, "per": "1m", "colour": 1}}`, `rate: unknown field "colour"; the fields are limit, per and burst`},
			{`{"rate": {"limit": 5, "limit": 6, "per": "1m"}}`, "rate.limit appears twice"},
			{`{"rate": {"limit": -1, "per": "1m"}}`, `rate.limit: want a whole number from 0 to 1000000000; got "-1"`},
			{`{"rate": {"limit": 1000000001, "per": "1m"}}`, `rate.limit: want a whole number from 0 to 1000000000; got "1000000001"`},
			{`{"rate": {"limit": 2.5, "per": "1m"}}`, `rate.limit: want a whole number`},
			{`{"rate": {"limit": "5", "per": "1m"}}`, `rate.limit: want a whole number from 0 to 1000000000; got the string "5"`},
			{`{"rate": {"limit": 5, "per": 60}}`, `rate.per: want a duration from 1ms to 8784h such as "1s", "1m" or "1h"; got the number "60"`},
			{`{"rate": {"limit": 5, "per": "minute"}}`, `rate.per: want a duration from 1ms to 8784h`},
			{`{"rate": {"limit": 5, "per": "0s"}}`, `rate.per: want a duration from 1ms`},
			{`{"rate": {"limit": 5, "per": "999us"}}`, `got "999us"`},
			{`{"rate": {"limit": 5, "per": "8785h"}}`, `got "8785h"`},
			{`{"rate": {"limit": 5, "per": "1m", "burst": -1}}`, `rate.burst: want a whole number from 0 to 1000000000; got "-1"`},
			{`{"rate": {"limit": 5, "per": "1m", "burst": null}}`, `rate.burst: want a whole number from 0 to 1000000000; got null`},
			{`{"quota": []}`, `quota: want an object such as {"limit": 10000, "window": "day"}; got an array`},
			{`{"quota": {"limit": 5}}`, "quota.window is missing"},
			{`{"quota": {"window": "day"}}`, "quota.limit is missing"},
			{`{"quota": {"limit": 5, "window": "week"}}`, `quota.window: want "minute", "hour" or "day"; got "week"`},
			{`{"quota": {"limit": 5, "window": "Day"}}`, `got "Day"`},
			{`{"quota": {"limit": 5, "window": 1}}`, `quota.window: want "minute", "hour" or "day"; got the number "1"`},
			{`{"quota": {"limit": -5, "window": "day"}}`, `quota.limit: want a whole number from 0 to 1000000000000; got "-5"`},
			{`{"quota": {"limit": 1000000000001, "window": "day"}}`, `got "1000000000001"`},
			{`{"quota": {"limit": 5, "window": "day", "per": "1m"}}`, `quota: unknown field "per"; the fields are limit and window`},
			{`{"quota": {"limit": 5, "window": "day"}, "quota": {"limit": 5, "window": "day"}}`, "body: quota appears twice"},
			// A valid kind beside a bad one is not written either.
			{`{"max_concurrent": 7, "quota": {"limit": 5, "window": "year"}}`, "quota.window"},
			{`{"rate": {"limit": 9, "per": "1m"}, "max_concurrent": -3}`, "max_concurrent: want a whole number"},
			{`{"Rate": {"limit": 9, "per": "1m"}}`, `body: unknown field "Rate"; the fields are max_concurrent, rate and quota`},
			{`{}`, "body: none of max_concurrent, rate and quota is given"},
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
		}
		if after, _ := f.do("GET", "/api/v1/policies", "", "", 200); jsonOf(t, after) != jsonOf(t, before) {
			t.Fatalf("a refused body wrote something:\nbefore %s\nafter  %s", jsonOf(t, before), jsonOf(t, after))
		}
	})
}

// TestQueueStatsShowThrottleAndQuota: with a rate of 1 per hour, the second
// execution waits at the head for its token (throttled_until set,
// total_throttled counted); with a quota of 2 per day, the third request is
// refused (total_quota_rejected, quota_used). Each request's outcome is the
// test's own bookkeeping.
func TestQueueStatsShowThrottleAndQuota(t *testing.T) {
	onBothTiers(t, func(t *testing.T, f *fixture) {
		ctx := redistest.Context(t)
		f.do("PUT", "/api/v1/policies/action:mail.send", token,
			`{"rate": {"limit": 1, "per": "1h"}, "quota": {"limit": 2, "window": "day"}}`, 200)
		if _, err := f.c.EnqueueAndWait(ctx, "mail.send", "e1"); err != nil {
			t.Fatal(err)
		}
		waited := make(chan error, 1)
		go func() {
			_, err := f.c.EnqueueAndWait(ctx, "mail.send", "e2")
			waited <- err
		}()
		var st map[string]any
		redistest.Eventually(t, 5*time.Second, "e2 throttled at the head", func() bool {
			st, _ = f.do("GET", "/api/v1/actions/mail.send/queue-stats", "", "", 200)
			return st["queue_length"] == 1.0 && st["throttled_until"] != nil
		})
		until, err := time.Parse(time.RFC3339Nano, st["throttled_until"].(string))
		if err != nil || until.Before(time.Now().Add(30*time.Minute)) {
			t.Fatalf("throttled_until %v (%v): want about an hour ahead", st["throttled_until"], err)
		}
		if st["total_throttled"] != 1.0 || st["quota_used"] != 2.0 {
			t.Fatalf("total_throttled %v, quota_used %v: want 1 and 2 (e1 admitted, e2 waiting with a reservation)",
				st["total_throttled"], st["quota_used"])
		}
		_, err = f.c.EnqueueAndWait(ctx, "mail.send", "e3")
		var qe *coordinator.QuotaError
		if !errors.As(err, &qe) {
			t.Fatalf("e3: %v, want a *QuotaError", err)
		}
		f.do("POST", "/api/v1/actions/mail.send/executions/e2/cancel", token, "", 200)
		select {
		case err := <-waited:
			if !errors.Is(err, coordinator.ErrCanceled) {
				t.Fatalf("e2: %v, want ErrCanceled", err)
			}
		case <-time.After(redistest.SlowFloor):
			t.Fatal("e2 still waiting after its cancel")
		}
		st, _ = f.do("GET", "/api/v1/actions/mail.send/queue-stats", "", "", 200)
		for field, want := range map[string]any{"total_quota_rejected": 1.0, "quota_used": 1.0, "queue_length": 0.0,
			"throttled_until": nil, "total_enqueued": 2.0} {
			if st[field] != want {
				t.Errorf("after e3 refused and e2 canceled: %s = %v, want %v", field, st[field], want)
			}
		}
		// The same numbers in /metrics, read from Redis at scrape time.
		_, text := f.do("GET", "/metrics", "", "", 200)
		for _, line := range []string{
			`baton_throttled_total{action="mail.send"} 1`, `baton_quota_rejections_total{action="mail.send"} 1`,
			`baton_quota_used{action="mail.send"} 1`, `baton_quota_limit{action="mail.send",window="day"} 2`,
			`baton_rate_limit_per_second{action="mail.send"} 0.0002777777777777778`, `baton_rate_burst{action="mail.send"} 0`,
			`baton_throttled_seconds{action="mail.send"} 0`,
		} {
			if !strings.Contains(text, "\n"+line+"\n") {
				t.Errorf("/metrics lacks %s", line)
			}
		}
		reset, err := time.Parse(time.RFC3339Nano, fmt.Sprint(st["quota_reset_at"]))
		if err != nil || !reset.Equal(limits.Day.Start(time.Now()).Add(24*time.Hour)) && !reset.Equal(limits.Day.Start(time.Now())) {
			t.Errorf("quota_reset_at %v (%v): want the end of the current UTC day", st["quota_reset_at"], err)
		}
	})
}

// TestAcquireOverQuotaIs429: an HTTP acquire that meets its action's quota
// is a 429 quota_exceeded with Retry-After (whole seconds to the end of the
// window) and nothing queued, through either daemon and on retry; a
// throttled acquire waits in the queue (202) and is admitted in its turn.
func TestAcquireOverQuotaIs429(t *testing.T) {
	admTiers(t, coordinator.Options{}, func(t *testing.T, ds *daemons) {
		const a = "adm.quota"
		ds.d[0].do("PUT", "/api/v1/policies/action:"+a, token, `{"quota": {"limit": 2, "window": "hour"}}`, 200)
		t1 := tokenOf(t, ds.acquire(0, a, "q1", "0s", 200))
		t2 := tokenOf(t, ds.acquire(1, a, "q2", "0s", 200))
		for i := range 2 {
			req, _ := http.NewRequest("POST", ds.d[i].srv.URL+execPath(a, "q3", "acquire"), strings.NewReader(`{"wait": "1s"}`))
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var body map[string]any
			_ = json.Unmarshal(raw, &body)
			secs, perr := strconv.Atoi(resp.Header.Get("Retry-After"))
			if resp.StatusCode != 429 || body["code"] != "quota_exceeded" || perr != nil || secs < 1 || secs > 3600 ||
				jsonOf(t, body["quota"]) != `{"limit":2,"window":"hour"}` || body["quota_source"] != "action:"+a {
				t.Fatalf("daemon %d, over quota: %d Retry-After %q %s", i, resp.StatusCode, resp.Header.Get("Retry-After"), raw)
			}
		}
		if st := ds.stats(a); st.TotalQuotaRejected != 2 || st.TotalEnqueued != 2 || st.QueueLength != 0 || st.QuotaUsed != 2 {
			t.Fatalf("stats after two refusals: %+v", st)
		}
		ds.call(0, a, "q1", "release", t1, 200)
		ds.call(1, a, "q2", "release", t2, 200)

		// A throttle makes acquire wait its turn instead.
		const b = "adm.rate"
		ds.d[0].do("PUT", "/api/v1/policies/action:"+b, token, `{"rate": {"limit": 1, "per": "1h"}}`, 200)
		tb := tokenOf(t, ds.acquire(0, b, "r1", "0s", 200))
		if p := position(t, ds.acquire(1, b, "r2", "0s", 202)); p != 0 {
			t.Fatalf("throttled r2 at position %d, want 0", p)
		}
		ds.call(0, b, "r1", "release", tb, 200) // a free slot is not a token: r2 still waits
		position(t, ds.acquire(1, b, "r2", "0s", 202))
		if st := ds.stats(b); st.ThrottledUntil.IsZero() || st.TotalThrottled != 1 {
			t.Fatalf("r2 not throttled: %+v", st)
		}
		ds.d[0].do("POST", "/api/v1/actions/"+b+"/executions/r2/cancel", token, "", 200)
	})
}
