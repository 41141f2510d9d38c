package cli

import (
	"context"
	"errors"
	"io"

	"github.com/batonhq/baton/cmd/bench/internal/report"
)

func runCrash(ctx context.Context, f *Flags, e *env, w io.Writer) (*report.Report, error) {
	return nil, errors.New("todo")
}
