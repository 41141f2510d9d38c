package limits

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The short forms operators type (command line, config file, environment):
// a rate is "LIMIT/PER" such as "100/1m" and a quota "LIMIT/WINDOW" such as
// "10000/day". They are not the stored forms (FormatRate, FormatQuota).

// FormatPer renders a rate period compactly: "1m" rather than "1m0s", "1h"
// rather than "1h0m0s". ParsePer reads it back.
func FormatPer(d time.Duration) string {
	s := d.String()
	if t, ok := strings.CutSuffix(s, "m0s"); ok {
		s = t + "m"
	}
	if t, ok := strings.CutSuffix(s, "h0m"); ok {
		s = t + "h"
	}
	return s
}

// ParsePer reads a rate period, a Go duration such as "1s", "1m", "1h" or
// "24h", and checks its bounds; errors name the field "rate per".
func ParsePer(text string) (time.Duration, error) {
	d, err := time.ParseDuration(text)
	if err != nil {
		return 0, fmt.Errorf("%w rate per %s: want a duration such as 1s, 1m, 1h or 24h", ErrInvalid, Quote(text))
	}
	r := Rate{Per: d}
	if err := r.Validate(); err != nil {
		return 0, err
	}
	return d, nil
}

// ParseRateSpec reads "LIMIT/PER" ("100/1m", "5/1s") into a Rate with the
// given burst, validated.
func ParseRateSpec(text string, burst int) (Rate, error) {
	limit, per, ok := strings.Cut(text, "/")
	if !ok {
		return Rate{}, fmt.Errorf("%w rate %s: want LIMIT/PER such as 100/1m", ErrInvalid, Quote(text))
	}
	n, err := strconv.Atoi(limit)
	if err != nil {
		return Rate{}, fmt.Errorf("%w rate limit %s: want a whole number from 0 to %d", ErrInvalid, Quote(limit), MaxLimit)
	}
	d, err := ParsePer(per)
	if err != nil {
		return Rate{}, err
	}
	r := Rate{Limit: n, Per: d, Burst: burst}
	return r, r.Validate()
}

// RateSpec renders a rate as ParseRateSpec reads it, burst apart: "100/1m".
func RateSpec(r Rate) string { return fmt.Sprintf("%d/%s", r.Limit, FormatPer(r.Per)) }

// ParseQuotaSpec reads "LIMIT/WINDOW" ("10000/day"; the window is minute,
// hour or day) into a Quota, validated.
func ParseQuotaSpec(text string) (Quota, error) {
	limit, window, ok := strings.Cut(text, "/")
	if !ok {
		return Quota{}, fmt.Errorf("%w quota %s: want LIMIT/WINDOW such as 10000/day", ErrInvalid, Quote(text))
	}
	n, err := strconv.ParseInt(limit, 10, 64)
	if err != nil {
		return Quota{}, fmt.Errorf("%w quota limit %s: want a whole number from 0 to %d", ErrInvalid, Quote(limit), int64(MaxQuota))
	}
	w, err := ParseWindow(window)
	if err != nil {
		return Quota{}, err
	}
	q := Quota{Limit: n, Window: w}
	return q, q.Validate()
}
