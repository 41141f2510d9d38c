// Package limits names the scopes a concurrency limit can be set on (global,
// pack, action) and resolves the limit that applies to an action: the most
// specific scope that sets one wins (action > pack > global); with none set
// the action is unlimited.
package limits

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Unlimited is the limit of an action that no scope limits. Setting it on a
// scope explicitly lifts the limits of the less specific scopes.
const Unlimited = -1

// MaxRefLength is the longest action ref, in bytes.
const MaxRefLength = 255

// MaxLimit is the largest limit a scope can hold. Limits pass through Lua,
// whose numbers are doubles, so a bound is needed for every limit to read
// back exactly; a billion concurrent executions is beyond any real fleet.
const MaxLimit = 1_000_000_000

// ErrInvalid is wrapped by every validation error of this package.
var ErrInvalid = errors.New("limits: invalid")

// Kind is the kind of a scope.
type Kind int

// The kinds of scope, from least to most specific.
const (
	KindGlobal Kind = iota + 1
	KindPack
	KindAction
)

// Scope is where a limit is set: everywhere, on one pack, or on one action.
// The zero Scope is invalid.
type Scope struct {
	kind Kind
	name string
}

// Global is the scope of every action.
func Global() Scope { return Scope{kind: KindGlobal} }

// Pack is the scope of every action of one pack ("core" for "core.http").
func Pack(name string) Scope { return Scope{kind: KindPack, name: name} }

// Action is the scope of one action ref ("core.http").
func Action(ref string) Scope { return Scope{kind: KindAction, name: ref} }

// Kind reports the scope's kind.
func (s Scope) Kind() Kind { return s.kind }

// Name is the pack name or action ref; "" for the global scope.
func (s Scope) Name() string { return s.name }

// String renders the scope as "global", "pack:NAME" or "action:REF", the form
// ParseScope reads and the form stored in Redis.
func (s Scope) String() string {
	switch s.kind {
	case KindGlobal:
		return "global"
	case KindPack:
		return "pack:" + s.name
	case KindAction:
		return "action:" + s.name
	}
	return "invalid"
}

// Validate reports why a scope cannot hold a limit, or nil.
func (s Scope) Validate() error {
	switch s.kind {
	case KindGlobal:
		return nil
	case KindPack:
		return ValidatePack(s.name)
	case KindAction:
		return ValidateRef(s.name)
	}
	return fmt.Errorf("%w scope: the zero Scope; use Global, Pack or Action", ErrInvalid)
}

// ParseScope reads "global", "pack:NAME" or "action:REF".
func ParseScope(text string) (Scope, error) {
	var s Scope
	switch {
	case text == "global":
		s = Global()
	case strings.HasPrefix(text, "pack:"):
		s = Pack(strings.TrimPrefix(text, "pack:"))
	case strings.HasPrefix(text, "action:"):
		s = Action(strings.TrimPrefix(text, "action:"))
	default:
		return Scope{}, fmt.Errorf("%w scope %q: want global, pack:NAME or action:REF", ErrInvalid, text)
	}
	return s, s.Validate()
}

// ValidateRef checks an action ref: "pack.action", at most MaxRefLength
// bytes, valid UTF-8, no control characters, neither part empty.
func ValidateRef(ref string) error {
	if ref == "" {
		return fmt.Errorf("%w action ref: empty", ErrInvalid)
	}
	if len(ref) > MaxRefLength {
		return fmt.Errorf("%w action ref: %d bytes, over the %d-byte maximum", ErrInvalid, len(ref), MaxRefLength)
	}
	if err := printable(ref); err != nil {
		return fmt.Errorf("%w action ref %q: %v", ErrInvalid, ref, err)
	}
	pack, name, ok := strings.Cut(ref, ".")
	if !ok || pack == "" {
		return fmt.Errorf("%w action ref %q: no pack; want pack.action", ErrInvalid, ref)
	}
	if name == "" {
		return fmt.Errorf("%w action ref %q: empty action name; want pack.action", ErrInvalid, ref)
	}
	return nil
}

// ValidatePack checks a pack name: non-empty, no ".", no control characters.
func ValidatePack(name string) error {
	if name == "" {
		return fmt.Errorf("%w pack name: empty", ErrInvalid)
	}
	if len(name) > MaxRefLength {
		return fmt.Errorf("%w pack name: %d bytes, over the %d-byte maximum", ErrInvalid, len(name), MaxRefLength)
	}
	if strings.Contains(name, ".") {
		return fmt.Errorf("%w pack name %q: contains '.'", ErrInvalid, name)
	}
	if err := printable(name); err != nil {
		return fmt.Errorf("%w pack name %q: %v", ErrInvalid, name, err)
	}
	return nil
}

// ValidateLimit checks a limit: a count from 0 to MaxLimit, or Unlimited.
func ValidateLimit(n int) error {
	if n < Unlimited {
		return fmt.Errorf("%w limit %d: negative; use a count from 0 to %d, or -1 (unlimited)", ErrInvalid, n, MaxLimit)
	}
	if n > MaxLimit {
		return fmt.Errorf("%w limit %d: over the maximum of %d; use a count from 0 to %d, or -1 (unlimited)",
			ErrInvalid, n, MaxLimit, MaxLimit)
	}
	return nil
}

// QuoteMax is the most bytes of an input that Quote shows.
const QuoteMax = 64

// Quote quotes an input for an error message: the whole of a short one, the
// first QuoteMax bytes and the total length of a longer one, so that a
// message never echoes a huge input back.
func Quote(s string) string {
	if len(s) <= QuoteMax {
		return strconv.Quote(s)
	}
	cut := QuoteMax
	for cut > QuoteMax-utf8.UTFMax && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s... (%d bytes)", strconv.Quote(s[:cut]), len(s))
}

// PackOf returns the pack of a valid action ref ("core" for "core.http").
func PackOf(ref string) string {
	pack, _, _ := strings.Cut(ref, ".")
	return pack
}

func printable(s string) error {
	if !utf8.ValidString(s) {
		return errors.New("not valid UTF-8")
	}
	for i, r := range s {
		if unicode.IsControl(r) {
			return fmt.Errorf("control character %U at byte %d", r, i)
		}
	}
	return nil
}

// Policies is a snapshot of every limit set, as stored in Redis.
type Policies struct {
	// Version increases with every change; actions adopt only newer versions.
	Version int64
	// Limits maps each scope that sets a limit to it.
	Limits map[Scope]int
}

// Resolve returns the limit that applies to the action ref and the scope it
// came from; ok is false when no scope sets one (the action is Unlimited).
func (p Policies) Resolve(ref string) (limit int, source Scope, ok bool) {
	for _, s := range []Scope{Action(ref), Pack(PackOf(ref)), Global()} {
		if n, found := p.Limits[s]; found {
			return n, s, true
		}
	}
	return Unlimited, Scope{}, false
}

// Source renders where a resolved limit came from: a scope's String, or
// "default" when no scope sets one.
func Source(s Scope, ok bool) string {
	if !ok {
		return "default"
	}
	return s.String()
}

// ParseLimit reads a stored limit value.
func ParseLimit(text string) (int, error) {
	n, err := strconv.Atoi(text)
	if err != nil {
		return 0, fmt.Errorf("%w limit %q: not an integer", ErrInvalid, text)
	}
	return n, ValidateLimit(n)
}
