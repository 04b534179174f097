// The mixpanel-actions console. No framework, no build step: DOM built with
// textContent only (nothing the server returns is parsed as HTML). The admin
// token lives in this tab's sessionStorage and goes out as a bearer header.
'use strict';

const KEY = 'mixpanel-actions-admin-token';
const $ = (id) => document.getElementById(id);
let config = null;
let overviewTimer = null;
let deadLetters = [];

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}
const pretty = (v) => (typeof v === 'string' ? v : JSON.stringify(v, null, 2));
const status = (text) => { $('status').textContent = text || ''; };
const token = () => sessionStorage.getItem(KEY);

async function api(method, path, body) {
  const headers = { accept: 'application/json' };
  const t = token();
  if (t) headers.authorization = 'Bearer ' + t;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: 'omit', cache: 'no-store' });
  let json = null;
  try { json = await r.json(); } catch (_) { json = null; }
  if (r.status === 401 && path.startsWith('/admin/')) { signOut(t ? 'The admin token was refused.' : ''); }
  if (r.status === 404 && json && json.code === 'admin_off') { showAdminOff(); }
  return { status: r.status, json };
}

// ---- sign-in -------------------------------------------------------------

function showOnly(id) {
  for (const s of document.querySelectorAll('main > section')) s.hidden = s.id !== id;
}

function showAdminOff() {
  $('nav').hidden = true;
  showOnly('admin-off');
}

function signOut(message) {
  sessionStorage.removeItem(KEY);
  config = null;
  $('nav').hidden = true;
  showOnly('login');
  $('login-error').textContent = message || '';
  $('token').value = '';
  $('token').focus();
}

async function signIn() {
  const r = await api('GET', '/admin/config');
  if (r.status !== 200) {
    if (r.status !== 401 && !(r.json && r.json.code === 'admin_off')) {
      signOut('The server answered ' + r.status + ': ' + ((r.json && r.json.message) || ''));
    }
    return;
  }
  config = r.json;
  $('token').value = '';
  $('nav').hidden = false;
  fillDestinations();
  route();
}

function fillDestinations() {
  for (const id of ['t-dest', 'd-dest']) {
    const s = $(id);
    const keep = id === 'd-dest' ? [s.options[0]] : [];
    s.replaceChildren(...keep, ...config.destinations.map((d) => el('option', { value: d.id, text: d.id })));
  }
}

// ---- pages ---------------------------------------------------------------

const PAGES = { tester: showTester, overview: showOverview, dead: showDead, config: showConfig };

function route() {
  if (!config) return;
  const page = (location.hash || '#tester').slice(1);
  const name = PAGES[page] ? page : 'tester';
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.dataset.page === name) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  showOnly(name);
  clearInterval(overviewTimer);
  status('');
  PAGES[name]();
}

// ---- event tester ---------------------------------------------------------

const now = () => new Date().toISOString();
const SAMPLES = {
  track: () => ({ type: 'track', userId: 'user-1', anonymousId: 'anon-1', event: 'Button Clicked', properties: { button: 'signup' }, timestamp: now() }),
  identify: () => ({ type: 'identify', userId: 'user-1', anonymousId: 'anon-1', traits: { email: 'user-1@example.com', name: 'Ada Lovelace', plan: 'pro' }, timestamp: now() }),
  page: () => ({ type: 'page', userId: 'user-1', name: 'Pricing', properties: { url: 'https://example.com/pricing', title: 'Pricing' }, timestamp: now() }),
  screen: () => ({ type: 'screen', userId: 'user-1', name: 'Home', properties: { variant: 'a' }, timestamp: now() }),
  group: () => ({ type: 'group', userId: 'user-1', groupId: 'company-1', traits: { name: 'Example Inc', employees: 42 }, timestamp: now() }),
  alias: () => ({ type: 'alias', userId: 'user-1', previousId: 'anon-1', timestamp: now() }),
  order: () => ({ type: 'track', userId: 'user-1', event: 'Order Completed', properties: { order_id: 'o-1', revenue: 30, currency: 'USD', products: [{ product_id: 'p-1', name: 'Tee', price: 10, quantity: 1 }, { product_id: 'p-2', name: 'Mug', price: 20, quantity: 1 }] }, timestamp: now() }),
};

function showTester() {
  if (!$('t-event').value.trim()) $('t-event').value = pretty(SAMPLES.track());
}

function readEvent() {
  $('t-error').textContent = '';
  try {
    const v = JSON.parse($('t-event').value);
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('the event must be a JSON object');
    return v;
  } catch (e) {
    $('t-error').textContent = 'Not a valid event: ' + e.message;
    return null;
  }
}

function headersTable(headers) {
  const rows = Object.entries(headers || {}).map(([k, v]) => el('tr', {}, el('th', { scope: 'row', text: k }), el('td', {}, el('code', { text: v }))));
  return rows.length ? el('table', { class: 'headers' }, el('tbody', {}, rows)) : el('p', { class: 'note', text: 'no headers' });
}

async function testEvent() {
  const event = readEvent();
  if (!event) return;
  const dest = $('t-dest').value;
  const r = await api('POST', '/v1/destinations/' + encodeURIComponent(dest) + '/preview', { event });
  const out = $('t-result');
  if (r.status !== 200) { out.replaceChildren(el('p', { class: 'error', text: 'Preview failed (' + r.status + '): ' + ((r.json && r.json.message) || '') })); return; }
  const p = r.json;
  const parts = [el('h3', { text: 'Matched subscriptions' })];
  parts.push(p.matched.length ? el('ul', { id: 't-matched' }, p.matched.map((m) => el('li', { text: m }))) : el('p', { id: 't-matched', class: 'warnText', text: 'No subscription matches this event: nothing would be sent.' }));
  for (const e of p.subscription_errors || []) parts.push(el('p', { class: 'error', text: 'Subscription "' + e.subscription + '": ' + e.message }));
  for (const e of p.errors || []) parts.push(el('div', { class: 'card t-error' }, el('p', { class: 'bad', text: e.subscription + ': ' + e.status + ' ' + e.message })));
  parts.push(el('h3', { text: 'Requests (' + p.requests.length + ')' }));
  p.requests.forEach((q, i) => {
    parts.push(el('div', { class: 'card t-request' },
      el('p', {}, el('b', { text: 'Request ' + (i + 1) + ' · ' + q.subscription + ' ' })),
      el('p', {}, el('span', { class: 'method', text: q.method + ' ' }), el('code', { class: 't-url', text: q.url })),
      headersTable(q.headers),
      el('pre', { text: pretty(q.body) })));
  });
  out.replaceChildren(...parts);
  status('Tested: ' + p.requests.length + ' request(s), nothing sent.');
}

// What a record is: its event name (/track, /import) or its profile operation.
function recordLabel(r) {
  if (!r || typeof r !== 'object') return 'record';
  if (typeof r.event === 'string') return r.event;
  const op = Object.keys(r).find((k) => k.startsWith('$') && !['$token', '$distinct_id', '$group_key', '$group_id', '$ip', '$time', '$ignore_time'].includes(k));
  return op ? op + (r.$group_key ? ' (group)' : ' (profile)') : 'record';
}

async function sendEvent() {
  const event = readEvent();
  if (!event) return;
  const dest = $('t-dest').value;
  if (!confirm('Send this event to Mixpanel for real, through destination "' + dest + '"?')) return;
  const r = await api('POST', '/v1/destinations/' + encodeURIComponent(dest) + '/events', event);
  const out = $('t-result');
  if (!r.json || !Array.isArray(r.json.results)) { out.replaceChildren(el('p', { class: 'error', text: 'Sending failed (' + r.status + '): ' + ((r.json && r.json.message) || '') })); return; }
  const res = r.json.results[0] || {};
  const parts = [el('h3', { text: 'Sent: Mixpanel\'s answers' }),
    el('p', { id: 't-sent-status', class: res.ok ? 'ok' : 'bad', text: (res.ok ? 'Delivered' : 'Not delivered') + ' (status ' + res.status + ')' + (res.errormessage ? ': ' + res.errormessage : '') })];
  (res.subscriptions || []).forEach((s) => {
    parts.push(el('div', { class: 'card t-answer' },
      el('p', {}, el('b', { text: s.subscription + ' · ' + recordLabel(s.sent) + ' ' }), el('span', { class: s.status === 200 ? 'ok' : 'bad', text: 'HTTP ' + s.status })),
      s.errormessage ? el('p', { class: 'bad', text: s.errormessage }) : null,
      s.sent ? el('details', {}, el('summary', { text: 'Record sent' }), el('pre', { text: pretty(s.sent) })) : null,
      el('p', { class: 'note', text: 'Mixpanel answered:' }),
      el('pre', { class: 't-answer-body', text: pretty(s.body === undefined ? null : s.body) })));
  });
  out.replaceChildren(...parts);
  status('Sent for real.');
}

// ---- overview -------------------------------------------------------------

const COUNTERS = [
  ['received', 'received'], ['unmatched', 'no subscription matched'], ['failed_validation', 'failed validation'],
  ['delivered', 'delivered (records)'], ['rejected', 'rejected by Mixpanel (records)'], ['retried', 'pending retry'], ['dead_lettered', 'dead-lettered'],
];

function chart(points, series, unit, label) {
  const NS = 'http://www.w3.org/2000/svg';
  const W = 600, H = 120, P = 8;
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('class', 'chart');
  svg.setAttribute('role', 'img');
  const values = series.flatMap(([key, , f]) => points.map((p) => f(p, key)).filter((v) => v !== null));
  const max = Math.max(1e-9, ...values);
  svg.setAttribute('aria-label', label + ', at most ' + (Math.round(max * 100) / 100) + ' ' + unit);
  const x = (i) => P + (i * (W - 2 * P)) / Math.max(1, points.length - 1);
  const y = (v) => H - P - (v / max) * (H - 2 * P);
  for (const [key, cls, f] of series) {
    const pts = points.map((p, i) => { const v = f(p, key); return v === null ? null : [x(i), y(v)]; }).filter(Boolean);
    const line = document.createElementNS(NS, 'polyline');
    line.setAttribute('points', pts.map(([a, b]) => a.toFixed(1) + ',' + b.toFixed(1)).join(' '));
    line.setAttribute('class', cls);
    svg.append(line);
    // Dots, so that a single point shows too.
    for (const [a, b] of pts.length <= 96 ? pts : []) {
      const dot = document.createElementNS(NS, 'circle');
      dot.setAttribute('cx', a.toFixed(1)); dot.setAttribute('cy', b.toFixed(1)); dot.setAttribute('r', '2.5');
      dot.setAttribute('class', cls + ' dot');
      svg.append(dot);
    }
  }
  return el('figure', {}, svg, el('figcaption', { class: 'note', text: 'scale: 0 to ' + (Math.round(max * 100) / 100) + ' ' + unit + ' (' + label + ')' }));
}

async function loadOverview() {
  const r = await api('GET', '/admin/overview?window=' + $('o-window').value);
  if (r.status !== 200) return;
  const o = r.json;
  const cards = o.destinations.map((d) => {
    const step = d.step_seconds || 60;
    const stats = COUNTERS.map(([k, label]) => el('div', { class: 'stat', 'data-counter': k }, el('b', { text: d.totals[k] }), el('span', { text: label })));
    const rate = (p, k) => p[k] / step;
    const failed = (p) => (p.rejected + p.failed_validation) / step;
    const lat = (p, k) => p[k];
    const cls = (p, k) => p.responses[k];
    return el('div', { class: 'card o-dest', 'data-destination': d.id },
      el('h3', { text: d.id + (d.dry_run ? ' (dry run)' : '') }),
      el('div', { class: 'stats' }, stats),
      el('p', {}, 'Mixpanel latency p50 ', el('b', { text: d.latency_ms.p50 === null ? '–' : d.latency_ms.p50 + ' ms' }), ', p95 ', el('b', { text: d.latency_ms.p95 === null ? '–' : d.latency_ms.p95 + ' ms' }),
        ' · answers: ' + Object.entries(d.responses).map(([k, v]) => k + ' ' + v).join(', ')),
      el('p', {}, 'Spool: ', el('b', { text: d.spool.depth === null ? 'direct mode' : d.spool.depth + ' queued' }),
        d.spool.oldest_event_age_seconds ? ', oldest ' + Math.round(d.spool.oldest_event_age_seconds) + ' s' : ''),
      el('div', { class: 'legend' }, el('span', { class: 'k-received', text: '— received/s' }), el('span', { class: 'k-delivered', text: '— delivered/s' }), el('span', { class: 'k-failed', text: '— refused/s' })),
      chart(d.points, [['received', 'received', rate], ['delivered', 'delivered', rate], ['failed', 'failed', failed]], 'per second', 'events received, records delivered and refused, ' + d.id),
      el('div', { class: 'legend' }, el('span', { class: 'k-p50', text: '— p50' }), el('span', { class: 'k-p95', text: '— p95 latency' })),
      chart(d.points, [['latency_p50_ms', 'p50', lat], ['latency_p95_ms', 'p95', lat]], 'ms', 'Mixpanel latency p50 and p95, ' + d.id),
      el('div', { class: 'legend' }, el('span', { class: 'k-delivered', text: '— 2xx' }), el('span', { class: 'k-p95', text: '— 4xx' }), el('span', { class: 'k-failed', text: '— 5xx' }), el('span', { class: 'k-received', text: '— no answer' })),
      chart(d.points, [['2xx', 'delivered', cls], ['4xx', 'p95', cls], ['5xx', 'failed', cls], ['network', 'received', cls]], 'answers', 'Mixpanel answers by status class, ' + d.id));
  });
  $('o-result').replaceChildren(...cards);
  status('Updated ' + new Date(o.now_ms).toLocaleTimeString() + ' (history since ' + new Date(o.since_ms).toLocaleString() + ')');
}

function showOverview() {
  loadOverview();
  overviewTimer = setInterval(loadOverview, 5000);
}

// ---- dead letters ---------------------------------------------------------

function deadFilter() {
  const f = {};
  if ($('d-dest').value) f.destination = $('d-dest').value;
  if ($('d-reason').value) f.reason = $('d-reason').value;
  if ($('d-since').value) f.since_ms = new Date($('d-since').value).getTime();
  if ($('d-until').value) f.until_ms = new Date($('d-until').value).getTime();
  return f;
}

async function loadDead() {
  const q = new URLSearchParams(Object.entries(deadFilter()).map(([k, v]) => [k, String(v)]));
  const r = await api('GET', '/admin/dead-letters?' + q);
  if (r.status !== 200) { $('d-list').replaceChildren(el('p', { class: 'error', text: (r.json && r.json.message) || ('HTTP ' + r.status) })); return; }
  deadLetters = r.json.dead_letters;
  $('d-summary').textContent = deadLetters.length + ' shown of ' + r.json.total + ' dead letters';
  const rows = deadLetters.map((d) => el('tr', { 'data-id': d.id },
    el('td', {}, el('input', { type: 'checkbox', class: 'd-pick', value: d.id, 'aria-label': 'select dead letter ' + d.id })),
    el('td', {}, el('button', { type: 'button', class: 'link', text: '#' + d.id, onclick: () => showLetter(d.id) })),
    el('td', { text: new Date(d.at_ms).toLocaleString() }), el('td', { text: d.destination }), el('td', { text: d.reason }),
    el('td', { text: d.status === null || d.status === undefined ? '' : d.status }), el('td', { text: d.message })));
  $('d-list').replaceChildren(rows.length ? el('table', {}, el('thead', {}, el('tr', {}, ['', 'id', 'when', 'destination', 'reason', 'status', 'message'].map((h) => el('th', { scope: 'col', text: h })))), el('tbody', {}, rows)) : el('p', { class: 'note', text: 'No dead letters match.' }));
}

async function showLetter(id) {
  const r = await api('GET', '/admin/dead-letters/' + id);
  if (r.status !== 200) return;
  const d = r.json;
  $('d-detail').replaceChildren(el('div', { class: 'card', id: 'd-letter' },
    el('h3', { text: 'Dead letter #' + d.id }),
    el('p', {}, el('b', { text: 'Reason: ' }), d.reason + (d.subscription ? ' · subscription ' + d.subscription : '') + ' · ' + new Date(d.at_ms).toLocaleString()),
    el('p', { class: 'bad', text: d.message }),
    el('h3', { text: 'You sent' }), el('pre', { text: pretty(d.event) }),
    el('h3', { text: 'Request to Mixpanel' }), el('pre', { text: pretty(d.request === undefined ? null : d.request) }),
    el('h3', { text: 'Response from Mixpanel' + (d.status ? ' (HTTP ' + d.status + ')' : '') }), el('pre', { text: pretty(d.response === undefined ? null : d.response) })));
  $('d-detail').scrollIntoView();
}

async function applyDead(verb, all) {
  let filter;
  let what;
  if (all) { filter = deadFilter(); what = 'every dead letter matching the filter'; } else {
    const ids = [...document.querySelectorAll('.d-pick:checked')].map((c) => Number(c.value));
    if (!ids.length) { status('Select dead letters first.'); return; }
    filter = { ids }; what = ids.length + ' selected dead letter(s)';
  }
  const label = verb === 'replay' ? 'Replay' : 'Purge (delete for good)';
  if (!confirm(label + ' ' + what + '?')) return;
  const r = verb === 'replay' ? await api('POST', '/admin/dead-letters/replay', filter) : await api('DELETE', '/admin/dead-letters', filter);
  if (r.status === 200) status((verb === 'replay' ? 'Replayed ' + r.json.replayed : 'Purged ' + r.json.purged) + ' dead letter(s).');
  else status('Failed: ' + ((r.json && r.json.message) || r.status));
  $('d-detail').replaceChildren();
  loadDead();
}

function showDead() { loadDead(); }

// ---- configuration ----------------------------------------------------------

function credentialText(c) {
  if (!c) return el('span', { class: 'note', text: 'not checked yet' });
  const cls = c.status === 'valid' ? 'ok' : c.status === 'dry_run' ? 'warnText' : 'bad';
  return el('span', { class: cls + ' c-cred', text: c.status + (c.http_status ? ' (HTTP ' + c.http_status + ')' : '') + ' at ' + c.host + (c.message ? ': ' + c.message : '') });
}

async function showConfig(check) {
  const [c, creds] = await Promise.all([api('GET', '/admin/config'), check ? api('POST', '/admin/credentials') : api('GET', '/admin/credentials')]);
  if (c.status !== 200) return;
  const byDest = Object.fromEntries(((creds.json && creds.json.credentials) || []).map((x) => [x.destination, x.check]));
  const cards = c.json.destinations.map((d) => el('div', { class: 'card c-dest', 'data-destination': d.id },
    el('h3', { text: d.id }),
    el('table', {}, el('tbody', {},
      [['region', d.region], ['sends to', d.base_url], ['/import auth', d.import_auth], ['mode', d.dry_run ? 'dry run (no project token)' : 'live'],
        ['strict mode', d.strict_mode], ['write keys', d.write_keys + ' configured'], ['batch size', d.batch_size], ['gzip', d.gzip], ['source name', d.source_name || '–']]
        .map(([k, v]) => el('tr', {}, el('th', { scope: 'row', text: k }), el('td', { text: String(v) }))),
      el('tr', {}, el('th', { scope: 'row', text: 'credentials' }), el('td', {}, credentialText(byDest[d.id]))))),
    el('h3', { text: 'Subscriptions (' + d.subscriptions.length + ')' }),
    el('table', {}, el('thead', {}, el('tr', {}, ['name', 'trigger', 'action', 'enabled', 'mapping'].map((h) => el('th', { scope: 'col', text: h })))),
      el('tbody', {}, d.subscriptions.map((s) => el('tr', {},
        el('td', { text: s.name }),
        el('td', {}, el('code', { text: s.subscribe }), (s.warnings || []).map((w) => el('p', { class: 'warnText', text: '⚠ ' + w }))),
        el('td', { text: s.partnerAction }), el('td', { text: s.enabled ? 'yes' : 'no' }),
        el('td', {}, el('details', {}, el('summary', { text: 'mapping' }), el('pre', { text: pretty(s.mapping) })))))))));
  const l = c.json.limits;
  cards.push(el('div', { class: 'card' }, el('h3', { text: 'Server' }), el('p', { text: 'listening on ' + c.json.listen + ', delivery mode ' + c.json.delivery_mode }),
    el('pre', { text: pretty(l) })));
  $('c-result').replaceChildren(...cards);
  if (check) status('Credentials checked.');
}

// ---- start ------------------------------------------------------------------

function start() {
  // A one-time link (#token=...): keep the token for this tab, drop it from
  // the address bar and history at once.
  const m = location.hash.match(/^#token=([A-Za-z0-9._~-]{16,})$/);
  if (m) {
    sessionStorage.setItem(KEY, m[1]);
    history.replaceState(null, '', location.pathname + '#tester');
  }
  $('login-form').addEventListener('submit', (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY, $('token').value.trim());
    $('login-error').textContent = '';
    signIn();
  });
  $('signout').addEventListener('click', () => signOut(''));
  $('t-sample').addEventListener('change', () => { const f = SAMPLES[$('t-sample').value]; if (f) $('t-event').value = pretty(f()); });
  $('t-test').addEventListener('click', testEvent);
  $('t-send').addEventListener('click', sendEvent);
  $('o-window').addEventListener('change', loadOverview);
  $('o-refresh').addEventListener('click', loadOverview);
  $('d-filter').addEventListener('submit', (e) => { e.preventDefault(); $('d-detail').replaceChildren(); loadDead(); });
  $('d-replay-sel').addEventListener('click', () => applyDead('replay', false));
  $('d-purge-sel').addEventListener('click', () => applyDead('purge', false));
  $('d-replay-all').addEventListener('click', () => applyDead('replay', true));
  $('d-purge-all').addEventListener('click', () => applyDead('purge', true));
  $('c-check').addEventListener('click', () => showConfig(true));
  window.addEventListener('hashchange', route);
  if (token()) { signIn(); return; }
  // Without a token: is admin on at all? (The server says 404 admin_off first.)
  api('GET', '/admin/config').then((r) => { if (!(r.json && r.json.code === 'admin_off')) signOut(''); });
}

start();
