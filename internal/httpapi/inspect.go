package httpapi

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/batonhq/baton/coordinator"
)

// The operator's endpoints: an action's waiting executions and holders, and
// forgetting an idle action.

// WaitingPage is one page of GET /api/v1/actions/{ref}/executions.
type WaitingPage struct {
	Action     string             `json:"action"`
	State      string             `json:"state"`
	Total      int64              `json:"total"`
	Offset     int                `json:"offset"`
	Limit      int                `json:"limit"`
	Executions []WaitingExecution `json:"executions"`
}

// WaitingExecution is one waiting execution, in queue order.
type WaitingExecution struct {
	Position       int64     `json:"position"`
	ExecutionID    string    `json:"execution_id"`
	Owner          string    `json:"owner"`
	EnqueuedAt     time.Time `json:"enqueued_at"`
	WaitingSeconds float64   `json:"waiting_seconds"`
}

// Holders is the reply of GET /api/v1/actions/{ref}/holders.
type Holders struct {
	Action  string   `json:"action"`
	Holders []Holder `json:"holders"`
}

// Holder is one execution holding a slot (one entry of the action's running
// set, expired or not: see coordinator.Holder).
type Holder struct {
	ExecutionID   string    `json:"execution_id"`
	Token         int64     `json:"token"`
	Owner         string    `json:"owner"`
	Since         time.Time `json:"since"`
	LeaseDeadline time.Time `json:"lease_deadline"`
	Acknowledged  bool      `json:"acknowledged"`
	Expired       bool      `json:"expired"`
}

// defaultWaitingLimit is the page size of the waiting list when ?limit= is absent.
const defaultWaitingLimit = 100

// listExecutions lists an action's waiting executions in queue order:
// ?state=waiting (the only state listed; the default), ?offset= (0 first)
// and ?limit= (1 to 1000, default 100).
func (a *api) listExecutions(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if s := q.Get("state"); s != "" && s != "waiting" {
		a.fail(w, r, badRequest("state %q: only waiting executions are listed (holders: GET .../holders)", shortQuote(s)))
		return
	}
	offset, err := queryUint(q.Get("offset"), 0)
	if err != nil || offset > 1<<31 {
		a.fail(w, r, badRequest("offset %q: want a whole number >= 0", shortQuote(q.Get("offset"))))
		return
	}
	limit, err := queryUint(q.Get("limit"), defaultWaitingLimit)
	if err != nil || limit < 1 || limit > coordinator.MaxInspectPage {
		a.fail(w, r, badRequest("limit %q: want a whole number from 1 to %d", shortQuote(q.Get("limit")), coordinator.MaxInspectPage))
		return
	}
	ref := r.PathValue("ref")
	page, total, err := a.c.Waiting(r.Context(), ref, int(offset), int(limit))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := WaitingPage{Action: ref, State: "waiting", Total: total, Offset: int(offset), Limit: int(limit),
		Executions: make([]WaitingExecution, 0, len(page))}
	for _, e := range page {
		out.Executions = append(out.Executions, WaitingExecution{
			Position: e.Position, ExecutionID: e.ExecutionID, Owner: e.Owner,
			EnqueuedAt: e.EnqueuedAt.UTC(), WaitingSeconds: e.Waited.Seconds(),
		})
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *api) listHolders(w http.ResponseWriter, r *http.Request) {
	ref := r.PathValue("ref")
	hs, err := a.c.Holders(r.Context(), ref)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := Holders{Action: ref, Holders: make([]Holder, 0, len(hs))}
	for _, h := range hs {
		out.Holders = append(out.Holders, Holder{
			ExecutionID: h.ExecutionID, Token: h.Token, Owner: h.Owner,
			Since: h.Since.UTC(), LeaseDeadline: h.LeaseDeadline.UTC(), Acknowledged: h.Acknowledged,
			Expired: h.Expired,
		})
	}
	writeJSON(w, http.StatusOK, out)
}

// forgetAction removes an idle action from the known actions: 204, or 409
// not_idle while executions wait or hold slots.
func (a *api) forgetAction(w http.ResponseWriter, r *http.Request) {
	ref := r.PathValue("ref")
	err := a.c.ForgetAction(r.Context(), ref)
	if errors.Is(err, coordinator.ErrNotIdle) {
		err = &apiError{http.StatusConflict, "not_idle", strings.TrimPrefix(err.Error(), "baton: ")}
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// shortQuote keeps at most 64 bytes of user input for an error message.
func shortQuote(s string) string {
	const most = 64
	if len(s) <= most {
		return s
	}
	return s[:most] + "..."
}
