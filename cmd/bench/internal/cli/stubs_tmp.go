package cli

import (
	"context"
	"errors"
	"io"

	"github.com/batonhq/baton/cmd/bench/internal/report"
)

func runMemory(ctx context.Context, f *Flags, e *env) (*report.Report, error) { return nil, errors.New("todo") }
func runSweep(ctx context.Context, f *Flags, e *env, w io.Writer) (*report.Report, error) {
	return nil, errors.New("todo")
}
func runCrash(ctx context.Context, f *Flags, e *env, w io.Writer) (*report.Report, error) {
	return nil, errors.New("todo")
}
