// /events: what changed in the repository, newest first, live. Reads the server's event
// stream (GET /api/v1/events, server-sent events) from a point in time chosen here; the
// address keeps the window (?since=1h|1d|7d|all) and the type filter (?types=run.*,...).
import { el, path, fmtTime } from '../lib/dom.js';

const WINDOWS = { '1h': 3600, '1d': 86400, '7d': 7 * 86400, all: 0 };
const SHOWN = 500; // rows kept on the page; older ones drop off the bottom

// the smallest event id at or after a time: evt_ + 16 hex digits of µs + 8 hex digits
function idAt(seconds) {
  const us = BigInt(Math.floor(seconds)) * 1000000n;
  return `evt_${us.toString(16).padStart(16, '0')}00000000`;
}

function summary(event) {
  const d = event.data || {};
  const bits = [];
  for (const k of ['name', 'message', 'status', 'verdict', 'rule', 'metric', 'uri', 'alias', 'ref', 'url']) {
    if (d[k] !== undefined && d[k] !== null && d[k] !== '') bits.push(`${k}: ${typeof d[k] === 'object' ? JSON.stringify(d[k]) : d[k]}`);
  }
  return bits.join(' · ');
}

function row(event) {
  const d = event.data || {};
  const run = typeof d.run_id === 'string' && /^[0-9a-f]{64}$/.test(d.run_id) ? d.run_id : null;
  const details = el('details', {}, el('summary', {}, summary(event) || 'data'),
    el('pre', { class: 'mono' }, JSON.stringify(d, null, 2)));
  return el('tr', { 'data-type': event.type },
    el('td', { class: 'mono' }, fmtTime(event.timestamp)),
    el('td', {}, el('span', { class: 'pill' }, event.type)),
    el('td', {}, run ? el('a', { href: path('runs', run), class: 'mono' }, run.slice(0, 10)) : ''),
    el('td', {}, details));
}

export async function render(root, ctx) {
  const { params, navigate } = ctx;
  const go = (change) => {
    const next = new URLSearchParams(params);
    for (const [k, v] of Object.entries(change)) if (v) next.set(k, v); else next.delete(k);
    navigate(`/events${next.toString() ? `?${next}` : ''}`);
  };
  const since = params.get('since') in WINDOWS ? params.get('since') : '1d';
  const types = params.get('types') || '';
  const status = el('p', { class: 'muted', id: 'events-status' }, 'connecting…');
  const body = el('tbody', {});
  const windowSelect = el('select', { 'aria-label': 'since', onchange: () => go({ since: windowSelect.value }) },
    Object.keys(WINDOWS).map((w) => el('option', { value: w, selected: w === since }, w === 'all' ? 'all time' : `last ${w}`)));
  const typeInput = el('input', { type: 'text', name: 'types', value: types, placeholder: 'types, e.g. run.*,alert.*', 'aria-label': 'types' });
  root.append(
    el('h1', {}, 'Events'),
    el('form', { class: 'toolbar', onsubmit: (e) => { e.preventDefault(); go({ types: typeInput.value.trim() }); } },
      'Since ', windowSelect, ' ', typeInput, ' ', el('button', { type: 'submit' }, 'Filter')),
    status,
    el('table', { class: 'grid', id: 'events' },
      el('thead', {}, el('tr', {}, ['when', 'type', 'run', 'what'].map((h) => el('th', {}, h)))),
      body));

  const q = new URLSearchParams({ follow: 'true' });
  if (WINDOWS[since]) q.set('after', idAt(Date.now() / 1000 - WINDOWS[since]));
  if (types) q.set('types', types);
  const source = new EventSource(`/api/v1/events?${q}`, { withCredentials: true });
  let count = 0;
  const onEvent = (message) => {
    let event;
    try { event = JSON.parse(message.data); } catch { return; }
    body.prepend(row(event));
    while (body.children.length > SHOWN) body.lastChild.remove();
    count += 1;
    status.textContent = `${count} event${count === 1 ? '' : 's'}; new ones appear at the top`;
  };
  source.onmessage = onEvent;
  // each frame names its type (event: run.finished ...): listen to every one of them
  const seen = new Set();
  const listenTo = (type) => { if (!seen.has(type)) { seen.add(type); source.addEventListener(type, onEvent); } };
  ['run.started', 'run.finished', 'run.failed', 'run.killed', 'run.stalled', 'alert.fired',
    'alert.resolved', 'commit.created', 'reproduce.verdict', 'ref.updated',
    'registered_model.created', 'model_version.created', 'model_version_alias.created',
    'model_version_alias.deleted', 'gc.completed', 'webhook.disabled', 'webhook.test'].forEach(listenTo);
  source.onopen = () => { if (!count) status.textContent = 'no events yet in this window; new ones appear at the top'; };
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) status.textContent = 'the event stream closed: reload to reconnect';
    else status.textContent = 'reconnecting…';
  };
  return () => source.close();
}
