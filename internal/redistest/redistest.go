// Package redistest starts real redis-server processes for tests, on free
// loopback ports, with nothing persisted.
//
// With BATON_REQUIRE_REDIS=1 a missing redis-server fails the test instead
// of skipping it, so CI cannot pass by not testing.
package redistest

import (
	"os"
	"os/exec"
	"strconv"
	"testing"
)

// Server is one redis-server process.
type Server struct {
	Addr string
	port int
	dir  string
	proc *process
}

// Required reports whether BATON_REQUIRE_REDIS asks for a real Redis.
func Required() bool { return os.Getenv("BATON_REQUIRE_REDIS") == "1" }

// Available reports whether redis-server is on PATH.
func Available() bool {
	_, err := exec.LookPath("redis-server")
	return err == nil
}

// need skips the test when redis-server is missing, or fails it when
// Required.
func need(tb testing.TB) {
	tb.Helper()
	if !Available() {
		if Required() {
			tb.Fatal("redistest: BATON_REQUIRE_REDIS=1 but redis-server is not on PATH")
		}
		tb.Skip("redistest: redis-server not on PATH (set BATON_REQUIRE_REDIS=1 to fail instead)")
	}
}

// Start starts a redis-server for the test and stops it when the test ends.
// It skips the test when redis-server is missing, unless Required. Extra
// arguments go to redis-server (for example "--requirepass", "secret").
func Start(tb testing.TB, args ...string) *Server {
	tb.Helper()
	need(tb)
	s, err := StartServer(tb.TempDir(), args...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Stop)
	return s
}

// StartServer starts a redis-server keeping its files in dir, with extra
// arguments args (after the helpers' own, so they win). The caller must
// Stop it.
func StartServer(dir string, args ...string) (*Server, error) {
	return withFreePorts(1, func(ports []int) (*Server, error) {
		s := &Server{Addr: "127.0.0.1:" + strconv.Itoa(ports[0]), port: ports[0], dir: dir}
		return s, s.start(args)
	})
}

// start spawns the server on its port with the base arguments and args.
func (s *Server) start(args []string) error {
	var err error
	s.proc, err = spawn(s.dir, "redis", s.port, nil,
		append(append([]string{"--port", strconv.Itoa(s.port)}, baseArgs(s.dir, "redis")...), args...)...)
	return err
}

// Stop kills the server. Everything it held is gone.
func (s *Server) Stop() {
	s.proc.kill()
}

// Restart kills the server and starts an empty one on the same port, as a
// crash without persistence (or a failover to a stale replica) would.
func (s *Server) Restart() error {
	s.Stop()
	return s.proc.start() // the same port and arguments
}
