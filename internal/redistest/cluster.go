package redistest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ClusterNodeTimeout is the cluster-node-timeout of the test clusters: a
// master that does not answer for this long is failed over to its replica.
// Short, so that failover tests are quick; long enough that a busy 2-core
// machine does not fail a master over by mistake.
const ClusterNodeTimeout = 2 * time.Second

// clusterReadyTimeout bounds the wait for a cluster to form or to recover
// from a failover.
const clusterReadyTimeout = 60 * time.Second

// Cluster is a Redis Cluster of 3 masters, each with one replica, every
// node a redis-server on loopback. Start it once per test binary (see
// SharedCluster) and give each test its own key prefix (see Prefix).
type Cluster struct {
	dir string

	mu    sync.Mutex
	nodes []*clusterNode
}

// clusterNode is one node's process and its fixed identity.
type clusterNode struct {
	name string // n0..n5, its directory
	dir  string
	port int
	bus  int
	proc *process
	id   string // cluster node ID
	// stalled: paused by StallReplica, resumed when its master is killed.
	stalled bool
}

// NodeRole is one node as the cluster sees it.
type NodeRole struct {
	// Addr is host:port.
	Addr string
	// ID is the cluster node ID.
	ID string
	// Master reports whether the node is a master (else a replica).
	Master bool
	// MasterID is a replica's master's node ID; "" for a master.
	MasterID string
	// Alive reports whether the node's process is running.
	Alive bool
}

// StartCluster starts a 3-master, 3-replica cluster keeping its files under
// dir, and returns once every node reports cluster_state:ok, every replica's
// link to its master is up and every node agrees on the roles. The caller
// must Stop it.
func StartCluster(dir string) (*Cluster, error) {
	c := &Cluster{dir: dir}
	for i := range 6 {
		n, err := withFreePorts(2, func(ports []int) (*clusterNode, error) {
			n := &clusterNode{name: "n" + strconv.Itoa(i), port: ports[0], bus: ports[1]}
			n.dir = filepath.Join(dir, n.name)
			if err := os.MkdirAll(n.dir, 0o755); err != nil {
				return nil, err
			}
			return n, n.start()
		})
		if err != nil {
			c.Stop()
			return nil, err
		}
		c.nodes = append(c.nodes, n)
	}
	if err := c.form(); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func (n *clusterNode) start() error {
	args := append([]string{"--port", strconv.Itoa(n.port), "--cluster-enabled", "yes",
		"--cluster-port", strconv.Itoa(n.bus), "--cluster-config-file", "nodes.conf",
		"--cluster-node-timeout", strconv.Itoa(int(ClusterNodeTimeout / time.Millisecond)),
		"--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"}, baseArgs(n.dir, "redis")...)
	var err error
	n.proc, err = spawn(n.dir, "redis", n.port, nil, args...)
	return err
}

func (n *clusterNode) addr() string { return "127.0.0.1:" + strconv.Itoa(n.port) }

// client is a plain client to this one node.
func (n *clusterNode) client() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: n.addr(), MaxRetries: -1, Protocol: 2,
		DialTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second})
}

// form joins the six fresh nodes: n0..n2 masters with a third of the slots
// each, n3..n5 replicas of n0..n2.
func (c *Cluster) form() error {
	ctx, cancel := context.WithTimeout(context.Background(), clusterReadyTimeout)
	defer cancel()
	for i, n := range c.nodes {
		rdb := n.client()
		id, err := rdb.Do(ctx, "CLUSTER", "MYID").Text()
		if err == nil && i < 3 {
			lo, hi := i*16384/3, (i+1)*16384/3-1
			err = rdb.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", lo, hi).Err()
			if err == nil {
				// Distinct epochs, as redis-cli --cluster create sets them,
				// so no epoch collision has to be resolved first.
				err = rdb.Do(ctx, "CLUSTER", "SET-CONFIG-EPOCH", i+1).Err()
			}
		}
		rdb.Close()
		if err != nil {
			return fmt.Errorf("redistest: cluster: preparing %s: %w", n.addr(), err)
		}
		n.id = id
	}
	first := c.nodes[0].client()
	defer first.Close()
	for _, n := range c.nodes[1:] {
		if err := first.Do(ctx, "CLUSTER", "MEET", "127.0.0.1", n.port, n.bus).Err(); err != nil {
			return fmt.Errorf("redistest: cluster: CLUSTER MEET %s: %w", n.addr(), err)
		}
	}
	if err := waitUntil(ctx, "cluster: every node to know all six", c.allKnown); err != nil {
		return err
	}
	for i, n := range c.nodes[3:] {
		rdb := n.client()
		err := rdb.Do(ctx, "CLUSTER", "REPLICATE", c.nodes[i].id).Err()
		rdb.Close()
		if err != nil {
			return fmt.Errorf("redistest: cluster: CLUSTER REPLICATE on %s: %w", n.addr(), err)
		}
	}
	return waitUntil(ctx, "cluster: the cluster to be ready", c.healthy)
}

// allKnown checks that every node lists six nodes, none in handshake.
func (c *Cluster) allKnown(ctx context.Context) error {
	for _, n := range c.nodes {
		rdb := n.client()
		text, err := rdb.ClusterNodes(ctx).Result()
		rdb.Close()
		if err != nil {
			return err
		}
		lines := strings.Split(strings.TrimSpace(text), "\n")
		if len(lines) != len(c.nodes) || strings.Contains(text, "handshake") {
			return fmt.Errorf("%s knows %d nodes: %s", n.addr(), len(lines), text)
		}
	}
	return nil
}

// healthy checks, on every live node: cluster_state:ok; one view of which
// node is a master and which replicates which, with 3 live masters each
// with a live replica; and on every replica master_link_status:up.
func (c *Cluster) healthy(ctx context.Context) error {
	c.mu.Lock()
	nodes := append([]*clusterNode(nil), c.nodes...)
	c.mu.Unlock()
	var view string
	for _, n := range nodes {
		if !n.proc.alive() {
			continue
		}
		rdb := n.client()
		err := nodeHealthy(ctx, rdb, n.addr(), len(nodes)/2, &view)
		rdb.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

func nodeHealthy(ctx context.Context, rdb *redis.Client, addr string, masters int, view *string) error {
	info, err := rdb.ClusterInfo(ctx).Result()
	if err != nil {
		return fmt.Errorf("%s: CLUSTER INFO: %w", addr, err)
	}
	if !strings.Contains(info, "cluster_state:ok") {
		return fmt.Errorf("%s: cluster_state is not ok", addr)
	}
	text, err := rdb.ClusterNodes(ctx).Result()
	if err != nil {
		return fmt.Errorf("%s: CLUSTER NODES: %w", addr, err)
	}
	roles, self := parseNodes(text)
	live, replicated := 0, map[string]bool{}
	var summary []string
	for _, r := range roles {
		if r.failed {
			continue
		}
		if r.Master && r.slots {
			live++
		}
		if !r.Master {
			replicated[r.MasterID] = true
		}
		summary = append(summary, r.Addr+">"+r.MasterID)
	}
	for _, r := range roles {
		if r.Master && r.slots && !r.failed && !replicated[r.ID] {
			return fmt.Errorf("%s: master %s has no live replica yet", addr, r.Addr)
		}
	}
	if live != masters {
		return fmt.Errorf("%s: sees %d live masters with slots, want %d", addr, live, masters)
	}
	slices.Sort(summary)
	s := strings.Join(summary, ",")
	if *view == "" {
		*view = s
	} else if *view != s {
		return fmt.Errorf("%s: its view of the roles (%s) differs from another node's (%s)", addr, s, *view)
	}
	if !self.Master {
		rep, err := rdb.Info(ctx, "replication").Result()
		if err != nil {
			return fmt.Errorf("%s: INFO replication: %w", addr, err)
		}
		if !strings.Contains(rep, "master_link_status:up") {
			return fmt.Errorf("%s: replica's master_link_status is not up", addr)
		}
	}
	return nil
}

// nodeLine is one line of CLUSTER NODES.
type nodeLine struct {
	NodeRole
	failed bool // flagged fail or fail?
	slots  bool // serves at least one slot range
}

// parseNodes reads CLUSTER NODES; self is the line flagged "myself".
func parseNodes(text string) (all []nodeLine, self nodeLine) {
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		flags := f[2]
		n := nodeLine{NodeRole: NodeRole{ID: f[0], Addr: f[1], Master: strings.Contains(flags, "master")}}
		if i := strings.IndexAny(n.Addr, "@,"); i >= 0 {
			n.Addr = n.Addr[:i]
		}
		if !n.Master && f[3] != "-" {
			n.MasterID = f[3]
		}
		n.failed = strings.Contains(flags, "fail") || strings.Contains(flags, "noaddr")
		n.slots = len(f) > 8
		all = append(all, n)
		if strings.Contains(flags, "myself") {
			self = n
		}
	}
	return all, self
}

// Seeds are the addresses of all six nodes, for ClusterOptions.Addrs.
func (c *Cluster) Seeds() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = n.addr()
	}
	return out
}

// ClientReloadInterval is how often Client's cluster clients re-read the
// slot map. go-redis re-reads it on MOVED, but not when a master stops
// answering: with its default (60 s) a client keeps dialing a dead master
// that long after its replica took over.
const ClientReloadInterval = time.Second

// Client returns a cluster client seeded with every node, re-reading the
// slot map every ClientReloadInterval. The caller closes it.
func (c *Cluster) Client() *redis.ClusterClient {
	return redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Seeds(), ClusterStateReloadInterval: ClientReloadInterval})
}

// Nodes lists the nodes with their roles, as the first live node sees
// them; a node whose process was killed is listed with Alive false.
func (c *Cluster) Nodes(ctx context.Context) ([]NodeRole, error) {
	c.mu.Lock()
	nodes := append([]*clusterNode(nil), c.nodes...)
	c.mu.Unlock()
	alive := map[string]bool{}
	var from *clusterNode
	for _, n := range nodes {
		alive[n.id] = n.proc.alive()
		c.mu.Lock()
		stalled := n.stalled
		c.mu.Unlock()
		if from == nil && alive[n.id] && !stalled {
			from = n
		}
	}
	if from == nil {
		return nil, errors.New("redistest: cluster: no node is running")
	}
	rdb := from.client()
	defer rdb.Close()
	text, err := rdb.ClusterNodes(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("redistest: cluster: CLUSTER NODES on %s: %w", from.addr(), err)
	}
	lines, _ := parseNodes(text)
	out := make([]NodeRole, 0, len(lines))
	for _, l := range lines {
		l.Alive = alive[l.ID]
		out = append(out, l.NodeRole)
	}
	return out, nil
}

// MasterOf is the address of the master serving key's slot.
func (c *Cluster) MasterOf(ctx context.Context, key string) (string, error) {
	rdb := c.Client()
	defer rdb.Close()
	m, err := rdb.MasterForKey(ctx, key)
	if err != nil {
		return "", fmt.Errorf("redistest: cluster: master of %q: %w", key, err)
	}
	return m.Options().Addr, nil
}

// KillMaster SIGKILLs the master at addr, waits until its replica has been
// promoted and the cluster is healthy again (cluster_state:ok on every
// live node; the dead master's slots served by its former replica, which
// then has no replica of its own), and returns the promoted node's
// address. Expect about ClusterNodeTimeout plus a second or two.
func (c *Cluster) KillMaster(ctx context.Context, addr string) (promoted string, err error) {
	n, err := c.node(addr)
	if err != nil {
		return "", err
	}
	roles, err := c.Nodes(ctx)
	if err != nil {
		return "", err
	}
	var replica string
	for _, r := range roles {
		if r.ID == n.id && !r.Master {
			return "", fmt.Errorf("redistest: cluster: %s is not a master", addr)
		}
		if r.MasterID == n.id && r.Alive {
			replica = r.Addr
		}
	}
	if replica == "" {
		return "", fmt.Errorf("redistest: cluster: master %s has no live replica to promote", addr)
	}
	n.proc.kill()
	c.resumeStalled()
	ctx, cancel := context.WithTimeout(ctx, clusterReadyTimeout)
	defer cancel()
	err = waitUntil(ctx, "cluster: the replica "+replica+" of the killed master "+addr+" to be promoted", func(ctx context.Context) error {
		r, err := c.node(replica)
		if err != nil {
			return err
		}
		rdb := r.client()
		defer rdb.Close()
		roles, err := rdb.Do(ctx, "ROLE").Slice()
		if err != nil {
			return err
		}
		if len(roles) == 0 || roles[0] != "master" {
			return fmt.Errorf("%s is still a %v", replica, roles)
		}
		return c.degraded(ctx)
	})
	if err != nil {
		return "", err
	}
	return replica, nil
}

// StallReplica makes the replica of the master at addr fall behind, as a
// slow link or a busy replica would: it pauses the replica (SIGSTOP) and
// drops its replication link on the master, so that the master's writes
// from now on reach no replica. KillMaster resumes it right after killing
// the master, so that the promoted replica lacks those writes. Keep the
// stall well below ClusterNodeTimeout.
func (c *Cluster) StallReplica(ctx context.Context, addr string) error {
	n, err := c.node(addr)
	if err != nil {
		return err
	}
	roles, err := c.Nodes(ctx)
	if err != nil {
		return err
	}
	for _, r := range roles {
		if r.MasterID != n.id || !r.Alive {
			continue
		}
		rep, err := c.node(r.Addr)
		if err != nil {
			return err
		}
		if err := rep.proc.pause(); err != nil {
			return err
		}
		c.mu.Lock()
		rep.stalled = true
		c.mu.Unlock()
		rdb := n.client()
		defer rdb.Close()
		if err := rdb.Do(ctx, "CLIENT", "KILL", "TYPE", "replica").Err(); err != nil {
			c.resumeStalled()
			return fmt.Errorf("redistest: cluster: dropping %s's replica link: %w", addr, err)
		}
		return nil
	}
	return fmt.Errorf("redistest: cluster: master %s has no live replica", addr)
}

// resumeStalled resumes the replicas StallReplica paused.
func (c *Cluster) resumeStalled() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		if n.stalled {
			n.proc.resume()
			n.stalled = false
		}
	}
}

// degraded is healthy for a cluster missing one replica: cluster_state:ok
// on every live node and 3 live masters.
func (c *Cluster) degraded(ctx context.Context) error {
	for _, n := range c.nodes {
		if !n.proc.alive() {
			continue
		}
		rdb := n.client()
		info, err := rdb.ClusterInfo(ctx).Result()
		var text string
		if err == nil {
			text, err = rdb.ClusterNodes(ctx).Result()
		}
		rdb.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", n.addr(), err)
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return fmt.Errorf("%s: cluster_state is not ok", n.addr())
		}
		roles, _ := parseNodes(text)
		live := 0
		for _, r := range roles {
			if r.Master && r.slots && !r.failed {
				live++
			}
		}
		if live != 3 {
			return fmt.Errorf("%s: sees %d live masters with slots, want 3", n.addr(), live)
		}
	}
	return nil
}

// Revive restarts a killed node, empty, on its old ports; it rejoins as a
// replica of the master that took over its slots. Revive returns once the
// cluster is fully healthy again (3 masters, each with a synced replica).
func (c *Cluster) Revive(ctx context.Context, addr string) error {
	n, err := c.node(addr)
	if err != nil {
		return err
	}
	if n.proc.alive() {
		return fmt.Errorf("redistest: cluster: %s is running", addr)
	}
	if err := n.start(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, clusterReadyTimeout)
	defer cancel()
	return waitUntil(ctx, "cluster: "+addr+" to rejoin as a replica", c.healthy)
}

func (c *Cluster) node(addr string) (*clusterNode, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		if n.addr() == addr {
			return n, nil
		}
	}
	return nil, fmt.Errorf("redistest: cluster: no node %s", addr)
}

// Stop kills every node.
func (c *Cluster) Stop() {
	c.resumeStalled()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		n.proc.kill()
	}
}
