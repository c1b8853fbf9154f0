// meshwrap's flow inspector. Plain JavaScript, no framework and no build
// step: the admin port serves this file as it is.
//
// Everything shown here comes from the program under test (hosts, paths,
// headers, bodies, keys), so the page writes text nodes only: no innerHTML,
// no attribute built from data other than a data: URL for an image body.
'use strict';

const MAX_FLOWS = 5000;      // finished flows kept in the page
const MAX_ROWS = 1000;       // rows drawn at once (newest first)
const MAX_MISSES = 200;

const state = {
  flows: new Map(),          // flow_id -> flow event
  order: [],                 // flow ids, oldest first
  live: new Map(),           // flow_id -> open flow (from /flows)
  exchanges: new Map(),      // flow_id -> [exchange events]
  misses: [],                // {kind: 'flow'|'exchange', id, item}
  selected: null,            // {kind, id, index}
  paused: false,
  dirty: true,
  info: {},
  sources: [],
  token: sessionStorage.getItem('meshwrap-token') || '',
  events: 0,
};

// ---------------------------------------------------------------- DOM helpers

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === 'className') node.className = v;
    else if (k === 'title') node.title = v;
    else if (k === 'onclick') node.addEventListener('click', v);
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else node.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

const $ = (id) => document.getElementById(id);

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
}

function dl(pairs) {
  const list = el('dl');
  for (const [k, v] of pairs) {
    if (v === null || v === undefined || v === '') continue;
    list.append(el('dt', null, k), el('dd', null, typeof v === 'object' ? JSON.stringify(v) : String(v)));
  }
  return list;
}

function headerTable(headers) {
  const entries = Object.entries(headers || {});
  if (!entries.length) return el('p', { className: 'hint' }, 'no headers');
  return el('table', { className: 'headers' },
    el('tbody', null, entries.map(([k, v]) => el('tr', null, el('td', null, k), el('td', null, v)))));
}

function contentType(headers) {
  for (const [k, v] of Object.entries(headers || {})) {
    if (k.toLowerCase() === 'content-type') return String(v).toLowerCase();
  }
  return '';
}

/// A body pretty-printed by its content type: JSON indented, forms split,
/// images shown, the rest as text.
function bodyView(text, headers, base64) {
  const ctype = contentType(headers);
  const raster = /^image\/(png|jpeg|gif|webp|bmp)\b/.exec(ctype);
  if (base64 && raster) {
    // Only base64 characters reach the URL, and only a raster type.
    if (/^[A-Za-z0-9+/=]*$/.test(base64)) {
      return el('img', { className: 'body', alt: 'response body (' + raster[0] + ')', src: 'data:' + raster[0] + ';base64,' + base64 });
    }
  }
  if (text === null || text === undefined || text === '') {
    return el('p', { className: 'hint' }, base64 ? 'binary body (' + Math.floor(base64.length * 3 / 4) + ' bytes kept)' : 'no body');
  }
  let shown = text;
  if (ctype.includes('json') || /^\s*[{[]/.test(text)) {
    try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (_) { /* as text */ }
  } else if (ctype.includes('x-www-form-urlencoded')) {
    try { shown = [...new URLSearchParams(text)].map(([k, v]) => k + ' = ' + v).join('\n'); } catch (_) { /* as text */ }
  }
  return el('pre', { className: 'body' }, shown);
}

function jsonPre(text) {
  if (!text) return el('p', { className: 'hint' }, 'none');
  let shown = text;
  try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (_) { /* clipped: as sent */ }
  return el('pre', null, shown);
}

// ---------------------------------------------------------------- API

async function api(method, path) {
  const headers = {};
  if (method !== 'GET' && state.info.token_required) {
    if (!state.token) {
      const t = window.prompt('The admin API needs its bearer token (--admin-token-file):');
      if (!t) throw new Error('no token given');
      state.token = t.trim();
      sessionStorage.setItem('meshwrap-token', state.token);
    }
    headers.authorization = 'Bearer ' + state.token;
  }
  const resp = await fetch(path, { method, headers });
  const ctype = resp.headers.get('content-type') || '';
  const body = ctype.includes('json') ? await resp.json() : await resp.text();
  if (resp.status === 401) { state.token = ''; sessionStorage.removeItem('meshwrap-token'); }
  if (!resp.ok) throw new Error((body && body.error) || body || resp.statusText);
  return body;
}

function notice(text) {
  const n = $('notice');
  n.textContent = text;
  n.hidden = !text;
}

// ---------------------------------------------------------------- events

function isExchange(ev) {
  return !['flow', 'dns', 'reload', 'notice'].includes(ev.kind) && ev.flow_id !== undefined && ev.service !== undefined;
}

function addMiss(kind, id, item) {
  state.misses.push({ kind, id, item });
  if (state.misses.length > MAX_MISSES) state.misses.shift();
}

function handle(ev) {
  state.events++;
  if (ev.kind === 'flow') {
    if (!state.flows.has(ev.flow_id)) state.order.push(ev.flow_id);
    state.flows.set(ev.flow_id, ev);
    state.live.delete(ev.flow_id);
    if (ev.decision === 'refuse') addMiss('flow', ev.flow_id, ev);
    while (state.order.length > MAX_FLOWS) {
      const old = state.order.shift();
      state.flows.delete(old);
      state.exchanges.delete(old);
    }
  } else if (isExchange(ev)) {
    const list = state.exchanges.get(ev.flow_id) || [];
    list.push(ev);
    if (list.length > 500) list.shift();
    state.exchanges.set(ev.flow_id, list);
    if (ev.outcome === 'unmatched') addMiss('exchange', ev.flow_id, ev);
    scheduleExpectations();
  } else if (ev.kind === 'reload') {
    notice(ev.ok ? 'rules reloaded (' + ev.source + '): generation ' + ev.generation + ', services ' + ev.services.join(', ')
      : 'rules NOT reloaded (' + ev.source + '): ' + ev.error);
    loadInfo();
  }
  state.dirty = true;
}

function connect() {
  const status = $('status');
  const source = new EventSource('/events');
  source.onopen = () => { status.dataset.state = state.paused ? 'paused' : 'live'; status.textContent = state.paused ? 'paused' : 'live'; };
  source.onmessage = (m) => {
    try { handle(JSON.parse(m.data)); } catch (_) { /* a line the page does not know */ }
  };
  source.onerror = () => {
    // The stream replays the recent events on reconnect: start afresh.
    source.close();
    status.dataset.state = 'down';
    status.textContent = 'disconnected; retrying';
    setTimeout(() => {
      state.flows.clear(); state.order = []; state.exchanges.clear(); state.misses = [];
      state.dirty = true;
      connect();
    }, 1000);
  };
}

async function pollLive() {
  try {
    const r = await api('GET', '/flows?limit=0');
    state.live = new Map((r.live || []).filter((f) => !state.flows.has(f.flow_id)).map((f) => [f.flow_id, f]));
    state.dirty = true;
  } catch (_) { /* the stream's status says it */ }
}

// ---------------------------------------------------------------- filters

const filters = { decision: '', protocol: '', service: '', text: '', misses: false };

function flowText(f) {
  const parts = [f.host, f.dst, f.dst_port, f.reason, f.service, f.error, f.protocol, f.upstream];
  for (const x of state.exchanges.get(f.flow_id) || []) parts.push(x.operation, x.path, x.key, x.topic, x.collection, x.command, x.error);
  return parts.filter((p) => p !== undefined && p !== null).join(' ').toLowerCase();
}

function isMissFlow(f) {
  return f.decision === 'refuse' || (state.exchanges.get(f.flow_id) || []).some((x) => x.outcome === 'unmatched');
}

function keep(f) {
  if (filters.decision && f.decision !== filters.decision) return false;
  if (filters.protocol && f.protocol !== filters.protocol) return false;
  if (filters.service && f.service !== filters.service) return false;
  if (filters.misses && !isMissFlow(f)) return false;
  if (filters.text && !flowText(f).includes(filters.text.toLowerCase())) return false;
  return true;
}

function fillSelect(id, values) {
  const sel = $(id);
  const have = new Set([...sel.options].map((o) => o.value));
  for (const v of [...values].sort()) {
    if (v && !have.has(v)) sel.append(el('option', { value: v }, v));
  }
}

// ---------------------------------------------------------------- drawing

function dest(f) {
  if (f.dst_port === undefined) return String(f.dst);  // an open flow: "ip:port" already
  const host = f.host || (String(f.dst).includes(':') ? '[' + f.dst + ']' : f.dst);
  return host + ':' + f.dst_port;
}

function flowRow(f, open) {
  const classes = [];
  if (!open && isMissFlow(f)) classes.push('miss');
  if (open) classes.push('open');
  if (state.selected && state.selected.kind === 'flow' && state.selected.id === f.flow_id) classes.push('selected');
  const time = (f.time || f.since || '').replace(/^.*T/, '').replace(/Z$/, '');
  return el('tr', { className: classes.join(' '), dataset: { flowId: String(f.flow_id) }, onclick: () => select('flow', f.flow_id) },
    el('td', null, time),
    el('td', null, open ? (f.host ? f.host + ' ' : '') + f.dst : dest(f)),
    el('td', { className: 'decision' }, f.decision),
    el('td', { title: f.reason || '' }, f.reason || ''),
    el('td', null, f.protocol || ''),
    el('td', null, f.service || ''),
    el('td', { className: 'num' }, open ? '' : f.bytes_up),
    el('td', { className: 'num' }, open ? '' : f.bytes_down),
    el('td', { className: 'num' }, open ? '' : Math.round(f.duration_ms)),
    el('td', { title: f.error || '' }, f.error || ''));
}

function draw() {
  requestAnimationFrame(draw);
  if (!state.dirty || state.paused) return;
  state.dirty = false;
  const finished = state.order.map((id) => state.flows.get(id)).filter(Boolean);
  fillSelect('f-decision', new Set(finished.map((f) => f.decision)));
  fillSelect('f-protocol', new Set(finished.map((f) => f.protocol)));
  fillSelect('f-service', new Set(finished.map((f) => f.service).filter(Boolean)));
  const rows = $('flow-rows');
  clear(rows);
  const frag = document.createDocumentFragment();
  let drawn = 0;
  for (const f of state.live.values()) {
    if (drawn >= MAX_ROWS) break;
    if (filters.decision && f.decision !== filters.decision) continue;
    if (filters.misses) continue;
    frag.append(flowRow(f, true));
    drawn++;
  }
  for (let i = finished.length - 1; i >= 0 && drawn < MAX_ROWS; i--) {
    if (!keep(finished[i])) continue;
    frag.append(flowRow(finished[i], false));
    drawn++;
  }
  rows.append(frag);
  $('counts').textContent = finished.length + ' flows, ' + state.live.size + ' open, ' + state.events + ' events';
  drawMisses();
}

function missLine(m) {
  if (m.kind === 'flow') {
    return ['refused ', dest(m.item), ' (' + m.item.protocol + '): ' + m.item.reason];
  }
  const x = m.item;
  const what = x.kind === 'http' ? x.method + ' ' + x.path + (x.query ? '?' + x.query : '') : x.operation;
  return ['unmatched ', x.service + ': ' + what, x.near_misses && x.near_misses.length ? ' (nearly ' + x.near_misses[0].route + ')' : ''];
}

function drawMisses() {
  const list = $('miss-list');
  clear(list);
  $('miss-count').textContent = String(state.misses.length);
  for (let i = state.misses.length - 1; i >= 0; i--) {
    const m = state.misses[i];
    const [tag, ...rest] = missLine(m);
    list.append(el('li', { className: 'miss', onclick: () => select(m.kind, m.id, m.kind === 'exchange' ? m.item : null) },
      el('span', { className: 'tag' }, tag), rest.join('')));
  }
}

// ---------------------------------------------------------------- detail

function exchangeTitle(x) {
  switch (x.kind) {
    case 'http': return x.method + ' ' + x.path + (x.query ? '?' + x.query : '') + ' → ' + (x.status === null ? 'no response' : x.status);
    case 'redis': return x.command + (x.args && x.args.length ? ' ' + x.args.join(' ') : '');
    case 'kafka': return x.api + (x.topic ? ' ' + x.topic : '') + (x.partition !== null && x.partition !== undefined ? '/' + x.partition : '');
    case 'mongo': return x.command + (x.collection ? ' ' + x.collection : '');
    default: return x.operation;
  }
}

function exchangeBody(x) {
  const common = [['service', x.service], ['operation', x.operation], ['outcome', x.outcome], ['error', x.error],
    ['latency ms', x.latency_ms !== undefined ? x.latency_ms.toFixed(2) : null]];
  switch (x.kind) {
    case 'http':
      return [dl([...common, ['route', x.route], ['answered by', x.answered_by], ['host', x.host], ['version', x.version], ['fault', x.fault]]),
        el('div', { className: 'side' },
          el('div', null, el('h3', null, 'Request'), headerTable(x.request_headers), bodyView(x.request_body, x.request_headers, null)),
          el('div', null, el('h3', null, 'Response ' + (x.status === null ? '' : x.status)), headerTable(x.response_headers),
            bodyView(x.response_body, x.response_headers, x.response_body_base64)))];
    case 'redis':
      return [dl([...common, ['command', x.command], ['arguments', (x.args || []).join(' ')], ['db', x.db], ['reply type', x.reply], ['fault', x.fault]]),
        el('h3', null, 'Reply'), el('pre', { className: 'reply' }, x.reply_text || '')];
    case 'kafka':
      return [dl([...common, ['api', x.api], ['topic', x.topic], ['partition', x.partition], ['offset', x.offset], ['error code', x.error_code]]),
        x.key !== null && x.key !== undefined ? [el('h3', null, 'Key'), el('pre', null, x.key)] : null,
        x.value !== null && x.value !== undefined ? [el('h3', null, 'Value'), bodyView(x.value, {}, null)] : null];
    case 'mongo':
      return [dl([...common, ['command', x.command], ['db', x.db], ['collection', x.collection], ['matched', x.matched], ['modified', x.modified], ['error code', x.error_code]]),
        el('div', { className: 'side' },
          el('div', null, el('h3', null, 'Command'), jsonPre(x.request)),
          el('div', null, el('h3', null, 'Reply'), jsonPre(x.reply)))];
    default: {
      const rest = Object.entries(x).filter(([k]) => !['kind', 'time', 'flow_id'].includes(k));
      return [dl(rest)];
    }
  }
}

/// The service's block in the rule sources (`- name: S` to the next entry at
/// the same indent): the rule that nearly matched, to read beside the miss.
function serviceSource(name) {
  for (const src of state.sources) {
    const lines = String(src.text).split('\n');
    const start = lines.findIndex((l) => new RegExp('^(\\s*)-\\s+name:\\s*["\']?' + name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&') + '["\']?\\s*$').test(l));
    if (start < 0) continue;
    const indent = lines[start].search(/\S/);
    let end = start + 1;
    while (end < lines.length && !(lines[end].search(/\S/) <= indent && /\S/.test(lines[end]))) end++;
    return { file: src.name, line: start + 1, text: lines.slice(start, end).join('\n') };
  }
  return null;
}

function yamlString(s) {
  return JSON.stringify(String(s));
}

/// A route that would answer an unmatched HTTP request, to add under the
/// service's `http: routes:`.
function routeFor(x) {
  return '# add under `http: routes:` of service ' + x.service + '\n' +
    '- when: { method: ' + x.method + ', path: ' + yamlString(x.path) + ' }\n' +
    '  respond: { status: 200, json: {} }\n';
}

function copyBox(text) {
  const area = el('textarea', { className: 'rule', readonly: 'readonly', spellcheck: 'false' });
  area.value = text;
  const button = el('button', { type: 'button', className: 'copy', onclick: async () => {
    area.select();
    try { await navigator.clipboard.writeText(text); button.textContent = 'Copied'; } catch (_) { document.execCommand('copy'); button.textContent = 'Selected'; }
  } }, 'Copy');
  return el('div', { className: 'copy-rule' }, area, button);
}

function nearMisses(x) {
  if (!x.near_misses || !x.near_misses.length) return null;
  const rule = serviceSource(x.service);
  return el('div', { className: 'near side' },
    el('div', null, el('h3', null, 'Nearly matched'),
      el('ul', null, x.near_misses.map((n) => el('li', null, el('strong', null, n.route), el('ul', null, n.differences.map((d) => el('li', null, d))))))),
    el('div', null, el('h3', null, 'The rule' + (rule ? ' (' + rule.file + ':' + rule.line + ')' : '')),
      rule ? el('pre', { className: 'rule-source' }, rule.text) : el('p', { className: 'hint' }, 'not found in the rule sources')));
}

function exchangeView(x) {
  const miss = x.outcome === 'unmatched';
  const box = el('section', { className: 'exchange' + (miss ? ' miss' : ''), dataset: { kind: x.kind } },
    el('h3', null, (miss ? 'UNMATCHED  ' : '') + exchangeTitle(x)), exchangeBody(x));
  if (miss) {
    box.append(nearMisses(x) || '');
    if (x.kind === 'http') box.append(el('h3', null, 'Copy as rule'), copyBox(routeFor(x)));
  }
  return box;
}

async function select(kind, id, exchange) {
  state.selected = { kind, id };
  state.dirty = true;
  const pane = $('detail');
  clear(pane);
  pane.append(el('h2', null, 'Detail'));
  const f = state.flows.get(id) || state.live.get(id);
  if (f) {
    pane.append(el('h3', null, 'Flow ' + id), dl([
      ['time', f.time || f.since], ['transport', f.transport], ['source', f.src + (f.src_port ? ':' + f.src_port : '')],
      ['destination', dest(f)], ['host', f.host], ['decision', f.decision], ['reason', f.reason], ['protocol', f.protocol],
      ['service', f.service], ['upstream', f.upstream], ['bytes up', f.bytes_up], ['bytes down', f.bytes_down],
      ['duration ms', f.duration_ms !== undefined ? f.duration_ms.toFixed(1) : null], ['error', f.error]]));
    if (f.tls) {
      pane.append(el('h3', null, 'TLS'), dl([['SNI', f.tls.sni], ['ALPN', f.tls.alpn], ['version', f.tls.version],
        ['intercepted', f.tls.intercepted ? 'yes: meshwrap terminated it' : 'no: passed through untouched']]));
    }
    if (f.decision === 'refuse') {
      pane.append(el('h3', null, 'Copy as rule'));
      const holder = el('div', null, el('p', { className: 'hint' }, 'loading…'));
      pane.append(holder);
      try {
        const text = await api('GET', '/suggest?flow_id=' + encodeURIComponent(id));
        clear(holder);
        holder.append(el('p', { className: 'hint' }, 'Add to a rules file (meshwrap check accepts it as it is):'), copyBox(text));
      } catch (e) {
        clear(holder);
        holder.append(el('p', { className: 'hint' }, String(e.message || e)));
      }
    }
  }
  const list = exchange ? [exchange] : (state.exchanges.get(id) || []);
  if (list.length) {
    pane.append(el('h3', null, list.length + (list.length === 1 ? ' exchange' : ' exchanges')));
    for (const x of list) pane.append(exchangeView(x));
  } else if (!f) {
    pane.append(el('p', { className: 'hint' }, 'flow ' + id + ' is no longer kept'));
  }
}

// ---------------------------------------------------------------- expectations

let expectTimer = null;
function scheduleExpectations() {
  if (expectTimer) return;
  expectTimer = setTimeout(() => { expectTimer = null; loadExpectations(); }, 500);
}

async function loadExpectations() {
  let r;
  try { r = await api('GET', '/expectations'); } catch (_) { return; }
  const list = $('expect-list');
  clear(list);
  if (!r.results.length) {
    list.append(el('li', { className: 'hint' }, 'No expect: entries in the rules.'));
    return;
  }
  for (const x of r.results) {
    const fields = Object.entries(x.fields || {}).map(([k, v]) => k + ' ' + v).join(', ');
    list.append(el('li', { className: x.ok ? 'ok' : 'failed', dataset: { service: x.service } },
      el('strong', null, (x.ok ? 'met: ' : 'NOT met: ') + x.service + (fields ? ' ' + fields : '')),
      ' expected ' + x.expected + ', ' + x.calls + ' call' + (x.calls === 1 ? '' : 's'),
      x.ok ? null : el('pre', null, x.report)));
  }
}

// ---------------------------------------------------------------- setup

async function loadInfo() {
  try {
    state.info = await api('GET', '/ui/info');
    const rules = await api('GET', '/rules');
    state.sources = rules.sources || [];
  } catch (_) { return; }
  for (const b of document.querySelectorAll('button.admin')) b.hidden = !!state.info.read_only;
  $('reload').hidden = state.info.read_only || !(state.info.rule_files || []).length;
}

function wire() {
  $('pause').addEventListener('click', () => {
    state.paused = !state.paused;
    $('pause').setAttribute('aria-pressed', String(state.paused));
    $('pause').textContent = state.paused ? 'Resume' : 'Pause';
    $('status').dataset.state = state.paused ? 'paused' : 'live';
    $('status').textContent = state.paused ? 'paused' : 'live';
    state.dirty = true;
  });
  $('reset').addEventListener('click', async () => {
    try {
      const r = await api('POST', '/reset');
      for (const list of state.exchanges.values()) list.length = 0;
      state.misses = state.misses.filter((m) => m.kind === 'flow');
      notice('reset: ' + (r.reset || []).join(', '));
      state.dirty = true;
      loadExpectations();
    } catch (e) { notice('reset failed: ' + (e.message || e)); }
  });
  $('reload').addEventListener('click', async () => {
    try { await api('POST', '/reload'); } catch (e) { notice('reload failed: ' + (e.message || e)); }
  });
  for (const k of ['decision', 'protocol', 'service']) {
    $('f-' + k).addEventListener('change', (e) => { filters[k] = e.target.value; state.dirty = true; });
  }
  $('f-text').addEventListener('input', (e) => { filters.text = e.target.value; state.dirty = true; });
  $('f-misses').addEventListener('change', (e) => { filters.misses = e.target.checked; state.dirty = true; });
}

wire();
loadInfo();
connect();
loadExpectations();
setInterval(pollLive, 1000);
requestAnimationFrame(draw);
