package coordinator_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/limits"
)

// TestBadInput: every malformed argument gets ErrInvalidArgument naming the
// problem, and Redis holds no new key afterwards.
func TestBadInput(t *testing.T) {
	long := strings.Repeat("a", 250) + ".bcdef"
	cases := []struct {
		name, action, id, want string
		call                   string // enqueue (default), notify, cancel, state, stats
	}{
		{name: "empty ref", action: "", id: "e1", want: "empty"},
		{name: "ref without pack", action: "http", id: "e1", want: "no pack"},
		{name: "ref with empty pack", action: ".http", id: "e1", want: "no pack"},
		{name: "ref with empty action", action: "core.", id: "e1", want: "empty action name"},
		{name: "ref over 255 bytes", action: long, id: "e1", want: "over the 255-byte maximum"},
		{name: "ref with control char", action: "core.ht\ntp", id: "e1", want: "control character"},
		{name: "empty id", action: "core.http", id: "", want: "execution ID: empty"},
		{name: "id over 255 bytes", action: "core.http", id: strings.Repeat("x", 256), want: "over the 255-byte maximum"},
		{name: "id with NUL", action: "core.http", id: "a\x00b", want: "control character"},
		{name: "id with newline", action: "core.http", id: "a\nb", want: "control character"},
		{name: "id with DEL", action: "core.http", id: "a\x7fb", want: "control character"},
		{name: "notify bad id", action: "core.http", id: "", want: "empty", call: "notify"},
		{name: "cancel bad ref", action: "nopack", id: "e1", want: "no pack", call: "cancel"},
		{name: "state bad id", action: "core.http", id: "\t", want: "control character", call: "state"},
		{name: "stats bad ref", action: "", want: "empty", call: "stats"},
	}
	tiers(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		c := e.coordinator(e.opts())
		before := e.keys()
		for _, tc := range cases {
			var err error
			switch tc.call {
			case "notify":
				_, err = c.NotifyCompletion(ctx, tc.action, tc.id)
			case "cancel":
				_, err = c.CancelExecution(ctx, tc.action, tc.id)
			case "state":
				_, err = c.ExecutionState(ctx, tc.action, tc.id)
			case "stats":
				_, err = c.QueueStats(ctx, tc.action)
			default:
				_, err = c.EnqueueAndWait(ctx, tc.action, tc.id)
			}
			if !errors.Is(err, coordinator.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: got %v, want ErrInvalidArgument mentioning %q", tc.name, err, tc.want)
			}
		}
		limitCases := []struct {
			scope limits.Scope
			n     int
			want  string
		}{
			{limits.Action("core.http"), -2, "negative"},
			{limits.Global(), -100, "negative"},
			{limits.Pack(""), 1, "pack name: empty"},
			{limits.Pack("a.b"), 1, "contains '.'"},
			{limits.Action("nopack"), 1, "no pack"},
			{limits.Scope{}, 1, "zero Scope"},
		}
		for _, lc := range limitCases {
			err := c.SetConcurrencyLimit(ctx, lc.scope, lc.n)
			if !errors.Is(err, coordinator.ErrInvalidArgument) || !strings.Contains(err.Error(), lc.want) {
				t.Errorf("SetConcurrencyLimit(%v, %d): got %v, want ErrInvalidArgument mentioning %q", lc.scope, lc.n, err, lc.want)
			}
		}
		if err := c.ClearConcurrencyLimit(ctx, limits.Pack("")); !errors.Is(err, coordinator.ErrInvalidArgument) {
			t.Errorf("ClearConcurrencyLimit(pack \"\"): %v", err)
		}
		if after := e.keys(); !slices.Equal(before, after) {
			t.Fatalf("bad input wrote keys: before %v, after %v", before, after)
		}
	})
}

// TestOptionsValidate: unusable options are refused naming the field.
func TestOptionsValidate(t *testing.T) {
	e := newMiniEnv(t)
	for _, tc := range []struct {
		o    coordinator.Options
		want string
	}{
		{coordinator.Options{Prefix: "a{b"}, "Options.Prefix"},
		{coordinator.Options{LeaseTTL: 10}, "Options.LeaseTTL"},
		{coordinator.Options{AckTimeout: 40e9}, "Options.AckTimeout"},
		{coordinator.Options{BlockTimeout: 1500e6}, "Options.BlockTimeout"},
		{coordinator.Options{MaxWaitConns: -1}, "Options.MaxWaitConns"},
	} {
		_, err := coordinator.New(e.rdb, tc.o)
		if !errors.Is(err, coordinator.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v): %v, want error naming %s", tc.o, err, tc.want)
		}
	}
	if _, err := coordinator.New(nil, coordinator.Options{}); !errors.Is(err, coordinator.ErrInvalidArgument) {
		t.Errorf("New(nil): %v", err)
	}
}

// TestOptionsDefaultsAdapt: setting LeaseTTL alone never makes the defaults
// invalid (AckTimeout defaults to the smaller of DefaultAckTimeout and
// LeaseTTL/2), and only a value the caller set is reported.
func TestOptionsDefaultsAdapt(t *testing.T) {
	for _, lease := range []time.Duration{100 * time.Millisecond, time.Second, 9 * time.Second, time.Minute} {
		o := coordinator.Options{LeaseTTL: lease}
		if err := o.Validate(); err != nil {
			t.Errorf("LeaseTTL %v alone: %v", lease, err)
		}
		want := min(coordinator.DefaultAckTimeout, lease/2)
		if got := o.WithDefaults().AckTimeout; got != want {
			t.Errorf("LeaseTTL %v: AckTimeout defaults to %v, want %v", lease, got, want)
		}
	}
	err := coordinator.Options{LeaseTTL: time.Second, AckTimeout: 2 * time.Second}.Validate()
	if !errors.Is(err, coordinator.ErrInvalidArgument) || !strings.Contains(err.Error(), "Options.AckTimeout") {
		t.Errorf("an AckTimeout set above LeaseTTL: %v, want an error naming Options.AckTimeout", err)
	}
}

// TestHashTagConfinement: braces and colons in refs and IDs cannot move a key
// out of its action's slot, nor reach another action's keys.
func TestHashTagConfinement(t *testing.T) {
	tiers(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		c := e.coordinator(e.opts())
		refs := []string{"a.b}:grant:x", "a.b", "a{.b}", "x}.y{", "p.q%7D", "p.q}"}
		for _, ref := range refs {
			if err := c.SetConcurrencyLimit(ctx, limits.Action(ref), 1); err != nil {
				t.Fatal(err)
			}
			l, err := c.EnqueueAndWait(ctx, ref, "x}:queue{"+ref)
			if err != nil {
				t.Fatalf("%q: %v", ref, err)
			}
			go func() { c.EnqueueAndWait(ctx, ref, "w{}:"+ref) }()
			eventually(t, 5e9, "queued", func() bool { return e.stats(c, ref).QueueLength == 1 })
			_ = l
		}
		slotsByTag := map[string]map[int]bool{}
		for _, k := range e.keys() {
			if !strings.Contains(k, ":{") {
				continue // cross-action indexes
			}
			tag := k[strings.Index(k, "{")+1:]
			tag = tag[:strings.Index(tag, "}")]
			if slotsByTag[tag] == nil {
				slotsByTag[tag] = map[int]bool{}
			}
			slotsByTag[tag][keySlot(k)] = true
		}
		if len(slotsByTag) != len(refs) {
			t.Fatalf("want %d distinct action tags, got %d: %v", len(refs), len(slotsByTag), slotsByTag)
		}
		for tag, slots := range slotsByTag {
			if len(slots) != 1 {
				t.Errorf("tag %q spans slots %v", tag, slots)
			}
		}
		for _, ref := range refs {
			st := e.stats(c, ref)
			if st.ActiveCount != 1 || st.QueueLength != 1 || st.MaxConcurrent != 1 {
				t.Errorf("%q: actions interfered: %+v", ref, st)
			}
		}
	})
}

// keySlot is Redis Cluster's slot of a key: CRC16 (XMODEM) of its hash tag.
func keySlot(key string) int {
	if s := strings.IndexByte(key, '{'); s >= 0 {
		if e := strings.IndexByte(key[s+1:], '}'); e > 0 {
			key = key[s+1 : s+1+e]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for b := 0; b < 8; b++ {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % 16384
}
