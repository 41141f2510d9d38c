package loadgen

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/batonhq/baton/cmd/bench/internal/redisstats"
	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/scripts"
)

// CheckLoopback refuses a Redis URL whose host is not a loopback address:
// the bench floods what it points at, and is meant for a local server.
func CheckLoopback(redisURL string) error {
	u, err := url.Parse(redisURL)
	if err != nil {
		return fmt.Errorf("--redis %q: %w", redisURL, err)
	}
	if u.Scheme != "redis" {
		return fmt.Errorf("--redis %q: want redis://host:port", redisURL)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("--redis %q: only loopback addresses (127.0.0.0/8, ::1, localhost) are allowed", redisURL)
	}
	return nil
}

// ScriptNames maps the SHA1 and the Function name of every Baton script to
// its name, so that a Counter names script calls ("script:enqueue").
func ScriptNames() map[string]string {
	out := map[string]string{}
	for _, s := range scripts.All {
		out[s.Hash()] = s.Name()
		if s.Function() != "" {
			out[s.Function()] = s.Name()
		}
	}
	return out
}

// Connect opens a client on redisURL with a pool of poolSize connections and
// a Counter hooked in.
func Connect(redisURL string, poolSize int) (*redis.Client, *redisstats.Counter, error) {
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		return nil, nil, fmt.Errorf("--redis %q: %w", redisURL, err)
	}
	opts.PoolSize = poolSize
	opts.ReadTimeout = 10 * time.Second // above the coordinator's 1s BLPOP rounds
	rdb := redis.NewClient(opts)
	counter := redisstats.NewCounter(ScriptNames())
	rdb.AddHook(counter)
	return rdb, counter, nil
}

// ConnectCluster opens a cluster client seeded with seeds, with a pool of
// poolSize connections per node, the slot map re-read every second (so a
// failover is followed), and a Counter hooked in.
func ConnectCluster(seeds []string, poolSize int) (*redis.ClusterClient, *redisstats.Counter, error) {
	for _, s := range seeds {
		if err := CheckLoopback("redis://" + s); err != nil {
			return nil, nil, fmt.Errorf("--cluster: %w", err)
		}
	}
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: seeds, PoolSize: poolSize,
		ReadTimeout: 10 * time.Second, ClusterStateReloadInterval: time.Second})
	counter := redisstats.NewCounter(ScriptNames())
	rdb.AddHook(counter)
	return rdb, counter, nil
}

// CoordinatorOptions are the Coordinator settings a bench process uses.
type CoordinatorOptions struct {
	// Prefix, LeaseTTL, AckTimeout and SweepInterval are the coordinator.Options
	// fields of the same names.
	Prefix        string        `json:"prefix"`
	LeaseTTL      time.Duration `json:"lease_ttl"`
	AckTimeout    time.Duration `json:"ack_timeout"`
	SweepInterval time.Duration `json:"sweep_interval"`
	// MaxWaitConns bounds blocking connections (0: the Coordinator's default).
	MaxWaitConns int `json:"max_wait_conns"`
	// WaitReplicas and WaitTimeout are the coordinator.Options fields.
	WaitReplicas int           `json:"wait_replicas"`
	WaitTimeout  time.Duration `json:"wait_timeout"`
}

// NewCoordinator starts a Coordinator on rdb, loads the policies and the
// scripts, so that the first admission neither runs on stale limits nor
// pays for a script load. Its blocking waits get a client of their own
// (rdb's options, no retries) that counter, when not nil, counts too.
// closeAll closes the Coordinator and that client.
func NewCoordinator(ctx context.Context, rdb redis.UniversalClient, counter *redisstats.Counter, o CoordinatorOptions) (c *coordinator.Coordinator, closeAll func(), err error) {
	var wait redis.UniversalClient
	switch r := rdb.(type) {
	case *redis.Client:
		wo := *r.Options()
		wo.MaxRetries = -1
		wo.PoolSize = cmp.Or(o.MaxWaitConns, coordinator.DefaultMaxWaitConns)
		wait = redis.NewClient(&wo)
	case *redis.ClusterClient:
		wo := *r.Options()
		wo.MaxRetries = -1
		wo.PoolSize = cmp.Or(o.MaxWaitConns, coordinator.DefaultMaxWaitConns)
		wo.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled} // see coordinator's waitClient
		wait = redis.NewClusterClient(&wo)
	default:
		return nil, nil, fmt.Errorf("bench: unsupported client %T", rdb)
	}
	if counter != nil {
		wait.AddHook(counter)
	}
	c, err = coordinator.New(rdb, coordinator.Options{
		Prefix:         o.Prefix,
		LeaseTTL:       o.LeaseTTL,
		AckTimeout:     o.AckTimeout,
		SweepInterval:  o.SweepInterval,
		MaxWaitConns:   o.MaxWaitConns,
		MaxQueueLength: -1,
		WaitClient:     wait,
		WaitReplicas:   o.WaitReplicas,
		WaitTimeout:    o.WaitTimeout,
	})
	if err != nil {
		wait.Close()
		return nil, nil, err
	}
	closeAll = func() { c.Close(); wait.Close() }
	if _, err := c.Policies(ctx); err != nil {
		closeAll()
		return nil, nil, err
	}
	if err := c.Ready(ctx); err != nil {
		closeAll()
		return nil, nil, err
	}
	return c, closeAll, nil
}

// PoolSize is the connection pool a process with n clients on a actions
// needs: one per client, one blocking connection per action, and spare.
func PoolSize(clients, actions int) int { return clients + actions + 8 }

// Host returns the host:port of a redis:// URL.
func Host(redisURL string) string {
	u, err := url.Parse(redisURL)
	if err != nil {
		return redisURL
	}
	return strings.TrimPrefix(u.Host, "//")
}
