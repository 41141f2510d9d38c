// Command coordinator is Baton's daemon and operator tool: it runs the
// coordinator beside the executors (serve, the default), and reads or
// changes queues and policies (stats, policy). Run it with --help.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := withSignals()
	code := run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// withSignals returns a context that ends on the first SIGINT or SIGTERM;
// a second signal exits at once.
func withSignals() (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		if _, ok := <-ch; !ok {
			return
		}
		cancel()
		if _, ok := <-ch; ok {
			fmt.Fprintln(os.Stderr, "coordinator: second signal: exiting at once")
			os.Exit(1)
		}
	}()
	return ctx, func() { signal.Stop(ch); cancel() }
}
