package redistest_test

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/internal/redistest"
)

// TestTLS: the server answers a client that presents the generated client
// certificate, and refuses one without it, one whose certificate another CA
// signed and one that does not speak TLS; a client that does not trust the
// server's CA refuses the server.
func TestTLS(t *testing.T) {
	s := redistest.StartTLS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rdb, err := s.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	if err := rdb.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET with the client certificate: %v", err)
	}
	if got, err := rdb.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Fatalf("GET: %q, %v", got, err)
	}

	good, err := s.Files.ClientTLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	noCert := good.Clone()
	noCert.Certificates = nil
	otherCA, err := redistest.GenerateTLSFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	untrusted, err := otherCA.ClientTLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	foreignCert := good.Clone()
	foreignCert.Certificates = untrusted.Certificates
	for name, conf := range map[string]*tls.Config{"no client certificate": noCert, "no TLS": nil,
		"server not trusted": untrusted, "client certificate of another CA": foreignCert} {
		c := redis.NewClient(&redis.Options{Addr: s.Addr, TLSConfig: conf, MaxRetries: -1,
			DialTimeout: 5 * time.Second, ReadTimeout: 5 * time.Second})
		err := c.Ping(ctx).Err()
		c.Close()
		if err == nil {
			t.Errorf("%s: PING succeeded", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}
