package coordinator_test

import (
	"errors"
	"testing"
	"time"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/limits"
)

// TestKeepLease: a lease kept by its token is renewed by KeepLease from any
// process and by no heartbeat: once nobody keeps it, it is reclaimed at its
// deadline and the slot passes on, though the process that was granted it
// lives and heartbeats. ReleaseLease frees it by token from any process; a
// wrong token keeps and frees nothing.
func TestKeepLease(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		const a = "keep.a"
		fast := e.opts()
		fast.LeaseTTL, fast.AckTimeout = 300*time.Millisecond, 100*time.Millisecond // heartbeats every 100 ms
		granted := e.coordinator(fast)
		o := e.opts()
		o.SweepInterval = 20 * time.Millisecond
		other := e.coordinator(o)
		must(t, other.SetConcurrencyLimit(ctx, limits.Action(a), 1))

		l1, err := granted.EnqueueAndWait(ctx, a, "e1")
		must(t, err)
		tok := l1.Token()
		for _, bad := range []struct {
			ref, id string
			token   int64
			ttl     time.Duration
		}{{"", "e1", tok, time.Second}, {a, "", tok, time.Second}, {a, "e1", 0, time.Second}, {a, "e1", -1, time.Second}, {a, "e1", tok, 0}} {
			if _, err := other.KeepLease(ctx, bad.ref, bad.id, bad.token, bad.ttl); !errors.Is(err, coordinator.ErrInvalidArgument) {
				t.Fatalf("KeepLease(%q, %q, %d, %v) = %v, want ErrInvalidArgument", bad.ref, bad.id, bad.token, bad.ttl, err)
			}
		}
		if err := other.ReleaseLease(ctx, a, "e1", 0); !errors.Is(err, coordinator.ErrInvalidArgument) {
			t.Fatalf("ReleaseLease with token 0: %v, want ErrInvalidArgument", err)
		}
		if _, err := other.KeepLease(ctx, a, "e1", tok+1, time.Second); !errors.Is(err, coordinator.ErrLeaseLost) {
			t.Fatalf("KeepLease with a wrong token: %v, want ErrLeaseLost", err)
		}
		if err := other.ReleaseLease(ctx, a, "e1", tok+1); !errors.Is(err, coordinator.ErrLeaseLost) {
			t.Fatalf("ReleaseLease with a wrong token: %v, want ErrLeaseLost", err)
		}
		if st := e.stats(other, a); st.ActiveCount != 1 || st.TotalCompleted != 0 {
			t.Fatalf("a wrong token changed the action: %+v", st)
		}

		d1, err := granted.KeepLease(ctx, a, "e1", tok, 4*time.Second)
		must(t, err)
		select {
		case <-l1.Lost(): // the granted process let go of it
		default:
			t.Fatal("KeepLease left the Lease to its process's heartbeat")
		}
		st, err := other.ExecutionState(ctx, a, "e1")
		must(t, err)
		if st.Owner != "-" || st.Token != tok || !st.LeaseDeadline.Equal(d1) || !st.Acknowledged {
			t.Fatalf("state after KeepLease: %+v, want owner \"-\", token %d, deadline %v", st, tok, d1)
		}
		d2, err := other.KeepLease(ctx, a, "e1", tok, 4*time.Second) // any process may keep it
		must(t, err)
		if d2.Before(d1) {
			t.Fatalf("second KeepLease moved the deadline back: %v then %v", d1, d2)
		}

		got := make(chan *coordinator.Lease, 1)
		go func() {
			l, err := other.EnqueueAndWait(ctx, a, "e2")
			if err != nil {
				t.Error(err)
			}
			got <- l
		}()
		eventually(t, 5*time.Second, "e2 queued", func() bool { return e.stats(other, a).QueueLength == 1 })
		// Nobody keeps e1 now. Its granted process heartbeats all along
		// (every 100 ms) and must not renew it.
		e.advance(5 * time.Second)
		var l2 *coordinator.Lease
		select {
		case l2 = <-got:
		case <-time.After(slowFloor):
			t.Fatal("e2 not admitted after e1's kept lease expired")
		}
		if l2 == nil {
			t.Fatal("e2's wait failed")
		}
		if _, err := other.KeepLease(ctx, a, "e1", tok, time.Second); !errors.Is(err, coordinator.ErrLeaseLost) {
			t.Fatalf("KeepLease after expiry: %v, want ErrLeaseLost", err)
		}
		must(t, granted.ReleaseLease(ctx, a, "e2", l2.Token())) // by token, from a process that never held it
		if err := granted.ReleaseLease(ctx, a, "e2", l2.Token()); !errors.Is(err, coordinator.ErrLeaseLost) {
			t.Fatalf("second ReleaseLease: %v, want ErrLeaseLost", err)
		}
		if st := e.stats(other, a); st.ActiveCount != 0 || st.QueueLength != 0 || st.TotalAdmitted != 2 ||
			st.TotalReclaimed != 1 || st.TotalCompleted != 1 {
			t.Fatalf("stats after: %+v", st)
		}
	})
}

// TestKeepLeaseExpiredNotRevived: a kept lease whose deadline passed before
// any script looked at it is reclaimed by the next KeepLease, not extended.
func TestKeepLeaseExpiredNotRevived(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		const a = "keep.b"
		c := e.coordinator(e.opts())
		l, err := c.EnqueueAndWait(ctx, a, "e1")
		must(t, err)
		_, err = c.KeepLease(ctx, a, "e1", l.Token(), 200*time.Millisecond)
		must(t, err)
		e.advance(400 * time.Millisecond)
		if _, err := c.KeepLease(ctx, a, "e1", l.Token(), time.Second); !errors.Is(err, coordinator.ErrLeaseLost) {
			t.Fatalf("KeepLease of an expired lease: %v, want ErrLeaseLost", err)
		}
		if st := e.stats(c, a); st.ActiveCount != 0 || st.TotalReclaimed != 1 {
			t.Fatalf("stats after: %+v", st)
		}
	})
}

// TestKeepLeaseNeverShortens: once the token holds the lease, a keep with a
// shorter TTL leaves a later deadline in place. The HTTP API needs it: the daemon that received a
// grant while its client was away keeps it for the acknowledgement
// deadline, and under load that keep can land after the client's own
// (through another daemon, with the whole TTL), which must stand.
func TestKeepLeaseNeverShortens(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		const a = "keep.c"
		c := e.coordinator(e.opts())
		l, err := c.EnqueueAndWait(ctx, a, "e1")
		must(t, err)
		long, err := c.KeepLease(ctx, a, "e1", l.Token(), 20*time.Second)
		must(t, err)
		short, err := c.KeepLease(ctx, a, "e1", l.Token(), 300*time.Millisecond)
		must(t, err)
		if !short.Equal(long) {
			t.Fatalf("a keep for 300ms after one for 20s moved the deadline from %v to %v", long, short)
		}
		e.advance(time.Second) // past the short TTL
		if _, err := c.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
		st, err := c.ExecutionState(ctx, a, "e1")
		must(t, err)
		if st.Token != l.Token() || !st.LeaseDeadline.Equal(long) {
			t.Fatalf("after the short TTL: %+v, want token %d held until %v", st, l.Token(), long)
		}
		if err := c.ReleaseLease(ctx, a, "e1", l.Token()); err != nil {
			t.Fatal(err)
		}
	})
}
