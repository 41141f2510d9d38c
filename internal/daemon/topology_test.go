package daemon_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/redistest"
)

// These tests start the daemon's own Redis connection path (config from
// BATON_* variables, config.NewRedisClient, daemon.Run) against a real
// Redis Cluster, a Sentinel group and a TLS-only server.

// load reads the config from environment variables, as the daemon does.
func load(t *testing.T, environ ...string) config.Config {
	t.Helper()
	cfg, err := config.Load(config.Sources{Environ: environ})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// ping checks the configured client answers PING and runs one admission
// through the library with it.
func ping(t *testing.T, cfg config.Config) {
	t.Helper()
	rdb, err := cfg.NewRedisClient()
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING: %v", err)
	}
	c, err := coordinator.New(rdb, cfg.CoordinatorOptions(nil))
	if err != nil {
		t.Fatalf("coordinator.New: %v", err)
	}
	defer c.Close()
	lease, err := c.EnqueueAndWait(ctx, "core.http", "exec-1")
	if err != nil {
		t.Fatalf("EnqueueAndWait: %v", err)
	}
	if err := lease.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
}

// get returns the status and body of a GET on the running daemon.
func (r *running) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Get("http://" + r.addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// serves starts the daemon with cfg and checks that it becomes ready and
// lists the action ping admitted.
func serves(t *testing.T, cfg config.Config) *running {
	t.Helper()
	r := start(t, cfg)
	r.logs.wait(t, "ready: listening for completion events")
	if code, body := r.get(t, "/readyz"); code != 200 {
		t.Fatalf("/readyz: %d %s", code, body)
	}
	code, body := r.get(t, "/api/v1/actions")
	var list struct {
		Actions []struct{ Action string }
	}
	if code != 200 || json.Unmarshal([]byte(body), &list) != nil || len(list.Actions) != 1 ||
		list.Actions[0].Action != "core.http" {
		t.Fatalf("/api/v1/actions: %d %s", code, body)
	}
	return r
}

// okWithin polls GET path until it says 200, for at most d.
func (r *running) okWithin(t *testing.T, path string, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		code, body := r.get(t, path)
		if code == 200 {
			return time.Since(start)
		}
		if time.Since(start) > d {
			t.Fatalf("%s not 200 within %s: %d %s", path, d, code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestDaemonOnCluster: redis.cluster_addresses gives a working cluster
// client; the daemon serves on it and is ready again soon after a master
// is SIGKILLed and its replica promoted.
func TestDaemonOnCluster(t *testing.T) {
	cl := redistest.SharedCluster(t)
	cfg := load(t, "BATON_REDIS_CLUSTER_ADDRESSES="+strings.Join(cl.Seeds(), ","),
		"BATON_KEY_PREFIX="+redistest.Prefix(t))
	ping(t, cfg)
	r := serves(t, cfg)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The master holding the policies (a cross-action key, read by /readyz's
	// script loading on every master).
	master, err := cl.MasterOf(ctx, cfg.KeyPrefix+":policies")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.KillMaster(ctx, master); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cl.Revive(context.Background(), master); err != nil {
			t.Errorf("reviving %s: %v", master, err)
		}
	})
	// First a request that reads only the policies key: /readyz loads the
	// scripts on every master, which re-reads the slot map by itself.
	t.Logf("policies readable %s after the promotion", r.okWithin(t, "/api/v1/policies", 30*time.Second).Round(time.Millisecond))
	r.okWithin(t, "/readyz", 30*time.Second)
	r.stop(t)
}

// TestDaemonOnSentinel: redis.sentinel gives go-redis's failover client; the
// daemon serves on it and follows a failover to the promoted replica.
func TestDaemonOnSentinel(t *testing.T) {
	g := redistest.StartSentinel(t)
	cfg := load(t, "BATON_REDIS_SENTINEL_MASTER_NAME="+redistest.SentinelMasterName,
		"BATON_REDIS_SENTINEL_ADDRESSES="+strings.Join(g.SentinelAddrs(), ","))
	ping(t, cfg)
	r := serves(t, cfg)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := g.KillMaster(ctx); err != nil {
		t.Fatal(err)
	}
	// First a request that reads only the policies key: /readyz loads the
	// scripts on every master, which re-reads the slot map by itself.
	t.Logf("policies readable %s after the promotion", r.okWithin(t, "/api/v1/policies", 30*time.Second).Round(time.Millisecond))
	r.okWithin(t, "/readyz", 30*time.Second)
	r.stop(t)
}

// TestDaemonOnTLS: a rediss:// URL, and redis.address with
// redis.tls.enabled, both with the CA and client certificate files, give
// working clients; without the client certificate the server refuses.
func TestDaemonOnTLS(t *testing.T) {
	s := redistest.StartTLS(t)
	f := s.Files
	files := []string{"BATON_REDIS_TLS_CA_FILE=" + f.CA, "BATON_REDIS_TLS_CERT_FILE=" + f.ClientCert,
		"BATON_REDIS_TLS_KEY_FILE=" + f.ClientKey}

	cfg := load(t, append(files, "BATON_REDIS_URL=rediss://"+s.Addr)...)
	ping(t, cfg)
	serves(t, cfg).stop(t)

	cfg = load(t, append(files, "BATON_REDIS_ADDRESS=localhost:"+s.Addr[strings.LastIndex(s.Addr, ":")+1:],
		"BATON_REDIS_TLS_ENABLED=true")...)
	ping(t, cfg)

	cfg = load(t, "BATON_REDIS_URL=rediss://"+s.Addr, "BATON_REDIS_TLS_CA_FILE="+f.CA)
	rdb, err := cfg.NewRedisClient()
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Fatalf("PING without a client certificate: %v", err)
	}
}
