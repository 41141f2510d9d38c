package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

func runCLI(t *testing.T, environ []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	code = run(ctx, args, environ, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestHelpVersionAndUsage(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		if code, out, _ := runCLI(t, nil, args...); code != 0 || !strings.Contains(out, "policy set SCOPE N") {
			t.Errorf("%v: exit %d, %q", args, code, out)
		}
	}
	for _, cmd := range []string{"serve", "stats", "policy", "version"} {
		if code, _, errOut := runCLI(t, nil, cmd, "--help"); code != 0 || !strings.Contains(errOut, "Usage: coordinator") {
			t.Errorf("%s --help: exit %d, %q", cmd, code, errOut)
		}
	}
	if code, out, _ := runCLI(t, nil, "version"); code != 0 || !strings.HasPrefix(out, "coordinator ") {
		t.Errorf("version: %d %q", code, out)
	}
	// An unknown flag: the usage with the flags, once, then the error.
	if code, _, errOut := runCLI(t, nil, "policy", "set", "global", "-1", "--nope"); code != exitUsage ||
		strings.Count(errOut, "Usage:") != 1 || !strings.Contains(errOut, "-redis-url URL") ||
		!strings.HasSuffix(errOut, "coordinator: flag provided but not defined: -nope\n") {
		t.Errorf("unknown flag: exit %d, stderr %q", code, errOut)
	}
	cases := [][]string{
		{"frobnicate"},
		{"serve", "extra"},
		{"serve", "--no-such-flag"},
		{"stats"},
		{"stats", "a.b", "c.d"},
		{"stats", "nodot", "--redis-url", "redis://127.0.0.1:1"},
		{"policy"},
		{"policy", "frob", "global"},
		{"policy", "set", "global"},
		{"policy", "get", "galaxy", "--redis-url", "redis://127.0.0.1:1"},
		{"policy", "set", "global", "-7", "--redis-url", "redis://127.0.0.1:1"},
		{"policy", "set", "global", "9223372036854775807", "--redis-url", "redis://127.0.0.1:1"},
		{"policy", "set", "global", "-99999999999999999999", "--redis-url", "redis://127.0.0.1:1"},
		{"policy", "set", "global", "1000000001", "--redis-url", "redis://127.0.0.1:1"},
		{"stats", "core.http"}, // no Redis configured
	}
	for _, args := range cases {
		if code, _, errOut := runCLI(t, nil, args...); code != exitUsage || !strings.Contains(errOut, "coordinator: ") {
			t.Errorf("%v: exit %d, stderr %q; want %d and a message", args, code, errOut, exitUsage)
		}
	}
}

// TestConfigPrecedence checks the command line's wiring: file < env < flag.
func TestConfigPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte("http:\n  addr: 127.0.0.1:1001\nkey_prefix: fromfile\nlog:\n  level: warn\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	load := func(environ []string, args ...string) (string, string, string) {
		t.Helper()
		cf := newFlags("serve", "", &bytes.Buffer{})
		if _, err := cf.parse(args); err != nil {
			t.Fatal(err)
		}
		cfg, err := cf.load(environ)
		if err != nil {
			t.Fatal(err)
		}
		return cfg.HTTPAddr, cfg.KeyPrefix, cfg.LogLevel.String()
	}
	check := func(what string, got, want [3]string) {
		t.Helper()
		if got != want {
			t.Errorf("%s: got %v, want %v", what, got, want)
		}
	}
	a, p, l := load(nil)
	check("defaults", [3]string{a, p, l}, [3]string{"127.0.0.1:8080", "baton", "INFO"})
	a, p, l = load(nil, "--config", file)
	check("file", [3]string{a, p, l}, [3]string{"127.0.0.1:1001", "fromfile", "WARN"})
	a, p, l = load([]string{"BATON_CONFIG=" + file})
	check("BATON_CONFIG", [3]string{a, p, l}, [3]string{"127.0.0.1:1001", "fromfile", "WARN"})
	env := []string{"BATON_HTTP_ADDR=127.0.0.1:1002", "BATON_LOG_LEVEL=error"}
	a, p, l = load(env, "--config", file)
	check("file+env", [3]string{a, p, l}, [3]string{"127.0.0.1:1002", "fromfile", "ERROR"})
	a, p, l = load(env, "--config", file, "--http-addr", "127.0.0.1:1003", "--log-level=debug")
	check("file+env+flag", [3]string{a, p, l}, [3]string{"127.0.0.1:1003", "fromfile", "DEBUG"})

	// A bad value exits 2 before touching Redis, naming the key and value.
	code, _, errOut := runCLI(t, []string{"BATON_QUEUE_TIMEOUT=soon"}, "serve", "--redis-url", "redis://127.0.0.1:1")
	if code != exitUsage || !strings.Contains(errOut, `queue.timeout = "soon"`) {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
}

func TestStatsAndPolicyCommands(t *testing.T) {
	mr := miniredis.RunT(t)
	env := []string{"BATON_REDIS_URL=redis://" + mr.Addr()}
	expect := func(args []string, want string) string {
		t.Helper()
		code, out, errOut := runCLI(t, env, args...)
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("%v: exit %d, stdout %q, stderr %q; want %q", args, code, out, errOut, want)
		}
		return out
	}
	expect([]string{"policy", "get", "action:core.http"}, "action:core.http not set")
	expect([]string{"policy", "set", "action:core.http", "2"}, "action:core.http 2")
	expect([]string{"policy", "get", "action:core.http"}, "action:core.http 2")
	expect([]string{"policy", "set", "pack:core", "unlimited"}, "pack:core unlimited")
	expect([]string{"policy", "set", "pack:core", "-1"}, "pack:core unlimited") // a number, not a flag
	expect([]string{"policy", "set", "global", "-1", "--log-level=warn"}, "global unlimited")
	expect([]string{"policy", "clear", "global"}, "global cleared")
	expect([]string{"stats", "core.http"}, "2 (action:core.http)")
	out := expect([]string{"stats", "core.http", "--json"}, `"max_concurrent": 2`)
	var st map[string]any
	if err := json.Unmarshal([]byte(out), &st); err != nil || st["oldest_enqueued_at"] != nil {
		t.Fatalf("json: %v %v", st, err)
	}
	expect([]string{"policy", "clear", "action:core.http"}, "cleared")
	expect([]string{"policy", "get", "action:core.http"}, "not set")

	// Clearing a scope with no policy changes nothing and says so, as HTTP
	// DELETE does with its 404.
	if code, out, errOut := runCLI(t, env, "policy", "clear", "action:core.http"); code != exitNotSet || out != "" ||
		!strings.Contains(errOut, "no policy set on action:core.http; nothing to clear") {
		t.Fatalf("clear of an unset scope: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	mr.Close()
	if code, _, _ := runCLI(t, env, "policy", "get", "global"); code != exitFailure {
		t.Fatalf("Redis down: exit %d, want %d", code, exitFailure)
	}
}

// TestReadOnlyCommandsWriteNothing: stats and policy get change nothing in
// Redis: they use a read-only Coordinator (coordinator.Options.ReadOnly),
// which claims no owner ID (each run used to leave baton:owner:<id> behind
// for an hour) and runs no background work.
func TestReadOnlyCommandsWriteNothing(t *testing.T) {
	mr := miniredis.RunT(t)
	env := []string{"BATON_REDIS_URL=redis://" + mr.Addr()}
	if code, _, errOut := runCLI(t, env, "policy", "set", "pack:core", "2"); code != exitOK {
		t.Fatalf("policy set: %d %s", code, errOut)
	}
	for _, k := range mr.Keys() {
		if strings.Contains(k, ":owner:") {
			mr.Del(k)
		}
	}
	before := mr.Keys()
	for _, args := range [][]string{{"stats", "core.http"}, {"stats", "core.http", "--json"}, {"policy", "get", "pack:core"}} {
		if code, _, errOut := runCLI(t, env, args...); code != exitOK {
			t.Fatalf("%v: exit %d, %s", args, code, errOut)
		}
		if after := mr.Keys(); strings.Join(after, " ") != strings.Join(before, " ") {
			t.Errorf("%v wrote to Redis: keys %v, before %v", args, after, before)
		}
	}
}
