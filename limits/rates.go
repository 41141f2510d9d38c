package limits

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Rate is a throttle: at most Limit admissions per Per, with bursts of up
// to Burst at once. Executions over it wait in the action's FIFO queue; the
// head is admitted when it has both a concurrency slot and a rate token.
//
// Over any interval of length T the admissions number at most
// Limit*T/Per + max(Burst, 1) (GCRA on the Redis clock; a token is one
// emission interval Per/Limit, rounded up to the microsecond, so the
// rate is never exceeded). Burst 0 and 1 both mean no burst: admissions are
// spaced by Per/Limit. Limit 0 admits nothing until the rate changes (like
// a concurrency limit of 0). The zero Rate (Per 0) means "no rate" where a
// Rate is reported, never a valid setting.
type Rate struct {
	// Limit is the number of admissions per Per: 0 to MaxLimit.
	Limit int
	// Per is the period Limit counts over: MinRatePer to MaxRatePer.
	Per time.Duration
	// Burst is how many admissions may happen at once after an idle
	// period: 0 to MaxLimit (0 and 1: no burst).
	Burst int
}

// MinRatePer and MaxRatePer bound Rate.Per. The Redis clock has
// microseconds; a period under a millisecond or over a year is a mistake.
const (
	MinRatePer = time.Millisecond
	MaxRatePer = 366 * 24 * time.Hour
)

// MaxQuota is the largest quota limit: quotas pass through Lua's doubles.
const MaxQuota = 1_000_000_000_000

// Validate reports the first bad field of the rate, naming it, or nil.
func (r Rate) Validate() error {
	switch {
	case r.Limit < 0:
		return fmt.Errorf("%w rate limit %d: negative; use a count from 0 to %d", ErrInvalid, r.Limit, MaxLimit)
	case r.Limit > MaxLimit:
		return fmt.Errorf("%w rate limit %d: over the maximum of %d", ErrInvalid, r.Limit, MaxLimit)
	case r.Per <= 0:
		return fmt.Errorf("%w rate per %s: not positive; use a period from %s to %s", ErrInvalid, r.Per, MinRatePer, MaxRatePer)
	case r.Per < MinRatePer:
		return fmt.Errorf("%w rate per %s: under the minimum of %s", ErrInvalid, r.Per, MinRatePer)
	case r.Per > MaxRatePer:
		return fmt.Errorf("%w rate per %s: over the maximum of %s", ErrInvalid, r.Per, MaxRatePer)
	case r.Burst < 0:
		return fmt.Errorf("%w rate burst %d: negative; use a count from 0 to %d", ErrInvalid, r.Burst, MaxLimit)
	case r.Burst > MaxLimit:
		return fmt.Errorf("%w rate burst %d: over the maximum of %d", ErrInvalid, r.Burst, MaxLimit)
	}
	return nil
}

// IsZero reports whether r is the zero Rate ("no rate").
func (r Rate) IsZero() bool { return r == Rate{} }

// String renders the rate as "100/1m0s burst 10".
func (r Rate) String() string {
	if r.IsZero() {
		return "none"
	}
	return fmt.Sprintf("%d/%s burst %d", r.Limit, r.Per, r.Burst)
}

// Window is the calendar window a quota counts over: a UTC minute, hour or
// day on the Redis clock. The zero Window is invalid.
type Window int

// The quota windows.
const (
	Minute Window = iota + 1
	Hour
	Day
)

// String renders the window as "minute", "hour" or "day", the form
// ParseWindow reads.
func (w Window) String() string {
	switch w {
	case Minute:
		return "minute"
	case Hour:
		return "hour"
	case Day:
		return "day"
	}
	return "invalid"
}

// Duration is the window's length.
func (w Window) Duration() time.Duration {
	switch w {
	case Minute:
		return time.Minute
	case Hour:
		return time.Hour
	case Day:
		return 24 * time.Hour
	}
	return 0
}

// Validate reports whether w is one of Minute, Hour and Day.
func (w Window) Validate() error {
	if w.Duration() == 0 {
		return fmt.Errorf("%w quota window %d: unknown; use minute, hour or day", ErrInvalid, int(w))
	}
	return nil
}

// Start is the start of the window that holds t (UTC calendar minute, hour
// or day: Unix time has no leap seconds, so each is a multiple of its length).
func (w Window) Start(t time.Time) time.Time {
	d := w.Duration()
	if d == 0 {
		return time.Time{}
	}
	return time.UnixMilli(t.UnixMilli() / d.Milliseconds() * d.Milliseconds())
}

// ParseWindow reads "minute", "hour" or "day".
func ParseWindow(text string) (Window, error) {
	for _, w := range []Window{Minute, Hour, Day} {
		if text == w.String() {
			return w, nil
		}
	}
	return 0, fmt.Errorf("%w quota window %s: unknown; use minute, hour or day", ErrInvalid, Quote(text))
}

// MarshalText renders the window as String does.
func (w Window) MarshalText() ([]byte, error) {
	if err := w.Validate(); err != nil {
		return nil, err
	}
	return []byte(w.String()), nil
}

// UnmarshalText reads the window as ParseWindow does.
func (w *Window) UnmarshalText(b []byte) error {
	v, err := ParseWindow(string(b))
	if err != nil {
		return err
	}
	*w = v
	return nil
}

// Quota caps the executions accepted per calendar window: those admitted
// plus those waiting (which hold a reservation until they are admitted,
// or give it back when they cancel or time out). A request over it is
// rejected at once with nothing stored. The zero Quota means "no quota"
// where a Quota is reported, never a valid setting.
type Quota struct {
	// Limit is the number of executions per window: 0 to MaxQuota.
	Limit int64
	// Window is Minute, Hour or Day (UTC, on the Redis clock).
	Window Window
}

// Validate reports the first bad field of the quota, naming it, or nil.
func (q Quota) Validate() error {
	switch {
	case q.Limit < 0:
		return fmt.Errorf("%w quota limit %d: negative; use a count from 0 to %d", ErrInvalid, q.Limit, int64(MaxQuota))
	case q.Limit > MaxQuota:
		return fmt.Errorf("%w quota limit %d: over the maximum of %d", ErrInvalid, q.Limit, int64(MaxQuota))
	}
	return q.Window.Validate()
}

// IsZero reports whether q is the zero Quota ("no quota").
func (q Quota) IsZero() bool { return q == Quota{} }

// String renders the quota as "10000/day".
func (q Quota) String() string {
	if q.IsZero() {
		return "none"
	}
	return fmt.Sprintf("%d/%s", q.Limit, q.Window)
}

// Field prefixes of rates and quotas in the stored policy hash (a
// concurrency limit's field is the bare scope).
const (
	RateField  = "rate:"
	QuotaField = "quota:"
)

// FormatRate renders a rate as stored in the policy hash:
// "<limit>,<per in µs>,<burst>".
func FormatRate(r Rate) string {
	return fmt.Sprintf("%d,%d,%d", r.Limit, r.Per.Microseconds(), r.Burst)
}

// ParseRate reads a stored rate (FormatRate) and validates it.
func ParseRate(text string) (Rate, error) {
	parts := strings.Split(text, ",")
	if len(parts) != 3 {
		return Rate{}, fmt.Errorf("%w rate %s: want limit,per_us,burst", ErrInvalid, Quote(text))
	}
	var n [3]int64
	for i, p := range parts {
		v, err := strconv.ParseInt(p, 10, 64)
		if err != nil {
			return Rate{}, fmt.Errorf("%w rate %s: not integers", ErrInvalid, Quote(text))
		}
		n[i] = v
	}
	if n[1] > int64(MaxRatePer/time.Microsecond) {
		n[1] = int64(MaxRatePer/time.Microsecond) + 1 // Validate names it
	}
	r := Rate{Limit: int(n[0]), Per: time.Duration(n[1]) * time.Microsecond, Burst: int(n[2])}
	return r, r.Validate()
}

// FormatQuota renders a quota as stored in the policy hash: "<limit>,<window>".
func FormatQuota(q Quota) string {
	return fmt.Sprintf("%d,%s", q.Limit, q.Window)
}

// ParseQuota reads a stored quota (FormatQuota) and validates it.
func ParseQuota(text string) (Quota, error) {
	limit, window, ok := strings.Cut(text, ",")
	if !ok {
		return Quota{}, fmt.Errorf("%w quota %s: want limit,window", ErrInvalid, Quote(text))
	}
	n, err := strconv.ParseInt(limit, 10, 64)
	if err != nil {
		return Quota{}, fmt.Errorf("%w quota limit %s: not an integer", ErrInvalid, Quote(limit))
	}
	w, err := ParseWindow(window)
	if err != nil {
		return Quota{}, err
	}
	q := Quota{Limit: n, Window: w}
	return q, q.Validate()
}

// ResolveRate returns the rate that applies to the action ref and the scope
// it came from; ok is false when no scope sets one (no throttle). It is
// resolved independently of the concurrency limit and the quota.
func (p Policies) ResolveRate(ref string) (rate Rate, source Scope, ok bool) {
	for _, s := range []Scope{Action(ref), Pack(PackOf(ref)), Global()} {
		if r, found := p.Rates[s]; found {
			return r, s, true
		}
	}
	return Rate{}, Scope{}, false
}

// ResolveQuota returns the quota that applies to the action ref and the
// scope it came from; ok is false when no scope sets one (no quota). It is
// resolved independently of the concurrency limit and the rate.
func (p Policies) ResolveQuota(ref string) (quota Quota, source Scope, ok bool) {
	for _, s := range []Scope{Action(ref), Pack(PackOf(ref)), Global()} {
		if q, found := p.Quotas[s]; found {
			return q, s, true
		}
	}
	return Quota{}, Scope{}, false
}
