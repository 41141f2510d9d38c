package coordinator

import (
	"container/heap"
	"errors"
	"fmt"
	"testing"
)

// The waiter's state machine (waiter.go) without Redis: every row of the
// table in waiterState's doc comment, then every other (state, event) pair,
// which must leave the waiter exactly as it was and do nothing.

var (
	errWhy   = errors.New("test: first reason to give up")
	errLater = errors.New("test: the caller left later")
)

var allStates = []waiterState{waiterQueued, waiterSuspect, waiterGivingUp, waiterDone}

var allEvents = []waiterEvent{evGrant, evRemoved, evMissing, evPresent, evGiveUp, evGaveUp, evEarly, evGone, evGiveUpFailed}

// evName names an event (a function, not a String method, so that the core
// may add its own).
func evName(e waiterEvent) string {
	names := [...]string{"grant", "removed", "missing", "present", "giveUp", "gaveUp", "early", "gone", "giveUpFailed"}
	if int(e) < len(names) {
		return names[e]
	}
	return fmt.Sprintf("event(%d)", int(e))
}

// effName names an effect.
func effName(e effect) string {
	names := [...]string{"doNothing", "doDeliver", "doFail", "doRunGiveUp", "doRearm", "doReleaseGrant", "doRetryGiveUp", "doGiveBackOrphan"}
	if int(e) < len(names) {
		return names[e]
	}
	return fmt.Sprintf("effect(%d)", int(e))
}

// stepCase is one row: a waiter in from (with the given memory), one event,
// and what must come of it.
type stepCase struct {
	name string
	// the waiter before the event
	from    waiterState
	why     error
	leaving error
	stashed int64
	// the event
	ev    waiterEvent
	fence int64
	kind  string
	evWhy error
	// what must come of it
	next        waiterState
	eff         effect
	errIs       []error // the returned error must match each (nil: no error)
	wantWhy     error   // w.why afterwards
	wantLeaving error   // w.leaving afterwards
	wantStashed int64   // w.stashed afterwards
}

func (tc stepCase) run(t *testing.T) {
	t.Helper()
	w := &waiter{id: "x", state: tc.from, why: tc.why, leaving: tc.leaving, stashed: tc.stashed}
	eff, err := w.step(tc.ev, tc.fence, tc.kind, tc.evWhy)
	if w.state != tc.next || eff != tc.eff {
		t.Errorf("%s + %s: got (%s, %s), want (%s, %s)", tc.from, evName(tc.ev), w.state, effName(eff), tc.next, effName(tc.eff))
	}
	switch {
	case len(tc.errIs) == 0 && err != nil:
		t.Errorf("%s + %s: error %v, want none", tc.from, evName(tc.ev), err)
	case len(tc.errIs) > 0 && err == nil:
		t.Errorf("%s + %s: no error, want %v", tc.from, evName(tc.ev), tc.errIs)
	}
	for _, target := range tc.errIs {
		if !errors.Is(err, target) {
			t.Errorf("%s + %s: error %v is not %v", tc.from, evName(tc.ev), err, target)
		}
	}
	if w.why != tc.wantWhy {
		t.Errorf("%s + %s: why = %v, want %v", tc.from, evName(tc.ev), w.why, tc.wantWhy)
	}
	if w.leaving != tc.wantLeaving {
		t.Errorf("%s + %s: leaving = %v, want %v", tc.from, evName(tc.ev), w.leaving, tc.wantLeaving)
	}
	if w.stashed != tc.wantStashed {
		t.Errorf("%s + %s: stashed = %d, want %d", tc.from, evName(tc.ev), w.stashed, tc.wantStashed)
	}
}

// removalRows are the removed(kind) rows of one waiting state, one per kind.
func removalRows(from waiterState) []stepCase {
	kinds := []struct {
		kind string
		is   []error
	}{
		{"c", []error{ErrCanceled}},
		{"t", []error{ErrQueueTimeout}},
		{"s", []error{ErrCanceled}},
		{"e", []error{ErrLeaseLost}},
		{"z", []error{ErrLeaseLost}}, // an unknown token kind
	}
	var out []stepCase
	for _, k := range kinds {
		out = append(out, stepCase{
			name: fmt.Sprintf("%s/removed(%s)", from, k.kind),
			from: from, ev: evRemoved, kind: k.kind,
			next: waiterDone, eff: doFail, errIs: k.is,
		})
	}
	return out
}

// tableRows returns every row of the table in waiter.go, in its order.
func tableRows() []stepCase {
	var rows []stepCase
	// queued
	rows = append(rows,
		stepCase{name: "queued/grant", from: waiterQueued, ev: evGrant, fence: 7, next: waiterDone, eff: doDeliver})
	rows = append(rows, removalRows(waiterQueued)...)
	rows = append(rows,
		stepCase{name: "queued/missing", from: waiterQueued, ev: evMissing, next: waiterSuspect, eff: doNothing},
		stepCase{name: "queued/giveUp", from: waiterQueued, ev: evGiveUp, evWhy: errWhy,
			next: waiterGivingUp, eff: doRunGiveUp, wantWhy: errWhy},
	)
	// suspect
	rows = append(rows,
		stepCase{name: "suspect/grant", from: waiterSuspect, ev: evGrant, fence: 7, next: waiterDone, eff: doDeliver})
	rows = append(rows, removalRows(waiterSuspect)...)
	rows = append(rows,
		stepCase{name: "suspect/present", from: waiterSuspect, ev: evPresent, next: waiterQueued, eff: doNothing},
		stepCase{name: "suspect/missing", from: waiterSuspect, ev: evMissing,
			next: waiterDone, eff: doFail, errIs: []error{ErrLeaseLost}},
		stepCase{name: "suspect/giveUp", from: waiterSuspect, ev: evGiveUp, evWhy: errWhy,
			next: waiterGivingUp, eff: doRunGiveUp, wantWhy: errWhy},
	)
	// givingUp
	rows = append(rows,
		stepCase{name: "givingUp/grant remembers the fence", from: waiterGivingUp, why: errWhy, ev: evGrant, fence: 9,
			next: waiterGivingUp, eff: doNothing, wantWhy: errWhy, wantStashed: 9},
		stepCase{name: "givingUp/gaveUp", from: waiterGivingUp, why: errWhy, ev: evGaveUp,
			next: waiterDone, eff: doFail, errIs: []error{errWhy}, wantWhy: errWhy},
		stepCase{name: "givingUp/gaveUp with a remembered grant", from: waiterGivingUp, why: errWhy, stashed: 9, ev: evGaveUp,
			next: waiterDone, eff: doFail, errIs: []error{errWhy}, wantWhy: errWhy, wantStashed: 9},
		stepCase{name: "givingUp/giveUp remembers why", from: waiterGivingUp, why: ErrQueueTimeout, ev: evGiveUp, evWhy: errLater,
			next: waiterGivingUp, eff: doNothing, wantWhy: ErrQueueTimeout, wantLeaving: errLater},
		stepCase{name: "givingUp/early, the caller left", from: waiterGivingUp, why: ErrQueueTimeout, leaving: errLater,
			ev: evEarly, fence: 100,
			next: waiterGivingUp, eff: doRunGiveUp, wantWhy: errLater},
		stepCase{name: "givingUp/early, the caller left and a grant is remembered", from: waiterGivingUp, why: ErrQueueTimeout,
			leaving: errLater, stashed: 9, ev: evEarly, fence: 100,
			next: waiterGivingUp, eff: doRunGiveUp, wantWhy: errLater, wantStashed: 9},
		stepCase{name: "givingUp/early, a grant is remembered", from: waiterGivingUp, why: ErrQueueTimeout, stashed: 9,
			ev: evEarly, fence: 100,
			next: waiterDone, eff: doDeliver, wantWhy: ErrQueueTimeout, wantStashed: 9},
		stepCase{name: "givingUp/early, otherwise", from: waiterGivingUp, why: ErrQueueTimeout, ev: evEarly, fence: 100,
			next: waiterQueued, eff: doRearm, wantWhy: ErrQueueTimeout},
		stepCase{name: "givingUp/gone", from: waiterGivingUp, why: errWhy, ev: evGone,
			next: waiterDone, eff: doFail, errIs: []error{errWhy}, wantWhy: errWhy},
		stepCase{name: "givingUp/gone with a remembered grant", from: waiterGivingUp, why: errWhy, stashed: 9, ev: evGone,
			next: waiterDone, eff: doReleaseGrant, errIs: []error{errWhy}, wantWhy: errWhy, wantStashed: 9},
		stepCase{name: "givingUp/giveUpFailed", from: waiterGivingUp, why: errWhy, ev: evGiveUpFailed,
			next: waiterDone, eff: doRetryGiveUp, errIs: []error{errWhy}, wantWhy: errWhy},
		stepCase{name: "givingUp/giveUpFailed with a remembered grant", from: waiterGivingUp, why: errWhy, stashed: 9,
			ev:   evGiveUpFailed,
			next: waiterDone, eff: doRetryGiveUp, errIs: []error{errWhy}, wantWhy: errWhy, wantStashed: 9},
	)
	// done
	rows = append(rows,
		stepCase{name: "done/grant is an orphan", from: waiterDone, ev: evGrant, fence: 9, next: waiterDone, eff: doGiveBackOrphan})
	return rows
}

// TestWaiterTable: every row of the table.
func TestWaiterTable(t *testing.T) {
	for _, tc := range tableRows() {
		t.Run(tc.name, tc.run)
	}
}

// TestWaiterOtherPairs: every (state, event) pair the table does not name
// leaves the state and the waiter's memory unchanged and does nothing.
func TestWaiterOtherPairs(t *testing.T) {
	named := map[[2]int]bool{}
	for _, tc := range tableRows() {
		named[[2]int{int(tc.from), int(tc.ev)}] = true
	}
	// Sanity: the table names exactly these pairs (a new row or event must
	// be added to tableRows as well).
	if len(named) != 16 {
		t.Fatalf("the table names %d (state, event) pairs, want 16", len(named))
	}
	memories := []struct {
		why, leaving error
		stashed      int64
	}{
		{nil, nil, 0},
		{errWhy, nil, 0},
		{errWhy, errLater, 9},
	}
	n := 0
	for _, s := range allStates {
		for _, ev := range allEvents {
			if named[[2]int{int(s), int(ev)}] {
				continue
			}
			for _, m := range memories {
				n++
				tc := stepCase{
					name: fmt.Sprintf("%s/%s", s, evName(ev)),
					from: s, why: m.why, leaving: m.leaving, stashed: m.stashed,
					ev: ev, fence: 5, kind: "c", evWhy: errLater,
					next: s, eff: doNothing, wantWhy: m.why, wantLeaving: m.leaving, wantStashed: m.stashed,
				}
				t.Run(tc.name, tc.run)
			}
		}
	}
	if want := (len(allStates)*len(allEvents) - len(named)) * len(memories); n != want {
		t.Fatalf("checked %d cases, want %d", n, want)
	}
}

// TestWaiterLives: whole lives through the table end exactly once, with the
// documented result.
func TestWaiterLives(t *testing.T) {
	type step struct {
		ev    waiterEvent
		fence int64
		kind  string
		why   error
		eff   effect
	}
	lives := []struct {
		name  string
		steps []step
		final waiterState
		errIs error
	}{
		{"timeout early, re-armed, granted", []step{
			{ev: evGiveUp, why: ErrQueueTimeout, eff: doRunGiveUp},
			{ev: evEarly, fence: 50, eff: doRearm},
			{ev: evGrant, fence: 3, eff: doDeliver},
			{ev: evGrant, fence: 3, eff: doGiveBackOrphan}, // a duplicate token afterwards
		}, waiterDone, nil},
		{"missing once, then present, then missing twice", []step{
			{ev: evMissing, eff: doNothing},
			{ev: evPresent, eff: doNothing},
			{ev: evMissing, eff: doNothing},
			{ev: evMissing, eff: doFail},
			{ev: evRemoved, kind: "c", eff: doNothing},
		}, waiterDone, ErrLeaseLost},
		{"timeout check in flight, grant, caller leaves, early", []step{
			{ev: evGiveUp, why: ErrQueueTimeout, eff: doRunGiveUp},
			{ev: evGrant, fence: 4, eff: doNothing},
			{ev: evGiveUp, why: errLater, eff: doNothing},
			{ev: evEarly, fence: 10, eff: doRunGiveUp},
			{ev: evGaveUp, eff: doFail},
		}, waiterDone, errLater},
		{"cancel that cannot reach Redis", []step{
			{ev: evGiveUp, why: ErrCanceled, eff: doRunGiveUp},
			{ev: evGiveUpFailed, eff: doRetryGiveUp},
			{ev: evGrant, fence: 2, eff: doGiveBackOrphan},
		}, waiterDone, ErrCanceled},
	}
	for _, life := range lives {
		t.Run(life.name, func(t *testing.T) {
			w := &waiter{id: "x"}
			var last error
			ends := 0
			for i, s := range life.steps {
				eff, err := w.step(s.ev, s.fence, s.kind, s.why)
				if eff != s.eff {
					t.Fatalf("step %d (%s): effect %s, want %s", i, evName(s.ev), effName(eff), effName(s.eff))
				}
				switch eff {
				case doDeliver, doFail, doReleaseGrant, doRetryGiveUp:
					ends++
					last = err
				}
			}
			if ends != 1 {
				t.Fatalf("the life ended %d times, want once", ends)
			}
			if w.state != life.final {
				t.Fatalf("final state %s, want %s", w.state, life.final)
			}
			if life.errIs == nil && last != nil || life.errIs != nil && !errors.Is(last, life.errIs) {
				t.Fatalf("result %v, want %v", last, life.errIs)
			}
		})
	}
}

// TestOldestFirstAfterRemovals: the wait loop's BLPOP lists the grant keys
// of the oldest waiters in seq order, also after removals have left the
// heap's array out of seq order. BLPOP pops the first non-empty key in
// argument order, so when several grants wait in their keys as a round
// begins, the oldest is delivered first.
func TestOldestFirstAfterRemovals(t *testing.T) {
	a := &action{waiters: map[string]*waiter{}}
	ws := map[int64]*waiter{}
	for seq := int64(1); seq <= 40; seq++ {
		w := &waiter{id: fmt.Sprint(seq), seq: seq}
		ws[seq] = w
		a.waiters[w.id] = w
		heap.Push(&a.order, w)
	}
	for _, seq := range []int64{1, 7, 2, 30, 3} { // as grants and give-ups end them
		heap.Remove(&a.order, ws[seq].index)
	}
	sorted := true
	for i := 1; i < len(a.order); i++ {
		sorted = sorted && a.order[i-1].seq < a.order[i].seq
	}
	if sorted {
		t.Fatal("the heap's array is in seq order: the test shows nothing; remove other waiters")
	}
	for _, n := range []int{3, maxBlockKeys, 100} {
		got := a.oldestLocked(n)
		want := min(n, len(a.order))
		if len(got) != want {
			t.Fatalf("oldestLocked(%d): %d waiters, want %d", n, len(got), want)
		}
		var prev int64
		for _, w := range got {
			if w.seq <= prev {
				t.Fatalf("oldestLocked(%d) = %v: not in seq order", n, seqsOf(got))
			}
			prev = w.seq
		}
		if got[0].seq != 4 {
			t.Fatalf("oldestLocked(%d) starts with seq %d, want 4 (the oldest left)", n, got[0].seq)
		}
	}
}

func seqsOf(ws []*waiter) []int64 {
	out := make([]int64, len(ws))
	for i, w := range ws {
		out[i] = w.seq
	}
	return out
}
