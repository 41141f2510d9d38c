package scripts

import (
	"fmt"
	"strconv"
)

// reply checks the shape of one script's reply. Every script's reply goes
// through one of these, so a reply of the wrong shape is an error naming the
// script and what came back, never a panic.
type reply struct {
	script string
	vals   []any
	err    error
}

func newReply(script string, v any, minLen int) *reply {
	r := &reply{script: script}
	vals, ok := v.([]any)
	if !ok {
		r.err = fmt.Errorf("baton: %s: reply is %T (%v), want an array", script, v, v)
		return r
	}
	if len(vals) < minLen {
		r.err = fmt.Errorf("baton: %s: reply has %d elements, want at least %d: %v", script, len(vals), minLen, vals)
		return r
	}
	r.vals = vals
	return r
}

func (r *reply) str(i int) string {
	if r.err != nil {
		return ""
	}
	switch v := r.vals[i].(type) {
	case string:
		return v
	case int64:
		return strconv.FormatInt(v, 10)
	}
	r.err = fmt.Errorf("baton: %s: reply element %d is %T (%v), want a string", r.script, i, r.vals[i], r.vals[i])
	return ""
}

func (r *reply) int(i int) int64 {
	if r.err != nil {
		return 0
	}
	switch v := r.vals[i].(type) {
	case int64:
		return v
	case string:
		n, err := strconv.ParseInt(v, 10, 64)
		if err == nil {
			return n
		}
	}
	r.err = fmt.Errorf("baton: %s: reply element %d is %T (%v), want an integer", r.script, i, r.vals[i], r.vals[i])
	return 0
}

// pairs reads element i as a flat field/value list (HGETALL inside Lua).
func (r *reply) pairs(i int) map[string]string {
	out := map[string]string{}
	if r.err != nil {
		return out
	}
	list, ok := r.vals[i].([]any)
	if !ok || len(list)%2 != 0 {
		r.err = fmt.Errorf("baton: %s: reply element %d is %T (%v), want field/value pairs", r.script, i, r.vals[i], r.vals[i])
		return out
	}
	for j := 0; j < len(list); j += 2 {
		k, ok1 := list[j].(string)
		v, ok2 := list[j+1].(string)
		if !ok1 || !ok2 {
			r.err = fmt.Errorf("baton: %s: reply element %d has a non-string pair %v=%v", r.script, i, list[j], list[j+1])
			return out
		}
		out[k] = v
	}
	return out
}

func (r *reply) tail(from int) []string {
	var out []string
	for i := from; i < len(r.vals) && r.err == nil; i++ {
		out = append(out, r.str(i))
	}
	return out
}
