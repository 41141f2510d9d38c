package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const (
	acquireBodyShape = `want a JSON object such as {"wait": "30s"}, or no body`
	tokenBodyShape   = `want a JSON object such as {"token": 42}`
)

// readBody reads a whole request body: a body over the limit is a 413
// whatever it holds.
func readBody(r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(r.Body)
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return nil, err
	}
	if err != nil {
		return nil, badRequest("body: could not be read: %v", err)
	}
	return body, nil
}

// readAcquireBody reads an acquire body: nothing, or {"wait": "<duration>"}.
func readAcquireBody(r *http.Request) (time.Duration, error) {
	body, err := readBody(r)
	if err != nil {
		return 0, err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return DefaultAcquireWait, nil
	}
	fields, err := decodeFields(body, acquireBodyShape, "wait")
	if err != nil {
		return 0, err
	}
	raw, ok := fields["wait"]
	if !ok {
		return DefaultAcquireWait, nil
	}
	bad := func(got string) error {
		return badRequest(`wait: want a duration from "0s" to "%s", such as "30s" or "500ms"; got %s`, MaxAcquireWait, got)
	}
	var text string
	if err := json.Unmarshal(raw, &text); err != nil {
		var v any
		_ = json.Unmarshal(raw, &v)
		return 0, bad(describe(v))
	}
	d, err := time.ParseDuration(text)
	if err != nil || d < 0 || d > MaxAcquireWait {
		return 0, bad(quote(text))
	}
	return d, nil
}

// readTokenBody reads a heartbeat or release body: {"token": <fencing token>}.
func readTokenBody(r *http.Request) (int64, error) {
	body, err := readBody(r)
	if err != nil {
		return 0, err
	}
	fields, err := decodeFields(body, tokenBodyShape, "token")
	if err != nil {
		return 0, err
	}
	raw, ok := fields["token"]
	if !ok {
		return 0, badRequest("body: token is missing; %s", tokenBodyShape)
	}
	text := string(raw)
	n, err := strconv.ParseInt(text, 10, 64)
	if err != nil || n < 1 {
		if text == "" || !strings.ContainsAny(text[:1], "-0123456789") {
			var v any
			_ = json.Unmarshal(raw, &v)
			text = describe(v)
		} else {
			text = quote(text)
		}
		return 0, badRequest("token: want the fencing token from acquire, a whole number from 1; got %s", text)
	}
	return n, nil
}

// decodeFields reads exactly one JSON object whose fields are among names,
// each at most once, spelled exactly so; errors are in the API's words.
func decodeFields(body []byte, shape string, names ...string) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	fail := func(err error) error {
		var syntax *json.SyntaxError
		switch {
		case err == io.EOF:
			return badRequest("body: empty; %s", shape)
		case err == io.ErrUnexpectedEOF:
			return badRequest("body: the JSON ends early; %s", shape)
		case errors.As(err, &syntax):
			return badRequest("body: not valid JSON at byte %d; %s", syntax.Offset, shape)
		}
		return badRequest("body: %s", shape)
	}
	inside := func(err error) error {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return fail(err)
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, fail(err)
	}
	if tok != json.Delim('{') {
		return nil, badRequest("body: %s; got %s", shape, describe(tok))
	}
	out := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, inside(err)
		}
		name, _ := tok.(string)
		known := false
		for _, n := range names {
			known = known || n == name
		}
		if !known {
			return nil, badRequest("body: unknown field %s; the fields are %s", quote(name), strings.Join(names, ", "))
		}
		if _, seen := out[name]; seen {
			return nil, badRequest("body: %s appears twice", name)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, inside(err)
		}
		out[name] = raw
	}
	if _, err := dec.Token(); err != nil {
		return nil, inside(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		if err == nil || isSyntax(err) {
			return nil, badRequest("body: data after the JSON object; send one object only")
		}
		return nil, fail(err)
	}
	return out, nil
}
