// Package httpapi is the coordinator daemon's HTTP API: admission for
// executors in any language (acquire, heartbeat, release), queue
// statistics, execution state, waiting lists and holders, cancel,
// forgetting idle actions, policies, health and metrics, as JSON; and the
// dashboard page when one is given.
// docs/api.md documents every endpoint.
//
// Errors are {"error": "...", "code": "..."} with 400 (bad input), 401
// (missing or wrong bearer token), 404 (unknown), 409 (conflict), 410 (queue
// timeout), 413 (body too large), 429 (queue full, or a quota used up:
// Retry-After says when to call again) or 503 (Redis unreachable).
package httpapi

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/limits"
)

// Options configure the API handler.
type Options struct {
	// Coordinator serves every request. Required.
	Coordinator *coordinator.Coordinator
	// AuthToken, when set, must come as "Authorization: Bearer <token>" on
	// every mutating request (PUT, POST, DELETE).
	AuthToken string
	// MaxBodyBytes bounds request bodies. Defaults to 64 KiB.
	MaxBodyBytes int64
	// Metrics serves GET /metrics; nil means 404.
	Metrics http.Handler
	// Logger receives request errors. Defaults to discarding.
	Logger *slog.Logger
	// Version is reported by GET /healthz.
	Version string
	// Dashboard serves GET / and GET /ui/... (the web page); nil means 404.
	Dashboard http.Handler
	// LeaseTTL and AckTimeout are the Coordinator's (coordinator.Options):
	// an HTTP client's lease lasts LeaseTTL after its last heartbeat, its
	// place is kept LeaseTTL after its last acquire call, and a grant no call
	// was waiting for is kept AckTimeout. Zero means the core's defaults.
	LeaseTTL, AckTimeout time.Duration
	// Stop, when closed, ends every acquire call's wait at once (202: the
	// client calls again, through another daemon if this one stops).
	Stop <-chan struct{}
}

type api struct {
	c    *coordinator.Coordinator
	opts Options
	log  *slog.Logger
	mux  *http.ServeMux
	adm  *admissions
}

// New returns the API handler.
func New(opts Options) http.Handler {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 64 << 10
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	a := &api{c: opts.Coordinator, opts: opts, log: opts.Logger, mux: http.NewServeMux()}
	a.adm = newAdmissions(opts.Coordinator, opts.LeaseTTL, opts.AckTimeout, opts.Stop, opts.Logger)
	a.mux.HandleFunc("GET /healthz", a.healthz)
	a.mux.HandleFunc("GET /readyz", a.readyz)
	if opts.Metrics != nil {
		a.mux.Handle("GET /metrics", opts.Metrics)
	}
	if opts.Dashboard != nil {
		a.mux.Handle("GET /{$}", opts.Dashboard)
		a.mux.Handle("GET /ui/", opts.Dashboard)
	}
	a.mux.HandleFunc("GET /api/v1/actions", a.listActions)
	a.mux.HandleFunc("GET /api/v1/actions/{ref}/queue-stats", a.queueStats)
	a.mux.HandleFunc("GET /api/v1/actions/{ref}/executions", a.listExecutions)
	a.mux.HandleFunc("GET /api/v1/actions/{ref}/holders", a.listHolders)
	a.mux.HandleFunc("DELETE /api/v1/actions/{ref}", a.mutating(a.forgetAction))
	a.mux.HandleFunc("GET /api/v1/actions/{ref}/executions/{id}", a.executionState)
	a.mux.HandleFunc("POST /api/v1/actions/{ref}/executions/{id}/cancel", a.mutating(a.cancel))
	a.mux.HandleFunc("POST /api/v1/actions/{ref}/executions/{id}/acquire", a.mutating(a.acquire))
	a.mux.HandleFunc("POST /api/v1/actions/{ref}/executions/{id}/heartbeat", a.mutating(a.heartbeat))
	a.mux.HandleFunc("POST /api/v1/actions/{ref}/executions/{id}/release", a.mutating(a.release))
	a.mux.HandleFunc("GET /api/v1/policies", a.listPolicies)
	a.mux.HandleFunc("GET /api/v1/policies/{scope}", a.getPolicy)
	a.mux.HandleFunc("PUT /api/v1/policies/{scope}", a.mutating(a.putPolicy))
	a.mux.HandleFunc("DELETE /api/v1/policies/{scope}", a.mutating(a.deletePolicy))
	return a
}

// ServeHTTP routes the request; requests that match no route (404) or no
// method of a route (405) get the JSON error shape too. A path with an empty
// segment ("/api/v1/actions//queue-stats") is a 400 and one with "." or ".."
// segments a 404: the mux would redirect them to the cleaned path, which
// names another resource.
func (a *api) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p := r.URL.EscapedPath(); strings.Contains(p, "//") {
		writeError(w, http.StatusBadRequest, "invalid_argument",
			fmt.Sprintf("path %s: empty segment (a missing action ref, execution ID or scope?)", limits.Quote(p)))
		return
	}
	h, pattern := a.mux.Handler(r)
	if slices.ContainsFunc(strings.Split(r.URL.Path, "/"), func(seg string) bool { return seg == "." || seg == ".." }) {
		pattern = "" // the mux would redirect to the cleaned path, another resource: 404
		h = http.NotFoundHandler()
	}
	if pattern != "" {
		a.mux.ServeHTTP(w, r) // sets the path values
		return
	}
	rec := &statusRecorder{header: http.Header{}, code: http.StatusNotFound}
	h.ServeHTTP(rec, r)
	if allow := rec.header.Get("Allow"); allow != "" {
		w.Header().Set("Allow", allow)
	}
	code := "not_found"
	if rec.code == http.StatusMethodNotAllowed {
		code = "method_not_allowed"
	}
	writeError(w, rec.code, code, fmt.Sprintf("%s %s: %s", r.Method, limits.Quote(r.URL.Path), strings.ToLower(http.StatusText(rec.code))))
}

// statusRecorder keeps the status and headers the mux's own 404 and 405
// handlers set, and drops their plain-text body.
type statusRecorder struct {
	header http.Header
	code   int
}

func (s *statusRecorder) Header() http.Header         { return s.header }
func (s *statusRecorder) WriteHeader(code int)        { s.code = code }
func (s *statusRecorder) Write(p []byte) (int, error) { return len(p), nil }

// apiError is an error with its HTTP status and code.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &apiError{http.StatusBadRequest, "invalid_argument", fmt.Sprintf(format, args...)}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]string{"error": msg, "code": code})
}

// fail maps an error to its status: the API's own errors carry theirs;
// ErrInvalidArgument is 400; ErrKeySchema (a newer Baton keeps the action)
// is 409; a quota refusal (ErrQuotaExceeded) is 429 with Retry-After;
// anything else from the coordinator means Redis could not be used: 503. Every handler's errors go through it, so the mapping
// is the same on every endpoint.
func (a *api) fail(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apiError
	var tooBig *http.MaxBytesError
	var quota *coordinator.QuotaError
	switch {
	case errors.As(err, &ae):
		writeError(w, ae.status, ae.code, ae.msg)
	case errors.As(err, &quota):
		writeQuotaError(w, quota, time.Now())
	case errors.Is(err, coordinator.ErrQuotaExceeded): // without its details: retry in a second
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusTooManyRequests, "quota_exceeded", strings.TrimPrefix(err.Error(), "baton: "))
	case errors.As(err, &tooBig):
		writeError(w, http.StatusRequestEntityTooLarge, "body_too_large",
			fmt.Sprintf("request body over %d bytes", tooBig.Limit))
	case errors.Is(err, coordinator.ErrInvalidArgument), errors.Is(err, limits.ErrInvalid):
		writeError(w, http.StatusBadRequest, "invalid_argument", invalidMessage(err))
	case errors.Is(err, coordinator.ErrKeySchema):
		writeError(w, http.StatusConflict, "key_schema", strings.TrimPrefix(err.Error(), "baton: "))
	default:
		a.log.Warn("http: redis unavailable", slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.Any("error", err))
		writeError(w, http.StatusServiceUnavailable, "unavailable", "redis unavailable: "+err.Error())
	}
}

// QuotaExceeded is the 429 body of a request a quota refused: the error
// shape plus the quota and when its window resets.
type QuotaExceeded struct {
	Error  string    `json:"error"`
	Code   string    `json:"code"`
	Action string    `json:"action"`
	Quota  *Quota    `json:"quota"`
	Source string    `json:"quota_source"`
	Reset  time.Time `json:"retry_at"`
}

// writeQuotaError answers 429 quota_exceeded. Retry-After is the whole
// seconds until the window resets (RetryAt is on the Redis clock, read
// against the daemon's: at least 1).
func writeQuotaError(w http.ResponseWriter, e *coordinator.QuotaError, now time.Time) {
	secs := int64(math.Ceil(e.RetryAt.Sub(now).Seconds()))
	w.Header().Set("Retry-After", strconv.FormatInt(max(secs, 1), 10))
	writeJSON(w, http.StatusTooManyRequests, QuotaExceeded{
		Error: strings.TrimPrefix(e.Error(), "baton: "), Code: "quota_exceeded", Action: e.Action,
		Quota: NewQuota(e.Quota), Source: e.Source, Reset: e.RetryAt.UTC(),
	})
}

// invalidMessage is a validation error without the Go packages' prefixes
// ("baton: invalid argument: ", "limits: invalid "): the rest names the
// input and the problem.
func invalidMessage(err error) string {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, coordinator.ErrInvalidArgument.Error()+": ")
	return strings.TrimPrefix(msg, limits.ErrInvalid.Error()+" ")
}

// actionAndID reads and checks the {ref} and {id} path values.
func actionAndID(r *http.Request) (ref, id string, err error) {
	ref, id = r.PathValue("ref"), r.PathValue("id")
	if err := limits.ValidateRef(ref); err != nil {
		return "", "", err
	}
	if err := limits.ValidateExecutionID(id); err != nil {
		return "", "", err
	}
	return ref, id, nil
}

// mutating requires the bearer token, when one is configured, and bounds
// the request body.
func (a *api) mutating(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.opts.AuthToken != "" {
			got, ok := bearerToken(r.Header.Get("Authorization"))
			if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(a.opts.AuthToken)) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="baton"`)
				writeError(w, http.StatusUnauthorized, "unauthorized", "missing or wrong bearer token")
				return
			}
		}
		r.Body = http.MaxBytesReader(w, r.Body, a.opts.MaxBodyBytes)
		h(w, r)
	}
}

// bearerToken reads "Bearer <token>"; the scheme is case-insensitive
// (RFC 9110, section 11.1), so "bearer" and "BEARER" work too.
func bearerToken(header string) (string, bool) {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimLeft(token, " "), true
}

func (a *api) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "version": a.opts.Version})
}

func (a *api) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if err := a.c.Ready(ctx); err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (a *api) queueStats(w http.ResponseWriter, r *http.Request) {
	st, err := a.c.QueueStats(r.Context(), r.PathValue("ref"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, NewQueueStats(st))
}

// listActions pages through known actions: ?cursor= (0 first) and ?count=
// (a hint, 1..1000, default 100); next_cursor is 0 on the last page.
// Actions a newer version of Baton keeps (ErrKeySchema) are named apart,
// without stats, rather than failing the page.
func (a *api) listActions(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	cursor, err := queryUint(q.Get("cursor"), 0)
	if err != nil {
		a.fail(w, r, badRequest("cursor %q: want a whole number >= 0", q.Get("cursor")))
		return
	}
	count, err := queryUint(q.Get("count"), 100)
	if err != nil || count < 1 || count > 1000 {
		a.fail(w, r, badRequest("count %q: want a whole number from 1 to 1000", q.Get("count")))
		return
	}
	refs, next, err := a.c.Actions(r.Context(), cursor, int64(count))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := ActionPage{Actions: []QueueStats{}, NextCursor: next}
	seen := map[string]bool{}
	for _, ref := range refs {
		if seen[ref] || limits.ValidateRef(ref) != nil {
			continue
		}
		seen[ref] = true
		st, err := a.c.QueueStats(r.Context(), ref)
		if errors.Is(err, coordinator.ErrKeySchema) {
			out.NewerKeySchema = append(out.NewerKeySchema, ref)
			continue
		}
		if err != nil {
			a.fail(w, r, err)
			return
		}
		out.Actions = append(out.Actions, NewQueueStats(st))
	}
	writeJSON(w, http.StatusOK, out)
}

func queryUint(s string, def uint64) (uint64, error) {
	if s == "" {
		return def, nil
	}
	return strconv.ParseUint(s, 10, 64)
}

func (a *api) executionState(w http.ResponseWriter, r *http.Request) {
	ref, id, err := actionAndID(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	st, err := a.c.ExecutionState(r.Context(), ref, id)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, NewExecutionState(st))
}

func (a *api) cancel(w http.ResponseWriter, r *http.Request) {
	ref, id, err := actionAndID(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	removed, err := a.c.CancelExecution(r.Context(), ref, id)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if !removed {
		a.fail(w, r, &apiError{http.StatusConflict, "not_waiting",
			fmt.Sprintf("execution %q of %s is not waiting (unknown, running or already ended)", id, ref)})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"action": ref, "execution_id": id, "canceled": true})
}

func parseScope(r *http.Request) (limits.Scope, error) {
	return limits.ParseScope(r.PathValue("scope"))
}

func (a *api) listPolicies(w http.ResponseWriter, r *http.Request) {
	p, err := a.c.Policies(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Policies []Policy `json:"policies"`
		Version  int64    `json:"version"`
	}{Policies: PolicyList(p), Version: p.Version})
}

func (a *api) getPolicy(w http.ResponseWriter, r *http.Request) {
	scope, err := parseScope(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	p, err := a.c.Policies(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out, ok := NewPolicy(p, scope)
	if !ok {
		a.fail(w, r, &apiError{http.StatusNotFound, "not_found", fmt.Sprintf("no policy set on %s", scope)})
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// putPolicy sets the kinds the body gives (max_concurrent, rate, quota) and
// leaves the others as they are. The whole body is checked first, so a 400
// writes nothing. The reply is everything set on the scope afterwards.
func (a *api) putPolicy(w http.ResponseWriter, r *http.Request) {
	scope, err := parseScope(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	body, err := io.ReadAll(r.Body) // all of it first: a body over the limit is a 413 whatever it holds
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		a.fail(w, r, err)
		return
	}
	if err != nil {
		a.fail(w, r, badRequest("body: could not be read: %v", err))
		return
	}
	b, err := decodePolicyBody(body)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ctx := r.Context()
	if b.maxConcurrent != nil {
		err = a.c.SetConcurrencyLimit(ctx, scope, *b.maxConcurrent)
	}
	if err == nil && b.rate != nil {
		err = a.c.SetRateLimit(ctx, scope, *b.rate)
	}
	if err == nil && b.quota != nil {
		err = a.c.SetQuota(ctx, scope, *b.quota)
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	p, err := a.c.Policies(ctx)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out, _ := NewPolicy(p, scope)
	writeJSON(w, http.StatusOK, out)
}

// policyKinds are the values of DELETE's ?kind=.
var policyKinds = []string{"max_concurrent", "rate", "quota"}

// deletePolicy removes what a scope sets: every kind, or the one ?kind=
// names (max_concurrent, rate or quota). 404 when there is nothing of it.
func (a *api) deletePolicy(w http.ResponseWriter, r *http.Request) {
	scope, err := parseScope(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	kinds := policyKinds
	if q := r.URL.Query(); q.Has("kind") {
		k := q.Get("kind")
		if len(q["kind"]) != 1 || !contains(policyKinds, k) {
			a.fail(w, r, badRequest("kind %s: want max_concurrent, rate or quota (or no kind: all of them)", quote(strings.Join(q["kind"], ","))))
			return
		}
		kinds = []string{k}
	}
	ctx := r.Context()
	p, err := a.c.Policies(ctx)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var clear []func() error
	for _, k := range kinds {
		switch {
		case k == "max_concurrent" && hasKey(p.Limits, scope):
			clear = append(clear, func() error { return a.c.ClearConcurrencyLimit(ctx, scope) })
		case k == "rate" && hasKey(p.Rates, scope):
			clear = append(clear, func() error { return a.c.ClearRateLimit(ctx, scope) })
		case k == "quota" && hasKey(p.Quotas, scope):
			clear = append(clear, func() error { return a.c.ClearQuota(ctx, scope) })
		}
	}
	if len(clear) == 0 {
		what := "policy"
		if len(kinds) == 1 {
			what = kinds[0]
		}
		a.fail(w, r, &apiError{http.StatusNotFound, "not_found", fmt.Sprintf("no %s set on %s", what, scope)})
		return
	}
	for _, f := range clear {
		if err := f(); err != nil {
			a.fail(w, r, err)
			return
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

func hasKey[V any](m map[limits.Scope]V, s limits.Scope) bool {
	_, ok := m[s]
	return ok
}
