package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/batonhq/baton/limits"
)

// Raw values come as YAML types (string, int, bool, []any, map[string]any)
// from the file and flags, and as strings from the environment; every
// decoder below accepts both.

func show(raw any) string {
	switch v := raw.(type) {
	case string:
		return strconv.Quote(v)
	case nil:
		return "null"
	}
	return fmt.Sprintf("%v", raw)
}

func str(ptr func(*Config) *string, check func(string) error) func(*Config, any) error {
	return func(c *Config, raw any) error {
		var s string
		switch v := raw.(type) {
		case string:
			s = v
		case int, int64, float64, bool:
			s = fmt.Sprint(v)
		case nil:
		default:
			return errors.New("want a string")
		}
		if check != nil {
			if err := check(s); err != nil {
				return err
			}
		}
		if ptr != nil {
			*ptr(c) = s
		}
		return nil
	}
}

func integer[T int | int64](ptr func(*Config) *T, check func(int64) error) func(*Config, any) error {
	return func(c *Config, raw any) error {
		var n int64
		switch v := raw.(type) {
		case int:
			n = int64(v)
		case int64:
			n = v
		case uint64:
			n = int64(v)
		case float64:
			if v != float64(int64(v)) {
				return errors.New("want a whole number")
			}
			n = int64(v)
		case string:
			var err error
			if n, err = strconv.ParseInt(strings.TrimSpace(v), 10, 64); err != nil {
				return errors.New("want a whole number")
			}
		default:
			return errors.New("want a whole number")
		}
		if err := check(n); err != nil {
			return err
		}
		*ptr(c) = T(n)
		return nil
	}
}

func boolean(ptr func(*Config) *bool) func(*Config, any) error {
	return func(c *Config, raw any) error {
		switch v := raw.(type) {
		case bool:
			*ptr(c) = v
			return nil
		case string:
			b, err := strconv.ParseBool(strings.TrimSpace(v))
			if err != nil {
				return errors.New("want true or false")
			}
			*ptr(c) = b
			return nil
		}
		return errors.New("want true or false")
	}
}

func duration(ptr func(*Config) *time.Duration, check func(time.Duration) error) func(*Config, any) error {
	return func(c *Config, raw any) error {
		s, ok := raw.(string)
		if !ok {
			return errors.New("want a duration with a unit, such as 500ms, 30s or 5m")
		}
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			return errors.New("want a duration with a unit, such as 500ms, 30s or 5m")
		}
		if err := check(d); err != nil {
			return err
		}
		*ptr(c) = d
		return nil
	}
}

// list reads a YAML list, or a comma-separated string (environment).
func list(ptr func(*Config) *[]string, check func(string) error) func(*Config, any) error {
	return func(c *Config, raw any) error {
		var items []string
		switch v := raw.(type) {
		case []string:
			items = v
		case []any:
			for _, x := range v {
				s, ok := x.(string)
				if !ok {
					return fmt.Errorf("item %v: want a string", x)
				}
				items = append(items, s)
			}
		case string:
			for s := range strings.SplitSeq(v, ",") {
				if s = strings.TrimSpace(s); s != "" {
					items = append(items, s)
				}
			}
		case nil:
		default:
			return errors.New("want a list of strings")
		}
		for _, s := range items {
			if err := check(s); err != nil {
				return fmt.Errorf("item %q: %w", s, err)
			}
		}
		*ptr(c) = items
		return nil
	}
}

// setPolicies reads a list of {scope, max_concurrent, rate, quota} maps
// (YAML), or "SCOPE=VALUE,..." (environment), where VALUE is a limit N,
// rate:LIMIT/PER[+BURST] or quota:LIMIT/WINDOW (a scope may take several
// items, one per kind). Errors name the item and the field.
func setPolicies(c *Config, raw any) error {
	c.Policies = nil
	index := map[limits.Scope]int{} // scope -> its place in c.Policies
	scopeOf := func(i int, scopeRaw any) (limits.Scope, error) {
		scopeText, ok := scopeRaw.(string)
		if !ok {
			return limits.Scope{}, fmt.Errorf("item %d: scope %s: want global, pack:NAME or action:REF", i, show(scopeRaw))
		}
		scope, err := limits.ParseScope(scopeText)
		if err != nil {
			return limits.Scope{}, fmt.Errorf("item %d: scope %q: want global, pack:NAME or action:REF", i, scopeText)
		}
		return scope, nil
	}
	switch v := raw.(type) {
	case nil:
		return nil
	case string:
		i := 0
		for item := range strings.SplitSeq(v, ",") {
			if item = strings.TrimSpace(item); item == "" {
				continue
			}
			scopeText, value, ok := strings.Cut(item, "=")
			if !ok {
				return fmt.Errorf("item %q: want SCOPE=N, SCOPE=rate:LIMIT/PER[+BURST] or SCOPE=quota:LIMIT/WINDOW", item)
			}
			scope, err := scopeOf(i, scopeText)
			if err != nil {
				return err
			}
			at, seen := index[scope]
			if !seen {
				at = len(c.Policies)
				index[scope] = at
				c.Policies = append(c.Policies, Policy{Scope: scope})
			}
			p := &c.Policies[at]
			twice := func(kind string) error { return fmt.Errorf("item %d: scope %s sets its %s twice", i, scope, kind) }
			switch {
			case strings.HasPrefix(value, "rate:"):
				if p.Rate != nil {
					return twice("rate")
				}
				spec, burstText, hasBurst := strings.Cut(strings.TrimPrefix(value, "rate:"), "+")
				burst := 0
				if hasBurst {
					if burst, err = strconv.Atoi(burstText); err != nil {
						return fmt.Errorf("item %d (%s): rate.burst %q: want a whole number from 0 to %d", i, scope, burstText, limits.MaxLimit)
					}
				}
				r, err := limits.ParseRateSpec(spec, burst)
				if err != nil {
					return fmt.Errorf("item %d (%s): %w", i, scope, fieldError(err))
				}
				p.Rate = &r
			case strings.HasPrefix(value, "quota:"):
				if p.Quota != nil {
					return twice("quota")
				}
				q, err := limits.ParseQuotaSpec(strings.TrimPrefix(value, "quota:"))
				if err != nil {
					return fmt.Errorf("item %d (%s): %w", i, scope, fieldError(err))
				}
				p.Quota = &q
			default:
				if p.MaxConcurrent != nil {
					return twice("limit")
				}
				n, err := parseLimit(value)
				if err != nil {
					return fmt.Errorf("item %d (%s): max_concurrent %s: %w", i, scope, show(value), err)
				}
				p.MaxConcurrent = &n
			}
			i++
		}
		return nil
	case []any:
		for i, item := range v {
			m, ok := item.(map[string]any)
			if !ok {
				return fmt.Errorf("item %d: want {scope: ..., max_concurrent: N, rate: ..., quota: ...}", i)
			}
			for key := range m {
				if !slices.Contains([]string{"scope", "max_concurrent", "rate", "quota"}, key) {
					return fmt.Errorf("item %d: unknown key %q (want scope, and max_concurrent, rate or quota)", i, key)
				}
			}
			scope, err := scopeOf(i, m["scope"])
			if err != nil {
				return err
			}
			if _, seen := index[scope]; seen {
				return fmt.Errorf("item %d: scope %s appears twice", i, scope)
			}
			p := Policy{Scope: scope}
			if nRaw, ok := m["max_concurrent"]; ok {
				n, err := parseLimit(nRaw)
				if err != nil {
					return fmt.Errorf("item %d (%s): max_concurrent %s: %w", i, scope, show(nRaw), err)
				}
				p.MaxConcurrent = &n
			}
			if rRaw, ok := m["rate"]; ok {
				r, err := parseRate(rRaw)
				if err != nil {
					return fmt.Errorf("item %d (%s): %w", i, scope, err)
				}
				p.Rate = &r
			}
			if qRaw, ok := m["quota"]; ok {
				q, err := parseQuota(qRaw)
				if err != nil {
					return fmt.Errorf("item %d (%s): %w", i, scope, err)
				}
				p.Quota = &q
			}
			if p.MaxConcurrent == nil && p.Rate == nil && p.Quota == nil {
				return fmt.Errorf("item %d (%s): sets nothing; give max_concurrent, rate or quota", i, scope)
			}
			index[scope] = len(c.Policies)
			c.Policies = append(c.Policies, p)
		}
		return nil
	}
	return errors.New("want a list of {scope, max_concurrent, rate, quota}")
}

// fieldError is a limits validation error as the config names fields:
// "rate per 0s: ..." becomes "rate.per 0s: ...".
func fieldError(err error) error {
	msg := strings.TrimPrefix(err.Error(), limits.ErrInvalid.Error()+" ")
	for _, f := range []string{"rate limit", "rate per", "rate burst", "quota limit", "quota window"} {
		if rest, ok := strings.CutPrefix(msg, f+" "); ok {
			return errors.New(strings.Replace(f, " ", ".", 1) + " " + rest)
		}
	}
	return errors.New(msg)
}

// parseRate reads a policy's rate: "LIMIT/PER" ("100/1m", no burst), or
// {limit: N, per: 1m, burst: N} (burst optional).
func parseRate(raw any) (limits.Rate, error) {
	switch v := raw.(type) {
	case string:
		r, err := limits.ParseRateSpec(v, 0)
		if err != nil {
			return r, fieldError(err)
		}
		return r, nil
	case map[string]any:
		for key := range v {
			if !slices.Contains([]string{"limit", "per", "burst"}, key) {
				return limits.Rate{}, fmt.Errorf("rate: unknown key %q (want limit, per and burst)", key)
			}
		}
		var r limits.Rate
		for _, f := range []struct {
			key string
			dst *int
		}{{"limit", &r.Limit}, {"burst", &r.Burst}} {
			fv, ok := v[f.key]
			if !ok {
				if f.key == "burst" {
					continue
				}
				return r, errors.New("rate.limit is missing")
			}
			n, ok := wholeNumber(fv)
			if !ok {
				return r, fmt.Errorf("rate.%s %s: want a whole number from 0 to %d", f.key, show(fv), limits.MaxLimit)
			}
			*f.dst = n
		}
		perRaw, ok := v["per"]
		if !ok {
			return r, errors.New("rate.per is missing")
		}
		perText, ok := perRaw.(string)
		if !ok {
			return r, fmt.Errorf("rate.per %s: want a duration such as 1s, 1m, 1h or 24h", show(perRaw))
		}
		per, err := limits.ParsePer(perText)
		if err != nil {
			return r, fieldError(err)
		}
		r.Per = per
		if err := r.Validate(); err != nil {
			return r, fieldError(err)
		}
		return r, nil
	}
	return limits.Rate{}, fmt.Errorf("rate %s: want LIMIT/PER such as 100/1m, or {limit: 100, per: 1m, burst: 10}", show(raw))
}

// wholeNumber reads an int from YAML (int) or the environment (a string).
func wholeNumber(raw any) (int, bool) {
	switch v := raw.(type) {
	case int:
		return v, true
	case string:
		n, err := strconv.Atoi(strings.TrimSpace(v))
		return n, err == nil
	}
	return 0, false
}

// parseQuota reads a policy's quota: "LIMIT/WINDOW" ("10000/day"), or
// {limit: N, window: day}.
func parseQuota(raw any) (limits.Quota, error) {
	switch v := raw.(type) {
	case string:
		q, err := limits.ParseQuotaSpec(v)
		if err != nil {
			return q, fieldError(err)
		}
		return q, nil
	case map[string]any:
		for key := range v {
			if key != "limit" && key != "window" {
				return limits.Quota{}, fmt.Errorf("quota: unknown key %q (want limit and window)", key)
			}
		}
		lRaw, ok := v["limit"]
		if !ok {
			return limits.Quota{}, errors.New("quota.limit is missing")
		}
		wRaw, ok := v["window"]
		if !ok {
			return limits.Quota{}, errors.New("quota.window is missing")
		}
		wText, ok := wRaw.(string)
		if !ok {
			return limits.Quota{}, fmt.Errorf("quota.window %s: want minute, hour or day", show(wRaw))
		}
		// The YAML value is an int or a string of digits; anything else
		// (2.5, true) fails to parse and the message quotes it.
		q, err := limits.ParseQuotaSpec(fmt.Sprint(lRaw) + "/" + wText)
		if err != nil {
			return q, fieldError(err)
		}
		return q, nil
	}
	return limits.Quota{}, fmt.Errorf("quota %s: want LIMIT/WINDOW such as 10000/day, or {limit: 10000, window: day}", show(raw))
}

// parseLimit reads a limit: a count from 0 to limits.MaxLimit, or -1 /
// "unlimited".
func parseLimit(raw any) (int, error) {
	bad := fmt.Errorf("want a count from 0 to %d, or -1 (unlimited)", limits.MaxLimit)
	var n int
	switch v := raw.(type) {
	case int:
		n = v
	case string:
		if strings.TrimSpace(v) == "unlimited" {
			return limits.Unlimited, nil
		}
		var err error
		if n, err = strconv.Atoi(strings.TrimSpace(v)); err != nil {
			return 0, bad
		}
	default:
		return 0, bad
	}
	if limits.ValidateLimit(n) != nil {
		return 0, bad
	}
	return n, nil
}

// ParseLimit reads a limit given on the command line: a count from 0 to
// limits.MaxLimit, or -1 or "unlimited" for limits.Unlimited.
func ParseLimit(text string) (int, error) { return parseLimit(text) }

func atLeast(lo int64) func(int64) error {
	return func(n int64) error {
		if n < lo {
			return fmt.Errorf("must be at least %d", lo)
		}
		return nil
	}
}

func positiveOrUnbounded(n int64) error {
	if n < 1 && n != -1 {
		return errors.New("must be at least 1, or -1 (unbounded)")
	}
	return nil
}

func nonZero(d time.Duration) error {
	if d == 0 {
		return errors.New("must not be 0 (use a negative duration such as -1s to turn it off)")
	}
	return nil
}

func durationAtLeast(lo time.Duration) func(time.Duration) error {
	return func(d time.Duration) error {
		if d < lo {
			return fmt.Errorf("must be at least %s", lo)
		}
		return nil
	}
}

func nonEmpty(s string) error {
	if strings.TrimSpace(s) == "" {
		return errors.New("must not be empty")
	}
	return nil
}

func oneOf(options ...string) func(string) error {
	return func(s string) error {
		for _, o := range options {
			if s == o {
				return nil
			}
		}
		return fmt.Errorf("want one of %s", strings.Join(options, ", "))
	}
}

func checkURL(s string) error {
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a URL")
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return errors.New("want a redis:// or rediss:// URL")
	}
	if u.Host == "" {
		return errors.New("the URL names no host")
	}
	return nil
}

func checkHostPort(s string) error {
	if s == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		return errors.New("want host:port")
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return errors.New("want host:port with a port from 1 to 65535")
	}
	return nil
}

// checkListenAddr accepts host:port with port 0 (any free port) or an empty host.
func checkListenAddr(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New("want host:port, such as 127.0.0.1:8080")
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return errors.New("want host:port with a port from 0 to 65535")
	}
	return nil
}

func checkPrefix(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	if strings.ContainsAny(s, "{}") {
		return errors.New("must not contain '{' or '}'")
	}
	return nil
}

func checkReadable(s string) error {
	if s == "" {
		return nil
	}
	f, err := os.Open(s)
	if err != nil {
		return errors.New("not a readable file")
	}
	f.Close()
	return nil
}

func checkCAFile(s string) error {
	if s == "" {
		return nil
	}
	if _, err := readCAFile(s); err != nil {
		return errors.New("not a readable PEM file of certificates")
	}
	return nil
}
