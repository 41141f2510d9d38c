package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"
)

// TestRateAndQuotaCommands: policy set takes --rate/--burst and --quota
// beside or without a limit; policy get, stats and top show them; policy
// clear --kind removes one kind (exit 3 when it was not set).
func TestRateAndQuotaCommands(t *testing.T) {
	mr := miniredis.RunT(t)
	env := []string{"BATON_REDIS_URL=redis://" + mr.Addr()}
	expect := func(want string, args ...string) string {
		t.Helper()
		code, out, errOut := runCLI(t, env, args...)
		if code != exitOK || !strings.Contains(out, want) {
			t.Fatalf("%v: exit %d, stdout %q, stderr %q; want %q", args, code, out, errOut, want)
		}
		return out
	}
	expect("pack:slack rate 100/1m burst 10\n", "policy", "set", "pack:slack", "--rate", "100/1m", "--burst", "10")
	expect("pack:slack rate 100/1m burst 10, quota 10000/day\n", "policy", "set", "pack:slack", "--quota", "10000/day")
	expect("pack:slack 4, rate 5/1s, quota 10000/day\n", "policy", "set", "pack:slack", "4", "--rate", "5/1s")
	expect("pack:slack 4, rate 5/1s, quota 10000/day\n", "policy", "get", "pack:slack")
	expect("action:slack.post quota 3/minute\n", "policy", "set", "--quota", "3/minute", "action:slack.post")

	out := expect("rate", "stats", "slack.post")
	for _, re := range []string{`\nmax_concurrent +4 \(pack:slack\)\n`, `\nrate +5/1s \(pack:slack\)\n`,
		`\nthrottled_until +-\n`, `\nquota +3/minute \(action:slack.post\)\n`,
		`\nquota_used +0 of 3 \(window resets at \S+\)\n`, `\ntotal_quota_rejected +0\n`, `\ntotal_throttled +0\n`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("stats lacks %s:\n%s", re, out)
		}
	}
	out = expect(`"rate_source": "pack:slack"`, "stats", "slack.post", "--json")
	var st map[string]any
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err)
	}
	if r, _ := json.Marshal(st["rate"]); string(r) != `{"burst":0,"limit":5,"per":"1s"}` {
		t.Errorf("stats --json rate: %s", r)
	}
	if q, _ := json.Marshal(st["quota"]); string(q) != `{"limit":3,"window":"minute"}` || st["quota_source"] != "action:slack.post" {
		t.Errorf("stats --json quota: %s from %v", q, st["quota_source"])
	}

	// top shows an action once something was enqueued for it.
	expect("pack:slack 4, rate 5/1s burst 10", "policy", "set", "pack:slack", "--rate", "5/1s", "--burst", "10")
	mr.SAdd("baton:actions", "slack.post") // as an enqueue would; top lists known actions
	out = expect("QUOTA_USED", "top", "--once")
	if !regexp.MustCompile(`\nslack.post +0 +0 +4 +pack:slack +- +- +0 +0 +0 +5/1s\+10 +0 +0/3/minute +0\n`).MatchString(out) {
		t.Errorf("top --once:\n%s", out)
	}

	expect("pack:slack rate cleared\n", "policy", "clear", "pack:slack", "--kind", "rate")
	if code, out, errOut := runCLI(t, env, "policy", "clear", "pack:slack", "--kind", "rate"); code != exitNotSet || out != "" ||
		!strings.Contains(errOut, "no rate set on pack:slack; nothing to clear") {
		t.Fatalf("clear of an unset rate: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	expect("pack:slack 4, quota 10000/day\n", "policy", "get", "pack:slack")
	expect("pack:slack limit cleared\n", "policy", "clear", "pack:slack", "--kind", "max_concurrent")
	expect("pack:slack quota 10000/day\n", "policy", "get", "pack:slack")
	expect("pack:slack cleared\n", "policy", "clear", "pack:slack")
	expect("pack:slack not set\n", "policy", "get", "pack:slack")
	if code, _, errOut := runCLI(t, env, "policy", "clear", "pack:slack"); code != exitNotSet ||
		!strings.Contains(errOut, "no policy set on pack:slack; nothing to clear") {
		t.Fatalf("clear of an empty scope: exit %d, stderr %q", code, errOut)
	}
}

// TestRateAndQuotaUsageErrors: bad rates, quotas and flags exit 2 with a
// message naming the field, before anything is written.
func TestRateAndQuotaUsageErrors(t *testing.T) {
	mr := miniredis.RunT(t)
	env := []string{"BATON_REDIS_URL=redis://" + mr.Addr()}
	if code, _, errOut := runCLI(t, env, "policy", "set", "pack:core", "2", "--rate", "1/1s"); code != exitOK {
		t.Fatalf("policy set: %d %s", code, errOut)
	}
	hash := func() map[string]string {
		m := map[string]string{}
		keys, _ := mr.HKeys("baton:policies")
		for _, k := range keys {
			m[k] = mr.HGet("baton:policies", k)
		}
		return m
	}
	before := hash()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"policy", "set", "pack:core", "3", "--burst", "3"}, "--burst needs --rate"},
		{[]string{"policy", "set", "pack:core", "--rate", "100"}, `rate "100": want LIMIT/PER such as 100/1m`},
		{[]string{"policy", "set", "pack:core", "--rate", "100/minute"}, `rate per "minute"`},
		{[]string{"policy", "set", "pack:core", "--rate", "-5/1m"}, "rate limit -5"},
		{[]string{"policy", "set", "pack:core", "--rate", "5/1m", "--burst", "-1"}, "rate burst -1"},
		{[]string{"policy", "set", "pack:core", "--rate", "5/1us"}, "rate per 1µs: under the minimum of 1ms"},
		{[]string{"policy", "set", "pack:core", "--quota", "10/week"}, `quota window "week"`},
		{[]string{"policy", "set", "pack:core", "--quota", "lots/day"}, `quota limit "lots"`},
		{[]string{"policy", "set", "pack:core", "--quota", "1000000000001/day"}, "quota limit 1000000000001: over the maximum"},
		// A good kind beside a bad one is not written either.
		{[]string{"policy", "set", "pack:core", "7", "--quota", "10/year"}, `quota window "year"`},
		{[]string{"policy", "set", "pack:core", "-7", "--rate", "1/1s"}, `limit "-7"`},
		{[]string{"policy", "set", "pack:core"}, "policy set takes 2 arguments, got 1"},
		{[]string{"policy", "get", "pack:core", "--rate", "1/1s"}, "policy get takes no --rate"},
		{[]string{"policy", "clear", "pack:core", "--quota", "1/day"}, "policy clear takes no --quota"},
		{[]string{"policy", "set", "pack:core", "3", "--kind", "rate"}, "policy set takes no --kind"},
		{[]string{"policy", "clear", "pack:core", "--kind", "burst"}, `--kind "burst": want limit, rate or quota`},
	} {
		code, out, errOut := runCLI(t, env, c.args...)
		if code != exitUsage || out != "" || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 and %q", c.args, code, out, errOut, c.want)
		}
	}
	after := hash()
	if len(after) != len(before) {
		t.Fatalf("policies changed: %v, then %v", before, after)
	}
	for k, v := range before {
		if after[k] != v {
			t.Fatalf("policies changed: %v, then %v", before, after)
		}
	}
}
