// Package config loads the coordinator daemon's configuration with koanf:
// defaults, then a YAML file, then BATON_* environment variables, then
// command-line flags, each later source overriding the earlier ones.
//
// Every key is listed once in the fields table below, with its default,
// its environment variable and how it is checked. Load rejects unknown keys
// and bad values with an error that names the key and the value, without
// touching Redis.
package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/internal/completion"
	"github.com/batonhq/baton/limits"
)

// ErrInvalid is wrapped by every error Load returns for bad configuration.
var ErrInvalid = errors.New("config: invalid")

// EnvPrefix starts every environment variable the config reads.
const EnvPrefix = "BATON_"

// Config is the daemon's configuration. Zero values are not defaults: use
// Load, which starts from Defaults.
type Config struct {
	// Redis says which Redis to use; none at all means the embedded one.
	Redis Redis
	// KeyPrefix starts every Redis key (coordinator.Options.Prefix).
	KeyPrefix string
	// QueueMaxLength is the most executions waiting per action; -1 is unbounded.
	QueueMaxLength int
	// QueueTimeout is how long an execution may wait; negative means no timeout.
	QueueTimeout time.Duration
	// LeaseTTL is how long a slot stays held after its process's last heartbeat.
	LeaseTTL time.Duration
	// AckTimeout is how long a waiter's process has to acknowledge a grant.
	AckTimeout time.Duration
	// SweepInterval is how often the daemon sweeps; negative turns it off.
	SweepInterval time.Duration
	// WaitReplicas and WaitTimeout are coordinator.Options' (durable writes:
	// every state-changing call waits for that many replicas).
	WaitReplicas int
	WaitTimeout  time.Duration
	// CompletionGroup is the consumer group of the completion listener.
	CompletionGroup string
	// CompletionClaimIdle is how long a completion event may stay
	// unacknowledged before another daemon claims it.
	CompletionClaimIdle time.Duration
	// HTTPAddr is the listen address of the HTTP API.
	HTTPAddr string
	// AuthToken, when set, is required as a bearer token on mutating requests.
	AuthToken string
	// MaxBodyBytes bounds request bodies.
	MaxBodyBytes int64
	// LogLevel is the least severe level logged.
	LogLevel slog.Level
	// LogFormat is "auto" (colored text on a terminal, else JSON), "text" or "json".
	LogFormat string
	// ShutdownTimeout bounds a graceful shutdown.
	ShutdownTimeout time.Duration
	// Policies are limits, rates and quotas set at start-up, each kind on a
	// scope that has none of that kind yet.
	Policies []Policy
}

// Redis is where the coordinator keeps its state.
type Redis struct {
	// URL is a redis:// or rediss:// URL.
	URL string
	// Address is host:port, an alternative to URL.
	Address string
	// Username and Password authenticate (override the URL's when set).
	Username, Password string
	// DB is the database number (override the URL's when not 0).
	DB int
	// TLS turns TLS on (rediss:// URLs turn it on too).
	TLS bool
	// TLSInsecureSkipVerify skips verifying the server's certificate.
	TLSInsecureSkipVerify bool
	// TLSCAFile is a PEM file of CA certificates to trust.
	TLSCAFile string
	// TLSCertFile and TLSKeyFile are a PEM client certificate and its key,
	// for servers that require one (tls-auth-clients); both or neither.
	TLSCertFile, TLSKeyFile string
	// ClusterAddresses, when set, selects Redis Cluster with these seed nodes.
	ClusterAddresses []string
	// SentinelMasterName, when set, selects Redis Sentinel: the master the
	// sentinels at SentinelAddresses monitor under this name.
	SentinelMasterName string
	// SentinelAddresses are the sentinels, host:port each.
	SentinelAddresses []string
	// SentinelUsername and SentinelPassword authenticate to the sentinels
	// (Username and Password authenticate to the master).
	SentinelUsername, SentinelPassword string
}

// TLSOn reports whether connections use TLS: redis.tls.enabled or a
// rediss:// URL.
func (r Redis) TLSOn() bool { return r.TLS || strings.HasPrefix(r.URL, "rediss://") }

// Policy is what one initial policy sets on a scope: a concurrency limit,
// a rate and a quota, each nil when not set (at least one is set).
type Policy struct {
	Scope         limits.Scope
	MaxConcurrent *int
	Rate          *limits.Rate
	Quota         *limits.Quota
}

// String renders the policy as "pack:slack: max_concurrent 4, rate
// 100/1m burst 10, quota 10000/day", the kinds it sets only.
func (p Policy) String() string {
	var parts []string
	if p.MaxConcurrent != nil {
		n := fmt.Sprint(*p.MaxConcurrent)
		if *p.MaxConcurrent == limits.Unlimited {
			n = "unlimited"
		}
		parts = append(parts, "max_concurrent "+n)
	}
	if p.Rate != nil {
		parts = append(parts, fmt.Sprintf("rate %s burst %d", limits.RateSpec(*p.Rate), p.Rate.Burst))
	}
	if p.Quota != nil {
		parts = append(parts, "quota "+p.Quota.String())
	}
	return p.Scope.String() + ": " + strings.Join(parts, ", ")
}

// Sources are the inputs of Load beside the defaults.
type Sources struct {
	// File is a YAML file path; "" reads none.
	File string
	// Environ is the environment as os.Environ returns it.
	Environ []string
	// Flags maps config keys to values given on the command line.
	Flags map[string]any
}

// field is one config key: its default, and how a raw value from any
// source is checked and stored.
type field struct {
	key string
	def any
	set func(c *Config, raw any) error
}

var fields = []field{
	{"redis.url", "", str(func(c *Config) *string { return &c.Redis.URL }, checkURL)},
	{"redis.address", "", str(func(c *Config) *string { return &c.Redis.Address }, checkHostPort)},
	{"redis.username", "", str(func(c *Config) *string { return &c.Redis.Username }, nil)},
	{"redis.password", "", str(func(c *Config) *string { return &c.Redis.Password }, nil)},
	{"redis.db", 0, integer(func(c *Config) *int { return &c.Redis.DB }, atLeast(0))},
	{"redis.tls.enabled", false, boolean(func(c *Config) *bool { return &c.Redis.TLS })},
	{"redis.tls.insecure_skip_verify", false, boolean(func(c *Config) *bool { return &c.Redis.TLSInsecureSkipVerify })},
	{"redis.tls.ca_file", "", str(func(c *Config) *string { return &c.Redis.TLSCAFile }, checkCAFile)},
	{"redis.tls.cert_file", "", str(func(c *Config) *string { return &c.Redis.TLSCertFile }, checkReadable)},
	{"redis.tls.key_file", "", str(func(c *Config) *string { return &c.Redis.TLSKeyFile }, checkReadable)},
	{"redis.cluster_addresses", []string{}, list(func(c *Config) *[]string { return &c.Redis.ClusterAddresses }, checkHostPort)},
	{"redis.sentinel.master_name", "", str(func(c *Config) *string { return &c.Redis.SentinelMasterName }, nil)},
	{"redis.sentinel.addresses", []string{}, list(func(c *Config) *[]string { return &c.Redis.SentinelAddresses }, checkHostPort)},
	{"redis.sentinel.username", "", str(func(c *Config) *string { return &c.Redis.SentinelUsername }, nil)},
	{"redis.sentinel.password", "", str(func(c *Config) *string { return &c.Redis.SentinelPassword }, nil)},
	{"key_prefix", coordinator.DefaultPrefix, str(func(c *Config) *string { return &c.KeyPrefix }, checkPrefix)},
	{"queue.max_length", 100_000, integer(func(c *Config) *int { return &c.QueueMaxLength }, positiveOrUnbounded)},
	{"queue.timeout", "5m", duration(func(c *Config) *time.Duration { return &c.QueueTimeout }, nonZero)},
	{"lease.ttl", "30s", duration(func(c *Config) *time.Duration { return &c.LeaseTTL }, durationAtLeast(100*time.Millisecond))},
	{"lease.ack_timeout", "5s", duration(func(c *Config) *time.Duration { return &c.AckTimeout }, durationAtLeast(10*time.Millisecond))},
	{"sweep_interval", "1s", duration(func(c *Config) *time.Duration { return &c.SweepInterval }, nonZero)},
	{"durability.wait_replicas", 0, integer(func(c *Config) *int { return &c.WaitReplicas }, atLeast(0))},
	{"durability.wait_timeout", coordinator.DefaultWaitTimeout.String(), duration(func(c *Config) *time.Duration { return &c.WaitTimeout }, durationAtLeast(time.Millisecond))},
	{"completions.group", completion.DefaultGroup, str(func(c *Config) *string { return &c.CompletionGroup }, nonEmpty)},
	{"completions.claim_idle", completion.DefaultClaimIdle.String(), duration(func(c *Config) *time.Duration { return &c.CompletionClaimIdle }, durationAtLeast(10*time.Millisecond))},
	{"http.addr", "127.0.0.1:8080", str(func(c *Config) *string { return &c.HTTPAddr }, checkListenAddr)},
	{"http.auth_token", "", str(func(c *Config) *string { return &c.AuthToken }, nil)},
	{"http.max_body_bytes", 65536, integer(func(c *Config) *int64 { return &c.MaxBodyBytes }, atLeast(1))},
	{"log.level", "info", str(nil, nil)},
	{"log.format", "auto", str(func(c *Config) *string { return &c.LogFormat }, oneOf("auto", "text", "json"))},
	{"shutdown_timeout", "10s", duration(func(c *Config) *time.Duration { return &c.ShutdownTimeout }, durationAtLeast(time.Millisecond))},
	{"policies", []any{}, setPolicies},
}

// Keys lists every config key, in the order of the documentation.
func Keys() []string {
	out := make([]string, len(fields))
	for i, f := range fields {
		out[i] = f.key
	}
	return out
}

// EnvName is the environment variable of a key: BATON_ and the key in upper
// case with "." replaced by "_" (redis.url -> BATON_REDIS_URL).
func EnvName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// Defaults returns the configuration with no source applied.
func Defaults() Config {
	c, err := Load(Sources{})
	if err != nil {
		panic(err) // the defaults table is wrong
	}
	return c
}

// Load reads the sources over the defaults and checks the result.
func Load(src Sources) (Config, error) {
	k := koanf.New(".")
	defaults := map[string]any{}
	for _, f := range fields {
		defaults[f.key] = f.def
	}
	if err := k.Load(confmap.Provider(defaults, "."), nil); err != nil {
		return Config{}, err
	}
	if src.File != "" {
		if err := loadFile(k, src.File); err != nil {
			return Config{}, err
		}
	}
	if err := k.Load(envProvider(src.Environ), nil); err != nil {
		return Config{}, fmt.Errorf("config: environment: %w", err)
	}
	for key := range src.Flags {
		if !slices.Contains(Keys(), key) {
			return Config{}, fmt.Errorf("%w: flag for unknown key %q", ErrInvalid, key)
		}
	}
	if err := k.Load(confmap.Provider(src.Flags, "."), nil); err != nil {
		return Config{}, err
	}
	return decode(k)
}

func loadFile(k *koanf.Koanf, path string) error {
	fk := koanf.New(".")
	if err := fk.Load(file.Provider(path), yaml.Parser()); err != nil {
		return fmt.Errorf("%w: config file %s: %w", ErrInvalid, path, err)
	}
	for _, key := range fk.Keys() {
		if !slices.Contains(Keys(), key) {
			return fmt.Errorf("%w: config file %s: unknown key %q (known keys: %s)", ErrInvalid, path, key,
				strings.Join(Keys(), ", "))
		}
	}
	return k.Merge(fk)
}

// envProvider maps BATON_<KEY> variables to their keys through the fields
// table (key names contain "_", so the name alone is ambiguous). Unknown
// BATON_ variables are ignored here (other tools share the prefix); the
// command line warns about them with UnknownEnv.
func envProvider(environ []string) *env.Env {
	byName := map[string]string{}
	for _, f := range fields {
		byName[EnvName(f.key)] = f.key
	}
	return env.Provider(".", env.Opt{
		Prefix: EnvPrefix,
		TransformFunc: func(name, value string) (string, any) {
			return byName[name], value
		},
		EnvironFunc: func() []string { return environ },
	})
}

func decode(k *koanf.Koanf) (Config, error) {
	var c Config
	for _, f := range fields {
		if err := f.set(&c, k.Get(f.key)); err != nil {
			return Config{}, fmt.Errorf("%w: %s = %s: %w", ErrInvalid, f.key, show(k.Get(f.key)), err)
		}
	}
	level := fmt.Sprint(k.Get("log.level"))
	if err := c.LogLevel.UnmarshalText([]byte(level)); err != nil {
		return Config{}, fmt.Errorf("%w: log.level = %q: want debug, info, warn or error", ErrInvalid, level)
	}
	return c, c.check()
}

// check verifies what involves several keys.
func (c Config) check() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
	}
	r := c.Redis
	sentinel := r.SentinelMasterName != "" || len(r.SentinelAddresses) > 0
	switch {
	case r.URL != "" && r.Address != "":
		return bad("redis.url = %q and redis.address = %q: set one, not both", r.URL, r.Address)
	case len(r.ClusterAddresses) > 0 && (r.URL != "" || r.Address != ""):
		return bad("redis.cluster_addresses = %q: cannot be combined with redis.url or redis.address", r.ClusterAddresses)
	case len(r.ClusterAddresses) > 0 && r.DB != 0:
		return bad("redis.db = %d: Redis Cluster has only database 0", r.DB)
	case sentinel && (r.URL != "" || r.Address != "" || len(r.ClusterAddresses) > 0):
		return bad("redis.sentinel is set: it cannot be combined with redis.url, redis.address or redis.cluster_addresses")
	case r.SentinelMasterName != "" && len(r.SentinelAddresses) == 0:
		return bad("redis.sentinel.master_name = %q: set redis.sentinel.addresses too", r.SentinelMasterName)
	case len(r.SentinelAddresses) > 0 && r.SentinelMasterName == "":
		return bad("redis.sentinel.addresses = %q: set redis.sentinel.master_name too", r.SentinelAddresses)
	case (r.TLSCertFile == "") != (r.TLSKeyFile == ""):
		return bad("redis.tls.cert_file = %q and redis.tls.key_file = %q: set both or neither", r.TLSCertFile, r.TLSKeyFile)
	case c.AckTimeout >= c.LeaseTTL:
		return bad("lease.ack_timeout = %s: must be below lease.ttl (%s)", c.AckTimeout, c.LeaseTTL)
	}
	if r.TLSCertFile != "" {
		if _, err := tls.LoadX509KeyPair(r.TLSCertFile, r.TLSKeyFile); err != nil {
			return bad("redis.tls.cert_file = %q and redis.tls.key_file = %q: not a certificate and its key: %v",
				r.TLSCertFile, r.TLSKeyFile, err)
		}
	}
	if !r.TLSOn() && !c.Embedded() {
		orphan := map[string]bool{"redis.tls.ca_file": r.TLSCAFile != "", "redis.tls.cert_file": r.TLSCertFile != "",
			"redis.tls.insecure_skip_verify": r.TLSInsecureSkipVerify}
		for _, key := range []string{"redis.tls.ca_file", "redis.tls.cert_file", "redis.tls.insecure_skip_verify"} {
			if orphan[key] {
				return bad("%s is set but TLS is off (set redis.tls.enabled, or use a rediss:// URL)", key)
			}
		}
	}
	if c.Embedded() {
		orphan := map[string]bool{"redis.username": r.Username != "", "redis.password": r.Password != "",
			"redis.tls.enabled": r.TLS, "redis.db": r.DB != 0, "redis.tls.ca_file": r.TLSCAFile != "",
			"redis.tls.cert_file": r.TLSCertFile != "", "redis.sentinel.username": r.SentinelUsername != "",
			"redis.sentinel.password": r.SentinelPassword != ""}
		for _, key := range []string{"redis.username", "redis.password", "redis.tls.enabled", "redis.db",
			"redis.tls.ca_file", "redis.tls.cert_file", "redis.sentinel.username", "redis.sentinel.password"} {
			if orphan[key] {
				return bad("%s is set but no Redis is (set redis.url, redis.address, redis.cluster_addresses "+
					"or redis.sentinel)", key)
			}
		}
	}
	return nil
}

// Embedded reports whether no Redis is configured, so the daemon runs an
// in-process one.
func (c Config) Embedded() bool {
	r := c.Redis
	return r.URL == "" && r.Address == "" && len(r.ClusterAddresses) == 0 && r.SentinelMasterName == "" &&
		len(r.SentinelAddresses) == 0
}

// CoordinatorOptions are the coordinator.Options this configuration asks for.
func (c Config) CoordinatorOptions(log *slog.Logger) coordinator.Options {
	return coordinator.Options{
		Prefix:         c.KeyPrefix,
		MaxQueueLength: c.QueueMaxLength,
		QueueTimeout:   c.QueueTimeout,
		LeaseTTL:       c.LeaseTTL,
		AckTimeout:     c.AckTimeout,
		SweepInterval:  c.SweepInterval,
		WaitReplicas:   c.WaitReplicas,
		WaitTimeout:    c.WaitTimeout,
		Logger:         log,
	}
}

// ClusterReloadInterval is how often the daemon's cluster client re-reads
// the slot map. go-redis re-reads it on MOVED, but not when a master stops
// answering; with its default (60 s) the daemon would keep dialing a dead
// master for up to a minute after its replica took over.
const ClusterReloadInterval = time.Second

// NewRedisClient returns a client for the configured Redis (not the
// embedded one: see Embedded): a cluster client for
// redis.cluster_addresses, go-redis's failover client for redis.sentinel,
// else a plain client. It does not connect.
func (c Config) NewRedisClient() (redis.UniversalClient, error) {
	r := c.Redis
	tlsConf, err := r.tlsConfig()
	if err != nil {
		return nil, err
	}
	if len(r.ClusterAddresses) > 0 {
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs: r.ClusterAddresses, Username: r.Username, Password: r.Password, TLSConfig: tlsConf,
			ClusterStateReloadInterval: ClusterReloadInterval,
		}), nil
	}
	if r.SentinelMasterName != "" {
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: r.SentinelMasterName, SentinelAddrs: r.SentinelAddresses,
			SentinelUsername: r.SentinelUsername, SentinelPassword: r.SentinelPassword,
			Username: r.Username, Password: r.Password, DB: r.DB, TLSConfig: tlsConf,
		}), nil
	}
	opts := &redis.Options{Addr: r.Address}
	if r.URL != "" {
		if opts, err = redis.ParseURL(r.URL); err != nil {
			return nil, fmt.Errorf("%w: redis.url: %w", ErrInvalid, err)
		}
	}
	if r.Username != "" {
		opts.Username = r.Username
	}
	if r.Password != "" {
		opts.Password = r.Password
	}
	if r.DB != 0 {
		opts.DB = r.DB
	}
	if tlsConf != nil {
		if opts.TLSConfig != nil {
			tlsConf.ServerName = opts.TLSConfig.ServerName
			// ParseURL's skip_verify=true query parameter.
			tlsConf.InsecureSkipVerify = tlsConf.InsecureSkipVerify || opts.TLSConfig.InsecureSkipVerify //nolint:gosec // opt-in
		}
		opts.TLSConfig = tlsConf
	}
	return redis.NewClient(opts), nil
}

// tlsConfig is the TLS configuration asked for, or nil when TLS is off.
func (r Redis) tlsConfig() (*tls.Config, error) {
	if !r.TLSOn() {
		return nil, nil
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: r.TLSInsecureSkipVerify} //nolint:gosec // opt-in by config
	if r.TLSCAFile != "" {
		pool, err := readCAFile(r.TLSCAFile)
		if err != nil {
			return nil, err
		}
		conf.RootCAs = pool
	}
	if r.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(r.TLSCertFile, r.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("%w: redis.tls.cert_file = %q and redis.tls.key_file = %q: %w",
				ErrInvalid, r.TLSCertFile, r.TLSKeyFile, err)
		}
		conf.Certificates = []tls.Certificate{cert}
	}
	return conf, nil
}

func readCAFile(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: redis.tls.ca_file = %q: %w", ErrInvalid, path, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%w: redis.tls.ca_file = %q: no PEM certificate in it", ErrInvalid, path)
	}
	return pool, nil
}

// MaskedURL is the Redis URL without its password, for logs.
func MaskedURL(u string) string {
	if i, j := strings.Index(u, "://"), strings.LastIndex(u, "@"); i >= 0 && j > i {
		cred := u[i+3 : j]
		if k := strings.Index(cred, ":"); k >= 0 {
			return u[:i+3] + cred[:k] + ":***" + u[j:]
		}
	}
	return u
}
