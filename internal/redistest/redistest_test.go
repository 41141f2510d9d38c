package redistest

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestStartWithArgs: extra arguments reach redis-server (a password here),
// a password-protected server counts as started, and Restart keeps them.
func TestStartWithArgs(t *testing.T) {
	s := Start(t, "--requirepass", "s3cret")
	check := func(when string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		anon := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
		defer anon.Close()
		if err := anon.Ping(ctx).Err(); !redis.HasErrorPrefix(err, "NOAUTH") {
			t.Fatalf("%s: PING without the password: %v, want NOAUTH", when, err)
		}
		auth := redis.NewClient(&redis.Options{Addr: s.Addr, Password: "s3cret", MaxRetries: -1})
		defer auth.Close()
		if err := auth.Ping(ctx).Err(); err != nil {
			t.Fatalf("%s: PING with the password: %v", when, err)
		}
	}
	check("after Start")
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	check("after Restart")
}
