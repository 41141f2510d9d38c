package coordinator

import (
	"context"
	"fmt"

	"github.com/batonhq/baton/scripts"
)

// CancelExecution removes a waiting execution from its queue; its
// EnqueueAndWait returns ErrCanceled. It returns false, changing nothing,
// when the execution is not waiting (unknown, running, or already ended).
func (c *Coordinator) CancelExecution(ctx context.Context, action, executionID string) (removed bool, err error) {
	if err := validate(action, executionID); err != nil {
		return false, err
	}
	v, err := scripts.Cancel.Run(ctx, c.rdb, c.keys.action(action).with(),
		executionID, "", "", c.ms(c.opts.AckTimeout)).Result()
	if err != nil {
		return false, fmt.Errorf("baton: cancel %s/%s: %w", action, executionID, err)
	}
	r := newReply("cancel", v, 2)
	result, due := r.int(0), r.int(1)
	if r.err != nil {
		return false, r.err
	}
	c.addDue(ctx, action, due)
	return result == 1, nil
}
