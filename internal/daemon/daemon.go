// Package daemon runs the coordinator daemon: a coordinator.Coordinator
// (which sweeps in the background), the completion listener and the HTTP
// API, against the configured Redis or, when none is configured, an
// embedded in-memory one for trying Baton out.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/internal/config"
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
func Run(ctx context.Context, cfg config.Config, log *slog.Logger, version string) error {
	rdb, closeRedis, err := connect(cfg, log)
	if err != nil {
		return err
	}
	defer closeRedis()

	c, err := coordinator.New(rdb, cfg.CoordinatorOptions(log.With(slog.String("component", "coordinator"))))
	if err != nil {
		return err
	}
	defer c.Close()

	m := metrics.New(c, log.With(slog.String("component", "metrics")))
	handler := httpapi.New(httpapi.Options{
		Coordinator: c, AuthToken: cfg.AuthToken, MaxBodyBytes: cfg.MaxBodyBytes,
		Metrics: m.Handler(), Logger: log.With(slog.String("component", "http")), Version: version,
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
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("http: listening", slog.String("http_addr", ln.Addr().String()),
		slog.Bool("auth_required", cfg.AuthToken != ""))

	listener, err := coordinator.NewCompletionListener(c, coordinator.CompletionListenerOptions{
		Group:     cfg.CompletionGroup,
		ClaimIdle: cfg.CompletionClaimIdle,
		Logger:    log,
		OnEvent:   func(outcome string) { m.CompletionEvents.WithLabelValues(outcome).Inc() },
	})
	if err != nil {
		return err
	}
	var startup sync.WaitGroup
	startup.Add(1)
	go func() {
		defer startup.Done()
		startBackground(ctx, c, listener, cfg, log)
	}()

	select {
	case <-ctx.Done():
		log.Info("shutting down", slog.String("timeout", cfg.ShutdownTimeout.String()))
	case err := <-serveErr:
		log.Error("http: server failed", slog.Any("error", err))
	}
	return shutdown(srv, listener, c, &startup, cfg.ShutdownTimeout, log)
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
// daemon can start before Redis does (/readyz says 503 meanwhile).
func startBackground(ctx context.Context, c *coordinator.Coordinator, l *coordinator.CompletionListener, cfg config.Config, log *slog.Logger) {
	for attempt := 0; ; attempt++ {
		err := startOnce(ctx, c, l, cfg, log)
		if err == nil {
			log.Info("ready: listening for completion events", slog.String("stream", coordinator.CompletedStream(cfg.KeyPrefix)),
				slog.String("group", cfg.CompletionGroup))
			return
		}
		if attempt == 0 || attempt%30 == 0 {
			log.Warn("redis not ready; retrying", slog.Any("error", err), slog.Int("attempt", attempt+1))
		}
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func startOnce(ctx context.Context, c *coordinator.Coordinator, l *coordinator.CompletionListener, cfg config.Config, log *slog.Logger) error {
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

// applyPolicies sets each initial policy on a scope that has none yet: a
// limit changed at run time (HTTP API, CLI) survives a restart.
func applyPolicies(ctx context.Context, c *coordinator.Coordinator, ps []config.Policy, log *slog.Logger) error {
	if len(ps) == 0 {
		return nil
	}
	current, err := c.Policies(ctx)
	if err != nil {
		return err
	}
	for _, p := range ps {
		if n, set := current.Limits[p.Scope]; set {
			if n != p.MaxConcurrent {
				log.Info("policy: keeping the limit set at run time", slog.String("scope", p.Scope.String()),
					slog.Int("max_concurrent", n), slog.Int("configured", p.MaxConcurrent))
			}
			continue
		}
		if err := c.SetConcurrencyLimit(ctx, p.Scope, p.MaxConcurrent); err != nil {
			return err
		}
		log.Info("policy: set", slog.String("scope", p.Scope.String()), slog.Int("max_concurrent", p.MaxConcurrent))
	}
	return nil
}

func shutdown(srv *http.Server, l *coordinator.CompletionListener, c *coordinator.Coordinator,
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
