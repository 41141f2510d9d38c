package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/batonhq/baton/coordinator"
)

// Admission over HTTP: acquire (a long poll), heartbeat and release, for
// executors that do not link the Go library. docs/api.md documents the
// calls; docs/design.md the ownership model.
//
// An acquire call is served by a session: the daemon's own EnqueueAndWait
// for the execution, run in the background so that it outlives one call.
// Calls for the same execution reaching this daemon attach to the same
// session. While the session waits and no call is attached (the client is
// between polls) the daemon keeps the place for the session's grace (the
// lease TTL); after that it gives the place up (counted as canceled). A
// grant that arrives while no call is attached is kept by its token for the
// acknowledgement deadline only: the next acquire for the ID (here, or
// through another daemon, which re-attaches by ID) takes it; otherwise it
// expires and the slot passes on. A lease handed to a client is held by its
// fencing token (coordinator.KeepLease): no process renews it, only the
// client's heartbeats, through any daemon; it is reclaimed one lease TTL
// after the last.

// Bounds of the acquire call's wait.
const (
	// DefaultAcquireWait is the wait of an acquire call that names none.
	DefaultAcquireWait = 10 * time.Second
	// MaxAcquireWait is the longest wait an acquire call may ask for: with
	// settleWait and one script call after it, below the daemon's 60 s
	// write timeout.
	MaxAcquireWait = 50 * time.Second
)

// admissions are the sessions this daemon keeps for HTTP clients.
type admissions struct {
	c          *coordinator.Coordinator
	leaseTTL   time.Duration
	ackTimeout time.Duration
	stop       <-chan struct{}
	log        *slog.Logger

	mu       sync.Mutex
	sessions map[string]*session // by action and execution ID
}

// session is one execution's admission, served by this daemon.
type session struct {
	key, ref, id string
	cancel       context.CancelFunc // ends the background EnqueueAndWait
	done         chan struct{}      // closed when lease or err is set

	mu       sync.Mutex // guards the rest; held around the KeepLease calls that hand the lease over
	attached int        // acquire calls waiting on it now
	lease    *coordinator.Lease
	err      error
	timer    *time.Timer // gives the place up (waiting) or forgets the session (ended)
}

func newAdmissions(c *coordinator.Coordinator, leaseTTL, ackTimeout time.Duration, stop <-chan struct{}, log *slog.Logger) *admissions {
	o := coordinator.Options{LeaseTTL: leaseTTL, AckTimeout: ackTimeout}.WithDefaults()
	return &admissions{c: c, leaseTTL: o.LeaseTTL, ackTimeout: o.AckTimeout, stop: stop, log: log,
		sessions: map[string]*session{}}
}

// attach returns the execution's session, starting one if there is none,
// with one more call attached. A session that ended in a way its client
// need not hear of is replaced by a new one.
func (m *admissions) attach(ref, id string) *session {
	key := ref + "\x00" + id
	for {
		m.mu.Lock()
		s := m.sessions[key]
		created := s == nil
		if created {
			ctx, cancel := context.WithCancel(context.Background())
			s = &session{key: key, ref: ref, id: id, cancel: cancel, done: make(chan struct{})}
			m.sessions[key] = s
			go m.run(ctx, s)
		}
		m.mu.Unlock()
		s.mu.Lock() // not under m.mu: a session's lock may be held over a script call
		// A session this call started is this call's request, however it
		// ended (a quota refusal can end it before this line): never start
		// another for it, which would send the request twice.
		if !created && s.over() {
			s.mu.Unlock()
			m.mu.Lock()
			if m.sessions[key] == s {
				delete(m.sessions, key)
			}
			m.mu.Unlock()
			continue
		}
		s.attached++
		if s.timer != nil && s.lease == nil && s.err == nil {
			s.timer.Stop() // the client came back: keep waiting
			s.timer = nil
		}
		s.mu.Unlock()
		return s
	}
}

// over reports whether the session ended in a way its client need not be
// told of (re-attached elsewhere, given up while absent, closed): a new call
// starts a new session. The caller holds s.mu.
func (s *session) over() bool {
	return s.err != nil && !tellLater(s.err)
}

// detach ends one call's attachment. When the last call leaves a waiting
// session, the place is kept for the grace (the lease TTL), then given up.
// A session that ended and that no call took its result from (a lease whose
// hand-over failed, an error) is forgotten after a while.
func (m *admissions) detach(s *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attached--
	if s.attached > 0 || s.timer != nil {
		return
	}
	switch {
	case s.lease != nil:
		s.timer = time.AfterFunc(m.ackTimeout, func() { m.forget(s) })
	case s.err != nil:
		s.timer = time.AfterFunc(m.leaseTTL, func() { m.forget(s) })
	default:
		s.timer = time.AfterFunc(m.leaseTTL, func() {
			s.mu.Lock()
			absent := s.attached == 0 && s.lease == nil && s.err == nil
			s.mu.Unlock()
			if absent {
				s.cancel() // the core takes it out of the queue, or gives back a grant arriving now
			}
		})
	}
}

// forget removes the session from the table, if it is still there.
func (m *admissions) forget(s *session) {
	m.mu.Lock()
	if m.sessions[s.key] == s {
		delete(m.sessions, s.key)
	}
	m.mu.Unlock()
	s.cancel()
}

// run is the session's EnqueueAndWait. A result no call is attached for is
// kept: a lease by its token for the acknowledgement deadline, an outcome
// worth telling the client for the grace; then the session is forgotten.
func (m *admissions) run(ctx context.Context, s *session) {
	l, err := m.c.EnqueueAndWait(ctx, s.ref, s.id)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lease, s.err = l, err
	close(s.done)
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	if s.attached > 0 {
		return // the attached calls take it from here
	}
	switch {
	case l != nil:
		kctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, kerr := m.c.KeepLease(kctx, s.ref, s.id, l.Token(), m.ackTimeout)
		cancel()
		if kerr != nil && !errors.Is(kerr, coordinator.ErrLeaseLost) {
			m.log.Warn("http: keeping a grant for its absent client", slog.String("action", s.ref),
				slog.String("execution", s.id), slog.Any("error", kerr))
		}
		s.timer = time.AfterFunc(m.ackTimeout, func() { m.forget(s) })
	case tellLater(err):
		s.timer = time.AfterFunc(m.leaseTTL, func() { m.forget(s) })
	default:
		go m.forget(s) // nobody to tell: given up for an absent client, re-attached elsewhere, closed
	}
}

// tellLater reports whether an outcome that found no call attached is kept
// for the client's next acquire: the ends of the request it must learn of.
func tellLater(err error) bool {
	if errors.Is(err, coordinator.ErrReattached) {
		return false // the client waits through another daemon now
	}
	return errors.Is(err, coordinator.ErrQueueTimeout) || errors.Is(err, coordinator.ErrCanceled) ||
		errors.Is(err, coordinator.ErrLeaseLost)
}

// acquired is the 200 reply of acquire: the lease.
type acquired struct {
	Status            string    `json:"status"`
	Action            string    `json:"action"`
	ExecutionID       string    `json:"execution_id"`
	Token             int64     `json:"token"`
	Seq               int64     `json:"seq"`
	EnqueuedAt        time.Time `json:"enqueued_at"`
	LeaseDeadline     time.Time `json:"lease_deadline"`
	LeaseTTLSeconds   float64   `json:"lease_ttl_seconds"`
	HeartbeatSeconds  float64   `json:"heartbeat_interval_seconds"`
	AckTimeoutSeconds float64   `json:"ack_timeout_seconds"`
}

// stillWaiting is the 202 reply of acquire.
type stillWaiting struct {
	Status      string     `json:"status"`
	Action      string     `json:"action"`
	ExecutionID string     `json:"execution_id"`
	Position    *int64     `json:"position"`
	EnqueuedAt  *time.Time `json:"enqueued_at,omitempty"`
	GraceSecs   float64    `json:"grace_seconds"`
}

// acquire is POST .../executions/{id}/acquire: wait up to the body's
// "wait" for the execution's admission.
func (a *api) acquire(w http.ResponseWriter, r *http.Request) {
	ref, id, err := actionAndID(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	wait, err := readAcquireBody(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	deadline := time.Now().Add(wait)
	for {
		s := a.adm.attach(ref, id)
		timer := time.NewTimer(max(time.Until(deadline), 0))
		select {
		case <-s.done:
		case <-timer.C:
		case <-r.Context().Done():
		case <-a.adm.stop:
		}
		timer.Stop()
		again := a.answerAcquire(w, r, s)
		a.adm.detach(s)
		if !again {
			return
		}
	}
}

// answerAcquire writes the reply for the session's state, or reports that
// the call must start a new session (its kept grant expired meanwhile).
func (a *api) answerAcquire(w http.ResponseWriter, r *http.Request, s *session) (again bool) {
	s.mu.Lock()
	l, err := s.lease, s.err
	ended := l != nil || err != nil
	var deadline time.Time
	var kerr error
	if l != nil {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
		deadline, kerr = a.c.KeepLease(ctx, s.ref, s.id, l.Token(), a.adm.leaseTTL)
		cancel()
	}
	s.mu.Unlock()
	switch {
	case l != nil && errors.Is(kerr, coordinator.ErrLeaseLost):
		a.adm.forget(s) // its kept grant expired before this call came: a new request
		return true
	case kerr != nil:
		a.fail(w, r, kerr)
	case l != nil:
		a.adm.forget(s)
		ttl := a.adm.leaseTTL
		writeJSON(w, http.StatusOK, acquired{
			Status: "admitted", Action: s.ref, ExecutionID: s.id, Token: l.Token(), Seq: l.Seq(),
			EnqueuedAt: l.EnqueuedAt().UTC(), LeaseDeadline: deadline.UTC(), LeaseTTLSeconds: ttl.Seconds(),
			HeartbeatSeconds: (ttl / 3).Seconds(), AckTimeoutSeconds: a.adm.ackTimeout.Seconds(),
		})
	case ended:
		if tellLater(err) || errors.Is(err, coordinator.ErrQueueFull) {
			a.adm.forget(s) // told: a later acquire with this ID is a new request
		}
		a.failAcquire(w, r, s, err)
	default:
		return !a.answerWaiting(w, r, s)
	}
	return false
}

// answerWaiting writes 202 with the execution's place in the queue. A
// session whose enqueue or grant is still on its way (Redis shows the
// execution unknown or running) is waited for a little longer, up to
// settleWait, so that even "wait": "0s" reports a free slot's admission.
// It reports false when the session ended meanwhile: answer again.
func (a *api) answerWaiting(w http.ResponseWriter, r *http.Request, s *session) bool {
	out := stillWaiting{Status: "waiting", Action: s.ref, ExecutionID: s.id, GraceSecs: a.adm.leaseTTL.Seconds()}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), settleWait)
	defer cancel()
	for pause := time.Millisecond; ; pause = min(2*pause, 50*time.Millisecond) {
		st, err := a.c.ExecutionState(ctx, s.ref, s.id)
		if err == nil && st.Status == coordinator.StatusWaiting {
			pos := st.Position
			out.Position, out.EnqueuedAt = &pos, timePtr(st.EnqueuedAt)
			break
		}
		t := time.NewTimer(pause)
		select {
		case <-s.done:
			t.Stop()
			return false
		case <-ctx.Done():
		case <-a.adm.stop:
		case <-t.C:
			continue
		}
		t.Stop()
		break
	}
	writeJSON(w, http.StatusAccepted, out)
	return true
}

// settleWait bounds how long a call whose wait ended waits for its
// session's enqueue or grant to land.
const settleWait = 2 * time.Second

// failAcquire maps the end of an acquire without a lease to its status.
func (a *api) failAcquire(w http.ResponseWriter, r *http.Request, s *session, err error) {
	what := fmt.Sprintf("execution %s of %s", quote(s.id), s.ref)
	switch {
	case errors.Is(err, coordinator.ErrQueueFull):
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusTooManyRequests, "queue_full", what+": the queue is full; nothing was queued")
	case errors.Is(err, coordinator.ErrQueueTimeout):
		writeError(w, http.StatusGone, "queue_timeout", what+": waited the queue timeout and was removed")
	case errors.Is(err, coordinator.ErrReattached):
		writeError(w, http.StatusConflict, "reattached", what+": re-attached through another daemon, where it keeps its place")
	case errors.Is(err, coordinator.ErrCanceled):
		writeError(w, http.StatusConflict, "canceled", what+": canceled while waiting")
	case errors.Is(err, coordinator.ErrLeaseLost):
		writeError(w, http.StatusConflict, "lease_lost", what+": its place was lost ("+err.Error()+")")
	case errors.Is(err, coordinator.ErrClosed), errors.Is(err, context.Canceled):
		writeError(w, http.StatusServiceUnavailable, "unavailable", what+": this daemon is shutting down; call again")
	default:
		a.fail(w, r, err)
	}
}

// heartbeat is POST .../executions/{id}/heartbeat: keep the lease for
// another lease TTL, by its token, through any daemon.
func (a *api) heartbeat(w http.ResponseWriter, r *http.Request) {
	ref, id, err := actionAndID(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	tok, err := readTokenBody(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	deadline, err := a.c.KeepLease(r.Context(), ref, id, tok, a.adm.leaseTTL)
	if err != nil {
		a.failLease(w, r, ref, id, tok, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "held", "action": ref, "execution_id": id, "token": tok,
		"lease_deadline": deadline.UTC(), "lease_ttl_seconds": a.adm.leaseTTL.Seconds()})
}

// release is POST .../executions/{id}/release: free the slot held under
// the token and hand it on.
func (a *api) release(w http.ResponseWriter, r *http.Request) {
	ref, id, err := actionAndID(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	tok, err := readTokenBody(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.c.ReleaseLease(r.Context(), ref, id, tok); err != nil {
		a.failLease(w, r, ref, id, tok, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "released", "action": ref, "execution_id": id, "token": tok})
}

func (a *api) failLease(w http.ResponseWriter, r *http.Request, ref, id string, tok int64, err error) {
	if errors.Is(err, coordinator.ErrLeaseLost) {
		writeError(w, http.StatusConflict, "lease_lost", fmt.Sprintf("execution %s of %s: token %s holds no slot "+
			"(released, reclaimed after its lease expired, or another token's)", quote(id), ref, strconv.FormatInt(tok, 10)))
		return
	}
	a.fail(w, r, err)
}
