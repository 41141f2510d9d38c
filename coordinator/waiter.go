package coordinator

import (
	"container/heap"
	"time"
)

type waiterState int

const (
	stateWaiting waiterState = iota // in the queue; the wait loop may claim a grant
	stateEnding                     // a give-up script is in flight; tokens are stashed
	stateClaimed                    // the wait loop is acknowledging a grant
	stateDone                       // result set, done closed
)

// waiter is one waiting execution in this process. Several EnqueueAndWait
// calls with the same ID share it (refs) and get the same result.
type waiter struct {
	as       *actionState
	id       string
	seq      int64
	seqStr   string
	grantKey string
	queuedAt time.Time // local time of the enqueue reply, for the timeout timer

	refs    int
	state   waiterState
	stash   []string // tokens that arrived while a give-up script was in flight
	timer   *time.Timer
	gone    int       // timeout.lua found it neither waiting nor granted
	missing time.Time // when a heartbeat first found it neither waiting nor granted (zero: not missing)
	index   int       // in as.order

	done  chan struct{}
	lease *Lease
	err   error
}

func (w *waiter) result() (*Lease, error) {
	<-w.done
	return w.lease, w.err
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

// addWaiterLocked registers a queued execution, or returns the waiter that
// another call registered for it meanwhile. It reports whether the wait
// loop must be woken (the new waiter is older than the one it blocks on).
func (as *actionState) addWaiterLocked(id string, seq int64, seqStr, grantKey string) (w *waiter, isNew, wake bool) {
	if w := as.waiters[id]; w != nil {
		w.refs++
		return w, false, false
	}
	w = &waiter{
		as: as, id: id, seq: seq, seqStr: seqStr, grantKey: grantKey,
		queuedAt: time.Now(), refs: 1, done: make(chan struct{}),
	}
	as.waiters[id] = w
	heap.Push(&as.order, w)
	wake = as.loopRunning && as.blockingSeq != 0 && seq < as.blockingSeq
	return w, true, wake
}

// finishLocked ends a waiter with its one result. It reports whether the
// wait loop blocks on this waiter's key and must be woken to move on.
func (as *actionState) finishLocked(w *waiter, lease *Lease, err error) (wake bool) {
	if w.state == stateDone {
		return false
	}
	w.state = stateDone
	w.lease, w.err = lease, err
	w.stash = nil
	if w.timer != nil {
		w.timer.Stop()
	}
	if as.waiters[w.id] == w {
		delete(as.waiters, w.id)
		heap.Remove(&as.order, w.index)
	}
	close(w.done)
	return as.loopRunning && as.blockingSeq == w.seq
}
