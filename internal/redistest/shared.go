package redistest

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// shared holds the servers that live as long as the test binary: started
// on first use, stopped by Main.
var shared struct {
	mu      sync.Mutex
	dir     string
	cluster *Cluster
	err     error // why the cluster could not start; reported to every test

	server    *Server // SharedServer's
	serverDir string
	serverErr error
}

// Main runs the tests, then stops the servers the binary shared (see
// SharedCluster). Call it from TestMain: os.Exit(redistest.Main(m)).
func Main(m *testing.M) int {
	defer stopShared()
	return m.Run()
}

func stopShared() {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.cluster != nil {
		shared.cluster.Stop()
		shared.cluster = nil
	}
	if shared.server != nil {
		shared.server.Stop()
		shared.server = nil
	}
	if shared.serverDir != "" {
		_ = os.RemoveAll(shared.serverDir)
		shared.serverDir = ""
	}
	if shared.dir != "" {
		_ = os.RemoveAll(shared.dir)
		shared.dir = ""
	}
}

// SharedCluster returns the test binary's Redis Cluster, starting it on the
// first call (a few seconds). The package's TestMain must call Main, which
// stops it after the last test. It skips the test when redis-server is
// missing, or fails it when Required; a cluster that cannot start fails
// every test that asks for it.
//
// Tests share the cluster: give each its own key prefix (Prefix). A test
// that kills a node must leave the cluster healthy again (Revive).
func SharedCluster(tb testing.TB) *Cluster {
	tb.Helper()
	need(tb)
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.cluster == nil && shared.err == nil {
		shared.dir, shared.err = os.MkdirTemp("", "baton-cluster-")
		if shared.err == nil {
			shared.cluster, shared.err = StartCluster(shared.dir)
		}
	}
	if shared.err != nil {
		tb.Fatalf("redistest: the shared cluster could not start: %v", shared.err)
	}
	return shared.cluster
}

var prefixSeq atomic.Int64

// Prefix is a key prefix of the test's own, for tests sharing a server: a
// short form of the test's name and a sequence number, with no '{' or '}'
// (Baton's hash tags) and nothing a redis-cli user would have to quote.
func Prefix(tb testing.TB) string {
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '-'
	}, tb.Name())
	if len(name) > 40 {
		name = name[:40]
	}
	return fmt.Sprintf("t%d-%s", prefixSeq.Add(1), name)
}
