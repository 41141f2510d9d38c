//go:build !linux

package redistest

import "os/exec"

// dieWithParent is a no-op where the kernel offers no parent-death signal;
// Stop (or the test's cleanup) ends the server.
func dieWithParent(cmd *exec.Cmd) {}
