// Package dashboard is the daemon's web page: a live view of every action
// (queue, running, limit, rates), one action's waiting executions, holders
// and wait-time histogram, and forms to set and clear limits. It is plain
// HTML, CSS and JavaScript embedded in the binary, reading the JSON API
// (docs/api.md) about once a second; there is nothing to build.
package dashboard

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed assets
var assets embed.FS

// Handler serves the page: GET / is index.html and GET /ui/<file> the
// other assets. Mount it on / and /ui/ beside the API (httpapi.Options.Dashboard).
func Handler() http.Handler {
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.StripPrefix("/ui/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
		switch {
		case r.URL.Path == "/":
			http.ServeFileFS(w, r, sub, "index.html")
			return
		case r.URL.Path[len(r.URL.Path)-1] == '/':
			http.NotFound(w, r) // no directory listings
			return
		}
		files.ServeHTTP(w, r)
	})
}
