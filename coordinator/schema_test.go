package coordinator_test

import (
	"context"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/internal/keys"
)

// TestNewerKeySchemaRefused: an action whose meta names a key schema this
// version does not read (as a later version that changes the form would
// leave it) is refused by every call on it with ErrKeySchema, and none of
// its keys changes. A rolling upgrade across a change of form therefore
// fails this version's calls rather than letting it misread the action
// and over-admit.
func TestNewerKeySchemaRefused(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		c := e.coordinator(e.opts())
		const a = "schema.newer"
		k := keys.New(e.prefix).Action(a)
		must(t, e.rdb.HSet(ctx, k.Meta(), "schema", "2", "state", "1,1,100,5").Err())
		must(t, e.rdb.RPush(ctx, k.Queue(), "theirs").Err())
		mine := func(d map[string]string) map[string]string {
			maps.DeleteFunc(d, func(key, _ string) bool { return !strings.Contains(key, "{"+a+"}") })
			return d
		}
		before := mine(e.settledDump(t))
		calls := []struct {
			name string
			call func(ctx context.Context) error
		}{
			{"EnqueueAndWait", func(ctx context.Context) error { _, err := c.EnqueueAndWait(ctx, a, "mine"); return err }},
			{"NotifyCompletion", func(ctx context.Context) error { _, err := c.NotifyCompletion(ctx, a, "theirs"); return err }},
			{"CancelExecution", func(ctx context.Context) error { _, err := c.CancelExecution(ctx, a, "theirs"); return err }},
			{"KeepLease", func(ctx context.Context) error { _, err := c.KeepLease(ctx, a, "theirs", 5, time.Minute); return err }},
			{"ReleaseLease", func(ctx context.Context) error { return c.ReleaseLease(ctx, a, "theirs", 5) }},
			{"QueueStats", func(ctx context.Context) error { _, err := c.QueueStats(ctx, a); return err }},
			{"ExecutionState", func(ctx context.Context) error { _, err := c.ExecutionState(ctx, a, "theirs"); return err }},
			{"Waiting", func(ctx context.Context) error { _, _, err := c.Waiting(ctx, a, 0, 10); return err }},
			{"Holders", func(ctx context.Context) error { _, err := c.Holders(ctx, a); return err }},
			{"ForgetAction", func(ctx context.Context) error { return c.ForgetAction(ctx, a) }},
		}
		for _, tc := range calls {
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := tc.call(cctx)
			cancel()
			if !errors.Is(err, coordinator.ErrKeySchema) {
				t.Errorf("%s on an action of key schema 2: %v, want ErrKeySchema", tc.name, err)
				continue
			}
			if !strings.Contains(err.Error(), "key schema 2") {
				t.Errorf("%s: the error does not name the action's schema: %v", tc.name, err)
			}
			t.Logf("%s: %v", tc.name, err)
		}
		if after := mine(e.settledDump(t)); !maps.Equal(after, before) {
			t.Fatalf("refused calls changed the action's keys:\nafter  %v\nbefore %v", after, before)
		}
		// Once the keys are in this version's form again, the action works.
		must(t, e.rdb.HDel(ctx, k.Meta(), "schema").Err())
		must(t, e.rdb.Del(ctx, k.Queue()).Err())
		l, err := c.EnqueueAndWait(ctx, a, "mine")
		must(t, err)
		must(t, l.Release(ctx))
	})
}
