package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/batonhq/baton/limits"
)

const policyBodyShape = `want a JSON object such as {"max_concurrent": 3}, ` +
	`{"rate": {"limit": 100, "per": "1m", "burst": 10}} or {"quota": {"limit": 10000, "window": "day"}}`

// policyBody is a checked PUT /api/v1/policies body: the kinds it sets
// (nil: left as they are).
type policyBody struct {
	maxConcurrent *int
	rate          *limits.Rate
	quota         *limits.Quota
}

// Field names of the policy body and its nested objects.
var (
	policyFields = []string{"max_concurrent", "rate", "quota"}
	rateFields   = []string{"limit", "per", "burst"}
	quotaFields  = []string{"limit", "window"}
)

// decodePolicyBody reads a PUT /api/v1/policies body: exactly one JSON
// object with one or more of max_concurrent, rate and quota, each spelled
// exactly so and given once (encoding/json alone would accept
// "MAX_CONCURRENT", a second value after the object, and its own
// Go-flavoured messages). Every field is checked before anything is
// written. Errors are in the API's words and name the field.
func decodePolicyBody(body []byte) (policyBody, error) {
	var out policyBody
	fields, err := strictObject(body, "body", policyFields, policyBodyShape)
	if err != nil {
		return out, err
	}
	if len(fields) == 0 {
		return out, badRequest("body: none of max_concurrent, rate and quota is given; %s", policyBodyShape)
	}
	if raw, ok := fields["max_concurrent"]; ok {
		n, err := parseMaxConcurrent(raw)
		if err != nil {
			return out, err
		}
		out.maxConcurrent = &n
	}
	if raw, ok := fields["rate"]; ok {
		r, err := parseRate(raw)
		if err != nil {
			return out, err
		}
		out.rate = &r
	}
	if raw, ok := fields["quota"]; ok {
		q, err := parseQuota(raw)
		if err != nil {
			return out, err
		}
		out.quota = &q
	}
	return out, nil
}

// strictObject reads exactly one JSON object from data whose fields are
// among allowed, each at most once, and returns their raw values. where
// names the object in errors ("body", "rate"); shape says what is wanted.
func strictObject(data []byte, where string, allowed []string, shape string) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, bodyError(where, shape, err)
	}
	inside := func(err error) error { // the object has begun: EOF means it ends early
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return bodyError(where, shape, err)
	}
	if tok != json.Delim('{') {
		return nil, badRequest("%s: %s; got %s", where, shape, describe(tok))
	}
	fields := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, inside(err)
		}
		name, _ := tok.(string)
		if !contains(allowed, name) {
			return nil, badRequest("%s: unknown field %s; the fields are %s", where, quote(name), listWords(allowed))
		}
		if _, seen := fields[name]; seen {
			return nil, badRequest("%s: %s appears twice", where, fieldPath(where, name))
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, inside(err)
		}
		fields[name] = raw
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, inside(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		if err == nil || isSyntax(err) {
			return nil, badRequest("%s: data after the JSON object; send one object only", where)
		}
		return nil, bodyError(where, shape, err)
	}
	return fields, nil
}

// fieldPath names a field of a nested object as "rate.limit"; the body's
// own fields are named bare.
func fieldPath(where, name string) string {
	if where == "body" {
		return name
	}
	return where + "." + name
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// listWords renders ["a", "b", "c"] as "a, b and c".
func listWords(words []string) string {
	if len(words) == 1 {
		return words[0]
	}
	return strings.Join(words[:len(words)-1], ", ") + " and " + words[len(words)-1]
}

// parseMaxConcurrent reads the value of max_concurrent: a whole number.
func parseMaxConcurrent(raw json.RawMessage) (int, error) {
	n, err := parseWhole(raw, "max_concurrent", limits.Unlimited, limits.MaxLimit, ", or -1 (unlimited)")
	return int(n), err
}

// parseWhole reads a whole JSON number from lo to hi; lo below 0 is only
// ever -1, spelled out by extra.
func parseWhole(raw json.RawMessage, field string, lo, hi int64, extra string) (int64, error) {
	bad := func(got string) error {
		return badRequest("%s: want a whole number from %d to %d%s; got %s", field, max(lo, 0), hi, extra, got)
	}
	text := string(raw)
	if text == "" || !strings.ContainsAny(text[:1], "-0123456789") {
		return 0, bad(describe(decodeAny(raw)))
	}
	n, err := strconv.ParseInt(text, 10, 64)
	if err != nil {
		var numErr *strconv.NumError
		if errors.As(err, &numErr) && numErr.Err == strconv.ErrRange {
			return 0, bad(quote(text))
		}
		return 0, bad("the number " + quote(text))
	}
	if n < lo || n > hi {
		return 0, bad(quote(text))
	}
	return n, nil
}

const (
	rateShape  = `want an object such as {"limit": 100, "per": "1m", "burst": 10}`
	quotaShape = `want an object such as {"limit": 10000, "window": "day"}`
)

// parseRate reads the value of rate: {"limit": N, "per": "1m", "burst": N};
// burst may be left out (0: no burst).
func parseRate(raw json.RawMessage) (limits.Rate, error) {
	fields, err := strictObject(raw, "rate", rateFields, rateShape)
	if err != nil {
		return limits.Rate{}, err
	}
	for _, name := range []string{"limit", "per"} {
		if _, ok := fields[name]; !ok {
			return limits.Rate{}, badRequest("rate.%s is missing; %s", name, rateShape)
		}
	}
	var r limits.Rate
	n, err := parseWhole(fields["limit"], "rate.limit", 0, limits.MaxLimit, "")
	if err != nil {
		return r, err
	}
	r.Limit = int(n)
	if r.Per, err = parsePer(fields["per"]); err != nil {
		return r, err
	}
	if b, ok := fields["burst"]; ok {
		if n, err = parseWhole(b, "rate.burst", 0, limits.MaxLimit, ""); err != nil {
			return r, err
		}
		r.Burst = int(n)
	}
	return r, nil
}

// parsePer reads rate.per: a duration string from 1ms to 366 days.
func parsePer(raw json.RawMessage) (time.Duration, error) {
	v := decodeAny(raw)
	text, ok := v.(string)
	d, err := time.ParseDuration(text)
	if !ok || err != nil || d < limits.MinRatePer || d > limits.MaxRatePer {
		got := describe(v)
		if ok {
			got = quote(text)
		}
		return 0, badRequest("rate.per: want a duration from %s to %s such as \"1s\", \"1m\" or \"1h\"; got %s",
			limits.FormatPer(limits.MinRatePer), limits.FormatPer(limits.MaxRatePer), got)
	}
	return d, nil
}

// parseQuota reads the value of quota: {"limit": N, "window": "day"}.
func parseQuota(raw json.RawMessage) (limits.Quota, error) {
	fields, err := strictObject(raw, "quota", quotaFields, quotaShape)
	if err != nil {
		return limits.Quota{}, err
	}
	for _, name := range quotaFields {
		if _, ok := fields[name]; !ok {
			return limits.Quota{}, badRequest("quota.%s is missing; %s", name, quotaShape)
		}
	}
	var q limits.Quota
	if q.Limit, err = parseWhole(fields["limit"], "quota.limit", 0, limits.MaxQuota, ""); err != nil {
		return q, err
	}
	v := decodeAny(fields["window"])
	text, ok := v.(string)
	if q.Window, err = limits.ParseWindow(text); !ok || err != nil {
		got := describe(v)
		if ok {
			got = quote(text)
		}
		return q, badRequest("quota.window: want \"minute\", \"hour\" or \"day\"; got %s", got)
	}
	return q, nil
}

// decodeAny decodes one JSON value for describe, numbers as json.Number
// (so that a message quotes them as sent).
func decodeAny(raw json.RawMessage) any {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	_ = dec.Decode(&v)
	return v
}

// bodyError turns a decoding error into the API's words.
func bodyError(where, shape string, err error) error {
	var syntax *json.SyntaxError
	switch {
	case err == io.EOF:
		return badRequest("%s: empty; %s", where, shape)
	case err == io.ErrUnexpectedEOF:
		return badRequest("%s: the JSON ends early; %s", where, shape)
	case errors.As(err, &syntax):
		return badRequest("%s: not valid JSON at byte %d; %s", where, syntax.Offset, shape)
	}
	return badRequest("%s: %s", where, shape)
}

func isSyntax(err error) bool {
	var syntax *json.SyntaxError
	return errors.As(err, &syntax)
}

// describe names the kind of a decoded JSON value for an error message.
func describe(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case bool:
		return "true or false"
	case string:
		return "the string " + quote(v)
	case json.Number:
		return "the number " + quote(string(v))
	case float64:
		return "a number"
	case json.Delim:
		switch v {
		case '[':
			return "an array"
		case '{':
			return "an object"
		}
		return "a " + quote(v.String())
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return "something else"
}

// quote quotes s for an error message, at most its first 64 bytes.
func quote(s string) string { return limits.Quote(s) }
