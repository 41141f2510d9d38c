package redistest

import (
	"errors"
	"net"
	"strconv"
	"testing"
)

// TestPortTakenIsRetried: a redis-server whose port is taken exits with
// errPortTaken, and withFreePorts then tries fresh ports.
func TestPortTakenIsRetried(t *testing.T) {
	need(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port
	dir := t.TempDir()

	attempts := 0
	s, err := withFreePorts(1, func(ports []int) (*process, error) {
		attempts++
		if attempts == 1 {
			ports[0] = taken
		}
		p, err := spawn(dir, "redis", ports[0], nil, append([]string{"--port", strconv.Itoa(ports[0])}, baseArgs(dir, "redis")...)...)
		if attempts == 1 && !errors.Is(err, errPortTaken) {
			t.Errorf("on a taken port: %v, want errPortTaken", err)
		}
		return p, err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.kill()
	if attempts != 2 || s.port == taken {
		t.Fatalf("attempts %d, port %d (taken: %d)", attempts, s.port, taken)
	}

	calls := 0
	_, err = withFreePorts(1, func([]int) (*process, error) { calls++; return nil, errPortTaken })
	if !errors.Is(err, errPortTaken) || calls != portAttempts {
		t.Fatalf("always taken: %v after %d calls", err, calls)
	}
	_, err = withFreePorts(1, func([]int) (*process, error) { calls++; return nil, errors.New("other") })
	if err == nil || errors.Is(err, errPortTaken) || calls != portAttempts+1 {
		t.Fatalf("another error: %v after %d calls, want no retry", err, calls)
	}
}
