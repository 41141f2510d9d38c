// Command bench is Baton's load tester: it runs a closed-loop workload
// against Baton on one Redis and reports throughput, the latency of each
// admission stage, and whether Baton kept its promises (limit, FIFO, nothing
// lost). See BENCHMARKS.md for the modes and the figures of this project.
package main

import (
	"os"

	"github.com/batonhq/baton/cmd/bench/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
