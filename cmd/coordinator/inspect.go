package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/internal/httpapi"
	"github.com/batonhq/baton/limits"
)

// The operator's commands: cancel, executions and top.

// cmdTimeout bounds one command's (or one top frame's) Redis calls.
const cmdTimeout = 30 * time.Second

// setup parses flags and positional arguments (want of them), loads the
// configuration, warns about unknown BATON_* variables and connects (a
// read-only Coordinator for commands that only read); on
// failure it returns the exit code (2 bad input, 1 Redis refused or failed).
func setup(ctx context.Context, cf *commonFlags, args, environ []string, want int, readOnly bool, stderr io.Writer) ([]string, *coordinator.Coordinator, func(), int) {
	pos, err := cf.parse(args)
	if err == nil && len(pos) != want {
		err = fmt.Errorf("%s takes %d arguments, got %d", cf.fs.Name(), want, len(pos))
	}
	if err != nil {
		return nil, nil, nil, usageError(stderr, cf, err)
	}
	cfg, err := cf.load(environ)
	if err != nil {
		return nil, nil, nil, usageError(stderr, nil, err)
	}
	warnUnknownEnv(environ, stderr)
	if len(pos) > 0 {
		if err := limits.ValidateRef(pos[0]); err != nil {
			return nil, nil, nil, usageError(stderr, nil, err)
		}
	}
	c, done, err := connect(ctx, cfg, stderr, readOnly)
	if err != nil {
		return nil, nil, nil, connectError(stderr, err)
	}
	return pos, c, done, -1
}

// failed reports a command's error: bad input exits 2, anything else 1.
func failed(stderr io.Writer, err error) int {
	fmt.Fprintf(stderr, "coordinator: %v\n", err)
	if errors.Is(err, coordinator.ErrInvalidArgument) {
		return exitUsage
	}
	return exitFailure
}

func cancelCmd(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	cf := newFlags("cancel", "Usage: coordinator cancel ACTION ID [FLAGS]\n\n"+
		"Removes a waiting execution from its action's queue; its EnqueueAndWait returns ErrCanceled.\n"+
		"A running execution is not stopped. Exits 1 if the execution is not waiting.\n", stderr)
	pos, c, done, code := setup(ctx, cf, args, environ, 2, false, stderr)
	if code >= 0 {
		return code
	}
	defer done()
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	removed, err := c.CancelExecution(ctx, pos[0], pos[1])
	if err != nil {
		return failed(stderr, err)
	}
	if !removed {
		fmt.Fprintf(stderr, "coordinator: execution %s of %s is not waiting (unknown, running or already ended)\n", pos[1], pos[0])
		return exitFailure
	}
	fmt.Fprintf(stdout, "%s %s canceled\n", pos[0], pos[1])
	return exitOK
}

func executionsCmd(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	cf := newFlags("executions", "Usage: coordinator executions ACTION [--offset N] [--limit N] [--json] [FLAGS]\n\n"+
		"Lists an action's waiting executions in queue order (position 0 is admitted next).\n", stderr)
	offset := cf.fs.Int("offset", 0, "first queue `position` to list")
	limit := cf.fs.Int("limit", 100, fmt.Sprintf("most executions to list (1 to %d)", coordinator.MaxInspectPage))
	asJSON := cf.fs.Bool("json", false, "print JSON (the HTTP API's shape)")
	pos, c, done, code := setup(ctx, cf, args, environ, 1, true, stderr)
	if code >= 0 {
		return code
	}
	defer done()
	if *offset < 0 {
		return usageError(stderr, nil, fmt.Errorf("--offset %d: want a position >= 0", *offset))
	}
	if *limit < 1 || *limit > coordinator.MaxInspectPage {
		return usageError(stderr, nil, fmt.Errorf("--limit %d: want 1 to %d", *limit, coordinator.MaxInspectPage))
	}
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	page, total, err := c.Waiting(ctx, pos[0], *offset, *limit)
	if err != nil {
		return failed(stderr, err)
	}
	if *asJSON {
		out := httpapi.WaitingPage{Action: pos[0], State: "waiting", Total: total, Offset: *offset, Limit: *limit,
			Executions: []httpapi.WaitingExecution{}}
		for _, e := range page {
			out.Executions = append(out.Executions, httpapi.WaitingExecution{Position: e.Position, ExecutionID: e.ExecutionID,
				Owner: e.Owner, EnqueuedAt: e.EnqueuedAt.UTC(), WaitingSeconds: e.Waited.Seconds()})
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(out)
		return exitOK
	}
	fmt.Fprintf(stdout, "%s: %d waiting\n", pos[0], total)
	if len(page) == 0 {
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POSITION\tEXECUTION\tOWNER\tENQUEUED_AT\tWAITING")
	for _, e := range page {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", e.Position, e.ExecutionID, e.Owner,
			e.EnqueuedAt.UTC().Format(time.RFC3339Nano), e.Waited.Round(time.Millisecond))
	}
	tw.Flush()
	if last := page[len(page)-1].Position; last+1 < total {
		fmt.Fprintf(stdout, "(more: --offset %d)\n", last+1)
	}
	return exitOK
}

// ANSI: cursor home, clear the screen.
const clearScreen = "\x1b[H\x1b[2J"

func topCmd(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	cf := newFlags("top", "Usage: coordinator top [--interval D] [--once | -n N] [FLAGS]\n\n"+
		"A live view of every action: queue, running, limit, oldest wait, admissions per second,\n"+
		"rejections and timeouts, rate and quota, redrawn in place until Ctrl-C.\n\n"+
		"RATE is the rate in force as LIMIT/PER, +B when it has a burst of B; THROTTLED counts\n"+
		"executions that waited for a rate token; QUOTA_USED is USED/LIMIT/WINDOW of the current\n"+
		"window; OVER_QUOTA counts requests the quota refused.\n", stderr)
	interval := cf.fs.Duration("interval", time.Second, "time between refreshes")
	once := cf.fs.Bool("once", false, "print one table, without clearing the screen, and exit")
	frames := cf.fs.Int("n", 0, "exit after `N` refreshes (0: until Ctrl-C)")
	_, c, done, code := setup(ctx, cf, args, environ, 0, true, stderr)
	if code >= 0 {
		return code
	}
	defer done()
	if *interval < 100*time.Millisecond {
		return usageError(stderr, nil, fmt.Errorf("--interval %s: want at least 100ms", *interval))
	}
	if *frames < 0 {
		return usageError(stderr, nil, fmt.Errorf("-n %d: want a count >= 0", *frames))
	}
	if *once {
		*frames = 1
	}
	prev := map[string]sampleAt{}
	t := time.NewTicker(*interval)
	defer t.Stop()
	for frame := 1; ; frame++ {
		rows, err := topSample(ctx, c, prev)
		if err != nil {
			if ctx.Err() != nil {
				return exitOK // Ctrl-C
			}
			return failed(stderr, err)
		}
		if !*once {
			fmt.Fprint(stdout, clearScreen)
		}
		printTop(stdout, rows, time.Now(), *interval)
		if *frames > 0 && frame >= *frames {
			return exitOK
		}
		select {
		case <-ctx.Done():
			return exitOK
		case <-t.C:
		}
	}
}

// sampleAt is one action's admitted total when it was read.
type sampleAt struct {
	admitted int64
	at       time.Time
}

// topRow is one line of top.
type topRow struct {
	st   coordinator.QueueStats
	rate float64 // admissions per second since the last frame; -1 on the first
}

// topSample reads every known action's stats and their admission rates
// since the samples in prev, which it updates.
func topSample(ctx context.Context, c *coordinator.Coordinator, prev map[string]sampleAt) ([]topRow, error) {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	seen := map[string]bool{}
	var rows []topRow
	var cursor uint64
	for {
		refs, next, err := c.Actions(ctx, cursor, 500)
		if err != nil {
			return nil, err
		}
		for _, ref := range refs {
			if seen[ref] || limits.ValidateRef(ref) != nil {
				continue
			}
			seen[ref] = true
			st, err := c.QueueStats(ctx, ref)
			if err != nil {
				return nil, err
			}
			now := time.Now()
			row := topRow{st: st, rate: -1}
			if p, ok := prev[ref]; ok && now.After(p.at) {
				row.rate = float64(max(0, st.TotalAdmitted-p.admitted)) / now.Sub(p.at).Seconds()
			}
			prev[ref] = sampleAt{admitted: st.TotalAdmitted, at: now}
			rows = append(rows, row)
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	// Longest queue first, then by name.
	slices.SortFunc(rows, func(a, b topRow) int {
		return cmp.Or(cmp.Compare(b.st.QueueLength, a.st.QueueLength), cmp.Compare(a.st.Action, b.st.Action))
	})
	return rows, nil
}

func printTop(w io.Writer, rows []topRow, now time.Time, interval time.Duration) {
	fmt.Fprintf(w, "baton top  %s  %d actions  (every %s; Ctrl-C quits)\n\n", now.Format("15:04:05"), len(rows), interval)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACTION\tQUEUE\tRUNNING\tLIMIT\tFROM\tOLDEST\tADMITTED/S\tADMITTED\tREJECTED\tTIMED_OUT\tRATE\tTHROTTLED\tQUOTA_USED\tOVER_QUOTA")
	for _, r := range rows {
		st := r.st
		limit := strconv.FormatInt(st.MaxConcurrent, 10)
		if st.MaxConcurrent == limits.Unlimited {
			limit = "unlimited"
		}
		oldest := "-"
		if !st.OldestEnqueuedAt.IsZero() {
			oldest = max(0, now.Sub(st.OldestEnqueuedAt)).Round(time.Millisecond).String()
		}
		rate := "-"
		if r.rate >= 0 {
			rate = strconv.FormatFloat(r.rate, 'f', 1, 64)
		}
		throttle, quota := "-", "-"
		if !st.Rate.IsZero() {
			throttle = limits.RateSpec(st.Rate)
			if st.Rate.Burst > 1 {
				throttle += "+" + strconv.Itoa(st.Rate.Burst)
			}
		}
		if !st.Quota.IsZero() {
			quota = fmt.Sprintf("%d/%s", st.QuotaUsed, st.Quota)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%d\t%s\t%d\n", st.Action, st.QueueLength, st.ActiveCount, limit,
			st.LimitSource, oldest, rate, st.TotalAdmitted, st.TotalRejected, st.TotalTimedOut,
			throttle, st.TotalThrottled, quota, st.TotalQuotaRejected)
	}
	tw.Flush()
	if len(rows) == 0 {
		fmt.Fprintln(w, "no actions yet: they appear once an execution is enqueued")
	}
}
