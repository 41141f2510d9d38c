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
	if c.opts.ReadOnly {
		return false, ErrReadOnly
	}
	if err := validate(action, executionID); err != nil {
		return false, err
	}
	r, err := scripts.Cancel(ctx, c.run, c.keys.Action(action), executionID, "", "", c.opts.AckTimeout)
	if err != nil {
		return false, fmt.Errorf("baton: cancel %s/%s: %w", action, executionID, err)
	}
	c.schedule(ctx, action, r.Due, r.Wake)
	return r.Result == scripts.Removed, nil
}
