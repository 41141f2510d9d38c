package dashboard_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/coordinator"
	"github.com/batonhq/baton/internal/dashboard"
	"github.com/batonhq/baton/internal/httpapi"
	"github.com/batonhq/baton/internal/keys"
	"github.com/batonhq/baton/internal/metrics"
	"github.com/batonhq/baton/internal/redistest"
	"github.com/batonhq/baton/limits"
)

// The browser test drives Debian's chromium, headless, against the real
// handler on a real redis-server with load running. With
// BATON_REQUIRE_REDIS=1 (CI) a missing chromium is a failure, as a missing
// redis-server is. BATON_UPDATE_SCREENSHOT=1 writes docs/dashboard.png and
// docs/dashboard-action.png; otherwise the screenshots go to a temporary
// directory.

const browserToken = "s3cret"

func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{os.Getenv("BATON_CHROMIUM"), "chromium", "/usr/bin/chromium"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if redistest.Required() {
		t.Fatal("BATON_REQUIRE_REDIS=1 but chromium is not installed (apt-get install chromium, or set BATON_CHROMIUM)")
	}
	t.Skip("chromium not installed (set BATON_REQUIRE_REDIS=1 to fail instead)")
	return ""
}

// load runs workers that take a slot of action, hold it for hold, and
// release it, until ctx ends or each has done max rounds.
func load(ctx context.Context, wg *sync.WaitGroup, c *coordinator.Coordinator, action string, workers, max int, hold time.Duration) {
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < max && ctx.Err() == nil; i++ {
				l, err := c.EnqueueAndWait(ctx, action, fmt.Sprintf("%s-w%d-%d", action, w, i))
				if err != nil {
					continue
				}
				select {
				case <-ctx.Done():
				case <-time.After(hold):
				}
				_ = l.Release(context.WithoutCancel(ctx))
			}
		}()
	}
}

func TestDashboardInBrowser(t *testing.T) {
	chromium := chromiumPath(t)
	srvRedis := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srvRedis.Addr, PoolSize: 64})
	t.Cleanup(func() { rdb.Close() })
	c, err := coordinator.New(rdb, coordinator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	log := slog.New(slog.DiscardHandler)
	srv := httptest.NewServer(httpapi.New(httpapi.Options{
		Coordinator: c, AuthToken: browserToken, Metrics: metrics.New(c, log).Handler(),
		Logger: log, Version: "test", Dashboard: dashboard.Handler(),
	}))
	t.Cleanup(srv.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for scope, n := range map[limits.Scope]int{
		limits.Action("demo.build"): 1, limits.Pack("demo"): 2, limits.Global(): 50,
	} {
		if err := c.SetConcurrencyLimit(ctx, scope, n); err != nil {
			t.Fatal(err)
		}
	}
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stopLoad(); wg.Wait() }()
	load(loadCtx, &wg, c, "demo.build", 6, 3000, 40*time.Millisecond)
	load(loadCtx, &wg, c, "demo.deploy", 3, 3000, 150*time.Millisecond)
	load(loadCtx, &wg, c, "core.http", 4, 3000, 20*time.Millisecond)
	eventually(t, ctx, "demo.build has a queue", func() bool {
		st, err := c.QueueStats(ctx, "demo.build")
		return err == nil && st.QueueLength > 0
	})

	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromium),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1000),
	)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(alloc, chromedp.WithErrorf(t.Logf))
	defer cancelBrowser()
	// The first run starts the browser, tied to the context it is given:
	// the browser's own, not a shorter-lived child.
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	b := &page{t: t, ctx: browser}

	// The actions view shows demo.build with a queue.
	b.run("open the page", chromedp.Navigate(srv.URL+"/"))
	b.until("demo.build listed with a queue",
		`Number(document.querySelector('#actions tr[data-action="demo.build"] td.queue')?.textContent) > 0`)
	b.run("mark the page", chromedp.Evaluate[chromedp.Void](`window.batonTestMark = 'same page'`))

	// The numbers change without a reload.
	first := b.text(`#actions tr[data-action="demo.build"] td.admitted`)
	b.until("admissions counted up without a reload", fmt.Sprintf(
		`document.querySelector('#actions tr[data-action="demo.build"] td.admitted')?.textContent !== %q`, first))
	b.until("admitted/s shown", `/^[0-9.]+$/.test(document.querySelector('#actions tr[data-action="demo.build"] td.rate')?.textContent)`)
	if mark := b.eval(`window.batonTestMark`); mark != "same page" {
		t.Fatalf("the page reloaded (mark %q)", mark)
	}
	t.Logf("demo.build admitted: %s, then %s", first, b.text(`#actions tr[data-action="demo.build"] td.admitted`))

	// Sorting by a header.
	b.run("sort by queue", chromedp.Click(chromedp.CSS(`#actions th[data-key="queue_length"]`)))
	b.until("sorted by queue, largest first", `(() => {
		const q = [...document.querySelectorAll('#actions tbody td.queue')].map(td => Number(td.textContent));
		return document.querySelector('#actions th[data-key="queue_length"]').getAttribute('aria-sort') === 'descending' &&
			q.every((v, i) => i === 0 || q[i-1] >= v);
	})()`)

	// A limit set through the page without the token is refused, and the
	// page asks for it.
	b.run("set a limit without the token",
		chromedp.SetValue(chromedp.CSS(`#policy-scope`), "action:demo.build"),
		chromedp.SetValue(chromedp.CSS(`#policy-limit`), "3"),
		chromedp.Click(chromedp.CSS(`#policy-set`)))
	b.until("the page asks for the token", `document.querySelector('.token').classList.contains('needed') &&
		document.querySelector('#message').textContent.includes('missing or wrong bearer token')`)

	// With the token, the limit is set and in force.
	b.run("enter the token and set the limit",
		chromedp.SendKeys(chromedp.CSS(`#token`), browserToken),
		chromedp.Click(chromedp.CSS(`#policy-set`)))
	b.until("the change is confirmed", `document.querySelector('#message.ok')?.textContent.includes('set action:demo.build to 3')`)
	p, err := c.Policies(ctx)
	if err != nil || p.Limits[limits.Action("demo.build")] != 3 {
		t.Fatalf("policies after the page set 3: %v, %v", p.Limits, err)
	}
	eventually(t, ctx, "demo.build runs 3 at once", func() bool {
		st, err := c.QueueStats(ctx, "demo.build")
		return err == nil && st.MaxConcurrent == 3 && st.ActiveCount >= 2
	})
	b.until("the table shows limit 3 from action:demo.build",
		`document.querySelector('#actions tr[data-action="demo.build"] td.limit')?.textContent === '3' &&
		document.querySelector('#actions tr[data-action="demo.build"] td.source')?.textContent === 'action:demo.build'`)

	// A bad value shows the API's own message, and changes nothing.
	apiMsg := apiError(t, srv.URL+"/api/v1/policies/action:demo.build", `{"max_concurrent": -5}`)
	b.run("set a bad limit",
		chromedp.SetValue(chromedp.CSS(`#policy-limit`), "-5"),
		chromedp.Click(chromedp.CSS(`#policy-set`)))
	b.until("the API's message is shown", fmt.Sprintf(`document.querySelector('#message.error')?.textContent.includes(%q)`, apiMsg))
	if p, err := c.Policies(ctx); err != nil || p.Limits[limits.Action("demo.build")] != 3 {
		t.Fatalf("policies after a bad value: %v, %v", p.Limits, err)
	}
	t.Logf("bad value: the page shows %q", b.text(`#message`))
	b.run("clear the message", chromedp.Evaluate[chromedp.Void](`document.querySelector('#message').hidden = true`))
	shot(t, b, "dashboard.png")

	// One action: waiting executions in order, holders, the histogram, its policies.
	b.clickLive("open demo.build", `#actions tr[data-action="demo.build"] a`)
	b.until("waiting executions listed in order", `(() => {
		const pos = [...document.querySelectorAll('#waiting tbody tr')].map(tr => Number(tr.cells[0].textContent));
		return pos.length > 0 && pos.every((p, i) => p === i);
	})()`)
	b.until("holders listed", `document.querySelectorAll('#holders tbody tr').length >= 1`)
	b.until("the histogram drawn", `document.querySelectorAll('#histogram rect.bar').length === 11 &&
		Number(document.querySelector('#histogram').dataset.count) > 0`)
	b.until("the action's policies shown", `(() => {
		const rows = [...document.querySelectorAll('#action-policies tbody tr')].map(tr => tr.dataset.scope);
		return rows.includes('action:demo.build') && rows.includes('pack:demo') && rows.includes('global') &&
			document.querySelector('#action-policies tr[data-scope="action:demo.build"] td.winner') !== null;
	})()`)
	if mark := b.eval(`window.batonTestMark`); mark != "same page" {
		t.Fatalf("the page reloaded (mark %q)", mark)
	}
	shot(t, b, "dashboard-action.png")

	// Clearing a limit from the page.
	b.clickLive("clear the global limit", `#action-policies tr[data-scope="global"] button`)
	b.until("the clear is confirmed", `document.querySelector('#message.ok')?.textContent.includes('clear global')`)
	if p, err := c.Policies(ctx); err != nil || len(p.Limits) != 2 {
		t.Fatalf("policies after clearing global: %v, %v", p.Limits, err)
	} else if _, set := p.Limits[limits.Global()]; set {
		t.Fatalf("global still set: %v", p.Limits)
	}

	// Forgetting an idle action from its page.
	l, err := c.EnqueueAndWait(ctx, "demo.idle", "once")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, "demo.idle known", func() bool { return listed(ctx, c, "demo.idle") })
	b.run("open demo.idle", chromedp.Navigate(srv.URL+"/#/action/demo.idle"))
	b.until("demo.idle shown", `document.querySelector('#action-title')?.textContent === 'demo.idle' &&
		document.querySelector('#action-stats .admitted dd')?.textContent === '1'`)
	b.run("forget it", chromedp.Click(chromedp.CSS(`#forget`)))
	b.until("back on the actions list without it", `location.hash === '#/' &&
		document.querySelector('#actions tr[data-action="demo.build"]') !== null &&
		document.querySelector('#actions tr[data-action="demo.idle"]') === null`)
	if listed(ctx, c, "demo.idle") {
		t.Fatal("demo.idle still known after the page forgot it")
	}

	// A lease past its deadline (its process died; nothing waits, so no
	// sweeper comes by) still holds its slot until the core reclaims it: the
	// page lists it, marked expired. Written in the documented formats.
	k := keys.New("").Action("demo.stale")
	now, err := rdb.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	ms := now.UnixMilli()
	if err := rdb.HSet(ctx, k.Holders(), "stale-1", fmt.Sprintf("4:zzz:%d:%d:h", ms-60000, (ms-60000)*1000)).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ZAdd(ctx, k.Running(), redis.Z{Score: float64(ms - 30000), Member: "stale-1"}).Err(); err != nil {
		t.Fatal(err)
	}
	b.run("open demo.stale", chromedp.Navigate(srv.URL+"/#/action/demo.stale"))
	b.until("the expired lease listed and marked", `(() => {
		const tr = document.querySelector('#holders tr[data-execution="stale-1"]');
		return document.querySelector('#action-title')?.textContent === 'demo.stale' && tr !== null &&
			tr.querySelector('td.expired')?.textContent.includes('expired') &&
			document.querySelector('#action-stats .running dd')?.textContent === '1';
	})()`)
}

func listed(ctx context.Context, c *coordinator.Coordinator, action string) bool {
	refs, _, err := c.Actions(ctx, 0, 1000)
	return err == nil && slices.Contains(refs, action)
}

// page drives one browser tab, failing the test with what the page said
// when a step does not finish in time.
type page struct {
	t   *testing.T
	ctx context.Context
}

func (p *page) run(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatalf("%s: %v%s", what, err, p.said())
	}
}

// clickLive clicks the element sel finds, from inside the page, in one
// step. For elements of the tables the page redraws on every refresh:
// chromedp.Click finds the node and then clicks it in separate calls, and a
// redraw in between (a CPU-starved test widens that gap) leaves it a node
// that no longer exists ("Could not find node with given id").
func (p *page) clickLive(what, sel string) {
	p.t.Helper()
	p.until(what, `(() => {
		const e = document.querySelector(`+strconv.Quote(sel)+`);
		if (!e) return false;
		e.click();
		return true;
	})()`)
}

// until waits (20 s at most) for a JavaScript expression to be true.
func (p *page) until(what, expr string) {
	p.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) || errors.Is(p.ctx.Err(), context.DeadlineExceeded) {
			p.t.Fatalf("waiting for %s: not within 20 s (last error: %v)%s", what, err, p.said())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *page) eval(expr string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`String(`+expr+`)`))
	if err != nil {
		p.t.Fatalf("evaluate %s: %v%s", expr, err, p.said())
	}
	return s
}

func (p *page) text(sel string) string {
	return p.eval(`document.querySelector(` + strconv.Quote(sel) + `)?.textContent`)
}

// said is the page's status line and message, for failure reports.
func (p *page) said() string {
	ctx, cancel := context.WithTimeout(p.ctx, 3*time.Second)
	defer cancel()
	s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](
		`'; page status: ' + document.querySelector('#status')?.textContent + '; message: ' + document.querySelector('#message')?.textContent`))
	return s
}

// shot saves a screenshot of the whole page.
func shot(t *testing.T, p *page, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	dir := t.TempDir()
	if os.Getenv("BATON_UPDATE_SCREENSHOT") == "1" {
		dir = filepath.Join("..", "..", "docs")
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(png))
}

// apiError sends a PUT with the token and returns the API's error message.
func apiError(t *testing.T, url, body string) string {
	t.Helper()
	req, err := http.NewRequest("PUT", url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+browserToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e struct{ Error string }
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || resp.StatusCode != 400 || e.Error == "" {
		t.Fatalf("PUT %s %s: status %d, error %q (%v), want a 400 with a message", url, body, resp.StatusCode, e.Error, err)
	}
	return e.Error
}

// eventually polls cond every 20 ms until it holds, for at most 20 s.
func eventually(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("waiting for %s: not within 20 s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
