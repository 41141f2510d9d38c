package coordinator

import (
	"container/heap"
	"errors"
	"time"
)

// waiterState is where one waiting execution of this process stands.
//
// The waiter's whole life is this state machine. step is pure: it changes
// the state and says what to do (an effect); the action's code does it. The
// action's mutex guards every step.
//
//	state      event                   next       effect
//	---------  ----------------------  ---------  ------------------------------------------
//	queued     grant(fence)            done       deliver: a lease for fence
//	queued     removed(kind)           done       fail with the kind's error
//	queued     missing                 suspect    -
//	queued     giveUp(why)             givingUp   run the give-up script (timeout or cancel)
//	suspect    grant(fence)            done       deliver
//	suspect    removed(kind)           done       fail with the kind's error
//	suspect    present                 queued     -
//	suspect    missing                 done       fail with ErrLeaseLost (seen missing twice)
//	suspect    giveUp(why)             givingUp   run the give-up script
//	givingUp   grant(fence)            givingUp   remember fence (the script gives it back)
//	givingUp   gaveUp                  done       fail with why
//	givingUp   giveUp(why)             givingUp   remember why (the caller left)
//	givingUp   early(remaining)        givingUp   (the caller left) run the give-up script for it
//	                                   done       (a grant was remembered) deliver it
//	                                   queued     (otherwise) re-arm the timer for remaining
//	givingUp   gone                    done       fail with why; release a remembered grant
//	givingUp   giveUpFailed            done       fail with why; retry the cancel in the background
//	done       grant(fence)            done       give the grant back (an orphan)
//	any other pair                     unchanged  -
//
// queued: in the action's queue in Redis as far as this process knows.
// suspect: Redis was seen without the entry once (a restart or failover can
// lose it; a token in flight explains a short absence).
// givingUp: a timeout or cancel script is in flight; a grant that arrives
// meanwhile is not delivered: the script gives it back.
// done: the result is set and the waiter left the action's tables.
type waiterState int

const (
	waiterQueued waiterState = iota
	waiterSuspect
	waiterGivingUp
	waiterDone
)

func (s waiterState) String() string {
	return [...]string{"queued", "suspect", "givingUp", "done"}[s]
}

// waiterEvent is what can happen to a waiter.
type waiterEvent int

const (
	evGrant        waiterEvent = iota // its grant token (or a state read) says it holds a slot
	evRemoved                         // a removal token: canceled, timed out, evicted, superseded
	evMissing                         // a state read found it nowhere in Redis
	evPresent                         // a state read found it in the queue
	evGiveUp                          // its timeout fired, its caller left, or Close
	evGaveUp                          // the give-up script removed it or gave its grant back
	evEarly                           // the timeout has not passed on the Redis clock yet
	evGone                            // the give-up script found nothing to remove
	evGiveUpFailed                    // the give-up script could not reach Redis
)

// effect is what a step asks the action to do.
type effect int

const (
	doNothing        effect = iota
	doDeliver               // finish with a lease for the fence (or the remembered one)
	doFail                  // finish with err
	doRunGiveUp             // start the give-up script for why
	doRearm                 // re-arm the queue timeout timer
	doReleaseGrant          // finish with err, then release the remembered grant
	doRetryGiveUp           // finish with err, then retry the cancel in the background
	doGiveBackOrphan        // a grant for a waiter that is done: give it back
)

// waiter is one waiting execution in this process. Several EnqueueAndWait
// calls with the same ID share it (refs) and get the same result.
type waiter struct {
	act    *action
	id     string
	seq    int64
	seqStr string
	key    string // grant key

	state   waiterState
	why     error // the give-up reason (givingUp)
	leaving error // the caller left while a timeout check was in flight
	stashed int64 // fence of a grant that arrived while giving up (0: none)
	refs    int
	timer   *time.Timer
	index   int // in the action's heap

	done  chan struct{}
	lease *Lease
	err   error
}

// abandoned reports whether every caller of the waiter left (its give-up is
// under way): a new call for the same ID must not join it.
func (w *waiter) abandoned() bool {
	w.act.mu.Lock()
	defer w.act.mu.Unlock()
	return w.refs == 0 && w.state != waiterDone
}

// step applies one event. fence is the grant's token (evGrant); kind the
// removal token's kind (evRemoved); why the reason to give up (evGiveUp).
func (w *waiter) step(ev waiterEvent, fence int64, kind string, why error) (effect, error) {
	switch w.state {
	case waiterQueued, waiterSuspect:
		switch ev {
		case evGrant:
			w.state = waiterDone
			return doDeliver, nil
		case evRemoved:
			w.state = waiterDone
			return doFail, removalError(kind)
		case evMissing:
			if w.state == waiterQueued {
				w.state = waiterSuspect
				return doNothing, nil
			}
			w.state = waiterDone
			return doFail, errors.Join(ErrLeaseLost, errors.New("baton: its queue entry is gone from Redis (restart or failover)"))
		case evPresent:
			w.state = waiterQueued
		case evGiveUp:
			w.state, w.why = waiterGivingUp, why
			return doRunGiveUp, nil
		}
	case waiterGivingUp:
		switch ev {
		case evGrant:
			w.stashed = fence
		case evGaveUp:
			w.state = waiterDone
			return doFail, w.why
		case evGiveUp: // the caller left while a timeout check was in flight
			w.leaving = why
		case evEarly:
			if w.leaving != nil { // give up for the caller instead (a grant goes back)
				w.why, w.leaving = w.leaving, nil
				return doRunGiveUp, nil
			}
			if w.stashed != 0 { // granted after the script looked: take it
				w.state = waiterDone
				return doDeliver, nil
			}
			w.state = waiterQueued
			return doRearm, nil
		case evGone:
			w.state = waiterDone
			if w.stashed != 0 {
				return doReleaseGrant, w.why
			}
			return doFail, w.why
		case evGiveUpFailed:
			w.state = waiterDone
			return doRetryGiveUp, w.why
		}
	case waiterDone:
		if ev == evGrant {
			return doGiveBackOrphan, nil
		}
	}
	return doNothing, nil
}

// removalError is the error a removal token's kind stands for.
func removalError(kind string) error {
	switch kind {
	case "c":
		return ErrCanceled
	case "t":
		return ErrQueueTimeout
	case "s":
		return ErrReattached
	case "e":
		return errors.Join(ErrLeaseLost, errors.New("baton: waiter dropped: its process was presumed dead"))
	}
	return errors.Join(ErrLeaseLost, errors.New("baton: unknown wake-up token "+kind))
}

// waiterHeap orders an action's local waiters by seq (FIFO order in Redis).
type waiterHeap []*waiter

func (h waiterHeap) Len() int           { return len(h) }
func (h waiterHeap) Less(i, j int) bool { return h[i].seq < h[j].seq }
func (h waiterHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *waiterHeap) Push(x any) {
	w := x.(*waiter)
	w.index = len(*h)
	*h = append(*h, w)
}
func (h *waiterHeap) Pop() any {
	old := *h
	w := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	w.index = -1
	return w
}

var _ = heap.Init
