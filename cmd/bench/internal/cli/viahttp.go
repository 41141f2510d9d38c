package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/batonhq/baton/cmd/bench/internal/loadgen"
	"github.com/batonhq/baton/cmd/bench/internal/metrics"
	"github.com/batonhq/baton/cmd/bench/internal/report"
	"github.com/batonhq/baton/internal/httpapi"
)

// runViaHTTP runs the workload through the daemon's HTTP admission API:
// --daemons in-process API handlers, each with a Coordinator of its own, on
// loopback listeners, called in turn (as a load balancer would) by the same
// closed-loop clients. Each acquire is a long poll; the release is one more
// call. Executions hold their slot for --work, far below the lease TTL, so
// no heartbeat is sent.
func runViaHTTP(ctx context.Context, f *Flags, e *env, stderr io.Writer) (*report.Load, error) {
	wl := f.Workload
	rdb, counter, err := loadgen.Connect(e.url, loadgen.PoolSize(wl.Clients, wl.Actions))
	if err != nil {
		return nil, err
	}
	defer rdb.Close()
	var urls []string
	for range f.Daemons {
		c, closeC, err := loadgen.NewCoordinator(ctx, rdb, counter, f.coordinatorOptions(e.prefix))
		if err != nil {
			return nil, err
		}
		defer closeC()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		srv := &http.Server{Handler: httpapi.New(httpapi.Options{Coordinator: c, Logger: slog.New(slog.DiscardHandler),
			LeaseTTL: f.LeaseTTL, AckTimeout: f.AckTimeout}), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
		urls = append(urls, "http://"+ln.Addr().String())
	}
	lim := &httpLimiter{urls: urls, client: &http.Client{Transport: &http.Transport{
		MaxIdleConns: 2 * wl.Clients, MaxIdleConnsPerHost: 2 * wl.Clients, IdleConnTimeout: time.Minute}}}
	defer lim.client.CloseIdleConnections()

	info := newInfoDiff(ctx, rdb, e)
	col := loadgen.NewCollector()
	stop := startProgress(stderr, f.Progress, "http", wl.Planned(), col.Progress)
	before := counter.Snapshot()
	loadgen.Run(ctx, lim, loadgen.Config{RunID: runID + "h", Clients: wl.Plan(), Work: wl.Work}, col.Add)
	counts := counter.Snapshot().Sub(before)
	stop()
	s := metrics.Summarize(col.Executions(), wl.Planned(), wl.Limit, 0)
	l := report.NewLoad(fmt.Sprintf("via http (%d daemons)", f.Daemons), s, counts, info.done(ctx), col.Failures())
	l.SetRedisUsec(info.usec)
	l.SetRedisCPU(info.cpu)
	l.HTTPCallsPerAdmission = float64(lim.calls.Load()) / float64(max(s.Admitted, 1))
	return l, nil
}

// httpLimiter admits through the HTTP API, spreading calls over the daemons.
type httpLimiter struct {
	urls   []string
	client *http.Client
	next   atomic.Uint64
	calls  atomic.Int64
}

func (h *httpLimiter) post(ctx context.Context, action, id, call string, body any) (int, map[string]any, error) {
	u := h.urls[h.next.Add(1)%uint64(len(h.urls))] + "/api/v1/actions/" + url.PathEscape(action) +
		"/executions/" + url.PathEscape(id) + "/" + call
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, "POST", u, bytes.NewReader(b))
	if err != nil {
		return 0, nil, err
	}
	h.calls.Add(1)
	resp, err := h.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		return resp.StatusCode, nil, fmt.Errorf("%s: status %d, body: %w", call, resp.StatusCode, err)
	}
	return resp.StatusCode, m, nil
}

// Acquire long-polls acquire until admitted; a 202 or a transport error
// calls again (re-attaching by ID).
func (h *httpLimiter) Acquire(ctx context.Context, action, id string) (loadgen.Grant, error) {
	for {
		status, m, err := h.post(ctx, action, id, "acquire", map[string]string{"wait": "30s"})
		switch {
		case ctx.Err() != nil:
			return loadgen.Grant{}, ctx.Err()
		case err != nil || status == http.StatusAccepted || status == http.StatusServiceUnavailable:
			continue
		case status != http.StatusOK:
			return loadgen.Grant{}, fmt.Errorf("acquire: status %d: %v", status, m["error"])
		}
		tok, _ := m["token"].(float64)
		seq, _ := m["seq"].(float64)
		token := int64(tok)
		return loadgen.Grant{Seq: int64(seq), Token: token, Release: func(ctx context.Context) error {
			for {
				status, m, err := h.post(ctx, action, id, "release", map[string]int64{"token": token})
				switch {
				case ctx.Err() != nil:
					return ctx.Err()
				case err != nil || status == http.StatusServiceUnavailable:
					continue
				case status != http.StatusOK:
					return errors.New(fmt.Sprint("release: ", m["error"]))
				}
				return nil
			}
		}}, nil
	}
}

// viaHTTPNote compares the HTTP path with the library path of the same run.
func viaHTTPNote(lib, h *report.Load) string {
	if lib == nil || h == nil || lib.AdmittedPerS == 0 {
		return ""
	}
	return fmt.Sprintf("via http: %.0f admissions/s, %.2f x the library's %.0f in the same run; %.2f HTTP calls per admission "+
		"(acquire long polls and release); the daemons run in this process over loopback, so their CPU competes with the clients'",
		h.AdmittedPerS, h.AdmittedPerS/lib.AdmittedPerS, lib.AdmittedPerS, h.HTTPCallsPerAdmission)
}
