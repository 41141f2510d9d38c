package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/daemon"
	"github.com/batonhq/baton/internal/httpapi"
	"github.com/batonhq/baton/limits"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = ""

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the command ran and failed (Redis unreachable, ...)
	exitUsage   = 2 // bad arguments or configuration; nothing was touched
	exitNotSet  = 3 // policy clear: the scope had no policy (HTTP DELETE answers 404)
)

const topUsage = `Usage: coordinator [COMMAND] [FLAGS]

Baton's coordinator daemon and operator tool.

Commands:
  serve                      run the daemon (the default): sweeper, completion
                             listener, HTTP API and metrics
  stats ACTION [--json]      print an action's queue statistics
  policy get SCOPE           print the limit, rate and quota set on a scope
  policy set SCOPE N         set a scope's limit (N from 0 to 1000000000, or
                             -1 / unlimited)
  policy set SCOPE [N] [--rate 100/1m [--burst 10]] [--quota 10000/day]
                             set a scope's limit, rate (throttle) and quota
  policy clear SCOPE [--limit] [--rate] [--quota]
                             remove what a scope sets (all of it, or the
                             kinds named)
  executions ACTION          list an action's waiting executions, in order
  cancel ACTION ID           remove a waiting execution from its queue
  top                        a live table of every action, redrawn each second
  version                    print the version

SCOPE is global, pack:NAME or action:REF (for example action:core.http).

Exit status: 0 done; 1 failed (Redis unreachable, ...); 2 bad arguments or
configuration, nothing touched; 3 policy clear of a scope that has no policy
(nothing changed; the HTTP API's DELETE answers 404 for it).

With no Redis configured, serve starts an embedded in-memory Redis for trying
Baton out; nothing is kept after it exits. The other commands need a real
Redis. serve also serves the dashboard, a web page, at http://localhost:8080/.

Configuration: defaults < YAML file (--config) < BATON_* environment < flags.
See coordinator.example.yaml. A BATON_* variable no key reads (a typo such as
BATON_REDIS_UR) is warned about at start. Run "coordinator COMMAND --help" for
flags.
`

// commonFlags are the config flags every command takes.
type commonFlags struct {
	fs   *flag.FlagSet
	file string
	keys map[string]string // flag name -> config key
}

func newFlags(name, usage string, stderr io.Writer) *commonFlags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // its error comes back from parse; Usage writes to stderr
	cf := &commonFlags{fs: fs, keys: map[string]string{}}
	fs.StringVar(&cf.file, "config", "", "YAML config `file` (or BATON_CONFIG)")
	for _, f := range []struct{ name, key, help string }{
		{"redis-url", "redis.url", "Redis `URL` (redis:// or rediss://); BATON_REDIS_URL"},
		{"redis-addr", "redis.address", "Redis `host:port`; BATON_REDIS_ADDRESS"},
		{"http-addr", "http.addr", "HTTP listen `address` (default 127.0.0.1:8080); BATON_HTTP_ADDR"},
		{"key-prefix", "key_prefix", "Redis key `prefix` (default baton); BATON_KEY_PREFIX"},
		{"log-level", "log.level", "log `level`: debug, info, warn, error; BATON_LOG_LEVEL"},
		{"log-format", "log.format", "log `format`: auto, text, json; BATON_LOG_FORMAT"},
	} {
		fs.String(f.name, "", f.help)
		cf.keys[f.name] = f.key
	}
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fmt.Fprintln(stderr, "\nFlags:")
		fs.SetOutput(stderr)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	return cf
}

// parse reads flags anywhere among the positional arguments. A negative
// number ("-1", the unlimited limit) is an argument, not a flag.
func (cf *commonFlags) parse(args []string) ([]string, error) {
	var pos []string
	for {
		for len(args) > 0 && isNegativeNumber(args[0]) {
			pos, args = append(pos, args[0]), args[1:]
		}
		if err := cf.fs.Parse(args); err != nil {
			return nil, flagError{err} // the flag package has printed the usage
		}
		args = cf.fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// flagError is a flag parsing error, after which the usage was printed.
type flagError struct{ error }

func (e flagError) Unwrap() error { return e.error }

func isNegativeNumber(arg string) bool {
	digits, ok := strings.CutPrefix(arg, "-")
	return ok && digits != "" && strings.Trim(digits, "0123456789") == ""
}

// load reads the configuration with the flags that were set.
func (cf *commonFlags) load(environ []string) (config.Config, error) {
	flags := map[string]any{}
	cf.fs.Visit(func(f *flag.Flag) {
		if key, ok := cf.keys[f.Name]; ok {
			flags[key] = f.Value.String()
		}
	})
	file := cf.file
	if file == "" {
		for _, kv := range environ {
			if v, ok := strings.CutPrefix(kv, "BATON_CONFIG="); ok {
				file = v
			}
		}
	}
	return config.Load(config.Sources{File: file, Environ: environ, Flags: flags})
}

// run is the whole command line; main only adds signals and the exit.
func run(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	stderr = &syncWriter{w: stderr} // background logs share it with messages
	cmd := "serve"
	if len(args) > 0 {
		switch args[0] {
		case "-h", "-help", "--help", "help":
			fmt.Fprint(stdout, topUsage)
			return exitOK
		case "serve", "stats", "policy", "executions", "cancel", "top", "version":
			cmd, args = args[0], args[1:]
		default:
			if !strings.HasPrefix(args[0], "-") {
				fmt.Fprintf(stderr, "coordinator: unknown command %q\n\n%s", args[0], topUsage)
				return exitUsage
			}
		}
	}
	switch cmd {
	case "serve":
		return serve(ctx, args, environ, stderr)
	case "stats":
		return stats(ctx, args, environ, stdout, stderr)
	case "policy":
		return policy(ctx, args, environ, stdout, stderr)
	case "executions":
		return executionsCmd(ctx, args, environ, stdout, stderr)
	case "cancel":
		return cancelCmd(ctx, args, environ, stdout, stderr)
	case "top":
		return topCmd(ctx, args, environ, stdout, stderr)
	default:
		return printVersion(args, stdout, stderr)
	}
}

// unknownEnvWarnings says which BATON_ variables nothing reads: a typo such
// as BATON_REDIS_UR would otherwise pass unnoticed (and leave serve on its
// embedded Redis).
func unknownEnvWarnings(environ []string) []string {
	var out []string
	for _, u := range config.UnknownEnv(environ) {
		msg := fmt.Sprintf("unknown environment variable %s is ignored", u.Name)
		if u.Suggestion != "" {
			msg += fmt.Sprintf("; did you mean %s?", u.Suggestion)
		}
		out = append(out, msg)
	}
	return out
}

func warnUnknownEnv(environ []string, stderr io.Writer) {
	for _, w := range unknownEnvWarnings(environ) {
		fmt.Fprintf(stderr, "coordinator: warning: %s\n", w)
	}
}

// connectError reports a failure to reach Redis (exit 1) or a configuration
// error (exit 2).
func connectError(stderr io.Writer, err error) int {
	if errors.Is(err, config.ErrInvalid) {
		return usageError(stderr, nil, err)
	}
	fmt.Fprintf(stderr, "coordinator: %v\n", err)
	return exitFailure
}

func usageError(stderr io.Writer, cf *commonFlags, err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	var fe flagError
	if cf != nil && !errors.Is(err, config.ErrInvalid) && !errors.As(err, &fe) {
		cf.fs.Usage()
	}
	fmt.Fprintf(stderr, "coordinator: %v\n", err)
	return exitUsage
}

func serve(ctx context.Context, args, environ []string, stderr io.Writer) int {
	cf := newFlags("serve", "Usage: coordinator [serve] [FLAGS]\n\nRuns the daemon until SIGINT or SIGTERM (a second signal exits at once).\n", stderr)
	pos, err := cf.parse(args)
	if err == nil && len(pos) > 0 {
		err = fmt.Errorf("serve takes no arguments, got %q", pos)
	}
	if err != nil {
		return usageError(stderr, cf, err)
	}
	cfg, err := cf.load(environ)
	if err != nil {
		return usageError(stderr, nil, err)
	}
	// go-redis's own lines pass the daemon's outage filter too.
	log := slog.New(daemon.NewOutageHandler(newLogger(cfg, stderr).Handler()))
	for _, w := range unknownEnvWarnings(environ) {
		log.Warn(w)
	}
	redis.SetLogger(redisLogger{log})
	if err := daemon.Run(ctx, cfg, log, versionString()); err != nil {
		log.Error("coordinator failed", slog.Any("error", err))
		return exitFailure
	}
	return exitOK
}

func printVersion(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, "Usage: coordinator version\n\nPrints the version.") }
	if err := fs.Parse(args); err != nil {
		return usageError(stderr, nil, err)
	}
	fmt.Fprintf(stdout, "coordinator %s\n", versionString())
	return exitOK
}

// connect returns a Coordinator on the configured Redis for one command,
// without background sweeping. It pings Redis first, so that a wrong
// password or database number is reported as Redis words it.
// connect opens a Coordinator for one command; readOnly ones claim no owner
// ID and run no background work, so reading writes nothing to Redis.
func connect(ctx context.Context, cfg config.Config, stderr io.Writer, readOnly bool) (*coordinator.Coordinator, func(), error) {
	if cfg.Embedded() {
		return nil, nil, fmt.Errorf("%w: no Redis configured: set --redis-url or BATON_REDIS_URL "+
			"(serve prints the address of its embedded Redis at start)", config.ErrInvalid)
	}
	rdb, err := cfg.NewRedisClient()
	if err != nil {
		return nil, nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		rdb.Close()
		return nil, nil, fmt.Errorf("redis: %w", err)
	}
	opts := cfg.CoordinatorOptions(newLogger(cfg, stderr))
	opts.SweepInterval = -1
	opts.ReadOnly = readOnly
	c, err := coordinator.New(rdb, opts)
	if err != nil {
		rdb.Close()
		return nil, nil, err
	}
	return c, func() { c.Close(); rdb.Close() }, nil
}

func stats(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	cf := newFlags("stats", "Usage: coordinator stats ACTION [--json] [FLAGS]\n\nPrints an action's queue statistics.\n", stderr)
	asJSON := cf.fs.Bool("json", false, "print JSON (the HTTP API's queue-stats shape)")
	pos, err := cf.parse(args)
	if err == nil && len(pos) != 1 {
		err = fmt.Errorf("stats takes one ACTION, got %d arguments", len(pos))
	}
	if err != nil {
		return usageError(stderr, cf, err)
	}
	cfg, err := cf.load(environ)
	if err != nil {
		return usageError(stderr, nil, err)
	}
	warnUnknownEnv(environ, stderr)
	if err := limits.ValidateRef(pos[0]); err != nil {
		return usageError(stderr, nil, err)
	}
	c, done, err := connect(ctx, cfg, stderr, true)
	if err != nil {
		return connectError(stderr, err)
	}
	defer done()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := c.QueueStats(ctx, pos[0])
	if err != nil {
		fmt.Fprintf(stderr, "coordinator: %v\n", err)
		return exitFailure
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(httpapi.NewQueueStats(st))
		return exitOK
	}
	printStats(stdout, st)
	return exitOK
}

func printStats(w io.Writer, st coordinator.QueueStats) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	limit := fmt.Sprint(st.MaxConcurrent)
	if st.MaxConcurrent == limits.Unlimited {
		limit = "unlimited"
	}
	oldest := "-"
	if !st.OldestEnqueuedAt.IsZero() {
		oldest = fmt.Sprintf("%s (%s ago)", st.OldestEnqueuedAt.UTC().Format(time.RFC3339Nano),
			time.Since(st.OldestEnqueuedAt).Round(time.Millisecond))
	}
	rows := [][2]string{
		{"action", st.Action},
		{"queue_length", fmt.Sprint(st.QueueLength)},
		{"active_count", fmt.Sprint(st.ActiveCount)},
		{"max_concurrent", limit + " (" + st.LimitSource + ")"},
		{"rate", formatRate(st.Rate) + " (" + st.RateSource + ")"},
		{"throttled_until", formatUntil(st.ThrottledUntil)},
		{"quota", formatQuota(st.Quota) + " (" + st.QuotaSource + ")"},
		{"quota_used", quotaUsed(st)},
		{"oldest_enqueued_at", oldest},
		{"total_enqueued", fmt.Sprint(st.TotalEnqueued)},
		{"total_admitted", fmt.Sprint(st.TotalAdmitted)},
		{"total_completed", fmt.Sprint(st.TotalCompleted)},
		{"total_timed_out", fmt.Sprint(st.TotalTimedOut)},
		{"total_canceled", fmt.Sprint(st.TotalCanceled)},
		{"total_rejected", fmt.Sprint(st.TotalRejected)},
		{"total_quota_rejected", fmt.Sprint(st.TotalQuotaRejected)},
		{"total_throttled", fmt.Sprint(st.TotalThrottled)},
		{"total_reclaimed", fmt.Sprint(st.TotalReclaimed)},
		{"total_abandoned", fmt.Sprint(st.TotalAbandoned)},
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", r[0], r[1])
	}
	if st.Wait.Count > 0 {
		fmt.Fprintf(tw, "wait_mean\t%s\n", (st.Wait.Sum / time.Duration(st.Wait.Count)).Round(time.Microsecond))
		for i, b := range coordinator.WaitBuckets {
			if i < len(st.Wait.Buckets) && st.Wait.Buckets[i] > 0 {
				fmt.Fprintf(tw, "wait_le_%s\t%d\n", b, st.Wait.Buckets[i])
			}
		}
		if st.Wait.Over > 0 {
			fmt.Fprintf(tw, "wait_over_%s\t%d\n", coordinator.WaitBuckets[len(coordinator.WaitBuckets)-1], st.Wait.Over)
		}
	}
	tw.Flush()
}

// formatRate renders a rate as the command line takes it: "100/1m burst
// 10", "100/1m" without a burst, "none" for the zero Rate.
func formatRate(r limits.Rate) string {
	if r.IsZero() {
		return "none"
	}
	if r.Burst > 1 {
		return fmt.Sprintf("%s burst %d", limits.RateSpec(r), r.Burst)
	}
	return limits.RateSpec(r)
}

// formatQuota renders a quota as "10000/day", "none" for the zero Quota.
func formatQuota(q limits.Quota) string {
	if q.IsZero() {
		return "none"
	}
	return q.String()
}

// formatUntil renders a Redis-clock time and how far ahead it is, or "-".
func formatUntil(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return fmt.Sprintf("%s (in %s)", t.UTC().Format(time.RFC3339Nano), max(0, time.Until(t)).Round(time.Millisecond))
}

// quotaUsed renders the quota's use of the current window and its end.
func quotaUsed(st coordinator.QueueStats) string {
	if st.Quota.IsZero() {
		return "-"
	}
	return fmt.Sprintf("%d of %d (window resets at %s)", st.QuotaUsed, st.Quota.Limit, st.QuotaResetAt.UTC().Format(time.RFC3339))
}

const policyUsage = `Usage: coordinator policy get|set|clear SCOPE [N] [FLAGS]

  policy get SCOPE      print what is set on SCOPE ("not set" if nothing):
                        the limit, then the rate and the quota when set
  policy set SCOPE N    set SCOPE's limit: N from 0 (pauses) to 1000000000,
                        or -1 / unlimited
  policy set SCOPE [N] [--rate LIMIT/PER [--burst B]] [--quota LIMIT/WINDOW]
                        set SCOPE's rate (a throttle: at most LIMIT
                        admissions per PER, such as 100/1m or 5/1s, with
                        bursts of up to B after an idle period) and/or its
                        quota (at most LIMIT executions per UTC minute, hour
                        or day, such as 10000/day), beside a limit N or not;
                        what is not given is left as it is
  policy clear SCOPE [--kind limit|rate|quota]
                        remove everything SCOPE sets, or one kind of it;
                        exit status 3 if there was nothing of it

SCOPE is global, pack:NAME or action:REF. Everything is checked before
anything is written.
`

// policyKinds are the values of policy clear --kind, with the HTTP API's
// names (?kind=) accepted too.
var policyKinds = map[string]string{"limit": "limit", "max_concurrent": "limit", "rate": "rate", "quota": "quota"}

// policyRequest is a checked policy command: what to read, set or clear.
type policyRequest struct {
	verb  string // get, set or clear
	scope limits.Scope
	limit *int
	rate  *limits.Rate
	quota *limits.Quota
	kind  string // clear: limit, rate, quota, or "" for all
}

func policy(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	cf := newFlags("policy", policyUsage, stderr)
	req, code := parsePolicy(cf, args, stderr)
	if code >= 0 {
		return code
	}
	cfg, err := cf.load(environ)
	if err != nil {
		return usageError(stderr, nil, err)
	}
	warnUnknownEnv(environ, stderr)
	c, done, err := connect(ctx, cfg, stderr, req.verb == "get")
	if err != nil {
		return connectError(stderr, err)
	}
	defer done()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if req.verb == "clear" {
		return clearPolicy(ctx, c, req, stdout, stderr)
	}
	if req.limit != nil {
		err = c.SetConcurrencyLimit(ctx, req.scope, *req.limit)
	}
	if err == nil && req.rate != nil {
		err = c.SetRateLimit(ctx, req.scope, *req.rate)
	}
	if err == nil && req.quota != nil {
		err = c.SetQuota(ctx, req.scope, *req.quota)
	}
	var p limits.Policies
	if err == nil {
		p, err = c.Policies(ctx)
	}
	if err != nil {
		return failed(stderr, err)
	}
	fmt.Fprintf(stdout, "%s %s\n", req.scope, formatPolicy(p, req.scope))
	return exitOK
}

// parsePolicy reads and checks the whole command line before anything
// touches Redis; on a bad one it returns the exit code (else -1).
func parsePolicy(cf *commonFlags, args []string, stderr io.Writer) (policyRequest, int) {
	rateText := cf.fs.String("rate", "", "set: the rate, `LIMIT/PER` (100/1m, 5/1s)")
	burst := cf.fs.Int("burst", 0, "set: the rate's burst `B` (0 or 1: no burst); needs --rate")
	quotaText := cf.fs.String("quota", "", "set: the quota, `LIMIT/WINDOW` (10000/day; minute, hour or day)")
	kindText := cf.fs.String("kind", "", "clear: the `kind` to remove: limit, rate or quota (default: all)")
	var req policyRequest
	pos, err := cf.parse(args)
	if err != nil {
		return req, usageError(stderr, cf, err)
	}
	given := map[string]bool{}
	cf.fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if len(pos) == 0 || (pos[0] != "get" && pos[0] != "set" && pos[0] != "clear") {
		return req, usageError(stderr, cf, errors.New("policy needs get, set or clear"))
	}
	req.verb = pos[0]
	want := map[string]int{"get": 2, "set": 3, "clear": 2}[req.verb]
	if req.verb == "set" && (given["rate"] || given["quota"]) && len(pos) == 2 {
		want = 2 // the limit N is optional beside --rate or --quota
	}
	if len(pos) != want {
		return req, usageError(stderr, cf, fmt.Errorf("policy %s takes %d arguments, got %d", req.verb, want-1, len(pos)-1))
	}
	takes := map[string][]string{"set": {"rate", "burst", "quota"}, "clear": {"kind"}}[req.verb]
	for _, name := range []string{"rate", "burst", "quota", "kind"} {
		if given[name] && !slices.Contains(takes, name) {
			return req, usageError(stderr, cf, fmt.Errorf("policy %s takes no --%s", req.verb, name))
		}
	}
	if given["burst"] && !given["rate"] {
		return req, usageError(stderr, cf, errors.New("--burst needs --rate"))
	}
	if req.scope, err = limits.ParseScope(pos[1]); err != nil {
		return req, usageError(stderr, nil, err)
	}
	if len(pos) == 3 {
		n, err := config.ParseLimit(pos[2])
		if err != nil {
			return req, usageError(stderr, nil, fmt.Errorf("limit %q: %w", pos[2], err))
		}
		req.limit = &n
	}
	if given["rate"] {
		r, err := limits.ParseRateSpec(*rateText, *burst)
		if err != nil {
			return req, usageError(stderr, nil, fmt.Errorf("--rate %s --burst %d: %w", limits.Quote(*rateText), *burst, err))
		}
		req.rate = &r
	}
	if given["quota"] {
		q, err := limits.ParseQuotaSpec(*quotaText)
		if err != nil {
			return req, usageError(stderr, nil, fmt.Errorf("--quota %s: %w", limits.Quote(*quotaText), err))
		}
		req.quota = &q
	}
	if given["kind"] {
		if req.kind = policyKinds[*kindText]; req.kind == "" {
			return req, usageError(stderr, nil, fmt.Errorf("--kind %s: want limit, rate or quota", limits.Quote(*kindText)))
		}
	}
	return req, -1
}

// clearPolicy removes the kinds req names that its scope sets; exit 3 when
// there are none (as HTTP DELETE's 404).
func clearPolicy(ctx context.Context, c *coordinator.Coordinator, req policyRequest, stdout, stderr io.Writer) int {
	p, err := c.Policies(ctx)
	if err != nil {
		return failed(stderr, err)
	}
	all, s := req.kind == "", req.scope
	var clear []func() error
	if (all || req.kind == "limit") && hasScope(p.Limits, s) {
		clear = append(clear, func() error { return c.ClearConcurrencyLimit(ctx, s) })
	}
	if (all || req.kind == "rate") && hasScope(p.Rates, s) {
		clear = append(clear, func() error { return c.ClearRateLimit(ctx, s) })
	}
	if (all || req.kind == "quota") && hasScope(p.Quotas, s) {
		clear = append(clear, func() error { return c.ClearQuota(ctx, s) })
	}
	if len(clear) == 0 {
		fmt.Fprintf(stderr, "coordinator: no %s set on %s; nothing to clear\n", cmp.Or(req.kind, "policy"), s)
		return exitNotSet
	}
	for _, f := range clear {
		if err := f(); err != nil {
			return failed(stderr, err)
		}
	}
	what := "cleared"
	if !all {
		what = req.kind + " cleared"
	}
	fmt.Fprintf(stdout, "%s %s\n", s, what)
	return exitOK
}

func hasScope[V any](m map[limits.Scope]V, s limits.Scope) bool {
	_, ok := m[s]
	return ok
}

// formatPolicy renders what p sets on s: the limit, then the rate and the
// quota when set ("2", "unlimited, rate 100/1m burst 10", "quota
// 10000/day"), or "not set".
func formatPolicy(p limits.Policies, s limits.Scope) string {
	var parts []string
	if n, ok := p.Limits[s]; ok {
		parts = append(parts, formatLimit(n, true))
	}
	if r, ok := p.Rates[s]; ok {
		parts = append(parts, "rate "+formatRate(r))
	}
	if q, ok := p.Quotas[s]; ok {
		parts = append(parts, "quota "+formatQuota(q))
	}
	if len(parts) == 0 {
		return "not set"
	}
	return strings.Join(parts, ", ")
}

func formatLimit(n int, set bool) string {
	switch {
	case !set:
		return "not set"
	case n == limits.Unlimited:
		return "unlimited"
	}
	return fmt.Sprint(n)
}

// syncWriter serializes writes to w.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
