package redistest

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// startTimeout bounds how long a starting redis-server may take to answer
// PING; generous, for a slow shared machine.
const startTimeout = 15 * time.Second

// portAttempts is how many times a server is started on fresh ports when
// the ones picked were taken in the meantime (another test, an outgoing
// connection's ephemeral port).
const portAttempts = 5

// errPortTaken says a redis-server exited because its port was in use.
var errPortTaken = errors.New("redistest: port already in use")

// process is one redis-server (or sentinel) child: started with the
// parent-death signal, waited on by one goroutine, killed by kill.
type process struct {
	addr   string
	port   int
	dir    string
	log    string
	args   []string
	tls    *tls.Config
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has exited
}

// spawn starts redis-server with args and waits until it answers PING
// (over TLS when tlsConf is set) at 127.0.0.1:port. If it exits first
// because a port was taken, the error wraps errPortTaken.
func spawn(dir, name string, port int, tlsConf *tls.Config, args ...string) (*process, error) {
	p := &process{addr: "127.0.0.1:" + strconv.Itoa(port), port: port, dir: dir, log: filepath.Join(dir, name+".log"),
		args: args, tls: tlsConf}
	return p, p.start()
}

// start starts the process with its arguments, as spawn did or again
// after kill (an empty server on the same port).
func (p *process) start() error {
	tlsConf, args := p.tls, p.args
	_ = os.Remove(p.log) // a retry's log must not show the last attempt's error
	cmd := exec.Command("redis-server", args...)
	cmd.Dir = p.dir
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("redistest: starting redis-server: %w", err)
	}
	p.cmd = cmd
	p.exited = make(chan struct{})
	go func(exited chan struct{}) { _ = cmd.Wait(); close(exited) }(p.exited)

	rdb := redis.NewClient(&redis.Options{Addr: p.addr, MaxRetries: -1, TLSConfig: tlsConf,
		DialTimeout: time.Second, ReadTimeout: time.Second, Protocol: 2})
	defer rdb.Close()
	deadline := time.Now().Add(startTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := rdb.Ping(ctx).Err()
		cancel()
		if err == nil || redis.HasErrorPrefix(err, "NOAUTH") { // up, with a password (args)
			return nil
		}
		select {
		case <-p.exited:
			tail := p.logTail()
			if bytes.Contains(tail, []byte("Address already in use")) {
				return fmt.Errorf("%w: %s", errPortTaken, tail)
			}
			return fmt.Errorf("redistest: redis-server on %s exited at start: %s", p.addr, tail)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.kill()
			return fmt.Errorf("redistest: redis-server on %s did not answer within %s: %w; log: %s",
				p.addr, startTimeout, err, p.logTail())
		}
	}
}

// kill sends SIGKILL and waits for the process to exit. It is safe to call
// on a process that has already exited, and twice.
func (p *process) kill() {
	if p == nil || p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// pause stops the process (SIGSTOP) until resume (SIGCONT).
func (p *process) pause() error {
	if !p.alive() {
		return fmt.Errorf("redistest: %s is not running", p.addr)
	}
	return p.cmd.Process.Signal(syscall.SIGSTOP)
}

// resume continues a paused process; a process that is not running is
// left alone.
func (p *process) resume() {
	if p.alive() {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
	}
}

// alive reports whether the process has not exited.
func (p *process) alive() bool {
	if p == nil || p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// logTail is the end of the server's log file, for error messages.
func (p *process) logTail() []byte {
	b, _ := os.ReadFile(p.log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return bytes.TrimSpace(b)
}

// withFreePorts calls start with n free loopback ports, again with fresh
// ports while start fails with errPortTaken.
func withFreePorts[T any](n int, start func(ports []int) (T, error)) (T, error) {
	var zero T
	var err error
	for range portAttempts {
		ports, perr := freePorts(n)
		if perr != nil {
			return zero, perr
		}
		var v T
		if v, err = start(ports); err == nil {
			return v, nil
		}
		if !errors.Is(err, errPortTaken) {
			return zero, err
		}
	}
	return zero, fmt.Errorf("redistest: no free ports after %d attempts: %w", portAttempts, err)
}

// freePorts returns n distinct loopback ports that were free a moment ago.
// The listeners stay open until all are picked, so they differ.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("redistest: picking a free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// baseArgs are the options every server in these helpers runs with:
// loopback only, nothing persisted, its own directory and log file.
func baseArgs(dir, name string) []string {
	return []string{"--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--logfile", filepath.Join(dir, name+".log"), "--maxclients", "10000"}
}
