package httpapi_test

import (
	"os"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/logging"

	"github.com/batonhq/baton/internal/redistest"
)

// TestMain silences go-redis's own log lines (dial failures while a test
// has Redis down on purpose) and stops the shared redis-server after the
// last test.
func TestMain(m *testing.M) {
	redis.SetLogger(&logging.VoidLogger{})
	os.Exit(redistest.Main(m))
}
