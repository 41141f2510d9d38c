package dashboard_test

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/batonhq/baton/internal/dashboard"
)

func TestHandlerServesTheAssets(t *testing.T) {
	srv := httptest.NewServer(dashboard.Handler())
	t.Cleanup(srv.Close)
	for _, c := range []struct {
		path, contentType, contains string
		status                      int
	}{
		{"/", "text/html", "<title>Baton</title>", 200},
		{"/ui/app.js", "javascript", "/api/v1/actions", 200},
		{"/ui/app.css", "text/css", "#actions", 200},
		{"/ui/", "", "", 404},
		{"/ui/missing.js", "", "", 404},
	} {
		resp, err := srv.Client().Get(srv.URL + c.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Errorf("GET %s: %d, want %d", c.path, resp.StatusCode, c.status)
			continue
		}
		if ct := resp.Header.Get("Content-Type"); !strings.Contains(ct, c.contentType) {
			t.Errorf("GET %s: Content-Type %q, want %q", c.path, ct, c.contentType)
		}
		if !strings.Contains(string(body), c.contains) {
			t.Errorf("GET %s: body lacks %q", c.path, c.contains)
		}
		if c.status == 200 && resp.Header.Get("Content-Security-Policy") == "" {
			t.Errorf("GET %s: no Content-Security-Policy", c.path)
		}
	}
}
