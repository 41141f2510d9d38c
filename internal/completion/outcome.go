package completion

import (
	"log/slog"
	"strconv"
)

// Outcome is what a Listener did with one completion event.
type Outcome int

// The outcomes of a completion event. Every outcome but Failed acknowledges
// the event.
const (
	// Released: the execution held a slot, and the event freed it.
	Released Outcome = iota + 1
	// NotHeld: the execution held no slot, so nothing was freed: the event
	// is a duplicate (redelivered or published twice) or came after the
	// lease was released or reclaimed.
	NotHeld
	// Invalid: the event's fields are missing or not a valid action and
	// execution ID; it is dropped.
	Invalid
	// Failed: freeing the slot failed for a reason that may pass (Redis
	// unreachable, a timeout). The event stays pending and is retried
	// after Config.ClaimIdle.
	Failed
)

// String returns the outcome's snake_case name, as used in logs and in the
// daemon's metric label: "released", "not_held", "invalid" or "failed".
func (o Outcome) String() string {
	switch o {
	case Released:
		return "released"
	case NotHeld:
		return "not_held"
	case Invalid:
		return "invalid"
	case Failed:
		return "failed"
	}
	return "Outcome(" + strconv.Itoa(int(o)) + ")"
}

// LogValue logs the outcome by its name, in every slog handler.
func (o Outcome) LogValue() slog.Value { return slog.StringValue(o.String()) }

// acknowledged reports whether an event with this outcome is acknowledged
// (done with) rather than left pending for a retry.
func (o Outcome) acknowledged() bool { return o != Failed }
