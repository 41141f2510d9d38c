// Baton dashboard: reads the daemon's JSON API (docs/api.md) about once a
// second and redraws in place. No framework and no build step: what is here
// is what the browser runs. Data goes into the page as text, never as HTML.
'use strict';

const REFRESH_MS = 1000;
const PAGE = 50; // waiting executions per page
const TOKEN_KEY = 'baton.token';

const $ = (sel) => document.querySelector(sel);

const state = {
  view: 'actions',
  action: '',
  sort: { key: 'action', dir: 1 },
  prev: new Map(), // action -> {admitted, at}: the last sample, for admissions per second
  rates: new Map(), // action -> admissions per second between the last two samples
  rows: [],
  offset: 0,
  timer: 0,
  generation: 0,
  refreshes: 0,
};

// ---------- the API ----------

class APIError extends Error {
  constructor(message, status, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, rawBody) {
  const headers = {};
  const token = $('#token').value.trim();
  if (method !== 'GET' && token) headers.Authorization = 'Bearer ' + token;
  if (rawBody !== undefined) headers['Content-Type'] = 'application/json';
  const resp = await fetch(path, { method, headers, body: rawBody, cache: 'no-store' });
  const text = await resp.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!resp.ok) {
    const msg = data && data.error ? data.error : `${method} ${path}: HTTP ${resp.status}`;
    throw new APIError(msg, resp.status, data && data.code);
  }
  return data;
}

const enc = encodeURIComponent;

async function listActions() {
  const all = new Map();
  let cursor = 0;
  for (let page = 0; page < 100; page++) {
    const r = await api('GET', `/api/v1/actions?cursor=${cursor}&count=500`);
    for (const a of r.actions) all.set(a.action, a);
    cursor = r.next_cursor;
    if (!cursor) break;
  }
  return [...all.values()];
}

// limitBody sends what was typed as it was typed, so that the API (not this
// page) judges it: a whole number goes as a JSON number, digit for digit
// (no rounding through a float); anything else as a string, which the API
// refuses with its own message.
function limitBody(text) {
  const t = text.trim();
  return /^-?\d+$/.test(t) ? `{"max_concurrent": ${t}}` : JSON.stringify({ max_concurrent: t });
}

// ---------- formatting ----------

function fmtDuration(sec) {
  if (sec == null || !isFinite(sec)) return '–';
  if (sec < 0) sec = 0;
  if (sec < 1) return `${Math.round(sec * 1000)} ms`;
  if (sec < 60) return `${sec.toFixed(1)} s`;
  const m = Math.floor(sec / 60);
  if (m < 60) return `${m}m ${String(Math.floor(sec % 60)).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, '0')}m`;
}

function fmtLimit(n) {
  return n < 0 ? 'unlimited' : String(n);
}

// fmtThrottle renders a rate policy ({limit, per, burst}) and fmtQuota a
// quota ({limit, window}) with their sources; '–' when none applies.
function fmtThrottle(r, source) {
  if (r == null) return '–';
  return `${r.limit}/${r.per}` + (r.burst > 1 ? ` burst ${r.burst}` : '') + ` (${source})`;
}

function fmtQuota(q, used, source) {
  if (q == null) return '–';
  return `${used} of ${q.limit}/${q.window} (${source})`;
}

function fmtRate(r) {
  if (r == null) return '–';
  return r >= 100 ? r.toFixed(0) : r.toFixed(1);
}

function fmtTime(iso) {
  return new Date(iso).toLocaleTimeString();
}

function fmtBound(sec) {
  return sec < 1 ? `${sec * 1000}ms` : `${sec}s`;
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text != null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells) {
  const tr = document.createElement('tr');
  for (const c of cells) tr.append(c instanceof Node ? c : el('td', c));
  return tr;
}

function td(child, cls) {
  const t = el('td', null, cls);
  t.append(child);
  return t;
}

// ---------- messages, status, token ----------

let messageTimer = 0;

function showMessage(text, kind) {
  const m = $('#message');
  clearTimeout(messageTimer);
  m.textContent = text;
  m.className = kind;
  m.hidden = false;
  if (kind === 'ok') messageTimer = setTimeout(() => (m.hidden = true), 4000);
}

function showError(err, what) {
  if (err.status === 401) {
    $('.token').classList.add('needed');
    $('#token').focus();
    showMessage(`${what}: ${err.message}. This daemon needs its bearer token for changes: ` +
      'enter it in the "Bearer token" field (kept for this browser tab only) and try again.', 'error');
    return;
  }
  showMessage(`${what}: ${err.message}`, 'error');
}

function setStatus(ok, text) {
  const s = $('#status');
  s.textContent = text;
  s.classList.toggle('down', !ok);
}

// mutate runs a change, reports its outcome and refreshes at once.
async function mutate(what, fn) {
  try {
    await fn();
    $('.token').classList.remove('needed');
    showMessage(`${what}: done`, 'ok');
  } catch (err) {
    showError(err, what);
  }
  refresh();
}

// ---------- the actions view ----------

function sample(actions, now) {
  for (const a of actions) {
    const p = state.prev.get(a.action);
    if (p && now > p.at) {
      state.rates.set(a.action, Math.max(0, a.total_admitted - p.admitted) / ((now - p.at) / 1000));
    }
    state.prev.set(a.action, { admitted: a.total_admitted, at: now });
  }
}

function withDerived(a, now) {
  const oldest = a.oldest_enqueued_at ? (now - Date.parse(a.oldest_enqueued_at)) / 1000 : null;
  return { ...a, oldest_wait: oldest, admit_rate: state.rates.has(a.action) ? state.rates.get(a.action) : null };
}

function sortRows(rows) {
  const { key, dir } = state.sort;
  rows.sort((x, y) => {
    const a = x[key], b = y[key];
    let c;
    if (a == null && b == null) c = 0;
    else if (a == null) c = -1;
    else if (b == null) c = 1;
    else if (typeof a === 'string') c = a.localeCompare(b);
    else c = a - b;
    return c * dir || x.action.localeCompare(y.action);
  });
}

function renderActions() {
  const rows = state.rows.slice();
  sortRows(rows);
  const body = $('#actions tbody');
  const out = [];
  for (const a of rows) {
    const link = el('a', a.action);
    link.href = '#/action/' + enc(a.action);
    const tr = row([
      td(link),
      el('td', a.queue_length, 'queue' + (a.queue_length > 0 ? ' busy' : '')),
      el('td', a.active_count, 'running'),
      el('td', fmtLimit(a.max_concurrent), 'limit'),
      el('td', a.limit_source, 'source'),
      el('td', a.oldest_wait == null ? '–' : fmtDuration(a.oldest_wait), 'oldest'),
      el('td', fmtRate(a.admit_rate), 'rate'),
      el('td', a.total_admitted, 'admitted'),
      el('td', a.total_rejected, 'rejected'),
      el('td', a.total_timed_out, 'timed-out'),
    ]);
    tr.dataset.action = a.action;
    out.push(tr);
  }
  body.replaceChildren(...out);
  $('#no-actions').hidden = rows.length > 0;
  for (const th of document.querySelectorAll('#actions thead th')) {
    if (th.dataset.key === state.sort.key) th.setAttribute('aria-sort', state.sort.dir > 0 ? 'ascending' : 'descending');
    else th.removeAttribute('aria-sort');
  }
}

// renderPolicies lists the concurrency limits (a scope may set only a rate
// or a quota: it is not listed); clear removes the limit alone.
function renderPolicies(tbody, policies, winner) {
  const out = [];
  for (const p of policies) {
    if (p.max_concurrent === undefined) continue;
    const clear = el('button', 'clear');
    clear.type = 'button';
    clear.dataset.scope = p.scope;
    clear.addEventListener('click', () =>
      mutate(`clear ${p.scope}`, () => api('DELETE', '/api/v1/policies/' + enc(p.scope) + '?kind=max_concurrent')));
    const tr = row([el('td', p.scope, p.scope === winner ? 'winner' : ''), el('td', fmtLimit(p.max_concurrent)), td(clear)]);
    tr.dataset.scope = p.scope;
    out.push(tr);
  }
  if (out.length === 0) out.push(row([el('td', 'none set: every action is unlimited'), el('td', ''), el('td', '')]));
  tbody.replaceChildren(...out);
}

async function refreshActions() {
  const [actions, policies] = await Promise.all([listActions(), api('GET', '/api/v1/policies')]);
  const now = Date.now();
  sample(actions, now);
  state.rows = actions.map((a) => withDerived(a, now));
  renderActions();
  renderPolicies($('#policies tbody'), policies.policies, null);
}

// ---------- one action ----------

function stat(label, value, cls) {
  const d = el('div', null, cls);
  d.append(el('dt', label), el('dd', value));
  return d;
}

function renderHistogram(wait) {
  const svg = $('#histogram');
  const ns = 'http://www.w3.org/2000/svg';
  const mk = (tag, attrs, text) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text != null) e.textContent = text;
    return e;
  };
  const counts = [...wait.counts, wait.over];
  const labels = [...wait.bounds_seconds.map(fmtBound), '>' + fmtBound(wait.bounds_seconds.at(-1))];
  const W = 480, H = 180, left = 8, bottom = 30, top = 16;
  const bw = (W - left) / counts.length;
  const most = Math.max(1, ...counts);
  const parts = [];
  counts.forEach((n, i) => {
    const h = ((H - bottom - top) * n) / most;
    const x = left + i * bw;
    const bar = mk('rect', { class: 'bar', x: x + 3, y: H - bottom - h, width: bw - 6, height: Math.max(h, n > 0 ? 1 : 0) });
    bar.append(mk('title', {}, `${labels[i]}: ${n}`));
    parts.push(bar);
    if (n > 0) parts.push(mk('text', { x: x + bw / 2, y: H - bottom - h - 3, 'text-anchor': 'middle' }, n));
    parts.push(mk('text', { x: x + bw / 2, y: H - bottom + 13, 'text-anchor': 'middle' }, labels[i]));
  });
  parts.push(mk('line', { class: 'axis', x1: left, x2: W, y1: H - bottom, y2: H - bottom }));
  const mean = wait.count > 0 ? fmtDuration(wait.sum_seconds / wait.count) : '–';
  parts.push(mk('text', { x: left, y: H - 3 }, `${wait.count} admissions, mean wait ${mean}; bars count waits up to each bound`));
  svg.replaceChildren(...parts);
  svg.dataset.count = wait.count;
}

function renderAction(st, page, holders, policies) {
  const now = Date.now();
  const d = withDerived(st, now);
  $('#action-title').textContent = st.action;
  $('#action-stats').replaceChildren(
    stat('waiting', st.queue_length, 'queue'),
    stat('running', st.active_count, 'running'),
    stat('limit', fmtLimit(st.max_concurrent), 'limit'),
    stat('limit from', st.limit_source, 'source'),
    stat('rate', fmtThrottle(st.rate, st.rate_source), 'throttle'),
    stat('quota used', fmtQuota(st.quota, st.quota_used, st.quota_source), 'quota'),
    stat('throttled', st.total_throttled, 'throttled'),
    stat('over quota', st.total_quota_rejected, 'quota-rejected'),
    stat('oldest wait', d.oldest_wait == null ? '–' : fmtDuration(d.oldest_wait), 'oldest'),
    stat('admitted/s', fmtRate(d.admit_rate), 'rate'),
    stat('admitted', st.total_admitted, 'admitted'),
    stat('completed', st.total_completed, 'completed'),
    stat('rejected', st.total_rejected, 'rejected'),
    stat('timed out', st.total_timed_out, 'timed-out'),
    stat('canceled', st.total_canceled, 'canceled'),
    stat('reclaimed', st.total_reclaimed, 'reclaimed'),
  );

  const pack = st.action.split('.')[0];
  const scopes = ['action:' + st.action, 'pack:' + pack, 'global'];
  const relevant = policies.policies.filter((p) => scopes.includes(p.scope));
  $('#action-policy').textContent = st.limit_source === 'default'
    ? 'No limit applies: the action is unlimited.'
    : `In force: ${fmtLimit(st.max_concurrent)}, from ${st.limit_source} (action > pack > global).`;
  renderPolicies($('#action-policies tbody'), relevant, st.limit_source);
  renderHistogram(st.wait);

  $('#holders-count').textContent = `(${holders.holders.length})`;
  $('#holders tbody').replaceChildren(...holders.holders.map((h) => {
    // An expired entry still holds its slot until the core reclaims it.
    const deadline = h.expired
      ? el('td', `${fmtTime(h.lease_deadline)} (expired, not yet reclaimed)`, 'expired')
      : fmtTime(h.lease_deadline);
    const tr = row([h.execution_id, h.token, el('td', h.owner, 'text'), h.token === 0 ? '–' : fmtTime(h.since), deadline, h.acknowledged ? 'yes' : 'not yet']);
    tr.dataset.execution = h.execution_id;
    return tr;
  }));

  $('#waiting-count').textContent = `(${page.total})`;
  $('#waiting tbody').replaceChildren(...page.executions.map((x) => {
    const cancel = el('button', 'cancel');
    cancel.type = 'button';
    cancel.addEventListener('click', () => mutate(`cancel ${x.execution_id}`, () =>
      api('POST', `/api/v1/actions/${enc(st.action)}/executions/${enc(x.execution_id)}/cancel`)));
    const tr = row([x.position, el('td', x.execution_id, 'text'), el('td', x.owner, 'text'), fmtDuration(x.waiting_seconds), td(cancel)]);
    tr.dataset.execution = x.execution_id;
    return tr;
  }));
  const first = page.executions.length ? state.offset + 1 : 0;
  $('#waiting-range').textContent = `${first}–${state.offset + page.executions.length} of ${page.total}`;
  $('#waiting-prev').disabled = state.offset === 0;
  $('#waiting-next').disabled = state.offset + PAGE >= page.total;
}

async function refreshAction() {
  const ref = enc(state.action);
  const [st, page, holders, policies] = await Promise.all([
    api('GET', `/api/v1/actions/${ref}/queue-stats`),
    api('GET', `/api/v1/actions/${ref}/executions?state=waiting&offset=${state.offset}&limit=${PAGE}`),
    api('GET', `/api/v1/actions/${ref}/holders`),
    api('GET', '/api/v1/policies'),
  ]);
  sample([st], Date.now());
  st.queue_length = page.total; // read a moment apart under load: show one number
  if (page.total > 0 && state.offset >= page.total) {
    state.offset = Math.floor((page.total - 1) / PAGE) * PAGE; // the queue shrank under this page
  }
  renderAction(st, page, holders, policies);
}

// ---------- routing and the refresh loop ----------

function route() {
  const m = location.hash.match(/^#\/action\/(.+)$/);
  const crumbs = $('#crumbs');
  if (m) {
    const action = decodeURIComponent(m[1]);
    if (action !== state.action) state.offset = 0;
    state.view = 'action';
    state.action = action;
    const back = el('a', 'actions');
    back.href = '#/';
    crumbs.replaceChildren(back, document.createTextNode(' / ' + action));
  } else {
    state.view = 'actions';
    state.action = '';
    crumbs.replaceChildren();
  }
  $('#actions-view').hidden = state.view !== 'actions';
  $('#action-view').hidden = state.view !== 'action';
}

async function refresh() {
  clearTimeout(state.timer);
  const gen = ++state.generation;
  try {
    if (state.view === 'actions') await refreshActions();
    else await refreshAction();
    if (gen === state.generation) {
      state.refreshes++;
      document.body.dataset.refreshes = state.refreshes;
      setStatus(true, 'live · updated ' + new Date().toLocaleTimeString());
    }
  } catch (err) {
    if (gen === state.generation) setStatus(false, 'not updating: ' + err.message);
  } finally {
    if (gen === state.generation) state.timer = setTimeout(refresh, REFRESH_MS);
  }
}

function setup() {
  const token = $('#token');
  token.value = sessionStorage.getItem(TOKEN_KEY) || '';
  token.addEventListener('input', () => {
    sessionStorage.setItem(TOKEN_KEY, token.value.trim());
    $('.token').classList.remove('needed');
  });

  for (const th of document.querySelectorAll('#actions thead th')) {
    th.addEventListener('click', () => {
      const key = th.dataset.key;
      if (state.sort.key === key) state.sort.dir = -state.sort.dir;
      else state.sort = { key, dir: th.dataset.type === 'text' ? 1 : -1 };
      renderActions();
    });
  }

  $('#policy-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const scope = $('#policy-scope').value.trim();
    const text = $('#policy-limit').value;
    mutate(`set ${scope || '(no scope)'} to ${text.trim()}`, () =>
      api('PUT', '/api/v1/policies/' + enc(scope), limitBody(text)));
  });
  $('#action-limit-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const text = $('#action-limit').value;
    const scope = 'action:' + state.action;
    mutate(`set ${scope} to ${text.trim()}`, () => api('PUT', '/api/v1/policies/' + enc(scope), limitBody(text)));
  });
  $('#waiting-prev').addEventListener('click', () => {
    state.offset = Math.max(0, state.offset - PAGE);
    refresh();
  });
  $('#waiting-next').addEventListener('click', () => {
    state.offset += PAGE;
    refresh();
  });
  $('#forget').addEventListener('click', async () => {
    const action = state.action;
    await mutate(`forget ${action}`, () => api('DELETE', '/api/v1/actions/' + enc(action)));
    if (!$('#message').classList.contains('error')) location.hash = '#/';
  });

  window.addEventListener('hashchange', () => {
    route();
    refresh();
  });
  route();
  refresh();
}

document.addEventListener('DOMContentLoaded', setup);
