package daemon_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/redistest"
)

// TestAPIWalkthrough runs the curl walkthrough of docs/api.md ("Admission
// over HTTP") as a reader would paste it, against a daemon on an embedded
// Redis, and checks what it prints and what it leaves.
func TestAPIWalkthrough(t *testing.T) {
	for _, tool := range []string{"bash", "curl", "sed"} {
		if _, err := exec.LookPath(tool); err != nil {
			if redistest.Required() {
				t.Fatalf("%s is not on PATH (BATON_REQUIRE_REDIS=1: .ci/run installs curl)", tool)
			}
			t.Skipf("%s is not on PATH", tool)
		}
	}
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "api.md"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(doc)
	i := strings.Index(s, "## Admission over HTTP")
	if i < 0 {
		t.Fatal(`docs/api.md has no "## Admission over HTTP"`)
	}
	from := strings.Index(s[i:], "```sh\n")
	if from < 0 {
		t.Fatal("no sh block in docs/api.md's admission section")
	}
	from += i + len("```sh\n")
	to := strings.Index(s[from:], "```")
	if to < 0 {
		t.Fatal("the sh block of docs/api.md's admission section does not end")
	}
	script := s[from : from+to]
	const base = "B=http://127.0.0.1:8080\n"
	if !strings.HasPrefix(script, base) {
		t.Fatalf("the walkthrough does not start with %q", base)
	}

	r := start(t, config.Defaults())
	r.logs.wait(t, "ready: listening for completion events")
	script = "B=http://" + r.addr + "\n" + strings.TrimPrefix(script, base)
	ctx, cancel := context.WithTimeout(redistest.Context(t), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script).CombinedOutput()
	t.Logf("walkthrough output:\n%s", out)
	if err != nil {
		t.Fatalf("the walkthrough failed: %v", err)
	}
	for want, n := range map[string]int{`"status": "waiting"`: 1, `"position": 0`: 1, `"status": "held"`: 1,
		`"status": "released"`: 2, `"code": "lease_lost"`: 1} {
		if got := strings.Count(string(out), want); got != n {
			t.Errorf("the walkthrough printed %s %d times, want %d", want, got, n)
		}
	}
	code, body := r.get(t, "/api/v1/actions/core.http/queue-stats")
	for _, want := range []string{`"total_admitted": 2`, `"total_completed": 2`, `"active_count": 0`, `"queue_length": 0`} {
		if code != 200 || !strings.Contains(body, want) {
			t.Fatalf("after the walkthrough: %d %s, want %s", code, body, want)
		}
	}
}
