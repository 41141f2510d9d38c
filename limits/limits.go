// Package limits names the scopes a policy can be set on (global, pack,
// action), the policies (a concurrency limit, a Rate, a Quota), and resolves
// the ones that apply to an action: for each kind, the most specific scope
// that sets one wins (action > pack > global); with none set the action is
// unlimited, unthrottled and has no quota.
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
		return Scope{}, fmt.Errorf("%w scope %s: want global, pack:NAME or action:REF", ErrInvalid, Quote(text))
	}
	return s, s.Validate()
}

// ValidateRef checks an action ref: "pack.action", at most MaxRefLength
// bytes of valid UTF-8, neither part empty, no control or invisible
// formatting characters (see ValidateExecutionID), no leading or trailing
// space.
func ValidateRef(ref string) error {
	if ref == "" {
		return fmt.Errorf("%w action ref: empty", ErrInvalid)
	}
	if len(ref) > MaxRefLength {
		return fmt.Errorf("%w action ref: %d bytes, over the %d-byte maximum", ErrInvalid, len(ref), MaxRefLength)
	}
	if err := checkText(ref); err != nil {
		return fmt.Errorf("%w action ref %s: %v", ErrInvalid, Quote(ref), err)
	}
	pack, name, ok := strings.Cut(ref, ".")
	if !ok || pack == "" {
		return fmt.Errorf("%w action ref %s: no pack; want pack.action", ErrInvalid, Quote(ref))
	}
	if name == "" {
		return fmt.Errorf("%w action ref %s: empty action name; want pack.action", ErrInvalid, Quote(ref))
	}
	return nil
}

// ValidatePack checks a pack name: non-empty, at most MaxRefLength bytes,
// no ".", and the same characters as ValidateRef.
func ValidatePack(name string) error {
	if name == "" {
		return fmt.Errorf("%w pack name: empty", ErrInvalid)
	}
	if len(name) > MaxRefLength {
		return fmt.Errorf("%w pack name: %d bytes, over the %d-byte maximum", ErrInvalid, len(name), MaxRefLength)
	}
	if err := checkText(name); err != nil {
		return fmt.Errorf("%w pack name %s: %v", ErrInvalid, Quote(name), err)
	}
	if strings.Contains(name, ".") {
		return fmt.Errorf("%w pack name %s: contains '.'", ErrInvalid, Quote(name))
	}
	return nil
}

// ValidateExecutionID checks an execution ID: non-empty, at most
// MaxRefLength bytes of valid UTF-8, with no control characters (Unicode
// category Cc), no invisible formatting or direction-changing characters
// (category Cf: U+200B zero width space, U+202E right-to-left override, the
// other bidi controls, U+FEFF, ...), no line or paragraph separators, and no
// leading or trailing space. Such characters make two IDs that look the
// same differ, or make a log line read differently from what it holds.
func ValidateExecutionID(id string) error {
	if id == "" {
		return fmt.Errorf("%w execution ID: empty", ErrInvalid)
	}
	if len(id) > MaxRefLength {
		return fmt.Errorf("%w execution ID: %d bytes, over the %d-byte maximum", ErrInvalid, len(id), MaxRefLength)
	}
	if err := checkText(id); err != nil {
		return fmt.Errorf("%w execution ID %s: %v", ErrInvalid, Quote(id), err)
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

// checkText reports the first character of s that a name must not hold,
// naming it and its byte offset.
func checkText(s string) error {
	for i, r := range s {
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD"):
			return fmt.Errorf("not valid UTF-8: byte 0x%02x at byte %d", s[i], i)
		case unicode.Is(unicode.Cc, r):
			return fmt.Errorf("control character %s at byte %d", runeName(r), i)
		case unicode.Is(unicode.Cf, r):
			return fmt.Errorf("invisible formatting character %s at byte %d", runeName(r), i)
		case unicode.In(r, unicode.Zl, unicode.Zp):
			return fmt.Errorf("line separator %s at byte %d", runeName(r), i)
		case unicode.IsSpace(r) && i == 0:
			return fmt.Errorf("leading space %s at byte %d", runeName(r), i)
		case unicode.IsSpace(r) && i+utf8.RuneLen(r) == len(s):
			return fmt.Errorf("trailing space %s at byte %d", runeName(r), i)
		}
	}
	return nil
}

// runeNames names the characters people most often paste by accident.
var runeNames = map[rune]string{
	'\t': "TAB", '\n': "LINE FEED", '\r': "CARRIAGE RETURN", ' ': "SPACE", 0xa0: "NO-BREAK SPACE",
	0xad: "SOFT HYPHEN", 0x61c: "ARABIC LETTER MARK", 0x200b: "ZERO WIDTH SPACE",
	0x200c: "ZERO WIDTH NON-JOINER", 0x200d: "ZERO WIDTH JOINER", 0x200e: "LEFT-TO-RIGHT MARK",
	0x200f: "RIGHT-TO-LEFT MARK", 0x2028: "LINE SEPARATOR", 0x2029: "PARAGRAPH SEPARATOR",
	0x202a: "LEFT-TO-RIGHT EMBEDDING", 0x202b: "RIGHT-TO-LEFT EMBEDDING", 0x202c: "POP DIRECTIONAL FORMATTING",
	0x202d: "LEFT-TO-RIGHT OVERRIDE", 0x202e: "RIGHT-TO-LEFT OVERRIDE", 0x2060: "WORD JOINER",
	0x2066: "LEFT-TO-RIGHT ISOLATE", 0x2067: "RIGHT-TO-LEFT ISOLATE", 0x2068: "FIRST STRONG ISOLATE",
	0x2069: "POP DIRECTIONAL ISOLATE", 0x3000: "IDEOGRAPHIC SPACE", 0xfeff: "ZERO WIDTH NO-BREAK SPACE (BOM)",
}

func runeName(r rune) string {
	if name, ok := runeNames[r]; ok {
		return fmt.Sprintf("%U (%s)", r, name)
	}
	return fmt.Sprintf("%U", r)
}

// Policies is a snapshot of every policy set, as stored in Redis. Each kind
// (concurrency limit, rate, quota) is resolved on its own: the most
// specific scope that sets that kind applies to the action. A pack or
// global setting is a per-action default, not a budget the actions of the
// pack share.
type Policies struct {
	// Version increases with every change; actions adopt only newer versions.
	Version int64
	// Limits maps each scope that sets a concurrency limit to it.
	Limits map[Scope]int
	// Rates maps each scope that sets a rate (throttle) to it.
	Rates map[Scope]Rate
	// Quotas maps each scope that sets a quota to it.
	Quotas map[Scope]Quota
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
		return 0, fmt.Errorf("%w limit %s: not an integer", ErrInvalid, Quote(text))
	}
	return n, ValidateLimit(n)
}
