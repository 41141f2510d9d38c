package redistest

import (
	"bufio"
	"os"
	"strings"
	"testing"
)

// DocsACLLine returns the words of the ACL SETUSER line of the security
// document at path (docs/security.md): the first such line after its
// "acl-setuser:" marker. Tests create exactly that user with it.
func DocsACLLine(tb testing.TB, path string) []string {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	marked := false
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, "acl-setuser:") {
			marked = true
		}
		if marked && strings.HasPrefix(line, "ACL SETUSER ") {
			return strings.Fields(line)
		}
	}
	tb.Fatalf("%s: no ACL SETUSER line after the acl-setuser marker", path)
	return nil
}
