package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"

	"github.com/batonhq/baton/limits"
)

const policyBodyShape = `want a JSON object such as {"max_concurrent": 3}`

// decodePolicyBody reads a PUT /api/v1/policies body: exactly one JSON
// object whose only field is max_concurrent, spelled exactly so (encoding/json
// alone would accept "MAX_CONCURRENT", a second value after the object, and
// its own Go-flavoured messages). Errors are in the API's words.
func decodePolicyBody(body []byte) (int, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return 0, bodyError(err)
	}
	inside := func(err error) error { // the object has begun: EOF means it ends early
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return bodyError(err)
	}
	if tok != json.Delim('{') {
		return 0, badRequest("body: %s; got %s", policyBodyShape, describe(tok))
	}
	var raw json.RawMessage
	seen := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return 0, inside(err)
		}
		name, _ := tok.(string)
		if name != "max_concurrent" {
			return 0, badRequest("body: unknown field %s; the only field is max_concurrent", quote(name))
		}
		if seen {
			return 0, badRequest("body: max_concurrent appears twice")
		}
		seen = true
		if err := dec.Decode(&raw); err != nil {
			return 0, inside(err)
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return 0, inside(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		if err == nil || isSyntax(err) {
			return 0, badRequest("body: data after the JSON object; send one object only")
		}
		return 0, bodyError(err)
	}
	if !seen {
		return 0, badRequest("body: max_concurrent is missing; %s", policyBodyShape)
	}
	return parseMaxConcurrent(raw)
}

// parseMaxConcurrent reads the value of max_concurrent: a whole number.
func parseMaxConcurrent(raw json.RawMessage) (int, error) {
	bad := func(got string) error {
		return badRequest("max_concurrent: want a whole number from 0 to %d, or -1 (unlimited); got %s",
			limits.MaxLimit, got)
	}
	text := string(raw)
	if text == "" || !strings.ContainsAny(text[:1], "-0123456789") {
		var v any
		_ = json.Unmarshal(raw, &v)
		return 0, bad(describe(v))
	}
	n, err := strconv.ParseInt(text, 10, 64)
	if err != nil {
		var numErr *strconv.NumError
		if errors.As(err, &numErr) && numErr.Err == strconv.ErrRange {
			return 0, bad(quote(text))
		}
		return 0, bad("the number " + quote(text))
	}
	if err := limits.ValidateLimit(int(n)); err != nil || int64(int(n)) != n {
		return 0, bad(quote(text))
	}
	return int(n), nil
}

// bodyError turns a decoding error into the API's words.
func bodyError(err error) error {
	var syntax *json.SyntaxError
	switch {
	case err == io.EOF:
		return badRequest("body: empty; %s", policyBodyShape)
	case err == io.ErrUnexpectedEOF:
		return badRequest("body: the JSON ends early; %s", policyBodyShape)
	case errors.As(err, &syntax):
		return badRequest("body: not valid JSON at byte %d; %s", syntax.Offset, policyBodyShape)
	}
	return badRequest("body: %s", policyBodyShape)
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
