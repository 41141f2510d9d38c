package config_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/redistest"
	"github.com/batonhq/baton/limits"
)

func writeFile(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "coordinator.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDefaults(t *testing.T) {
	c := config.Defaults()
	if !c.Embedded() || c.HTTPAddr != "127.0.0.1:8080" || c.KeyPrefix != "baton" || c.QueueMaxLength != 100_000 ||
		c.QueueTimeout != 5*time.Minute || c.LeaseTTL != 30*time.Second || c.SweepInterval != time.Second ||
		c.LogFormat != "auto" || c.LogLevel.String() != "INFO" || len(c.Policies) != 0 {
		t.Fatalf("defaults: %+v", c)
	}
	if got := config.EnvName("redis.url"); got != "BATON_REDIS_URL" {
		t.Fatal(got)
	}
	if got := config.EnvName("http.addr"); got != "BATON_HTTP_ADDR" {
		t.Fatal(got)
	}
}

func TestPrecedenceFileEnvFlag(t *testing.T) {
	path := writeFile(t, `
redis:
  url: redis://file:6379/0
http:
  addr: 127.0.0.1:1001
key_prefix: fromfile
queue:
  timeout: 1m
log:
  level: debug
policies:
  - scope: global
    max_concurrent: 10
  - scope: action:core.http
    max_concurrent: unlimited
`)
	environ := []string{
		"BATON_REDIS_URL=redis://env:6379/0",
		"BATON_HTTP_ADDR=127.0.0.1:1002",
		"BATON_QUEUE_TIMEOUT=2m",
		"BATON_UNRELATED_THING=ignored",
		"PATH=/bin",
	}
	flags := map[string]any{"redis.url": "redis://flag:6379/0"}

	c, err := config.Load(config.Sources{File: path})
	if err != nil {
		t.Fatal(err)
	}
	if c.Redis.URL != "redis://file:6379/0" || c.HTTPAddr != "127.0.0.1:1001" || c.QueueTimeout != time.Minute ||
		c.KeyPrefix != "fromfile" || c.LogLevel.String() != "DEBUG" {
		t.Fatalf("file: %+v", c)
	}
	if got := fmt.Sprint(c.Policies); got != "[global: max_concurrent 10 action:core.http: max_concurrent unlimited]" {
		t.Fatalf("policies: %s", got)
	}

	c, err = config.Load(config.Sources{File: path, Environ: environ})
	if err != nil {
		t.Fatal(err)
	}
	if c.Redis.URL != "redis://env:6379/0" || c.HTTPAddr != "127.0.0.1:1002" || c.QueueTimeout != 2*time.Minute ||
		c.KeyPrefix != "fromfile" {
		t.Fatalf("file+env: %+v", c)
	}

	c, err = config.Load(config.Sources{File: path, Environ: environ, Flags: flags})
	if err != nil {
		t.Fatal(err)
	}
	if c.Redis.URL != "redis://flag:6379/0" || c.HTTPAddr != "127.0.0.1:1002" || c.KeyPrefix != "fromfile" {
		t.Fatalf("file+env+flag: %+v", c)
	}
}

func TestEnvironmentForms(t *testing.T) {
	c, err := config.Load(config.Sources{Environ: []string{
		"BATON_REDIS_CLUSTER_ADDRESSES=10.0.0.1:7000, 10.0.0.2:7000",
		"BATON_POLICIES=global=3,pack:core=2,action:core.http=unlimited",
		"BATON_REDIS_TLS_ENABLED=true",
		"BATON_QUEUE_MAX_LENGTH=-1",
		"BATON_SWEEP_INTERVAL=-1s",
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Redis.ClusterAddresses) != 2 || c.Redis.ClusterAddresses[1] != "10.0.0.2:7000" || !c.Redis.TLS ||
		c.QueueMaxLength != -1 || c.SweepInterval != -time.Second || c.Embedded() {
		t.Fatalf("%+v", c)
	}
	if got := fmt.Sprint(c.Policies); got != "[global: max_concurrent 3 pack:core: max_concurrent 2 action:core.http: max_concurrent unlimited]" {
		t.Fatalf("policies: %s", got)
	}
}

// TestValidationErrors covers every check: each error names the key and
// the offending value.
func TestValidationErrors(t *testing.T) {
	ca := writeFile(t, "not a certificate")
	files, err := redistest.GenerateTLSFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	goodCA := files.CA
	cases := []struct {
		env  string
		want string // substrings: the key and the value
	}{
		{"BATON_REDIS_URL=http://x:1", `redis.url = "http://x:1"`},
		{"BATON_REDIS_URL=redis://", `redis.url = "redis://"`},
		{"BATON_REDIS_ADDRESS=localhost", `redis.address = "localhost"`},
		{"BATON_REDIS_ADDRESS=localhost:99999", `redis.address = "localhost:99999"`},
		{"BATON_REDIS_DB=-1", `redis.db = "-1"`},
		{"BATON_REDIS_DB=x", `redis.db = "x"`},
		{"BATON_REDIS_TLS_ENABLED=maybe", `redis.tls.enabled = "maybe"`},
		{"BATON_REDIS_TLS_INSECURE_SKIP_VERIFY=2x", `redis.tls.insecure_skip_verify = "2x"`},
		{"BATON_REDIS_TLS_CA_FILE=" + ca, `redis.tls.ca_file = "` + ca},
		{"BATON_REDIS_CLUSTER_ADDRESSES=a:1,b", `redis.cluster_addresses = "a:1,b"`},
		{"BATON_REDIS_TLS_CERT_FILE=/nonexistent/c.pem", `redis.tls.cert_file = "/nonexistent/c.pem": not a readable file`},
		{"BATON_REDIS_TLS_KEY_FILE=/nonexistent/k.pem", `redis.tls.key_file = "/nonexistent/k.pem": not a readable file`},
		{"BATON_REDIS_SENTINEL_ADDRESSES=a:1,b", `redis.sentinel.addresses = "a:1,b"`},
		{"BATON_KEY_PREFIX=a{b", `key_prefix = "a{b"`},
		{"BATON_KEY_PREFIX=", `key_prefix = ""`},
		{"BATON_QUEUE_MAX_LENGTH=0", `queue.max_length = "0"`},
		{"BATON_QUEUE_TIMEOUT=abc", `queue.timeout = "abc"`},
		{"BATON_QUEUE_TIMEOUT=0s", `queue.timeout = "0s"`},
		{"BATON_LEASE_TTL=10ms", `lease.ttl = "10ms"`},
		{"BATON_LEASE_ACK_TIMEOUT=1ms", `lease.ack_timeout = "1ms"`},
		{"BATON_LEASE_ACK_TIMEOUT=40s", `lease.ack_timeout = 40s`},
		{"BATON_SWEEP_INTERVAL=0", `sweep_interval = "0"`},
		{"BATON_COMPLETIONS_GROUP= ", `completions.group = " "`},
		{"BATON_COMPLETIONS_CLAIM_IDLE=1ms", `completions.claim_idle = "1ms"`},
		{"BATON_HTTP_ADDR=8080", `http.addr = "8080"`},
		{"BATON_HTTP_ADDR=:70000", `http.addr = ":70000"`},
		{"BATON_HTTP_MAX_BODY_BYTES=0", `http.max_body_bytes = "0"`},
		{"BATON_LOG_LEVEL=loud", `log.level = "loud"`},
		{"BATON_LOG_FORMAT=xml", `log.format = "xml"`},
		{"BATON_SHUTDOWN_TIMEOUT=soon", `shutdown_timeout = "soon"`},
		{"BATON_POLICIES=global", `policies = "global"`},
		{"BATON_POLICIES=galaxy=3", `policies = "galaxy=3"`},
		{"BATON_POLICIES=global=-2", `policies = "global=-2"`},
		{"BATON_POLICIES=global=9223372036854775807", `max_concurrent "9223372036854775807": want a count from 0 to 1000000000`},
		{"BATON_POLICIES=global=1,global=2", `policies = "global=1,global=2"`},
	}
	for _, tc := range cases {
		_, err := config.Load(config.Sources{Environ: []string{tc.env}})
		if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %s", tc.env, err, tc.want)
		}
	}

	multi := []struct {
		env  []string
		want string
	}{
		{[]string{"BATON_REDIS_URL=redis://a:1", "BATON_REDIS_ADDRESS=b:2"}, `redis.url = "redis://a:1" and redis.address = "b:2"`},
		{[]string{"BATON_REDIS_ADDRESS=b:2", "BATON_REDIS_CLUSTER_ADDRESSES=c:3"}, `redis.cluster_addresses = ["c:3"]`},
		{[]string{"BATON_REDIS_CLUSTER_ADDRESSES=c:3", "BATON_REDIS_DB=2"}, `redis.db = 2`},
		{[]string{"BATON_LEASE_TTL=1s"}, `lease.ack_timeout = 5s: must be below lease.ttl (1s)`},
		{[]string{"BATON_REDIS_PASSWORD=x"}, `redis.password is set but no Redis is`},
		{[]string{"BATON_REDIS_DB=3"}, `redis.db is set but no Redis is`},
		{[]string{"BATON_REDIS_SENTINEL_MASTER_NAME=m"}, `redis.sentinel.master_name = "m": set redis.sentinel.addresses too`},
		{[]string{"BATON_REDIS_SENTINEL_ADDRESSES=s:1"}, `redis.sentinel.addresses = ["s:1"]: set redis.sentinel.master_name too`},
		{[]string{"BATON_REDIS_SENTINEL_MASTER_NAME=m", "BATON_REDIS_SENTINEL_ADDRESSES=s:1", "BATON_REDIS_ADDRESS=b:2"},
			`redis.sentinel is set: it cannot be combined with redis.url, redis.address or redis.cluster_addresses`},
		{[]string{"BATON_REDIS_SENTINEL_PASSWORD=x"}, `redis.sentinel.password is set but no Redis is`},
		{[]string{"BATON_REDIS_ADDRESS=b:2", "BATON_REDIS_TLS_CA_FILE=" + goodCA},
			`redis.tls.ca_file is set but TLS is off (set redis.tls.enabled, or use a rediss:// URL)`},
		{[]string{"BATON_REDIS_URL=redis://b:2", "BATON_REDIS_TLS_INSECURE_SKIP_VERIFY=true"},
			`redis.tls.insecure_skip_verify is set but TLS is off`},
		{[]string{"BATON_REDIS_URL=rediss://b:2", "BATON_REDIS_TLS_CERT_FILE=" + goodCA},
			`redis.tls.cert_file = "` + goodCA + `" and redis.tls.key_file = "": set both or neither`},
		{[]string{"BATON_REDIS_URL=rediss://b:2", "BATON_REDIS_TLS_CERT_FILE=" + goodCA, "BATON_REDIS_TLS_KEY_FILE=" + ca},
			`redis.tls.cert_file = "` + goodCA + `" and redis.tls.key_file = "` + ca + `": not a certificate and its key`},
	}
	for _, tc := range multi {
		_, err := config.Load(config.Sources{Environ: tc.env})
		if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want an error containing %s", tc.env, err, tc.want)
		}
	}
}

func TestFileErrors(t *testing.T) {
	cases := []struct{ yaml, want string }{
		{"redis:\n  tls: true\n", `unknown key "redis.tls"`},
		{"htp:\n  addr: x\n", `unknown key "htp.addr"`},
		{"queue:\n  timeout: 5\n", `queue.timeout = 5`},
		{"queue:\n  max_length: lots\n", `queue.max_length = "lots"`},
		{"policies:\n  - scope: pack:core\n    max: 3\n", `unknown key "max"`},
		{"policies:\n  - scope: action:nodot\n    max_concurrent: 3\n", `scope "action:nodot"`},
		{"policies: 3\n", `policies = 3`},
		{"redis: [\n", `config file`},
	}
	for _, tc := range cases {
		_, err := config.Load(config.Sources{File: writeFile(t, tc.yaml)})
		if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error containing %s", tc.yaml, err, tc.want)
		}
	}
	if _, err := config.Load(config.Sources{File: filepath.Join(t.TempDir(), "missing.yaml")}); !errors.Is(err, config.ErrInvalid) {
		t.Errorf("missing file: %v", err)
	}
	if _, err := config.Load(config.Sources{Flags: map[string]any{"nope": "x"}}); !errors.Is(err, config.ErrInvalid) {
		t.Errorf("unknown flag key: %v", err)
	}
}

func TestRedisClient(t *testing.T) {
	c, err := config.Load(config.Sources{Environ: []string{"BATON_REDIS_URL=redis://u:secret@127.0.0.1:6390/3", "BATON_REDIS_DB=4"}})
	if err != nil {
		t.Fatal(err)
	}
	rdb, err := c.NewRedisClient()
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	if got := config.MaskedURL(c.Redis.URL); got != "redis://u:***@127.0.0.1:6390/3" {
		t.Fatal(got)
	}
	c, err = config.Load(config.Sources{Environ: []string{"BATON_REDIS_CLUSTER_ADDRESSES=127.0.0.1:7000"}})
	if err != nil {
		t.Fatal(err)
	}
	rdb, err = c.NewRedisClient()
	if err != nil {
		t.Fatal(err)
	}
	rdb.Close()
	if n, err := config.ParseLimit("unlimited"); err != nil || n != limits.Unlimited {
		t.Fatal(n, err)
	}
	if _, err := config.ParseLimit("-5"); err == nil {
		t.Fatal("ParseLimit(-5) succeeded")
	}
}

// TestExampleFile keeps coordinator.example.yaml loadable and equal to the
// defaults apart from its example policies.
func TestExampleFile(t *testing.T) {
	c, err := config.Load(config.Sources{File: filepath.Join("..", "..", "coordinator.example.yaml")})
	if err != nil {
		t.Fatal(err)
	}
	want := "[global: max_concurrent 10 pack:core: max_concurrent 4 action:core.http: max_concurrent 2 " +
		"pack:slack: rate 100/1m burst 10, quota 10000/day]"
	if got := fmt.Sprint(c.Policies); got != want {
		t.Fatalf("policies: %s\nwant %s", got, want)
	}
	d := config.Defaults()
	c.Policies = nil
	c.Redis.ClusterAddresses, d.Redis.ClusterAddresses = nil, nil
	if c.HTTPAddr != d.HTTPAddr || c.KeyPrefix != d.KeyPrefix || c.QueueTimeout != d.QueueTimeout ||
		c.LeaseTTL != d.LeaseTTL || c.AckTimeout != d.AckTimeout || c.QueueMaxLength != d.QueueMaxLength ||
		c.CompletionClaimIdle != d.CompletionClaimIdle || c.MaxBodyBytes != d.MaxBodyBytes || !c.Embedded() {
		t.Fatalf("example differs from defaults:\n%+v\n%+v", c, d)
	}
}

// TestUnknownEnv: BATON_ variables nothing reads are reported, with the
// known name a typo most likely meant.
func TestUnknownEnv(t *testing.T) {
	got := config.UnknownEnv([]string{
		"BATON_REDIS_UR=redis://x:1", "BATON_REDIS_URL=redis://x:1", "BATON_HTTP_ADR=:1", "BATON_CONFIG=c.yaml",
		"BATON_REQUIRE_REDIS=1", "BATON_BENCH_CHILD=1", "BATON_COMPLETELY_ELSE=1", "PATH=/bin", "BATON_LOGLEVEL=debug",
	})
	want := []config.UnknownVar{
		{Name: "BATON_COMPLETELY_ELSE"},
		{Name: "BATON_HTTP_ADR", Suggestion: "BATON_HTTP_ADDR"},
		{Name: "BATON_LOGLEVEL", Suggestion: "BATON_LOG_LEVEL"},
		{Name: "BATON_REDIS_UR", Suggestion: "BATON_REDIS_URL"},
	}
	if len(got) != len(want) {
		t.Fatalf("UnknownEnv: %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("UnknownEnv[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
	var all []string
	for _, key := range config.Keys() {
		all = append(all, config.EnvName(key)+"=x")
	}
	if got := config.UnknownEnv(all); len(got) != 0 {
		t.Fatalf("known variables reported: %+v", got)
	}
}

// TestRatesAndQuotas: initial policies take rates and quotas, in the short
// form ("100/1m", "10000/day") or as maps (the HTTP API's fields), from the
// file and from the environment.
func TestRatesAndQuotas(t *testing.T) {
	c, err := config.Load(config.Sources{File: writeFile(t, `
policies:
  - scope: pack:slack
    max_concurrent: 4
    rate: {limit: 100, per: 1m, burst: 10}
    quota: {limit: 10000, window: day}
  - scope: action:slack.post
    rate: 5/1s
  - scope: global
    quota: 60/minute
`)})
	if err != nil {
		t.Fatal(err)
	}
	want := "[pack:slack: max_concurrent 4, rate 100/1m burst 10, quota 10000/day " +
		"action:slack.post: rate 5/1s burst 0 global: quota 60/minute]"
	if got := fmt.Sprint(c.Policies); got != want {
		t.Fatalf("file: %s\nwant %s", got, want)
	}
	if r := c.Policies[0].Rate; *r != (limits.Rate{Limit: 100, Per: time.Minute, Burst: 10}) {
		t.Fatalf("rate: %+v", r)
	}
	if q := c.Policies[0].Quota; *q != (limits.Quota{Limit: 10000, Window: limits.Day}) {
		t.Fatalf("quota: %+v", q)
	}

	c, err = config.Load(config.Sources{Environ: []string{
		"BATON_POLICIES=global=10,pack:slack=rate:100/1m+10,pack:slack=quota:10000/day,pack:slack=4,action:a.b=rate:5/1s",
	}})
	if err != nil {
		t.Fatal(err)
	}
	want = "[global: max_concurrent 10 pack:slack: max_concurrent 4, rate 100/1m burst 10, quota 10000/day action:a.b: rate 5/1s burst 0]"
	if got := fmt.Sprint(c.Policies); got != want {
		t.Fatalf("environment: %s\nwant %s", got, want)
	}
}

// TestRateAndQuotaErrors: a bad rate or quota stops the start with an error
// naming the item, the scope and the field.
func TestRateAndQuotaErrors(t *testing.T) {
	files := []struct{ yaml, want string }{
		{"policies:\n  - scope: pack:a\n    rate: 100\n", `item 0 (pack:a): rate 100: want LIMIT/PER such as 100/1m`},
		{"policies:\n  - scope: pack:a\n    rate: 100/minute\n", `item 0 (pack:a): rate.per "minute": want a duration`},
		{"policies:\n  - scope: pack:a\n    rate: 0/0s\n", `rate.per 0s: not positive`},
		{"policies:\n  - scope: pack:a\n    rate: {limit: 5}\n", `item 0 (pack:a): rate.per is missing`},
		{"policies:\n  - scope: pack:a\n    rate: {per: 1m}\n", `rate.limit is missing`},
		{"policies:\n  - scope: pack:a\n    rate: {limit: 5, per: 1m, burst: -1}\n", `rate.burst -1: negative`},
		{"policies:\n  - scope: pack:a\n    rate: {limit: 2.5, per: 1m}\n", `rate.limit 2.5: want a whole number`},
		{"policies:\n  - scope: pack:a\n    rate: {limit: 5, per: 60}\n", `rate.per 60: want a duration`},
		{"policies:\n  - scope: pack:a\n    rate: {limit: 5, per: 1m, brust: 3}\n", `rate: unknown key "brust"`},
		{"policies:\n  - scope: pack:a\n    rate: {limit: 1000000001, per: 1m}\n", `rate.limit 1000000001: over the maximum`},
		{"policies:\n  - scope: pack:a\n    quota: 10/week\n", `item 0 (pack:a): quota.window "week": unknown`},
		{"policies:\n  - scope: pack:a\n    quota: {limit: 10}\n", `quota.window is missing`},
		{"policies:\n  - scope: pack:a\n    quota: {window: day}\n", `quota.limit is missing`},
		{"policies:\n  - scope: pack:a\n    quota: {limit: -1, window: day}\n", `quota.limit -1: negative`},
		{"policies:\n  - scope: pack:a\n    quota: {limit: 2.5, window: day}\n", `quota.limit "2.5"`},
		{"policies:\n  - scope: pack:a\n    quota: {limit: 5, window: 1}\n", `quota.window 1: want minute, hour or day`},
		{"policies:\n  - scope: pack:a\n    quota: [5]\n", `quota [5]: want LIMIT/WINDOW`},
		{"policies:\n  - scope: pack:a\n", `item 0 (pack:a): sets nothing; give max_concurrent, rate or quota`},
		{"policies:\n  - scope: pack:a\n    rate: 5/1s\n  - scope: pack:a\n    quota: 1/day\n", `item 1: scope pack:a appears twice`},
	}
	for _, tc := range files {
		_, err := config.Load(config.Sources{File: writeFile(t, tc.yaml)})
		if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "policies") {
			t.Errorf("%q: got %v, want an error containing %s", tc.yaml, err, tc.want)
		}
	}
	envs := []struct{ env, want string }{
		{"BATON_POLICIES=pack:a=rate:100", `item 0 (pack:a): rate "100": want LIMIT/PER`},
		{"BATON_POLICIES=pack:a=rate:100/1m+x", `item 0 (pack:a): rate.burst "x"`},
		{"BATON_POLICIES=pack:a=rate:100/1m+-2", `rate.burst -2: negative`},
		{"BATON_POLICIES=pack:a=quota:5/fortnight", `quota.window "fortnight"`},
		{"BATON_POLICIES=pack:a=rate:1/1s,pack:a=rate:2/1s", `item 1: scope pack:a sets its rate twice`},
		{"BATON_POLICIES=pack:a=quota:1/day,pack:a=quota:2/day", `scope pack:a sets its quota twice`},
		{"BATON_POLICIES=pack:a=1,pack:a=2", `scope pack:a sets its limit twice`},
		{"BATON_POLICIES=pack:a=burst:3", `item 0 (pack:a): max_concurrent "burst:3"`},
	}
	for _, tc := range envs {
		_, err := config.Load(config.Sources{Environ: []string{tc.env}})
		if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %s", tc.env, err, tc.want)
		}
	}
}

// TestDurabilityKeys: durability.wait_replicas and .wait_timeout reach the
// Coordinator's options; a negative replica count is refused by name.
func TestDurabilityKeys(t *testing.T) {
	c, err := config.Load(config.Sources{Environ: []string{"BATON_DURABILITY_WAIT_REPLICAS=2", "BATON_DURABILITY_WAIT_TIMEOUT=250ms"}})
	if err != nil {
		t.Fatal(err)
	}
	o := c.CoordinatorOptions(nil)
	if o.WaitReplicas != 2 || o.WaitTimeout != 250*time.Millisecond {
		t.Fatalf("options: WaitReplicas %d, WaitTimeout %v; want 2 and 250ms", o.WaitReplicas, o.WaitTimeout)
	}
	_, err = config.Load(config.Sources{Environ: []string{"BATON_DURABILITY_WAIT_REPLICAS=-1"}})
	if err == nil || !strings.Contains(err.Error(), "durability.wait_replicas") {
		t.Fatalf("wait_replicas -1: %v, want an error naming durability.wait_replicas", err)
	}
}
