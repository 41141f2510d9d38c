package coordinator_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/batonhq/baton/coordinator"
)

func TestPublishCompletionRejectsBadInput(t *testing.T) {
	e := newMiniEnv(t)
	ctx := ctxT(t)
	cases := []struct{ name, prefix, action, id, status string }{
		{"bad action", "baton", "nodot", "e1", "succeeded"},
		{"empty action", "baton", "", "e1", "succeeded"},
		{"empty id", "baton", "core.http", "", "succeeded"},
		{"control char id", "baton", "core.http", "e\n1", "succeeded"},
		{"empty status", "baton", "core.http", "e1", ""},
		{"long status", "baton", "core.http", "e1", strings.Repeat("x", 65)},
		{"control char status", "baton", "core.http", "e1", "ok\x00"},
		{"bad prefix", "ba{ton", "core.http", "e1", "ok"},
	}
	for _, tc := range cases {
		err := coordinator.PublishCompletionWithPrefix(ctx, e.rdb, tc.prefix, tc.action, tc.id, tc.status)
		if !errors.Is(err, coordinator.ErrInvalidArgument) {
			t.Errorf("%s: got %v, want ErrInvalidArgument", tc.name, err)
		}
	}
	if keys := e.keys(); len(keys) != 0 {
		t.Fatalf("invalid publishes wrote %v", keys)
	}
	if err := coordinator.PublishCompletion(ctx, nil, "core.http", "e1", "ok"); !errors.Is(err, coordinator.ErrInvalidArgument) {
		t.Fatalf("nil client: %v", err)
	}
	if err := coordinator.PublishCompletion(ctx, e.rdb, "core.http", "e1", "succeeded"); err != nil {
		t.Fatal(err)
	}
	msgs, err := e.rdb.XRange(ctx, coordinator.CompletedStream(""), "-", "+").Result()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("stream: %v %v", msgs, err)
	}
	v := msgs[0].Values
	if v["action"] != "core.http" || v["execution"] != "e1" || v["status"] != "succeeded" {
		t.Fatalf("fields: %v", v)
	}
}
