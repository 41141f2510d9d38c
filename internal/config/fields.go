package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
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

// setPolicies reads a list of {scope, max_concurrent} maps (YAML), or
// "SCOPE=N,SCOPE=N" (environment).
func setPolicies(c *Config, raw any) error {
	c.Policies = nil
	seen := map[string]bool{}
	add := func(i int, scopeRaw, nRaw any) error {
		scopeText, ok := scopeRaw.(string)
		if !ok {
			return fmt.Errorf("item %d: scope %s: want global, pack:NAME or action:REF", i, show(scopeRaw))
		}
		scope, err := limits.ParseScope(scopeText)
		if err != nil {
			return fmt.Errorf("item %d: scope %q: want global, pack:NAME or action:REF", i, scopeText)
		}
		n, err := parseLimit(nRaw)
		if err != nil {
			return fmt.Errorf("item %d (%s): max_concurrent %s: %w", i, scope, show(nRaw), err)
		}
		if seen[scope.String()] {
			return fmt.Errorf("item %d: scope %s appears twice", i, scope)
		}
		seen[scope.String()] = true
		c.Policies = append(c.Policies, Policy{Scope: scope, MaxConcurrent: n})
		return nil
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
			scope, n, ok := strings.Cut(item, "=")
			if !ok {
				return fmt.Errorf("item %q: want SCOPE=N", item)
			}
			if err := add(i, scope, n); err != nil {
				return err
			}
			i++
		}
		return nil
	case []any:
		for i, item := range v {
			m, ok := item.(map[string]any)
			if !ok {
				return fmt.Errorf("item %d: want {scope: ..., max_concurrent: N}", i)
			}
			for key := range m {
				if key != "scope" && key != "max_concurrent" {
					return fmt.Errorf("item %d: unknown key %q (want scope and max_concurrent)", i, key)
				}
			}
			if err := add(i, m["scope"], m["max_concurrent"]); err != nil {
				return err
			}
		}
		return nil
	}
	return errors.New("want a list of {scope, max_concurrent}")
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
