package redistest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelMasterName is the name the sentinels monitor the master under.
const SentinelMasterName = "baton-test"

// SentinelDownAfter is the sentinels' down-after-milliseconds: a master that
// does not answer for this long is failed over. Short, so that failover
// tests are quick; long enough that a busy machine does not trigger one.
const SentinelDownAfter = 2 * time.Second

// SentinelGroup is one master, two replicas and three sentinels monitoring
// them (quorum 2), every one a redis-server on loopback.
type SentinelGroup struct {
	dir       string
	stalled   []*process // paused by StallReplicas
	servers   []*process // the master first, at start; roles change on failover
	sentinels []*process
}

// StartSentinel starts a SentinelGroup for the test and stops it when the
// test ends (about 3 s). It skips the test when redis-server is missing,
// or fails it when Required.
func StartSentinel(tb testing.TB) *SentinelGroup {
	tb.Helper()
	need(tb)
	g, err := StartSentinelGroup(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(g.Stop)
	return g
}

// StartSentinelGroup starts a master with repl-diskless-sync-delay 0, two
// replicas of it and three sentinels, keeping their files under dir. It
// returns once both replicas' links are up and every sentinel knows the
// master, both replicas and the two other sentinels. The caller must Stop
// it.
func StartSentinelGroup(dir string) (*SentinelGroup, error) {
	g := &SentinelGroup{dir: dir}
	err := g.start()
	if err != nil {
		g.Stop()
		return nil, err
	}
	return g, nil
}

func (g *SentinelGroup) start() error {
	var masterPort int
	for i := range 3 {
		name := "redis" + strconv.Itoa(i)
		p, err := withFreePorts(1, func(ports []int) (*process, error) {
			args := append([]string{"--port", strconv.Itoa(ports[0]),
				"--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"}, baseArgs(g.dir, name)...)
			if i > 0 {
				args = append(args, "--replicaof", "127.0.0.1", strconv.Itoa(masterPort))
			}
			return spawn(g.dir, name, ports[0], nil, args...)
		})
		if err != nil {
			return err
		}
		if i == 0 {
			masterPort = p.port
		}
		g.servers = append(g.servers, p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterReadyTimeout)
	defer cancel()
	for _, r := range g.servers[1:] {
		if err := waitUntil(ctx, "replica "+r.addr+" to sync", func(ctx context.Context) error {
			return linkUp(ctx, r.addr)
		}); err != nil {
			return err
		}
	}
	for i := range 3 {
		name := "sentinel" + strconv.Itoa(i)
		p, err := withFreePorts(1, func(ports []int) (*process, error) {
			conf := filepath.Join(g.dir, name+".conf")
			n := SentinelMasterName
			text := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nlogfile %s\n", ports[0], g.dir, filepath.Join(g.dir, name+".log")) +
				fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 2\n", n, masterPort) +
				fmt.Sprintf("sentinel down-after-milliseconds %s %d\n", n, SentinelDownAfter.Milliseconds()) +
				fmt.Sprintf("sentinel failover-timeout %s 10000\nsentinel parallel-syncs %s 2\n", n, n)
			if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
				return nil, err
			}
			return spawn(g.dir, name, ports[0], nil, conf, "--sentinel")
		})
		if err != nil {
			return err
		}
		g.sentinels = append(g.sentinels, p)
	}
	master := g.servers[0].addr
	return waitUntil(ctx, "the sentinels to know the master, its replicas and each other", func(ctx context.Context) error {
		return g.settled(ctx, master)
	})
}

// settled checks that every live sentinel names master as the master, sees
// it up, and knows every other live server as a replica linked to it and
// every other live sentinel.
func (g *SentinelGroup) settled(ctx context.Context, master string) error {
	for _, s := range g.sentinels {
		if !s.alive() {
			continue
		}
		rdb := redis.NewSentinelClient(&redis.Options{Addr: s.addr, MaxRetries: -1, Protocol: 2})
		m, err := rdb.Master(ctx, SentinelMasterName).Result()
		var replicas []map[string]string
		if err == nil {
			replicas, err = rdb.Replicas(ctx, SentinelMasterName).Result()
		}
		rdb.Close()
		if err != nil {
			return fmt.Errorf("sentinel %s: %w", s.addr, err)
		}
		up := 0
		for _, r := range replicas {
			if r["flags"] == "slave" && r["master-link-status"] == "ok" {
				up++
			}
		}
		addr := m["ip"] + ":" + m["port"]
		switch {
		case addr != master:
			return fmt.Errorf("sentinel %s: names %s the master, not %s", s.addr, addr, master)
		case m["flags"] != "master":
			return fmt.Errorf("sentinel %s: master flags %q", s.addr, m["flags"])
		case up != g.liveServers()-1:
			return fmt.Errorf("sentinel %s: knows %d live replicas", s.addr, up)
		case m["num-other-sentinels"] != strconv.Itoa(g.liveSentinels()-1):
			return fmt.Errorf("sentinel %s: knows %s other sentinels", s.addr, m["num-other-sentinels"])
		}
	}
	return nil
}

func (g *SentinelGroup) liveServers() (n int) {
	for _, p := range g.servers {
		if p.alive() {
			n++
		}
	}
	return n
}

func (g *SentinelGroup) liveSentinels() (n int) {
	for _, p := range g.sentinels {
		if p.alive() {
			n++
		}
	}
	return n
}

// SentinelAddrs are the sentinels' addresses, for FailoverOptions.
func (g *SentinelGroup) SentinelAddrs() []string {
	out := make([]string, len(g.sentinels))
	for i, s := range g.sentinels {
		out[i] = s.addr
	}
	return out
}

// Client returns go-redis's failover client: it asks the sentinels for the
// master and follows a failover. The caller closes it.
func (g *SentinelGroup) Client() *redis.Client {
	return redis.NewFailoverClient(&redis.FailoverOptions{MasterName: SentinelMasterName, SentinelAddrs: g.SentinelAddrs()})
}

// MasterAddr is the master's address as the first live sentinel names it.
func (g *SentinelGroup) MasterAddr(ctx context.Context) (string, error) {
	for _, s := range g.sentinels {
		if !s.alive() {
			continue
		}
		rdb := redis.NewSentinelClient(&redis.Options{Addr: s.addr, MaxRetries: -1, Protocol: 2})
		defer rdb.Close()
		v, err := rdb.GetMasterAddrByName(ctx, SentinelMasterName).Result()
		if err != nil {
			return "", fmt.Errorf("redistest: sentinel %s: %w", s.addr, err)
		}
		return strings.Join(v, ":"), nil
	}
	return "", errors.New("redistest: no sentinel is running")
}

// KillMaster SIGKILLs the current master and waits until the sentinels have
// promoted a replica (every sentinel names it, it says it is a master) and
// the other replica has synced with it. It returns the new master's
// address. Expect about SentinelDownAfter plus a few seconds.
func (g *SentinelGroup) KillMaster(ctx context.Context) (string, error) {
	old, err := g.MasterAddr(ctx)
	if err != nil {
		return "", err
	}
	var victim *process
	for _, p := range g.servers {
		if p.addr == old && p.alive() {
			victim = p
		}
	}
	if victim == nil {
		return "", fmt.Errorf("redistest: sentinel: the master %s is not one of ours or not running", old)
	}
	victim.kill()
	g.resumeStalled()
	ctx, cancel := context.WithTimeout(ctx, clusterReadyTimeout)
	defer cancel()
	var promoted string
	err = waitUntil(ctx, "a replica to replace the killed master "+old, func(ctx context.Context) error {
		addr, err := g.MasterAddr(ctx)
		if err != nil {
			return err
		}
		if addr == old {
			return errors.New("the sentinels still name the killed master")
		}
		rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, Protocol: 2})
		role, err := rdb.Do(ctx, "ROLE").Slice()
		rdb.Close()
		if err != nil {
			return err
		}
		if len(role) == 0 || role[0] != "master" {
			return fmt.Errorf("%s is still a %v", addr, role)
		}
		for _, p := range g.servers {
			if p.alive() && p.addr != addr {
				if err := linkUp(ctx, p.addr); err != nil {
					return err
				}
			}
		}
		promoted = addr
		return g.settled(ctx, addr)
	})
	return promoted, err
}

// StallReplicas makes both replicas fall behind, as slow links would: it
// pauses them (SIGSTOP) and drops their replication links on the master,
// so that the master's writes from now on reach no replica. KillMaster
// resumes them right after killing the master, so that the promoted
// replica lacks those writes. Keep the stall below SentinelDownAfter.
func (g *SentinelGroup) StallReplicas(ctx context.Context) error {
	master, err := g.MasterAddr(ctx)
	if err != nil {
		return err
	}
	for _, p := range g.servers {
		if p.addr != master && p.alive() {
			if err := p.pause(); err != nil {
				g.resumeStalled()
				return err
			}
			g.stalled = append(g.stalled, p)
		}
	}
	rdb := redis.NewClient(&redis.Options{Addr: master, MaxRetries: -1, Protocol: 2})
	defer rdb.Close()
	if err := rdb.Do(ctx, "CLIENT", "KILL", "TYPE", "replica").Err(); err != nil {
		g.resumeStalled()
		return fmt.Errorf("redistest: sentinel: dropping the replica links of %s: %w", master, err)
	}
	return nil
}

func (g *SentinelGroup) resumeStalled() {
	for _, p := range g.stalled {
		p.resume()
	}
	g.stalled = nil
}

// Revive restarts every killed server, empty, on its old port, as a
// replica of the current master (as the sentinels would reconfigure it,
// only sooner). It returns once it has synced and every sentinel knows it
// as a linked replica.
func (g *SentinelGroup) Revive(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, clusterReadyTimeout)
	defer cancel()
	master, err := g.MasterAddr(ctx)
	if err != nil {
		return err
	}
	host, port, _ := strings.Cut(master, ":")
	for _, p := range g.servers {
		if !p.alive() {
			var args []string
			for i := 0; i < len(p.args); i++ {
				if p.args[i] == "--replicaof" {
					i += 2
					continue
				}
				args = append(args, p.args[i])
			}
			p.args = append(args, "--replicaof", host, port)
			if err := p.start(); err != nil {
				return err
			}
		}
	}
	return waitUntil(ctx, "the sentinels to make the revived servers replicas", func(ctx context.Context) error {
		master, err := g.MasterAddr(ctx)
		if err != nil {
			return err
		}
		for _, p := range g.servers {
			if p.addr != master {
				if err := linkUp(ctx, p.addr); err != nil {
					return err
				}
			}
		}
		return g.settled(ctx, master)
	})
}

// Stop kills every process of the group.
func (g *SentinelGroup) Stop() {
	for _, p := range g.sentinels {
		p.kill()
	}
	for _, p := range g.servers {
		p.kill()
	}
}

// linkUp checks that the server at addr is a replica whose link to its
// master is up.
func linkUp(ctx context.Context, addr string) error {
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, Protocol: 2})
	defer rdb.Close()
	info, err := rdb.Info(ctx, "replication").Result()
	if err != nil {
		return fmt.Errorf("%s: INFO replication: %w", addr, err)
	}
	if !strings.Contains(info, "role:slave") || !strings.Contains(info, "master_link_status:up") {
		return fmt.Errorf("%s: not a replica with its link up", addr)
	}
	return nil
}

// waitUntil polls check until it returns nil or ctx ends; the error names
// what was awaited and the last reason it was not so.
func waitUntil(ctx context.Context, what string, check func(context.Context) error) error {
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		last := check(cctx)
		cancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("redistest: waiting for %s: %w", what, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
