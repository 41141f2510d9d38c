// Package redisstats reads what the bench needs from Redis's INFO (command
// counts, CPU time, memory, version) and counts, on the client side, the commands and
// round trips each bench process sends.
//
// On Redis 7 INFO commandstats also counts the commands a Lua script calls
// (redis.call), so from it alone one cannot tell how many commands clients
// sent. The bench therefore counts client commands with a go-redis hook and
// uses the INFO diff for the rest of the picture (calls made inside scripts,
// and a cross-check of EVALSHA and BLPOP, which scripts never call).
package redisstats

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// CommandStats maps a command name (as INFO names it: "evalsha",
// "config|resetstat") to its number of calls.
type CommandStats map[string]int64

// ParseCommandStats reads the calls of INFO commandstats.
func ParseCommandStats(info string) CommandStats { return parseCommandStats(info, "calls=") }

// ParseCommandUsec reads the microseconds spent per command (usec=) from INFO
// commandstats: the (wall-clock) time Redis spent executing each command. A
// script's time includes its redis.calls, which Redis 7 also adds to their
// own commands' usec; for the server's CPU time see ParseCPU.
func ParseCommandUsec(info string) CommandStats { return parseCommandStats(info, "usec=") }

func parseCommandStats(info, field string) CommandStats {
	out := CommandStats{}
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		name, rest, ok := strings.Cut(line, ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		for _, kv := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(kv, field); ok {
				n, err := strconv.ParseInt(v, 10, 64)
				if err == nil {
					out[strings.TrimPrefix(name, "cmdstat_")] = n
				}
			}
		}
	}
	return out
}

// Sub returns s - before, keeping only commands whose count grew.
func (s CommandStats) Sub(before CommandStats) CommandStats {
	out := CommandStats{}
	for k, v := range s {
		if d := v - before[k]; d > 0 {
			out[k] = d
		}
	}
	return out
}

// Total sums every count.
func (s CommandStats) Total() int64 {
	var n int64
	for _, v := range s {
		n += v
	}
	return n
}

// ReadCommandStats runs INFO commandstats and returns the calls and the
// microseconds per command.
func ReadCommandStats(ctx context.Context, rdb redis.UniversalClient) (calls, usec CommandStats, err error) {
	s, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil, nil, fmt.Errorf("INFO commandstats: %w", err)
	}
	return ParseCommandStats(s), ParseCommandUsec(s), nil
}

// ParseInfoField returns one "field:value" of INFO text, or "".
func ParseInfoField(info, field string) string {
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), field+":"); ok {
			return v
		}
	}
	return ""
}

// ParseCPU returns the Redis server's own CPU time in microseconds from
// INFO cpu text: used_cpu_user + used_cpu_sys (seconds, the whole process,
// every thread; forked children such as BGSAVE are in the *_children fields
// and not counted). A missing or malformed field is an error.
func ParseCPU(info string) (int64, error) {
	var total int64
	for _, field := range []string{"used_cpu_user", "used_cpu_sys"} {
		v := ParseInfoField(info, field)
		if v == "" {
			return 0, fmt.Errorf("INFO cpu has no %s", field)
		}
		sec, err := strconv.ParseFloat(v, 64)
		if err != nil || sec < 0 || math.IsInf(sec, 0) || math.IsNaN(sec) {
			return 0, fmt.Errorf("INFO cpu: %s is %q, not a number of seconds", field, v)
		}
		total += int64(math.Round(sec * 1e6))
	}
	return total, nil
}

// ReadCPU runs INFO cpu and returns ParseCPU's microseconds.
func ReadCPU(ctx context.Context, rdb redis.UniversalClient) (int64, error) {
	s, err := rdb.Info(ctx, "cpu").Result()
	if err != nil {
		return 0, fmt.Errorf("INFO cpu: %w", err)
	}
	return ParseCPU(s)
}

// UsedMemory reads used_memory from INFO memory, in bytes.
func UsedMemory(ctx context.Context, rdb redis.UniversalClient) (int64, error) {
	s, err := rdb.Info(ctx, "memory").Result()
	if err != nil {
		return 0, fmt.Errorf("INFO memory: %w", err)
	}
	v := ParseInfoField(s, "used_memory")
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("INFO memory: used_memory %q: %w", v, err)
	}
	return n, nil
}

// WaitLazyFree waits (up to d) until Redis has no objects left to free in
// the background (lazyfree_pending_objects 0), so that memory figures are not
// skewed by an earlier UNLINK.
func WaitLazyFree(ctx context.Context, rdb redis.UniversalClient, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		s, err := rdb.Info(ctx, "memory").Result()
		if err != nil {
			return fmt.Errorf("INFO memory: %w", err)
		}
		if v := ParseInfoField(s, "lazyfree_pending_objects"); v == "" || v == "0" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis still frees objects lazily after %v", d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ServerVersion reads redis_version from INFO server ("" if absent).
func ServerVersion(ctx context.Context, rdb redis.UniversalClient) string {
	s, err := rdb.Info(ctx, "server").Result()
	if err != nil {
		return ""
	}
	return ParseInfoField(s, "redis_version")
}

// Counts is what a Counter saw.
type Counts struct {
	// Commands maps a command name to how many were sent. Calls of a known
	// script are named "script:<name>" whatever their form (EVALSHA or
	// FCALL); BLPOP replies that brought a grant key's token add
	// "blpop:token".
	Commands map[string]int64 `json:"commands"`
	// RoundTrips counts single commands plus pipelines (one each).
	RoundTrips int64 `json:"round_trips"`
	// Connections counts connection handshakes, which are not in Commands.
	Connections int64 `json:"connections"`
}

// Total sums every command (blpop:token counts replies, not commands).
func (c Counts) Total() int64 {
	var n int64
	for k, v := range c.Commands {
		if k != "blpop:token" {
			n += v
		}
	}
	return n
}

// Add returns the sum of c and o.
func (c Counts) Add(o Counts) Counts {
	out := Counts{Commands: maps.Clone(c.Commands), RoundTrips: c.RoundTrips + o.RoundTrips,
		Connections: c.Connections + o.Connections}
	if out.Commands == nil {
		out.Commands = map[string]int64{}
	}
	for k, v := range o.Commands {
		out.Commands[k] += v
	}
	return out
}

// Sub returns c - before.
func (c Counts) Sub(before Counts) Counts {
	out := Counts{Commands: map[string]int64{}, RoundTrips: c.RoundTrips - before.RoundTrips,
		Connections: c.Connections - before.Connections}
	for k, v := range c.Commands {
		if d := v - before.Commands[k]; d != 0 {
			out.Commands[k] = d
		}
	}
	return out
}

// Counter is a go-redis hook that counts the commands and round trips one
// client sends. It is safe for concurrent use.
type Counter struct {
	scripts map[string]string // SHA1 or function name -> script name

	mu     sync.Mutex
	counts Counts
}

// NewCounter returns a Counter that names script calls by the scripts in
// shas (EVALSHA's SHA1, or FCALL's function name -> script name).
func NewCounter(shas map[string]string) *Counter {
	return &Counter{scripts: shas, counts: Counts{Commands: map[string]int64{}}}
}

// Snapshot returns a copy of the counts so far.
func (c *Counter) Snapshot() Counts {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.counts
	out.Commands = maps.Clone(c.counts.Commands)
	return out
}

// Name is how the Counter names a command: its lower-case name, or
// "script:<name>" for EVALSHA (by SHA1) and FCALL (by function) of a known script.
func (c *Counter) Name(args []any) string {
	if len(args) == 0 {
		return "?"
	}
	name := strings.ToLower(fmt.Sprint(args[0]))
	switch name {
	case "evalsha", "evalsha_ro", "fcall", "fcall_ro":
		if len(args) > 1 {
			if s, ok := c.scripts[fmt.Sprint(args[1])]; ok {
				return "script:" + s
			}
		}
	}
	return name
}

func (c *Counter) record(cmds []redis.Cmder) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if handshake(cmds) {
		c.counts.Connections++
		return
	}
	c.counts.RoundTrips++
	for _, cmd := range cmds {
		c.counts.Commands[c.Name(cmd.Args())]++
	}
}

// handshake reports whether cmds are what go-redis sends when it opens a
// connection (HELLO, CLIENT SETINFO): counted as a connection, not as load.
func handshake(cmds []redis.Cmder) bool {
	for _, cmd := range cmds {
		switch cmd.Name() {
		case "hello", "client", "auth", "select":
		default:
			return false
		}
	}
	return len(cmds) > 0
}

// DialHook implements redis.Hook.
func (c *Counter) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		return next(ctx, network, addr)
	}
}

// ProcessHook implements redis.Hook: one command, one round trip.
func (c *Counter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.record([]redis.Cmder{cmd})
		err := next(ctx, cmd)
		if s, ok := cmd.(*redis.StringSliceCmd); ok && err == nil && strings.EqualFold(cmd.Name(), "blpop") {
			if v := s.Val(); len(v) == 2 && strings.Contains(v[0], ":grant:") {
				c.mu.Lock()
				c.counts.Commands["blpop:token"]++
				c.mu.Unlock()
			}
		}
		return err
	}
}

// ProcessPipelineHook implements redis.Hook: a pipeline is one round trip.
func (c *Counter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.record(cmds)
		return next(ctx, cmds)
	}
}
