// router dashboard. Reads and changes everything through the admin API (/admin/v1), which accepts this page's
// session cookie. Every string from the server is put into the page as text (textContent / text nodes), never
// parsed as HTML: model ids, key names and error messages come from clients and upstreams.
'use strict';

const API = '/admin/v1';
const SVG = 'http://www.w3.org/2000/svg';
const PAGE_SIZE = 50;

// ---- DOM helpers: text only ----

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  setAttrs(e, attrs);
  append(e, kids);
  return e;
}

function sv(tag, attrs, ...kids) {
  const e = document.createElementNS(SVG, tag);
  setAttrs(e, attrs);
  append(e, kids);
  return e;
}

function setAttrs(e, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.setAttribute('class', v);
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
}

function append(e, kids) {
  for (const k of kids.flat(Infinity)) {
    if (k === undefined || k === null || k === false) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
}

function clear(e) {
  while (e.firstChild) e.firstChild.remove();
  return e;
}

const $ = (s) => document.querySelector(s);

// ---- formatting ----

const nf = new Intl.NumberFormat();
function num(n) { return n === null || n === undefined ? '–' : nf.format(n); }
function compact(n) {
  if (n === null || n === undefined) return '–';
  const a = Math.abs(n);
  if (a >= 1e9) return (n / 1e9).toFixed(2) + 'B';
  if (a >= 1e6) return (n / 1e6).toFixed(2) + 'M';
  if (a >= 1e4) return (n / 1e3).toFixed(1) + 'k';
  return nf.format(Math.round(n * 100) / 100);
}
function usd(v) {
  if (v === null || v === undefined) return '–';
  if (v !== 0 && Math.abs(v) < 0.01) return '$' + v.toPrecision(2);
  return '$' + v.toFixed(2);
}
function pct(a, b) { return b ? (100 * a / b).toFixed(1) + '%' : '–'; }
function ms(v) { return v === null || v === undefined ? '–' : v >= 10000 ? (v / 1000).toFixed(1) + ' s' : v + ' ms'; }
function when(t) {
  if (!t) return '–';
  const d = new Date(t);
  return isNaN(d) ? String(t) : d.toLocaleString();
}
function shortWhen(t) {
  const d = new Date(t);
  if (isNaN(d)) return '–';
  return d.toDateString() === new Date().toDateString() ? d.toLocaleTimeString() : d.toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}
function ago(t) {
  if (!t) return 'never';
  const s = Math.round((Date.now() - t) / 1000);
  if (s < 60) return s + ' s ago';
  if (s < 3600) return Math.round(s / 60) + ' min ago';
  if (s < 172800) return Math.round(s / 3600) + ' h ago';
  return Math.round(s / 86400) + ' days ago';
}
function left(msLeft) {
  const s = Math.ceil(msLeft / 1000);
  return s < 120 ? s + ' s' : Math.ceil(s / 60) + ' min';
}
function pill(text, cls) { return el('span', { class: 'pill ' + (cls || '') }, text); }

// ---- the API ----

class ApiError extends Error {}

async function api(method, path, body) {
  const opt = { method, headers: {}, credentials: 'same-origin', cache: 'no-store' };
  if (body !== undefined) {
    opt.headers['content-type'] = 'application/json';
    opt.body = JSON.stringify(body);
  }
  const r = await fetch(API + path, opt);
  const text = await r.text();
  let v = null;
  try { v = text ? JSON.parse(text) : null; } catch (_) { v = null; }
  if (r.status === 401) {
    // The session ended (expired, logged out elsewhere, server restarted): back to the login form.
    location.reload();
    throw new ApiError('logged out');
  }
  if (!r.ok) throw new ApiError((v && v.error && v.error.message) || 'HTTP ' + r.status);
  return v;
}

function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') u.set(k, v);
  const s = u.toString();
  return s ? '?' + s : '';
}

function say(msg, isError) {
  const s = $('#status');
  s.textContent = msg || '';
  s.classList.toggle('error', !!isError);
}

async function act(button, fn) {
  button.disabled = true;
  try {
    await fn();
  } catch (e) {
    if (!(e instanceof ApiError && e.message === 'logged out')) say(e.message, true);
  } finally {
    button.disabled = false;
  }
}

// ---- pages ----

const pages = {};
let current = null;

function route() {
  const hash = location.hash.replace(/^#/, '') || 'overview';
  const [name, ...rest] = hash.split('/');
  const page = pages[name] ? name : 'overview';
  const arg = decodeURIComponent(rest.join('/'));
  for (const s of document.querySelectorAll('main > section')) s.hidden = s.dataset.page !== page;
  for (const a of document.querySelectorAll('.top nav a')) {
    const on = a.dataset.page === page || (page === 'request' && a.dataset.page === 'requests');
    if (on) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (current && current !== page && pages[current].leave) pages[current].leave();
  const changed = current !== page;
  current = page;
  say('');
  document.title = 'router · ' + page;
  pages[page].show(arg).catch((e) => say(e.message, true));
  if (changed) $('#page-' + page + ' h1').focus({ preventScroll: true });
}

// ---- Overview ----

const ov = { range: '24h', since: null, until: null, token: '', costBy: 'channel', rows: [], bucket: 'hour' };

// 7d and 30d are whole UTC days (today included), which the server answers from its daily rollups; 24h is the
// last 24 hours, hour by hour, from the records.
function dayStart(daysBack) {
  const now = new Date();
  return Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate()) - daysBack * 864e5;
}

function rangeParams() {
  if (ov.range === 'custom') return { since: ov.since, until: ov.until };
  if (ov.range === '24h') return { since: '24h' };
  const days = ov.range === '7d' ? 7 : 30;
  return { since: new Date(dayStart(days - 1)).toISOString().slice(0, 10) };
}

function rangeBounds() {
  const now = Date.now();
  if (ov.range === '24h') return [now - 864e5, now];
  if (ov.range === '7d') return [dayStart(6), now];
  if (ov.range === '30d') return [dayStart(29), now];
  return [Date.parse(ov.since), ov.until ? Date.parse(ov.until) : now];
}

function bucketLabels(bucket, lo, hi) {
  const out = [];
  const step = bucket === 'hour' ? 36e5 : 864e5;
  let t = Math.floor(lo / step) * step;
  for (; t < hi && out.length < 400; t += step) {
    const iso = new Date(t).toISOString();
    out.push(bucket === 'hour' ? iso.slice(0, 10) + ' ' + iso.slice(11, 13) + ':00' : iso.slice(0, 10));
  }
  return out;
}

function tokenLabel(r) {
  const names = (r.token_keys || []).filter((n) => n !== r.token).join(', ');
  if (r.token === '-' || !r.token) return '(none)';
  return names ? names + ' (' + r.token + ')' : r.token;
}

function sumRows(rows) {
  const t = { requests: 0, errors: 0, input: 0, cache_read: 0, cache_write: 0, output: 0, cost: 0, unknown: 0 };
  for (const r of rows) {
    t.requests += r.requests; t.errors += r.errors; t.input += r.input; t.cache_read += r.cache_read;
    t.cache_write += r.cache_write; t.output += r.output; t.cost += r.cost_usd || 0;
    t.unknown += r.unknown_cost_requests || 0;
  }
  return t;
}

function groupRows(rows, keyOf) {
  const m = new Map();
  for (const r of rows) {
    const k = keyOf(r);
    if (!m.has(k)) m.set(k, []);
    m.get(k).push(r);
  }
  return m;
}

function percentile(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

function stat(label, value, title) {
  return el('div', { class: 'card stat', title }, el('div', { class: 'label' }, label), el('div', { class: 'value' }, value));
}

// A stacked bar chart: labels along x, one series per stack layer. Hover titles carry the exact values.
function stacked(box, labels, series, fmt, name) {
  clear(box);
  const W = 640, H = 220, L = 52, B = 24, T = 8;
  const totals = labels.map((_, i) => series.reduce((a, s) => a + (s.values[i] || 0), 0));
  const max = Math.max(...totals, 0);
  const svg = sv('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': name + ': ' + fmt(totals.reduce((a, b) => a + b, 0)) + ' in total' });
  const y = (v) => H - B - (max ? (v / max) * (H - B - T) : 0);
  for (let g = 0; g <= 3; g++) {
    const v = (max * g) / 3;
    svg.append(sv('line', { class: 'grid', x1: L, x2: W, y1: y(v), y2: y(v) }));
    svg.append(sv('text', { class: 'axis', x: L - 4, y: y(v) + 3, 'text-anchor': 'end' }, fmt(v)));
  }
  const bw = (W - L) / Math.max(labels.length, 1);
  const every = Math.ceil(labels.length / 8);
  labels.forEach((lab, i) => {
    let acc = 0;
    series.forEach((s, si) => {
      const v = s.values[i] || 0;
      if (!v) return;
      const r = sv('rect', { class: 's' + (si % 6), x: L + i * bw + bw * 0.12, width: Math.max(bw * 0.76, 1), y: y(acc + v), height: Math.max(y(acc) - y(acc + v), 0.5) });
      r.append(sv('title', {}, `${lab} · ${s.name}: ${fmt(v)}`));
      svg.append(r);
      acc += v;
    });
    if (i % every === 0) {
      const short = lab.length > 10 ? lab.slice(11, 16) || lab.slice(5, 10) : lab.slice(5);
      svg.append(sv('text', { class: 'axis', x: L + i * bw + bw / 2, y: H - 8, 'text-anchor': 'middle' }, short));
    }
  });
  box.append(svg);
  box.append(el('div', { class: 'legend' }, series.map((s, si) => el('span', { class: 's' + (si % 6) }, s.name))));
}

// A record as a usage row, to sum with the same code.
function recordCounters(r) {
  const t = r.tokens || {};
  return { session: r.session, requests: 1, errors: r.outcome === 'ok' || r.outcome === 'client_closed' ? 0 : 1, input: t.input || 0,
    cache_read: t.cache_read || 0, cache_write: t.cache_write || 0, output: t.output || 0, cost_usd: r.cost_usd,
    unknown_cost_requests: r.cost_usd === null || r.cost_usd === undefined ? 1 : 0 };
}

function topTable(title, groups, labelOf) {
  const rows = [...groups.entries()].map(([k, rs]) => [k, sumRows(rs), rs[0]]);
  rows.sort((a, b) => b[1].cost - a[1].cost || b[1].requests - a[1].requests);
  const body = rows.slice(0, 10).map(([k, t, first]) =>
    el('tr', {},
      el('td', {}, labelOf ? labelOf(first) : k),
      el('td', { class: 'num' }, num(t.requests)),
      el('td', { class: 'num' }, pct(t.errors, t.requests)),
      el('td', { class: 'num' }, compact(t.input + t.cache_read + t.cache_write)),
      el('td', { class: 'num' }, compact(t.output)),
      el('td', { class: 'num' }, usd(t.cost))));
  if (!body.length) body.push(el('tr', {}, el('td', { colspan: 6, class: 'muted' }, 'nothing in this range')));
  return el('figure', { class: 'card' }, el('figcaption', {}, title),
    el('div', { class: 'table-wrap' }, el('table', {},
      el('thead', {}, el('tr', {}, el('th', {}, 'Name'), el('th', { class: 'num' }, 'Requests'), el('th', { class: 'num' }, 'Errors'),
        el('th', { class: 'num' }, 'In'), el('th', { class: 'num' }, 'Out'), el('th', { class: 'num' }, 'Cost'))),
      el('tbody', {}, body))));
}

pages.overview = {
  async show() {
    for (const b of document.querySelectorAll('[data-range]')) b.setAttribute('aria-pressed', String(b.dataset.range === ov.range));
    $('#custom-range').hidden = ov.range !== 'custom';
    if (ov.range === 'custom' && !ov.since) return;
    const [lo, hi] = rangeBounds();
    ov.bucket = hi - lo <= 2 * 864e5 ? 'hour' : 'day';
    const p = rangeParams();
    const started = performance.now();
    const [usage, recent] = await Promise.all([
      api('GET', '/usage' + qs({ ...p, group_by: ov.bucket + ',channel,token,model,key' })),
      api('GET', '/requests' + qs({ ...p, limit: 1000, token: ov.token })),
    ]);
    ov.rows = usage.rows;
    ov.recent = recent.requests;
    ov.source = usage.source;
    ov.loadedMs = Math.round(performance.now() - started);
    ov.labels = bucketLabels(ov.bucket, lo, hi);
    this.render();
  },
  render() {
    // The token choice lists every upstream token seen in the range.
    const sel = $('#ov-token');
    const tokens = groupRows(ov.rows.filter((r) => r.token !== '-'), (r) => r.token);
    clear(sel).append(el('option', { value: '' }, 'all tokens'));
    for (const [fp, rs] of tokens) sel.append(el('option', { value: fp, selected: fp === ov.token }, tokenLabel(rs[0])));
    const rows = ov.token ? ov.rows.filter((r) => r.token === ov.token) : ov.rows;
    const t = sumRows(rows);
    const ttfb = ov.recent.map((r) => r.ttfb_ms).filter((v) => v !== null && v !== undefined).sort((a, b) => a - b);
    const totalIn = t.input + t.cache_read + t.cache_write;
    // TTFB and sessions are read from request records, the latest 1,000 of the range: say what that covers.
    const all = ov.recent.length >= t.requests;
    const oldest = ov.recent.length ? ov.recent[ov.recent.length - 1].time_ms : null;
    const since = oldest ? new Date(oldest).toISOString().slice(0, 16).replace('T', ' ') + ' UTC' : '';
    const sample = all ? `over all ${num(ov.recent.length)} requests of the range` : `over the latest ${num(ov.recent.length)} requests (since ${since})`;
    clear($('#ov-cards')).append(
      stat('Requests', num(t.requests)),
      stat('Error rate', pct(t.errors, t.requests), num(t.errors) + ' errors'),
      stat('Input tokens', compact(t.input), num(t.input) + ' uncached input tokens'),
      stat('Cache read', compact(t.cache_read), num(t.cache_read)),
      stat('Cache write', compact(t.cache_write), num(t.cache_write)),
      stat('Output tokens', compact(t.output), num(t.output)),
      stat('Cost', usd(t.cost), t.unknown ? t.unknown + ' requests at an unknown price are not included' : 'all prices known'),
      stat('Cache hit rate', pct(t.cache_read, totalIn), 'cache read / all input tokens'),
      stat('TTFB p50', ms(percentile(ttfb, 0.5)), sample),
      stat('TTFB p95', ms(percentile(ttfb, 0.95)), sample));
    $('#ov-source').textContent = (ov.source === 'daily' ? 'from the daily rollups (whole UTC days: the range reaches past the records kept) · ' : '') + 'loaded in ' + ov.loadedMs + ' ms';
    const at = (r) => r[ov.bucket];
    const idx = new Map(ov.labels.map((l, i) => [l, i]));
    const kinds = [['input', 'input'], ['cache_read', 'cache read'], ['cache_write', 'cache write'], ['output', 'output']];
    const tokSeries = kinds.map(([k, name]) => {
      const values = ov.labels.map(() => 0);
      for (const r of rows) if (idx.has(at(r))) values[idx.get(at(r))] += r[k];
      return { name, values };
    });
    stacked($('#ov-tokens'), ov.labels, tokSeries, compact, 'Tokens by kind');
    const by = ov.costBy;
    const keyOf = (r) => (by === 'token' ? tokenLabel(r) : r[by]);
    const groups = [...groupRows(rows, keyOf).entries()].map(([k, rs]) => [k, rs, sumRows(rs).cost]).sort((a, b) => b[2] - a[2]);
    const top = groups.slice(0, 5);
    const rest = groups.slice(5).flatMap((g) => g[1]);
    if (rest.length) top.push(['other', rest, 0]);
    const costSeries = top.map(([k, rs]) => {
      const values = ov.labels.map(() => 0);
      for (const r of rs) if (idx.has(at(r))) values[idx.get(at(r))] += r.cost_usd || 0;
      return { name: k, values };
    });
    stacked($('#ov-cost'), ov.labels, costSeries, usd, 'Cost by ' + by);
    clear($('#ov-tops')).append(
      topTable('Top models', groupRows(rows, (r) => r.model)),
      topTable('Top channels', groupRows(rows, (r) => r.channel)),
      topTable('Top gateway keys', groupRows(rows, (r) => r.key)),
      topTable('Top upstream tokens', groupRows(rows, (r) => r.token), tokenLabel),
      topTable(all ? 'Top sessions' : `Top sessions of the latest ${num(ov.recent.length)} requests (since ${since})`, groupRows(ov.recent.filter((r) => r.session).map(recordCounters), (r) => r.session)));
  },
};

// ---- Requests ----

const rq = { filters: {}, cursors: [], cursor: null, next: null, events: null, shown: [] };

// Pages come filtered by the server (time, key, channel, token, model, session); endpoint, status and outcome
// are filtered here. A live row is checked against everything (a session filter as the hash it is stored as).
function rqMatches(r, live) {
  const f = rq.filters;
  const model = r.upstream_model || r.requested_model;
  if (f.key && r.gateway_key !== f.key) return false;
  if (f.channel && r.channel !== f.channel) return false;
  if (f.endpoint && r.endpoint !== f.endpoint && `${r.channel}/${r.endpoint}` !== f.endpoint) return false;
  if (f.token && r.token_key !== f.token && r.token_fp !== f.token) return false;
  if (f.model && model !== f.model && r.requested_model !== f.model) return false;
  if (f.status && String(r.status) !== f.status) return false;
  if (live && f.session && r.session !== f.session) return false;
  if (f.outcome === '!ok' && r.outcome === 'ok') return false;
  if (f.outcome && f.outcome !== '!ok' && r.outcome !== f.outcome) return false;
  if (f.since && r.time_ms < Date.parse(f.since)) return false;
  if (f.until && r.time_ms >= Date.parse(f.until)) return false;
  return true;
}

function outcomePill(o) { return pill(o, o === 'ok' ? 'ok' : o === 'client_closed' ? 'warn' : 'bad'); }

function rqRow(r, fresh) {
  const model = r.upstream_model && r.upstream_model !== r.requested_model ? `${r.requested_model} → ${r.upstream_model}` : r.requested_model;
  const t = r.tokens || {};
  const open = () => { location.hash = '#request/' + encodeURIComponent(r.id); };
  return el('tr', { tabindex: 0, class: fresh ? 'fresh' : null, 'data-id': r.id, onclick: open, onkeydown: (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); open(); } } },
    el('td', { class: 'when', title: r.time }, shortWhen(r.time_ms)),
    el('td', {}, model),
    el('td', { class: 'hide-narrow' }, r.channel ? (r.endpoint ? `${r.channel}/${r.endpoint}` : r.channel) : '–'),
    el('td', { class: 'hide-narrow' }, r.gateway_key || '–'),
    el('td', { class: 'hide-narrow' }, r.status || '–'),
    el('td', {}, outcomePill(r.outcome)),
    el('td', { class: 'num hide-narrow' }, `${compact((t.input || 0) + (t.cache_read || 0) + (t.cache_write || 0))} / ${compact(t.output || 0)}`),
    el('td', { class: 'num' }, usd(r.cost_usd)),
    el('td', { class: 'num hide-narrow' }, ms(r.ttfb_ms)));
}

function rqRender() {
  const body = clear($('#rq-table tbody'));
  const rows = rq.shown.filter(rqMatches);
  for (const r of rows) body.append(rqRow(r));
  if (!rows.length) body.append(el('tr', {}, el('td', { colspan: 9, class: 'muted' }, 'no requests match')));
  $('#rq-older').disabled = !rq.next;
  $('#rq-newest').disabled = !rq.cursor;
}

async function rqLoad() {
  const f = rq.filters;
  const iso = (v) => (v ? new Date(v).toISOString() : '');
  const page = await api('GET', '/requests' + qs({ limit: PAGE_SIZE, cursor: rq.cursor, since: iso(f.since), until: iso(f.until), key: f.key, channel: f.channel, token: f.token, model: f.model, session: f.session }));
  rq.shown = page.requests;
  rq.next = page.next_cursor;
  rqRender();
}

function rqTail(on) {
  if (rq.events) { rq.events.close(); rq.events = null; }
  if (!on) return;
  rq.events = new EventSource(API + '/events');
  rq.events.addEventListener('request', (e) => {
    if (rq.cursor) return; // only the first page grows
    let r;
    try { r = JSON.parse(e.data); } catch (_) { return; }
    r.time_ms = r.time_ms || Date.parse(r.time);
    if (!rqMatches(r, true)) return;
    rq.shown.unshift(r);
    rq.shown.length = Math.min(rq.shown.length, PAGE_SIZE);
    const body = $('#rq-table tbody');
    if (body.querySelector('td[colspan]')) clear(body);
    body.prepend(rqRow(r, true));
    while (body.children.length > PAGE_SIZE) body.lastElementChild.remove();
  });
}

pages.requests = {
  async show() {
    await rqLoad();
    rqTail($('#rq-live').checked);
    api('GET', '/keys').then((keys) => {
      clear($('#dl-keys')).append(keys.map((k) => el('option', { value: k.name })));
    }).catch(() => {});
  },
  leave() { rqTail(false); },
};

pages.request = {
  async show(id) {
    $('#rd-id').textContent = id;
    const box = clear($('#rd-body'));
    const r = await api('GET', '/requests/' + encodeURIComponent(id));
    const t = r.tokens || {};
    const token = r.token_key ? `${r.token_key} (${r.token_fp || ''})` : r.token_fp;
    const kv = [
      ['Time', when(r.time_ms) + ' · ' + r.time], ['Gateway key', r.gateway_key], ['Client protocol', r.client_protocol],
      ['Path', r.path], ['Requested model', r.requested_model], ['Upstream model', r.upstream_model],
      ['Channel', r.channel], ['Endpoint', r.endpoint], ['Upstream token', token], ['Strategy', r.strategy],
      ['Status', r.status || '–'], ['Outcome', outcomePill(r.outcome)], ['Stream', r.stream ? 'yes' : 'no'],
      ['Time to first byte', ms(r.ttfb_ms)], ['Total time', ms(r.total_ms)],
      ['Tokens', `input ${num(t.input)} · cache read ${num(t.cache_read)} · cache write ${num(t.cache_write)} · output ${num(t.output)} · reasoning ${num(t.reasoning)}`],
      ['Usage from', r.usage_source], ['Cost', usd(r.cost_usd)], ['Translation', r.translated || 'none'],
      ['Session', r.session], ['Affinity', r.affinity], ['Error', r.error],
    ].filter(([, v]) => v !== undefined && v !== null && v !== '');
    box.append(el('div', { class: 'card' }, el('dl', { class: 'kv' }, kv.map(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]))));
    const attempts = r.attempts || [];
    box.append(el('h2', { class: 'spaced' }, `Attempts (${attempts.length})`));
    box.append(el('div', { class: 'table-wrap' }, el('table', { id: 'rd-attempts' },
      el('thead', {}, el('tr', {}, ['#', 'Channel', 'Endpoint', 'Upstream token', 'Model', 'Status', 'Outcome', 'Time'].map((h) => el('th', {}, h)))),
      el('tbody', {}, attempts.length ? attempts.map((a, i) => el('tr', {},
        el('td', {}, i + 1), el('td', {}, a.channel), el('td', {}, a.endpoint), el('td', {}, a.token_key || a.token_fp),
        el('td', {}, a.model), el('td', {}, a.status || '–'), el('td', {}, outcomePill(a.outcome)), el('td', { class: 'num' }, ms(a.ms))))
        : el('tr', {}, el('td', { colspan: 8, class: 'muted' }, 'no upstream was tried'))))));
  },
};

// ---- Channels ----

function sparkline(points) {
  if (points.length < 2) return null;
  const W = 120, H = 28;
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  const pts = points.map(([x, y]) => `${((x - x0) / (x1 - x0 || 1)) * (W - 2) + 1},${H - 2 - ((y - y0) / (y1 - y0 || 1)) * (H - 4)}`).join(' ');
  return sv('svg', { class: 'spark', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `balance from ${y0.toFixed(2)} to ${y1.toFixed(2)}` }, sv('polyline', { points: pts }));
}

function balanceText(b) {
  if (!b) return '–';
  if (b.status !== 'ok') return b.status + (b.reason ? ': ' + b.reason : '');
  return (b.balances || []).map((x) => `${x.amount.toFixed(2)} ${x.currency}`).join(' · ') || 'ok';
}

function modelList(models) {
  if (!models.length) return el('span', { class: 'muted' }, 'none yet (discovery lists them)');
  return el('details', {}, el('summary', {}, `${models.length} model${models.length === 1 ? '' : 's'}`),
    el('ul', { class: 'models' }, models.map((m) => el('li', { class: 'mono' }, m))));
}

pages.channels = {
  async show() {
    const [channels, health, balances, history, catalogue] = await Promise.all([
      api('GET', '/channels'), api('GET', '/health'), api('GET', '/balances'), api('GET', '/balances/history' + qs({ since: '30d' })),
      api('GET', '/models'),
    ]);
    const modelsOf = new Map(catalogue.channels.map((c) => [c.channel, c.models]));
    const list = clear($('#ch-list'));
    if (!channels.length) list.append(el('p', { class: 'muted' }, 'No channels yet: add some to the configuration or import them.'));
    const latest = new Map(balances.map((b) => [b.fingerprint + '|' + b.channel, b]));
    const series = groupRows(history.filter((b) => b.status === 'ok' && b.balances && b.balances.length), (b) => b.fingerprint + '|' + b.channel);
    const latency = new Map((health.latency || []).map((l) => [l.channel + '/' + l.endpoint, l]));
    for (const c of channels) {
      const cooling = health.cooling.filter((h) => h.channel === c.name);
      const tokens = c.endpoints.flatMap((e) => e.tokens.map((t) => [e, t]));
      const actions = el('div', { class: 'actions' });
      if (c.read_only) actions.append(el('span', { class: 'muted' }, 'defined in ' + c.origin));
      else {
        const b = el('button', { type: 'button', class: c.enabled ? 'danger' : null }, c.enabled ? 'Disable' : 'Enable');
        b.addEventListener('click', () => act(b, async () => {
          await api('POST', `/channels/${encodeURIComponent(c.name)}/${c.enabled ? 'disable' : 'enable'}`, c.enabled ? { reason: 'disabled from the dashboard' } : undefined);
          say(`${c.name} ${c.enabled ? 'disabled' : 'enabled'}`);
          await pages.channels.show();
        }));
        actions.append(b);
      }
      const test = el('button', { type: 'button', class: 'ghost' }, 'Test');
      test.addEventListener('click', () => act(test, async () => {
        say('testing ' + c.name + '…');
        const rep = await api('POST', `/channels/${encodeURIComponent(c.name)}/test`);
        say(`${c.name}: ${rep.summary}`, !rep.ok);
        await pages.channels.show();
      }));
      actions.append(test);
      const card = el('article', { class: 'card', 'data-channel': c.name },
        el('div', { class: 'channel-head' },
          el('h2', {}, c.name, ' ', c.enabled ? pill('enabled', 'ok') : pill('disabled', 'bad'), ' ', cooling.length ? pill('cooling', 'warn') : null),
          actions),
        el('dl', { class: 'kv' },
          el('dt', {}, 'Protocol'), el('dd', {}, c.protocol),
          el('dt', {}, 'Priority · weight'), el('dd', {}, `${c.priority} · ${c.weight}`),
          el('dt', {}, 'Models'), el('dd', {}, modelList(modelsOf.get(c.name) || [])),
          c.tags.length ? [el('dt', {}, 'Tags'), el('dd', {}, c.tags.join(', '))] : null,
          c.disabled_reason ? [el('dt', {}, 'Disabled because'), el('dd', {}, c.disabled_reason)] : null),
        el('div', { class: 'table-wrap' }, el('table', {},
          el('thead', {}, el('tr', {}, ['Endpoint', 'Upstream token', 'Balance', '30 days'].map((h) => el('th', {}, h)))),
          el('tbody', {}, tokens.map(([e, t]) => {
            const k = t.fingerprint + '|' + c.name;
            const pts = (series.get(k) || []).map((b) => [b.checked_at, b.balances[0].amount]);
            const l = latency.get(c.name + '/' + e.name);
            return el('tr', {},
              el('td', { title: e.base_url },
                e.name,
                // The endpoint's observed time to first byte (moving average), under its name: narrow screens.
                el('div', { class: 'ttfb', title: l ? `${num(l.ok)} ok · ${num(l.errors)} errors` : null },
                  el('span', { class: 'muted' }, 'first byte '),
                  l && l.ttfb_ms !== null && l.ttfb_ms !== undefined ? el('span', { class: 'latency' }, ms(l.ttfb_ms)) : el('span', { class: 'muted', title: 'not measured yet' }, '–'))),
              el('td', {}, t.token_key === t.fingerprint ? t.fingerprint : `${t.token_key} (${t.fingerprint})`, t.enabled ? null : [' ', pill('off', 'bad')]),
              el('td', {}, balanceText(latest.get(k))),
              el('td', {}, sparkline(pts) || el('span', { class: 'muted' }, pts.length ? 'one check' : 'no checks')));
          })))),
        cooling.length ? el('div', { class: 'table-wrap' }, el('table', {},
          el('thead', {}, el('tr', {}, ['Cooling', 'Reason', 'Left', ''].map((h) => el('th', {}, h)))),
          el('tbody', {}, cooling.map((h) => {
            const b = el('button', { type: 'button', class: 'ghost' }, 'Clear');
            b.addEventListener('click', () => act(b, async () => {
              await api('POST', '/health/clear', { key: h.key });
              say('cooldown of ' + h.key + ' cleared');
              await pages.channels.show();
            }));
            return el('tr', {}, el('td', {}, h.key, ' ', pill(h.level)), el('td', {}, h.reason), el('td', {}, left(h.remaining_ms)), el('td', {}, b));
          })))) : null);
      list.append(card);
    }
  },
};

// ---- Keys ----

function budgetMeter(k) {
  const b = k.limits && k.limits.budget;
  if (!b) return el('span', {}, usd(k.spent_usd), el('span', { class: 'muted' }, ` this ${k.period}`));
  const f = b.usd ? k.spent_usd / b.usd : 1;
  const cls = f >= 1 ? 'bad' : f >= 0.8 ? 'warn' : '';
  const fill = el('div', {});
  fill.style.width = (Math.min(f, 1) * 100).toFixed(1) + '%'; // CSSOM, which the CSP allows (no style attribute)
  return el('div', {},
    el('div', {}, `${usd(k.spent_usd)} of ${usd(b.usd)} per ${b.per}`),
    el('div', { class: 'meter ' + cls, role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': Math.round(Math.min(f, 1) * 100), 'aria-label': 'budget spent' },
      fill));
}

function limitsText(l) {
  const parts = [];
  if (l.rpm) parts.push(l.rpm + ' req/min');
  if (l.tpm) parts.push(compact(l.tpm) + ' tokens/min');
  if (l.max_parallel) parts.push(l.max_parallel + ' at once');
  return parts.join(' · ') || 'none';
}

function showSecret(v) {
  $('#k-secret-name').textContent = v.name;
  $('#k-secret-value').textContent = v.key;
  $('#k-secret').hidden = false;
  $('#k-secret-value').focus();
}

pages.keys = {
  async show() {
    const keys = await api('GET', '/keys');
    const list = clear($('#k-list'));
    const rows = keys.map((k) => {
      const actions = el('div', { class: 'actions' });
      if (k.origin === 'store' && k.state !== 'revoked') {
        const mk = (label, path, cls, confirmText, after) => {
          const b = el('button', { type: 'button', class: cls }, label);
          b.addEventListener('click', () => {
            if (confirmText && !window.confirm(confirmText)) return;
            act(b, async () => {
              const v = await api('POST', `/keys/${encodeURIComponent(k.name)}/${path}`);
              if (after) after(v);
              else say(`${k.name}: ${path}d`);
              await pages.keys.show();
            });
          });
          return b;
        };
        if (k.state === 'disabled') actions.append(mk('Enable', 'enable', 'ghost'));
        else actions.append(mk('Disable', 'disable', 'ghost'));
        actions.append(mk('Rotate', 'rotate', 'ghost', `Rotate ${k.name}? Its current secret stops working now.`, showSecret));
        actions.append(mk('Revoke', 'revoke', 'danger', `Revoke ${k.name} for good?`));
      } else if (k.origin !== 'store') actions.append(el('span', { class: 'muted' }, 'in the configuration file'));
      const state = pill(k.state, k.state === 'active' ? 'ok' : 'bad');
      return el('tr', { 'data-key': k.name },
        el('td', {}, el('strong', {}, k.name), k.prefix ? el('div', { class: 'muted mono' }, k.prefix + '…') : null, k.note ? el('div', { class: 'muted' }, k.note) : null),
        el('td', {}, state),
        el('td', {}, k.allow || 'all models'),
        el('td', {}, limitsText(k.limits || {})),
        el('td', {}, budgetMeter(k)),
        el('td', { class: 'num' }, num(k.requests_today)),
        el('td', { title: k.last_used_ms ? new Date(k.last_used_ms).toISOString() : '' }, ago(k.last_used_ms)),
        el('td', {}, actions));
    });
    list.append(el('div', { class: 'table-wrap' }, el('table', {},
      el('thead', {}, el('tr', {}, ['Key', 'State', 'Models', 'Limits', 'Spend', 'Today', 'Last used', ''].map((h) => el('th', {}, h)))),
      el('tbody', {}, rows.length ? rows : el('tr', {}, el('td', { colspan: 8, class: 'muted' }, 'No gateway keys: the proxy is open (loopback only). Create one below.'))))));
  },
};

// ---- wiring ----

function wire() {
  for (const b of document.querySelectorAll('[data-range]')) {
    b.addEventListener('click', () => {
      ov.range = b.dataset.range;
      pages.overview.show().catch((e) => say(e.message, true));
    });
  }
  $('#custom-range').addEventListener('submit', (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    ov.since = new Date(f.get('since')).toISOString();
    ov.until = f.get('until') ? new Date(f.get('until')).toISOString() : null;
    pages.overview.show().catch((err) => say(err.message, true));
  });
  $('#ov-token').addEventListener('change', (e) => {
    ov.token = e.target.value;
    pages.overview.show().catch((err) => say(err.message, true));
  });
  $('#ov-cost-by').addEventListener('change', (e) => { ov.costBy = e.target.value; pages.overview.render(); });

  $('#rq-filters').addEventListener('submit', (e) => {
    e.preventDefault();
    rq.filters = Object.fromEntries([...new FormData(e.target).entries()].filter(([, v]) => v !== ''));
    rq.cursor = null; rq.cursors = [];
    rqLoad().catch((err) => say(err.message, true));
  });
  $('#rq-filters').addEventListener('reset', () => {
    rq.filters = {}; rq.cursor = null; rq.cursors = [];
    setTimeout(() => rqLoad().catch((err) => say(err.message, true)));
  });
  $('#rq-older').addEventListener('click', () => {
    rq.cursors.push(rq.cursor); rq.cursor = rq.next;
    rqLoad().catch((err) => say(err.message, true));
  });
  $('#rq-newest').addEventListener('click', () => {
    rq.cursor = null; rq.cursors = [];
    rqLoad().catch((err) => say(err.message, true));
  });
  $('#rq-live').addEventListener('change', (e) => rqTail(e.target.checked));

  $('#ch-refresh').addEventListener('click', (e) => act(e.target, async () => {
    say('checking balances…');
    await api('POST', '/balances/refresh');
    say('balances checked');
    await pages.channels.show();
  }));
  $('#ch-discover').addEventListener('click', (e) => act(e.target, async () => {
    say('asking every channel for its models…');
    const v = await api('POST', '/discover');
    await pages.channels.show();
    say(num(v.models) + ' models discovered');
  }));

  $('#k-secret-hide').addEventListener('click', () => {
    $('#k-secret').hidden = true;
    $('#k-secret-value').textContent = '';
  });
  $('#k-create').addEventListener('submit', (e) => {
    e.preventDefault();
    const form = e.target;
    const body = Object.fromEntries([...new FormData(form).entries()].filter(([, v]) => v !== ''));
    if (!body.budget) delete body.per;
    act(form.querySelector('button'), async () => {
      const v = await api('POST', '/keys', body);
      form.reset();
      showSecret(v);
      await pages.keys.show();
    });
  });

  for (const h of document.querySelectorAll('main h1')) h.setAttribute('tabindex', '-1');
  $('#rq-filter-box').open = window.matchMedia('(min-width: 641px)').matches;
  window.addEventListener('hashchange', route);
  route();
}

document.addEventListener('DOMContentLoaded', wire);
