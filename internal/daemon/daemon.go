// Package daemon runs the coordinator daemon: a coordinator.Coordinator
// (which sweeps in the background), the completion listener
// (internal/completion), the HTTP API and the dashboard page, against the
// configured Redis or, when none is configured, an embedded in-memory one
// for trying Baton out.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/internal/completion"
	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/dashboard"
	"github.com/batonhq/baton/internal/httpapi"
	"github.com/batonhq/baton/internal/metrics"
)

// EmbeddedWarning is logged at start in embedded mode.
const EmbeddedWarning = "no Redis configured: using an embedded in-memory Redis. " +
	"Nothing is kept after this process exits; this mode is for trying Baton out. " +
	"Set --redis-url or BATON_REDIS_URL to use a real Redis."

// Run runs the daemon until ctx ends, then shuts down gracefully within
// cfg.ShutdownTimeout: the HTTP server stops accepting and finishes the
// requests in flight, the listener finishes and acknowledges its round,
// the coordinator closes. It returns nil after a clean shutdown.
//
// A Redis outage is logged once, with reminders and its end (see
// OutageHandler): Run wraps log in an OutageHandler unless its handler is
// one already; pass one when other sources, such as go-redis's own logger,
// write through it too.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger, version string) error {
	log, outage := outageHandler(log)
	rdb, closeRedis, err := connect(cfg, log)
	if err != nil {
		return err
	}
	defer closeRedis()
	if err := refusedAtStart(ctx, rdb, outage); err != nil {
		return err
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	var watching sync.WaitGroup
	watching.Go(func() { watchRedis(watchCtx, rdb, outage) })
	defer func() { stopWatch(); watching.Wait() }()

	copts := cfg.CoordinatorOptions(log.With(slog.String("component", "coordinator")))
	c, err := coordinator.New(rdb, copts)
	if err != nil {
		return err
	}
	defer c.Close()
	copts = copts.WithDefaults()
	stopPolls := make(chan struct{}) // closed when the HTTP server shuts down: acquire calls answer at once

	m := metrics.New(c, log.With(slog.String("component", "metrics")))
	handler := httpapi.New(httpapi.Options{
		Coordinator: c, AuthToken: cfg.AuthToken, MaxBodyBytes: cfg.MaxBodyBytes,
		Metrics: m.Handler(), Logger: log.With(slog.String("component", "http")), Version: version,
		Dashboard: dashboard.Handler(), LeaseTTL: copts.LeaseTTL, AckTimeout: copts.AckTimeout, Stop: stopPolls,
	})
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("http: listening on %s: %w", cfg.HTTPAddr, err)
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	var stopOnce sync.Once
	srv.RegisterOnShutdown(func() { stopOnce.Do(func() { close(stopPolls) }) })
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("http: listening", slog.String("http_addr", ln.Addr().String()),
		slog.Bool("auth_required", cfg.AuthToken != ""))

	listener, err := completion.New(rdb, c, completion.Config{
		Prefix:    cfg.KeyPrefix,
		Group:     cfg.CompletionGroup,
		ClaimIdle: cfg.CompletionClaimIdle,
		Logger:    log,
		OnEvent:   func(o completion.Outcome) { m.CompletionEvents.WithLabelValues(o.String()).Inc() },
	})
	if err != nil {
		return err
	}
	var startup sync.WaitGroup
	startup.Add(1)
	startErr := make(chan error, 1)
	go func() {
		defer startup.Done()
		startErr <- startBackground(ctx, c, listener, cfg, log)
	}()

	var failed error
wait:
	for {
		select {
		case <-ctx.Done():
			log.Info("shutting down", slog.String("timeout", cfg.ShutdownTimeout.String()))
			break wait
		case err := <-serveErr:
			log.Error("http: server failed", slog.Any("error", err))
			break wait
		case failed = <-startErr:
			if failed != nil {
				break wait
			}
			startErr = nil // started: keep serving
		}
	}
	if err := shutdown(srv, listener, c, &startup, cfg.ShutdownTimeout, log); err != nil && failed == nil {
		return err
	}
	return failed
}

// permanentPrefixes start the Redis errors that retrying cannot fix: the
// credentials or the database number are wrong, or the user may not run
// the coordinator's commands.
var permanentPrefixes = []string{"WRONGPASS", "NOAUTH", "NOPERM", "ERR DB index is out of range",
	"ERR invalid DB index", "ERR invalid password"}

// PermanentRedisError reports whether err is a Redis reply that retrying
// cannot fix (wrong password, missing authentication, missing permission,
// bad database number), as opposed to Redis not answering.
func PermanentRedisError(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	for _, p := range permanentPrefixes {
		if strings.HasPrefix(re.Error(), p) {
			return true
		}
	}
	return false
}

// refusedAtStart pings Redis once: an error that retrying cannot fix stops
// the start-up with Redis's own message; Redis not answering does not (the
// daemon may start before Redis; startBackground retries).
func refusedAtStart(ctx context.Context, rdb redis.UniversalClient, outage *OutageHandler) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := rdb.Ping(ctx).Err()
	switch {
	case PermanentRedisError(err):
		return redisRefused(err)
	case err != nil:
		outage.Failed(err)
	}
	return nil
}

func redisRefused(err error) error {
	return fmt.Errorf("redis refused the connection (check redis.url, redis.username, redis.password and redis.db): %w", err)
}

// connect returns the configured Redis client, or starts the embedded one.
// In embedded mode its address and the warning are the first lines logged.
func connect(cfg config.Config, log *slog.Logger) (redis.UniversalClient, func(), error) {
	if !cfg.Embedded() {
		rdb, err := cfg.NewRedisClient()
		if err != nil {
			return nil, nil, err
		}
		log.Info("redis: using", slog.String("redis_url", config.MaskedURL(cfg.Redis.URL)),
			slog.String("redis_addr", cfg.Redis.Address), slog.Any("redis_cluster_addrs", cfg.Redis.ClusterAddresses),
			slog.String("redis_sentinel_master", cfg.Redis.SentinelMasterName),
			slog.Any("redis_sentinel_addrs", cfg.Redis.SentinelAddresses), slog.Bool("redis_tls", cfg.Redis.TLSOn()))
		return rdb, func() { rdb.Close() }, nil
	}
	mr := miniredis.NewMiniRedis()
	if err := mr.StartAddr("127.0.0.1:0"); err != nil {
		return nil, nil, fmt.Errorf("starting the embedded Redis: %w", err)
	}
	log.Warn("embedded redis: listening", slog.String("redis_addr", mr.Addr()),
		slog.String("redis_url", "redis://"+mr.Addr()))
	log.Warn(EmbeddedWarning)
	stopAging := ageKeys(mr)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	return rdb, func() {
		rdb.Close()
		stopAging()
		mr.Close()
	}, nil
}

// ageKeys makes the embedded Redis expire keys: miniredis only ages TTLs
// when told to (its clock is the real one, so scripts' TIME is right).
func ageKeys(mr *miniredis.Miniredis) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				mr.FastForward(time.Second)
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// startBackground waits for Redis, applies the initial policies and starts
// the completion listener, retrying until it succeeds or ctx ends, so the
// daemon can start before Redis does (/readyz says 503 meanwhile). It
// returns an error, and gives up, only when Redis refuses the daemon for
// good (PermanentRedisError).
func startBackground(ctx context.Context, c *coordinator.Coordinator, l *completion.Listener, cfg config.Config, log *slog.Logger) error {
	for attempt := 0; ; attempt++ {
		err := startOnce(ctx, c, l, cfg, log)
		if err == nil {
			log.Info("ready: listening for completion events", slog.String("stream", l.Stream()),
				slog.String("group", cfg.CompletionGroup))
			return nil
		}
		if PermanentRedisError(err) {
			return redisRefused(err)
		}
		if attempt == 0 || attempt%30 == 0 {
			log.Warn("redis not ready; retrying", slog.Any("error", err), slog.Int("attempt", attempt+1))
		}
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

func startOnce(ctx context.Context, c *coordinator.Coordinator, l *completion.Listener, cfg config.Config, log *slog.Logger) error {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.Ready(rctx); err != nil {
		return err
	}
	if err := applyPolicies(rctx, c, cfg.Policies, log); err != nil {
		return err
	}
	return l.Start(rctx)
}

// applyPolicies sets each kind of each initial policy (limit, rate, quota)
// on a scope that has none of that kind yet: one changed at run time (HTTP
// API, CLI) survives a restart.
func applyPolicies(ctx context.Context, c *coordinator.Coordinator, ps []config.Policy, log *slog.Logger) error {
	if len(ps) == 0 {
		return nil
	}
	current, err := c.Policies(ctx)
	if err != nil {
		return err
	}
	keep := func(p config.Policy, kind string, now, configured any) {
		if fmt.Sprint(now) != fmt.Sprint(configured) {
			log.Info("policy: keeping the "+kind+" set at run time", slog.String("scope", p.Scope.String()),
				slog.Any(kind, now), slog.Any("configured", configured))
		}
	}
	for _, p := range ps {
		if p.MaxConcurrent != nil {
			if n, set := current.Limits[p.Scope]; set {
				keep(p, "max_concurrent", n, *p.MaxConcurrent)
			} else {
				if err := c.SetConcurrencyLimit(ctx, p.Scope, *p.MaxConcurrent); err != nil {
					return err
				}
				log.Info("policy: set", slog.String("scope", p.Scope.String()), slog.Int("max_concurrent", *p.MaxConcurrent))
			}
		}
		if p.Rate != nil {
			if r, set := current.Rates[p.Scope]; set {
				keep(p, "rate", r, *p.Rate)
			} else {
				if err := c.SetRateLimit(ctx, p.Scope, *p.Rate); err != nil {
					return err
				}
				log.Info("policy: set", slog.String("scope", p.Scope.String()), slog.String("rate", p.Rate.String()))
			}
		}
		if p.Quota != nil {
			if q, set := current.Quotas[p.Scope]; set {
				keep(p, "quota", q, *p.Quota)
			} else {
				if err := c.SetQuota(ctx, p.Scope, *p.Quota); err != nil {
					return err
				}
				log.Info("policy: set", slog.String("scope", p.Scope.String()), slog.String("quota", p.Quota.String()))
			}
		}
	}
	return nil
}

func shutdown(srv *http.Server, l *completion.Listener, c *coordinator.Coordinator,
	startup *sync.WaitGroup, timeout time.Duration, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var errs []error
	if err := srv.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("http: %w", err))
	}
	done := make(chan struct{})
	go func() {
		startup.Wait()
		l.Stop()
		c.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("listener and coordinator did not stop within %s", timeout))
	}
	if err := errors.Join(errs...); err != nil {
		log.Error("shutdown incomplete", slog.Any("error", err))
		return err
	}
	log.Info("stopped")
	return nil
}
