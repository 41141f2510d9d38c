package coordinator

import (
	"context"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/internal/keys"
)

// Completion events: workers that finish an execution publish one entry on
// the stream CompletedStream(prefix) with the fields action, execution and
// status. The daemon's completion listener (internal/completion) reads them
// in a consumer group, frees each slot with NotifyCompletion and
// acknowledges the entry, at least once: applying one twice changes nothing,
// because a release of a slot that is no longer held is a no-op.

// CompletionStreamMaxLen is the approximate length (XADD MAXLEN ~) the
// completion stream is trimmed to on every publish, so a stream that no
// listener reads cannot grow without bound. Entries beyond it are dropped
// even if unread; their slots then come back when their leases expire.
const CompletionStreamMaxLen = 1_000_000

// maxStatusLength bounds the status field of a completion event, in bytes.
const maxStatusLength = 64

// PublishCompletion reports that executionID of action finished with status
// (free text such as "succeeded" or "failed"; Baton only stores it) on the
// completion stream of the default prefix. Invalid input returns an error
// wrapping ErrInvalidArgument and writes nothing.
func PublishCompletion(ctx context.Context, rdb redis.UniversalClient, action, executionID, status string) error {
	return PublishCompletionWithPrefix(ctx, rdb, DefaultPrefix, action, executionID, status)
}

// PublishCompletionWithPrefix is PublishCompletion for Coordinators whose
// Options.Prefix is prefix ("" means DefaultPrefix).
func PublishCompletionWithPrefix(ctx context.Context, rdb redis.UniversalClient, prefix, action, executionID, status string) error {
	if rdb == nil {
		return fmt.Errorf("%w: nil Redis client", ErrInvalidArgument)
	}
	if strings.ContainsAny(prefix, "{}") {
		return fmt.Errorf("%w: prefix %q: must not contain '{' or '}'", ErrInvalidArgument, prefix)
	}
	if err := validate(action, executionID); err != nil {
		return err
	}
	if err := validateStatus(status); err != nil {
		return err
	}
	err := rdb.XAdd(ctx, &redis.XAddArgs{
		Stream: CompletedStream(prefix),
		MaxLen: CompletionStreamMaxLen,
		Approx: true,
		Values: []any{"action", action, "execution", executionID, "status", status},
	}).Err()
	if err != nil {
		return fmt.Errorf("baton: publishing completion %s/%s: %w", action, executionID, err)
	}
	return nil
}

func validateStatus(status string) error {
	switch {
	case status == "":
		return fmt.Errorf("%w: status: empty", ErrInvalidArgument)
	case len(status) > maxStatusLength:
		return fmt.Errorf("%w: status: %d bytes, over the %d-byte maximum", ErrInvalidArgument, len(status), maxStatusLength)
	case !utf8.ValidString(status):
		return fmt.Errorf("%w: status %q: not valid UTF-8", ErrInvalidArgument, status)
	}
	for i, r := range status {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fmt.Errorf("%w: status %q: control character %U at byte %d", ErrInvalidArgument, status, r, i)
		}
	}
	return nil
}

// CompletedStream is the name of the stream workers publish completion
// events to, for the given key prefix ("" means DefaultPrefix).
func CompletedStream(prefix string) string { return keys.New(prefix).Completed() }
