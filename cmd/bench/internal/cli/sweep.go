package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/batonhq/baton/cmd/bench/internal/fixture"
	"github.com/batonhq/baton/cmd/bench/internal/report"
	"github.com/batonhq/baton/limits"
)

// runSweep builds idle actions, each with one holder on a long lease and
// waiters behind it (so each sits in the sweep index, due far ahead), then
// times Sweep passes with nothing due, and passes with f.Due fresh actions
// whose holder's lease just expired.
func runSweep(ctx context.Context, f *Flags, e *env, stderr io.Writer) (*report.Report, error) {
	r := e.newReport("sweep")
	rdb, c, closeC, err := controlCoordinator(ctx, f, e, 16)
	if err != nil {
		return nil, err
	}
	defer rdb.Close()
	defer e.cleanup(rdb)
	defer closeC()
	s := &report.Sweep{IdleActions: f.IdleActions, Queued: f.Queued, Due: f.Due}
	r.Sweep = s

	const pack = "idle"
	if err := c.SetConcurrencyLimit(ctx, limits.Pack(pack), 1); err != nil {
		return nil, err
	}
	q, err := enqueuer(ctx, c, rdb, e.prefix, 1, "pack:"+pack)
	if err != nil {
		return nil, err
	}
	tag := randomHex(4)
	ref := func(i int) string { return fmt.Sprintf("%s.a%d", pack, i) }
	start := time.Now()
	holders := make([]fixture.Job, f.IdleActions)
	for i := range holders {
		holders[i] = fixture.Job{Ref: ref(i), ID: fixture.ID(tag+"h", i, f.IDBytes), Lease: time.Hour}
	}
	if _, err := q.Enqueue(ctx, holders); err != nil {
		return nil, err
	}
	// Waiters round-robin over the actions, in batches to bound memory.
	const chunk = 100000
	for done := 0; done < f.Queued; done += chunk {
		jobs := make([]fixture.Job, min(chunk, f.Queued-done))
		for i := range jobs {
			n := done + i
			jobs[i] = fixture.Job{Ref: ref(n % f.IdleActions), ID: fixture.ID(tag+"w", n, f.IDBytes), Lease: time.Hour}
		}
		if _, err := q.Enqueue(ctx, jobs); err != nil {
			return nil, err
		}
		if f.Progress != "off" && isTerminal(stderr) {
			fmt.Fprintf(stderr, "\rfixture: %d/%d waiters", done+len(jobs), f.Queued)
		}
	}
	if f.Progress != "off" && isTerminal(stderr) {
		fmt.Fprintln(stderr)
	}
	s.FillS = time.Since(start).Seconds()

	for range f.SweepPasses {
		t0 := time.Now()
		res, err := c.Sweep(ctx)
		if err != nil {
			return nil, err
		}
		s.IdleMs = append(s.IdleMs, msSince(t0))
		if res.Visited != 0 {
			r.Notes = append(r.Notes, fmt.Sprintf("an idle pass visited %d actions", res.Visited))
		}
	}

	const shortLease = 200 * time.Millisecond
	for pass := range f.SweepPasses {
		var jobs []fixture.Job
		for i := range f.Due {
			dref := fmt.Sprintf("%s.d%dx%d", pack, pass, i)
			jobs = append(jobs, fixture.Job{Ref: dref, ID: fixture.ID(tag+"dh", pass*f.Due+i, f.IDBytes), Lease: shortLease})
		}
		for i := range f.Due * 10 {
			dref := fmt.Sprintf("%s.d%dx%d", pack, pass, i%f.Due)
			jobs = append(jobs, fixture.Job{Ref: dref, ID: fixture.ID(tag+"dw", pass*f.Due*10+i, f.IDBytes), Lease: time.Hour})
		}
		if _, err := q.Enqueue(ctx, jobs); err != nil {
			return nil, err
		}
		time.Sleep(shortLease + 50*time.Millisecond)
		t0 := time.Now()
		res, err := c.Sweep(ctx)
		if err != nil {
			return nil, err
		}
		s.DueMs = append(s.DueMs, msSince(t0))
		s.DueVisited += res.Visited
		s.DueReclaimed += res.Reclaimed
		s.DueGranted += res.Granted
	}
	if s.DueVisited != f.Due*f.SweepPasses {
		r.Notes = append(r.Notes, fmt.Sprintf("due passes visited %d actions, expected %d", s.DueVisited, f.Due*f.SweepPasses))
	}
	r.Notes = append(r.Notes, "fixture built by pipelining Baton's enqueue script (scripts.Enqueue), 1000 calls per round trip")
	return r, nil
}

func msSince(t time.Time) float64 { return float64(time.Since(t)) / float64(time.Millisecond) }
