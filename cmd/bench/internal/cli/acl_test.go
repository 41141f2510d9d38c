package cli

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/internal/redistest"
)

// docsACLLine is the ACL SETUSER line of docs/security.md, with the
// password set to password.
func docsACLLine(t *testing.T, password string) []any {
	var args []any
	for _, w := range redistest.DocsACLLine(t, filepath.Join("..", "..", "..", "..", "docs", "security.md")) {
		if w == ">CHANGE-ME" {
			w = ">" + password
		}
		args = append(args, w)
	}
	return args
}

// TestThroughputAsTheACLUser runs the bench, with child processes, as
// exactly the Redis user docs/security.md gives (keys under "baton:", so
// --key-prefix baton). Its checks of the promises need nothing else: the
// only refusals ACL LOG may record are the bench's own extras, INFO (Redis
// CPU, then left out with a note) and SCAN (the cleanup of its keys).
func TestThroughputAsTheACLUser(t *testing.T) {
	srv := redistest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer admin.Close()
	const password = "bench-acl-pw"
	line := docsACLLine(t, password)
	if err := admin.Do(ctx, line...).Err(); err != nil {
		t.Fatalf("%v: %v", line, err)
	}
	user := fmt.Sprint(line[2])
	u := url.URL{Scheme: "redis", User: url.UserPassword(user, password), Host: srv.Addr}

	code, m := bench(t, "--redis", u.String(), "--key-prefix", "baton", "--actions", "2", "--limit", "2",
		"--executions", "40", "--clients", "6", "--processes", "2", "--work", "1ms", "--calibrate=false")
	if code != ExitOK {
		t.Fatalf("exit %d: %v", code, m)
	}
	checkPromises(t, m, 2)
	if num(t, m, "admitted") != 80 {
		t.Errorf("admitted %v, want 80", m["admitted"])
	}

	entries, err := admin.Do(ctx, "ACL", "LOG").Slice()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		field := map[string]string{} // RESP3 answers a map, RESP2 a flat list
		switch e := e.(type) {
		case map[any]any:
			for k, v := range e {
				field[fmt.Sprint(k)] = fmt.Sprint(v)
			}
		case []any:
			for i := 0; i+1 < len(e); i += 2 {
				field[fmt.Sprint(e[i])] = fmt.Sprint(e[i+1])
			}
		}
		reason, object := field["reason"], field["object"]
		if reason != "command" || (object != "info" && object != "scan") {
			t.Errorf("the ACL user was refused %s %q: %v", reason, object, e)
		}
	}
	t.Logf("ACL LOG: %d entries (INFO and SCAN only)", len(entries))
}
