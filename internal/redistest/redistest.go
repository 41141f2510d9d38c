// Package redistest starts real redis-server processes for tests, on free
// loopback ports, with nothing persisted.
//
// With BATON_REQUIRE_REDIS=1 a missing redis-server fails the test instead
// of skipping it, so CI cannot pass by not testing.
package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is one redis-server process.
type Server struct {
	Addr string
	port int
	dir  string
	args []string
	cmd  *exec.Cmd
}

// Required reports whether BATON_REQUIRE_REDIS asks for a real Redis.
func Required() bool { return os.Getenv("BATON_REQUIRE_REDIS") == "1" }

// Available reports whether redis-server is on PATH.
func Available() bool {
	_, err := exec.LookPath("redis-server")
	return err == nil
}

// Start starts a redis-server for the test and stops it when the test ends.
// It skips the test when redis-server is missing, unless Required. Extra
// arguments go to redis-server (for example "--requirepass", "secret").
func Start(tb testing.TB, args ...string) *Server {
	tb.Helper()
	if !Available() {
		if Required() {
			tb.Fatal("redistest: BATON_REQUIRE_REDIS=1 but redis-server is not on PATH")
		}
		tb.Skip("redistest: redis-server not on PATH (set BATON_REQUIRE_REDIS=1 to fail instead)")
	}
	s, err := StartServer(tb.TempDir(), args...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Stop)
	return s
}

// StartServer starts a redis-server keeping its files in dir, with extra
// arguments args. The caller must Stop it.
func StartServer(dir string, args ...string) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &Server{Addr: "127.0.0.1:" + strconv.Itoa(port), port: port, dir: dir, args: args}
	return s, s.start()
}

func (s *Server) start() error {
	s.cmd = exec.Command("redis-server", append([]string{
		"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", s.dir, "--logfile", filepath.Join(s.dir, "redis.log"), "--maxclients", "10000"}, s.args...)...)
	dieWithParent(s.cmd)
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("redistest: starting redis-server: %w", err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
	defer rdb.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := rdb.Ping(ctx).Err()
		cancel()
		if err == nil || redis.HasErrorPrefix(err, "NOAUTH") { // up, with a password (args)
			return nil
		}
		if time.Now().After(deadline) {
			s.Stop()
			return fmt.Errorf("redistest: redis-server on %s did not answer: %w", s.Addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server. Everything it held is gone.
func (s *Server) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
		s.cmd = nil
	}
}

// Restart kills the server and starts an empty one on the same port, as a
// crash without persistence (or a failover to a stale replica) would.
func (s *Server) Restart() error {
	s.Stop()
	return s.start()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
