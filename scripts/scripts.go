// Package scripts holds Baton's Lua scripts, one file per operation, and
// one typed Go function per script: the only way the rest of Baton runs them.
//
// Every per-action script is lib.lua followed by the operation's file, so
// the key table, the Redis clock and the grant logic are written once. Each
// file opens with its KEYS, ARGV and reply. Every script touches only keys
// that share the action's hash tag, so it runs unchanged on Redis Cluster.
//
// The per-action operations form one Redis Function library (Library): the
// shared helpers are defined once, when it is loaded, not on every call.
// Scripts run through a Runner: a Batcher, which pipelines concurrent calls
// and uses FCALL where Redis has Functions (loading the library when a node
// lacks it, as after a restart), or Direct for a plain client. Without
// Functions (miniredis) the same code runs as EVAL scripts: EVALSHA, with
// EVAL on NOSCRIPT.
package scripts

import (
	"context"
	"crypto/sha1"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/internal/keys"
	"github.com/batonhq/baton/limits"
)

//go:embed *.lua
var files embed.FS

// Script is one operation. Its fields are unexported: callers use the
// typed functions of this package.
type Script struct {
	name string
	s    *redis.Script // the EVAL form
	fn   string        // its function in the library ("" for claim_due)
	// writes: the operation changes an action's state, so a Durability
	// waits for replicas after it.
	writes bool
}

// Name is the operation's name ("enqueue").
func (s *Script) Name() string { return s.name }

// Hash is the SHA1 of the script's EVAL form, as EVALSHA takes it.
func (s *Script) Hash() string { return s.s.Hash() }

// Function is the name of the operation's Redis Function ("" if none).
func (s *Script) Function() string { return s.fn }

// Load puts the script's EVAL form in Redis's script cache.
func (s *Script) Load(ctx context.Context, c redis.Scripter) error { return s.s.Load(ctx, c).Err() }

// EvalSha queues the script's EVAL form on a pipeline; it fails with
// NOSCRIPT unless the script was loaded (Load).
func (s *Script) EvalSha(ctx context.Context, p redis.Pipeliner, keys []string, args ...any) *redis.Cmd {
	return s.s.EvalSha(ctx, p, keys, args...)
}

// Run runs the script's EVAL form on c, loading it on NOSCRIPT.
func (s *Script) Run(ctx context.Context, c redis.Scripter, keys []string, args ...any) (any, error) {
	return s.s.Run(ctx, c, keys, args...).Result()
}

// actionOps are the per-action operations, each a file with lib.lua's helpers.
var actionOps = []string{"enqueue", "release", "cancel", "timeout", "renew", "reconcile", "sweep", "apply_policy", "stats", "state", "keep", "tick"}

// prologue starts every per-action operation: begin, and the refusal it
// returns when the action's keys are in another version's form.
const prologue = "local refused = begin(KEYS, ARGV)\nif refused then return refused end\n"

// Library is the Redis Function library of every per-action operation:
// lib.lua once, then one function per operation. Its name carries a hash of
// its code, so processes of different versions can share one Redis.
var Library, LibraryName = buildLibrary()

func buildLibrary() (code, name string) {
	var b strings.Builder
	b.WriteString(read("lib.lua"))
	for _, op := range actionOps {
		fmt.Fprintf(&b, "\nredis.register_function('%%s_%s', function(KEYS, ARGV)\n%s%s\nend)\n", op, prologue, read(op+".lua"))
	}
	sum := sha1.Sum([]byte(b.String()))
	name = "baton_" + hex.EncodeToString(sum[:6])
	return "#!lua name=" + name + "\n" + strings.ReplaceAll(b.String(), "'%s_", "'"+name+"_"), name
}

var (
	enqueue     = action("enqueue")
	release     = action("release")
	cancel      = action("cancel")
	timeout     = action("timeout")
	renew       = action("renew")
	reconcile   = action("reconcile")
	sweep       = action("sweep")
	applyPolicy = action("apply_policy")
	stats       = action("stats")
	state       = action("state")
	keep        = action("keep")
	tick        = action("tick")
	claimDue    = &Script{name: "claim_due", s: redis.NewScript(read("claim_due.lua"))}
)

// All lists every script, for loading them ahead of use and for naming
// EVALSHA calls in command counts.
var All = []*Script{enqueue, release, cancel, timeout, renew, reconcile, sweep, applyPolicy, stats, state, keep, tick, claimDue}

func action(name string) *Script {
	return &Script{
		name:   name,
		writes: name != "stats" && name != "state",
		s:      redis.NewScript(read("lib.lua") + "\n" + prologue + read(name+".lua")),
		fn:     LibraryName + "_" + name,
	}
}

func read(name string) string {
	b, err := files.ReadFile(name)
	if err != nil {
		panic("scripts: missing embedded " + name) // a build defect, caught by every test
	}
	return string(b)
}

// Runner runs one script and returns its raw reply.
type Runner interface {
	RunScript(ctx context.Context, s *Script, keys []string, args []any) (any, error)
}

// Direct runs scripts on a client with EVALSHA, one call per round trip.
func Direct(c redis.Scripter) Runner { return direct{c} }

type direct struct{ c redis.Scripter }

func (d direct) RunScript(ctx context.Context, s *Script, keys []string, args []any) (any, error) {
	return s.Run(ctx, d.c, keys, args...)
}

// runAction runs one per-action script. A call that ran but was not
// replicated (ErrNotReplicated) returns its reply too; callers that can
// undo it (Enqueue) use it, the others treat the call as failed.
func runAction(ctx context.Context, r Runner, s *Script, k keys.Action, args ...any) (any, error) {
	v, err := r.RunScript(ctx, s, k.List, append([]any{k.Base}, args...))
	if err != nil {
		if !errors.Is(err, ErrNotReplicated) {
			v = nil
		}
		return v, callErr(s.name, err)
	}
	return v, nil
}

// ErrKeySchema reports an action whose keys another version of Baton keeps
// in a form this version does not read (meta's "schema" field): the call
// read and wrote nothing. Processes of this version cannot use the action
// until they are upgraded.
var ErrKeySchema = errors.New("baton: the action's keys are in a newer version's form")

// callErr names the script a call failed in, and turns the refusal of an
// action in another key schema into ErrKeySchema (the Redis error reply stays
// in the chain: the call ran, and sending it again would not help).
func callErr(script string, err error) error {
	if redis.HasErrorPrefix(err, "BATON_SCHEMA") {
		var re redis.Error
		if errors.As(err, &re) {
			form, _, _ := strings.Cut(strings.TrimPrefix(re.Error(), "BATON_SCHEMA "), " ")
			return fmt.Errorf("%s: %w: key schema %s, and this version of Baton reads schema %d; upgrade this process (%w)",
				script, ErrKeySchema, form, KeySchema, err)
		}
	}
	return fmt.Errorf("%s: %w", script, err)
}

// KeySchema is the form of the per-action keys these scripts read and write
// (docs/keys.md); lib.lua's SCHEMA says the same.
const KeySchema = 1

func ms(d time.Duration) int64 { return d.Milliseconds() }

// wake reads a reply's wake element: µs until a throttled head's token.
func wake(us int64) time.Duration { return time.Duration(us) * time.Microsecond }

// Policy is a caller's resolved limit, rate and quota for an action, which
// a script adopts when its version is newer than the one the action last
// saw. Version -1 is never adopted.
type Policy struct {
	Version int64
	Limit   int
	Source  string
	// Rate is the rate in force (the zero Rate: none) and RateSource its scope.
	Rate       limits.Rate
	RateSource string
	// Quota is the quota in force (the zero Quota: none) and QuotaSource its scope.
	Quota       limits.Quota
	QuotaSource string
}

// RateSpec is the rate as scripts take it: "<limit>,<per µs>,<burst>,<source>", or "".
func (p Policy) RateSpec() string {
	if p.Rate.IsZero() {
		return ""
	}
	return fmt.Sprintf("%d,%d,%d,%s", p.Rate.Limit, p.Rate.Per.Microseconds(), p.Rate.Burst, p.RateSource)
}

// QuotaSpec is the quota as scripts take it: "<limit>,<window ms>,<source>", or "".
func (p Policy) QuotaSpec() string {
	if p.Quota.IsZero() {
		return ""
	}
	return fmt.Sprintf("%d,%d,%s", p.Quota.Limit, p.Quota.Window.Duration().Milliseconds(), p.QuotaSource)
}

func (p Policy) args() []any { return []any{p.Version, p.Limit, p.Source, p.RateSpec(), p.QuotaSpec()} }

// EnqueueArgs are enqueue.lua's arguments.
type EnqueueArgs struct {
	Execution, Owner string
	MaxQueue         int
	LeaseTTL         time.Duration
	AckTimeout       time.Duration
	Policy           Policy
}

// Enqueue statuses.
const (
	Admitted  = "admitted"
	Running   = "running"
	Queued    = "queued"
	Full      = "full"
	OverQuota = "quota"
)

// EnqueueReply is enqueue.lua's reply.
type EnqueueReply struct {
	// Status is Admitted, Running, Queued or Full.
	Status string
	// Fence is the fencing token (Admitted, Running).
	Fence int64
	// Seq is the execution's place in the FIFO order and its enqueue time
	// in microseconds on the Redis clock (not Full).
	Seq int64
	// Due > 0 asks the caller to add the action to the sweep index then.
	Due int64
	// Wake > 0 asks the caller to run Tick after it: the head waits for a rate token.
	Wake time.Duration
	// RetryAt is when the quota's window ends (ms, Redis clock), for OverQuota.
	RetryAt int64
	// Quota and QuotaSource are the quota that refused, for OverQuota.
	Quota       limits.Quota
	QuotaSource string
}

// Enqueue admits an execution or queues it (enqueue.lua). With an error
// wrapping ErrNotReplicated the reply says what the script did on the
// master, so that the caller can undo it.
func Enqueue(ctx context.Context, r Runner, k keys.Action, a EnqueueArgs) (EnqueueReply, error) {
	v, err := runAction(ctx, r, enqueue, k, append([]any{a.Execution, a.Owner, a.MaxQueue, ms(a.LeaseTTL),
		ms(a.AckTimeout)}, a.Policy.args()...)...)
	if v == nil {
		return EnqueueReply{}, err
	}
	rep, derr := decodeEnqueue(v)
	if derr != nil {
		return rep, derr
	}
	return rep, err // nil, or ErrNotReplicated with what the script did
}

func decodeEnqueue(v any) (EnqueueReply, error) {
	p := newReply("enqueue", v, 6)
	out := EnqueueReply{Status: p.str(0), Fence: p.int(1), Due: p.int(3), Wake: wake(p.int(4)), RetryAt: p.int(5)}
	if s := p.str(2); s != "" {
		out.Seq, _ = strconv.ParseInt(s, 10, 64)
	}
	if out.Status == OverQuota && p.err == nil {
		p = newReply("enqueue", v, 7)
		if spec := p.str(6); p.err == nil {
			out.Quota, out.QuotaSource, p.err = parseQuotaSpec(spec)
		}
	}
	switch out.Status {
	case Admitted, Running, Queued, Full, OverQuota:
	default:
		if p.err == nil {
			p.err = fmt.Errorf("baton: enqueue: unknown status %q", out.Status)
		}
	}
	return out, p.err
}

// EnqueueAll runs enqueue.lua for many executions in one pipeline, in
// order (fixtures); replies and errors are in the order of the arguments.
func EnqueueAll(ctx context.Context, rdb redis.UniversalClient, actions []keys.Action, args []EnqueueArgs) ([]EnqueueReply, []error) {
	calls := make([]*scriptCall, len(args))
	for i, a := range args {
		calls[i] = &scriptCall{s: enqueue, keys: actions[i].List, args: append([]any{actions[i].Base, a.Execution, a.Owner,
			a.MaxQueue, ms(a.LeaseTTL), ms(a.AckTimeout)}, a.Policy.args()...)}
	}
	runPipeline(ctx, rdb, calls, false)
	replies := make([]EnqueueReply, len(args))
	errs := make([]error, len(args))
	for i, c := range calls {
		if c.err != nil {
			errs[i] = callErr("enqueue", c.err)
			continue
		}
		replies[i], errs[i] = decodeEnqueue(c.v)
	}
	return replies, errs
}

// ReleaseReply is release.lua's reply.
type ReleaseReply struct {
	// Held is true when the execution held a slot, now freed.
	Held bool
	// Granted counts waiters admitted into the freed slot.
	Granted int64
	// Due > 0 asks the caller to add the action to the sweep index then.
	Due int64
	// Wake > 0 asks the caller to run Tick after it: the head waits for a rate token.
	Wake time.Duration
}

// Release frees a slot and grants the next waiter (release.lua). fence 0
// frees the execution's slot whatever its token.
func Release(ctx context.Context, r Runner, k keys.Action, execution string, fence int64, ackTimeout time.Duration, p Policy) (ReleaseReply, error) {
	v, err := runAction(ctx, r, release, k, append([]any{execution, fence, ms(ackTimeout)}, p.args()...)...)
	if err != nil {
		return ReleaseReply{}, err
	}
	d := newReply("release", v, 4)
	return ReleaseReply{Held: d.int(0) == 1, Granted: d.int(1), Due: d.int(2), Wake: wake(d.int(3))}, d.err
}

// KeepReply is keep.lua's reply.
type KeepReply struct {
	// Held is true when the token holds the execution's slot, now extended.
	Held bool
	// Deadline is the lease's new deadline in ms on the Redis clock (0 when not held).
	Deadline int64
	// Due > 0 asks the caller to add the action to the sweep index then.
	Due int64
	// Wake > 0 asks the caller to run Tick after it: the head waits for a rate token.
	Wake time.Duration
}

// Keep extends a lease by execution ID and fencing token to ttl from now,
// and hands it to whoever holds the token: no process's heartbeat renews it
// after (keep.lua). An expired lease is reclaimed, not extended.
func Keep(ctx context.Context, r Runner, k keys.Action, execution string, fence int64, ttl, ackTimeout time.Duration) (KeepReply, error) {
	v, err := runAction(ctx, r, keep, k, execution, fence, ms(ttl), ms(ackTimeout))
	if err != nil {
		return KeepReply{}, err
	}
	d := newReply("keep", v, 4)
	return KeepReply{Held: d.int(0) == 1, Deadline: d.int(1), Due: d.int(2), Wake: wake(d.int(3))}, d.err
}

// Cancel results.
const (
	NotCanceled = 0 // nothing changed
	Removed     = 1 // removed from the queue
	GaveBack    = 2 // an undelivered grant was given back
)

// CancelReply is cancel.lua's reply.
type CancelReply struct {
	// Result is NotCanceled, Removed or GaveBack.
	Result int
	// Due > 0 asks the caller to add the action to the sweep index then.
	Due int64
	// Wake > 0 asks the caller to run Tick after it: the head waits for a rate token.
	Wake time.Duration
}

// Cancel removes a waiter, or gives back its undelivered grant when seq and
// owner name the waiter's own incarnation (cancel.lua). With seq "" it is an
// operator's cancel of a waiting execution.
func Cancel(ctx context.Context, r Runner, k keys.Action, execution, seq, owner string, ackTimeout time.Duration) (CancelReply, error) {
	v, err := runAction(ctx, r, cancel, k, execution, seq, owner, ms(ackTimeout))
	if err != nil {
		return CancelReply{}, err
	}
	d := newReply("cancel", v, 3)
	return CancelReply{Result: int(d.int(0)), Due: d.int(1), Wake: wake(d.int(2))}, d.err
}

// Timeout results.
const (
	TimedOut = "timedout"
	Early    = "early"
	Gone     = "gone"
)

// TimeoutReply is timeout.lua's reply.
type TimeoutReply struct {
	// Result is TimedOut, Early or Gone.
	Result string
	// Remaining is how long the waiter still has, for Early.
	Remaining time.Duration
	// Due > 0 asks the caller to add the action to the sweep index then.
	Due int64
	// Wake > 0 asks the caller to run Tick after it: the head waits for a rate token.
	Wake time.Duration
}

// Timeout ends a waiter whose queue timeout passed on the Redis clock (timeout.lua).
func Timeout(ctx context.Context, r Runner, k keys.Action, execution, seq, owner string, queueTimeout, ackTimeout time.Duration) (TimeoutReply, error) {
	v, err := runAction(ctx, r, timeout, k, execution, seq, owner, ms(queueTimeout), ms(ackTimeout))
	if err != nil {
		return TimeoutReply{}, err
	}
	d := newReply("timeout", v, 4)
	out := TimeoutReply{Result: d.str(0), Remaining: time.Duration(d.int(1)) * time.Millisecond, Due: d.int(2),
		Wake: wake(d.int(3))}
	return out, d.err
}

// Waiter statuses from Renew and Reconcile.
const (
	WaiterQueued     = "q" // still in the queue
	WaiterGranted    = "g" // granted; now a lease
	WaiterMissing    = "x" // nowhere in Redis
	WaiterCanceled   = "c" // removed by a cancel
	WaiterTimedOut   = "t" // removed by its timeout
	WaiterEvicted    = "e" // dropped: its process was presumed dead
	WaiterSuperseded = "s" // re-attached by another process
)

// WaiterStatus is where one waiter stands.
type WaiterStatus struct {
	// Status is one of the Waiter* constants ("" when none was asked).
	Status string
	// Fence is the grant's fencing token for WaiterGranted.
	Fence int64
}

// RenewArgs are renew.lua's arguments.
type RenewArgs struct {
	Owner      string
	LeaseTTL   time.Duration
	AckTimeout time.Duration
	Policy     Policy
	// Oldest and OldestSeq name the owner's oldest local waiter ("": none).
	Oldest, OldestSeq string
	// Leases are the executions and fencing tokens the owner holds.
	Leases []Held
}

// Held names one lease: execution and fencing token.
type Held struct {
	Execution string
	Fence     int64
}

// RenewReply is renew.lua's reply.
type RenewReply struct {
	// Due is when a sweeper must next visit the action (0: never).
	Due int64
	// Oldest is where the oldest waiter stands.
	Oldest WaiterStatus
	// Wake > 0 asks the caller to run Tick after it: the head waits for a rate token.
	Wake time.Duration
	// Lost lists the executions whose lease is gone.
	Lost []string
}

// Renew is one owner's heartbeat for one action (renew.lua).
func Renew(ctx context.Context, r Runner, k keys.Action, a RenewArgs) (RenewReply, error) {
	args := append([]any{a.Owner, ms(a.LeaseTTL), ms(a.AckTimeout)}, a.Policy.args()...)
	args = append(args, a.Oldest, a.OldestSeq)
	for _, l := range a.Leases {
		args = append(args, l.Execution, l.Fence)
	}
	v, err := runAction(ctx, r, renew, k, args...)
	if err != nil {
		return RenewReply{}, err
	}
	d := newReply("renew", v, 4)
	out := RenewReply{Due: d.int(0), Oldest: WaiterStatus{Status: d.str(1), Fence: d.int(2)}, Wake: wake(d.int(3)),
		Lost: d.tail(4)}
	return out, d.err
}

// Pending names one local waiter: execution and seq.
type Pending struct {
	Execution, Seq string
}

// Reconcile says where each of the owner's waiters stands; granted ones
// become leases of leaseTTL (reconcile.lua).
func Reconcile(ctx context.Context, r Runner, k keys.Action, owner string, leaseTTL time.Duration, waiters []Pending) ([]WaiterStatus, error) {
	args := []any{owner, ms(leaseTTL)}
	for _, w := range waiters {
		args = append(args, w.Execution, w.Seq)
	}
	v, err := runAction(ctx, r, reconcile, k, args...)
	if err != nil {
		return nil, err
	}
	d := newReply("reconcile", v, 2*len(waiters))
	out := make([]WaiterStatus, len(waiters))
	for i := range out {
		out[i] = WaiterStatus{Status: d.str(2 * i), Fence: d.int(2*i + 1)}
	}
	return out, d.err
}

// SweepReply is sweep.lua's reply.
type SweepReply struct {
	Reclaimed, Granted, Abandoned int64
	// Due is when the action must be visited again (0: never).
	Due int64
	// Wake > 0 asks the caller to run Tick after it: the head waits for a rate token.
	Wake time.Duration
}

// Sweep reclaims and grants for one due action (sweep.lua).
func Sweep(ctx context.Context, r Runner, k keys.Action, ackTimeout time.Duration) (SweepReply, error) {
	v, err := runAction(ctx, r, sweep, k, ms(ackTimeout))
	if err != nil {
		return SweepReply{}, err
	}
	d := newReply("sweep", v, 5)
	return SweepReply{Reclaimed: d.int(0), Granted: d.int(1), Abandoned: d.int(2), Due: d.int(3), Wake: wake(d.int(4))}, d.err
}

// SweepAll runs sweep.lua for several actions in one pipeline; replies and
// errors are in the order of actions.
func SweepAll(ctx context.Context, rdb redis.UniversalClient, actions []keys.Action, ackTimeout time.Duration) ([]SweepReply, []error) {
	calls := make([]*scriptCall, len(actions))
	for i, k := range actions {
		calls[i] = &scriptCall{s: sweep, keys: k.List, args: []any{k.Base, ms(ackTimeout)}}
	}
	runPipeline(ctx, rdb, calls, false)
	replies := make([]SweepReply, len(actions))
	errs := make([]error, len(actions))
	for i, c := range calls {
		if c.err != nil {
			errs[i] = callErr("sweep", c.err)
			continue
		}
		d := newReply("sweep", c.v, 5)
		replies[i] = SweepReply{Reclaimed: d.int(0), Granted: d.int(1), Abandoned: d.int(2), Due: d.int(3), Wake: wake(d.int(4))}
		errs[i] = d.err
	}
	return replies, errs
}

// GrantReply is the reply of apply_policy.lua and tick.lua.
type GrantReply struct {
	// Granted counts the waiters admitted.
	Granted int64
	// Due > 0 asks the caller to add the action to the sweep index then.
	Due int64
	// Wake > 0 asks the caller to run Tick after it: the head waits for a rate token.
	Wake time.Duration
}

// ApplyPolicy pushes a new limit, rate and quota to one action that exists
// in Redis (apply_policy.lua).
func ApplyPolicy(ctx context.Context, r Runner, k keys.Action, p Policy, ackTimeout time.Duration) (GrantReply, error) {
	v, err := runAction(ctx, r, applyPolicy, k, p.Version, p.Limit, p.Source, ms(ackTimeout), p.RateSpec(), p.QuotaSpec())
	if err != nil {
		return GrantReply{}, err
	}
	d := newReply("apply_policy", v, 3)
	return GrantReply{Granted: d.int(0), Due: d.int(1), Wake: wake(d.int(2))}, d.err
}

// Tick grants the head of a throttled queue whose rate token has come
// (tick.lua); run it when a reply's Wake says.
func Tick(ctx context.Context, r Runner, k keys.Action, ackTimeout time.Duration) (GrantReply, error) {
	v, err := runAction(ctx, r, tick, k, ms(ackTimeout))
	if err != nil {
		return GrantReply{}, err
	}
	d := newReply("tick", v, 3)
	return GrantReply{Granted: d.int(0), Due: d.int(1), Wake: wake(d.int(2))}, d.err
}

// StatsReply is stats.lua's reply.
type StatsReply struct {
	QueueLength, Active, Limit int64
	LimitSource                string
	// HeadSeq is the seq of the oldest waiter (0: the queue is empty).
	HeadSeq int64
	// Now is the Redis clock, in ms.
	Now int64
	// Meta holds the counters (enqueued, admitted, ..., throttled,
	// quota_rejected); Waits the histogram hash.
	Meta, Waits map[string]string
	// Rate is the rate in force (the zero Rate: none) and RateSource its scope.
	Rate       limits.Rate
	RateSource string
	// ThrottledUntil is the µs time the head gets its rate token (0: not throttled).
	ThrottledUntil int64
	// Quota is the quota in force (the zero Quota: none) and QuotaSource its scope.
	Quota       limits.Quota
	QuotaSource string
	// QuotaUsed counts the reservations of the window that ends at QuotaReset (ms).
	QuotaUsed, QuotaReset int64
}

// Stats reads an action's statistics (stats.lua). Read-only.
func Stats(ctx context.Context, r Runner, k keys.Action, p Policy) (StatsReply, error) {
	v, err := runAction(ctx, r, stats, k, p.args()...)
	if err != nil {
		return StatsReply{}, err
	}
	d := newReply("stats", v, 13)
	out := StatsReply{QueueLength: d.int(0), Active: d.int(1), Limit: d.int(2), LimitSource: d.str(3), Now: d.int(5)}
	if s := d.str(4); s != "" {
		out.HeadSeq, _ = strconv.ParseInt(s, 10, 64)
	}
	out.Meta, out.Waits = d.pairs(6), d.pairs(7)
	out.ThrottledUntil, out.QuotaUsed, out.QuotaReset = d.int(9), d.int(11), d.int(12)
	if spec := d.str(8); spec != "" && d.err == nil {
		out.Rate, out.RateSource, d.err = parseRateSpec(spec)
	}
	if spec := d.str(10); spec != "" && d.err == nil {
		out.Quota, out.QuotaSource, d.err = parseQuotaSpec(spec)
	}
	return out, d.err
}

// StateReply is state.lua's reply: where one execution stands.
type StateReply struct {
	// Status is "waiting", "running" or "unknown".
	Status string
	Owner  string
	// Seq and Position: waiting only (position 0 is the head).
	Seq, Position int64
	// Fence, Since and Deadline (ms): running only.
	Fence, Since, Deadline int64
	// Delivered is false while a grant's token has not been read (running only).
	Delivered bool
}

// State reads one execution's state (state.lua). Read-only.
func State(ctx context.Context, r Runner, k keys.Action, execution string) (StateReply, error) {
	v, err := runAction(ctx, r, state, k, execution)
	if err != nil {
		return StateReply{}, err
	}
	d := newReply("state", v, 1)
	out := StateReply{Status: d.str(0)}
	switch out.Status {
	case "waiting":
		d = newReply("state", v, 4)
		out.Seq, out.Owner, out.Position = d.int(1), d.str(2), d.int(3)
	case "running":
		d = newReply("state", v, 6)
		out.Fence, out.Owner, out.Since, out.Deadline = d.int(1), d.str(2), d.int(3), d.int(4)
		out.Delivered = d.str(5) == "h"
	case "unknown":
	default:
		if d.err == nil {
			d.err = fmt.Errorf("baton: state: unknown status %q", out.Status)
		}
	}
	return out, d.err
}

// ClaimDue takes up to max due actions out of the sweep index
// (claim_due.lua) and returns the Redis clock (ms) and their refs.
func ClaimDue(ctx context.Context, r Runner, k keys.Keys, max int) (now int64, refs []string, err error) {
	v, err := r.RunScript(ctx, claimDue, []string{k.Sweep()}, []any{max})
	if err != nil {
		return 0, nil, fmt.Errorf("claim_due: %w", err)
	}
	d := newReply("claim_due", v, 1)
	return d.int(0), d.tail(1), d.err
}

// ByName returns the script of an operation ("renew"), or nil.
func ByName(name string) *Script {
	for _, s := range All {
		if s.name == name {
			return s
		}
	}
	return nil
}

// parseRateSpec reads "<limit>,<per µs>,<burst>,<source>" (Policy.RateSpec).
func parseRateSpec(spec string) (limits.Rate, string, error) {
	parts := strings.SplitN(spec, ",", 4)
	if len(parts) != 4 {
		return limits.Rate{}, "", fmt.Errorf("baton: stats: rate %q: want limit,per_us,burst,source", spec)
	}
	r, err := limits.ParseRate(strings.Join(parts[:3], ","))
	if err != nil {
		return limits.Rate{}, "", fmt.Errorf("baton: stats: %w", err)
	}
	return r, parts[3], nil
}

// parseQuotaSpec reads "<limit>,<window ms>,<source>" (Policy.QuotaSpec).
func parseQuotaSpec(spec string) (limits.Quota, string, error) {
	parts := strings.SplitN(spec, ",", 3)
	if len(parts) != 3 {
		return limits.Quota{}, "", fmt.Errorf("baton: quota %q: want limit,window_ms,source", spec)
	}
	n, err1 := strconv.ParseInt(parts[0], 10, 64)
	winMs, err2 := strconv.ParseInt(parts[1], 10, 64)
	if err1 != nil || err2 != nil {
		return limits.Quota{}, "", fmt.Errorf("baton: quota %q: not integers", spec)
	}
	for _, w := range []limits.Window{limits.Minute, limits.Hour, limits.Day} {
		if w.Duration().Milliseconds() == winMs {
			return limits.Quota{Limit: n, Window: w}, parts[2], nil
		}
	}
	return limits.Quota{}, "", fmt.Errorf("baton: quota %q: unknown window", spec)
}
