package coordinator

import (
	"errors"
	"fmt"
	"time"

	"github.com/batonhq/baton/limits"
	"github.com/batonhq/baton/scripts"
)

// Errors callers can test with errors.Is. Context errors come back as the
// context's own error.
var (
	// ErrQueueFull: the action's queue held MaxQueueLength executions; nothing was stored.
	ErrQueueFull = errors.New("baton: queue full")
	// ErrQueueTimeout: the execution waited QueueTimeout (Redis clock) and was removed.
	ErrQueueTimeout = errors.New("baton: queue timeout")
	// ErrCanceled: the waiting execution was canceled (CancelExecution, or
	// re-attached by another process).
	ErrCanceled = errors.New("baton: canceled")
	// ErrReattached: the waiting execution was re-attached by another
	// process (EnqueueAndWait with its ID there), where it keeps its place.
	// It is an ErrCanceled too.
	ErrReattached = fmt.Errorf("%w: re-attached by another process", ErrCanceled)
	// ErrInvalidArgument: bad input; the message names the problem. Nothing was written.
	ErrInvalidArgument = errors.New("baton: invalid argument")
	// ErrLeaseLost: the slot was reclaimed (lease expired, grant not
	// acknowledged in time, or the process presumed dead) or already released.
	ErrLeaseLost = errors.New("baton: lease lost")
	// ErrReadOnly: a write was asked of a Coordinator made with Options.ReadOnly.
	ErrReadOnly = errors.New("baton: read-only coordinator")
	// ErrNotReplicated: with Options.WaitReplicas, a state-changing call ran
	// on the master but fewer replicas acknowledged it within
	// Options.WaitTimeout, so a failover could still lose it. An admission
	// or queueing that ends so has been undone (as far as Redis answered);
	// a release took effect on the master. See RELIABILITY.md.
	ErrNotReplicated = scripts.ErrNotReplicated
	// ErrClosed: the Coordinator was closed.
	ErrClosed = errors.New("baton: coordinator closed")
	// ErrKeySchema: a newer version of Baton keeps the action's keys in a
	// form this version does not read (docs/keys.md, "Key schema"). The call
	// read and wrote nothing; upgrade this process to use the action.
	ErrKeySchema = scripts.ErrKeySchema
)

// ErrQuotaExceeded: the action's quota for the current window is used up;
// nothing was stored. The error is a *QuotaError, whose RetryAt says when
// the window resets.
var ErrQuotaExceeded = errors.New("baton: quota exceeded")

// QuotaError is the error of a request refused by a quota. errors.Is(err,
// ErrQuotaExceeded) holds for it.
type QuotaError struct {
	// Action is the action ref.
	Action string
	// Quota is the quota in force.
	Quota limits.Quota
	// Source is the scope the quota came from ("action:slack.post", "pack:slack", "global").
	Source string
	// RetryAt is when the current window ends (Redis clock): the earliest
	// moment a new request can be accepted, unless reservations are given
	// back before then.
	RetryAt time.Time
}

// Error says which quota refused the request and when its window resets.
func (e *QuotaError) Error() string {
	return fmt.Sprintf("%v: %s allows %s (%s); the window resets at %s", ErrQuotaExceeded, e.Action, e.Quota, e.Source,
		e.RetryAt.UTC().Format(time.RFC3339))
}

// Unwrap makes errors.Is(err, ErrQuotaExceeded) hold.
func (e *QuotaError) Unwrap() error { return ErrQuotaExceeded }
