// /compare?runs=A,B[,C...]&metrics=loss,acc (or metric=loss)&x=step|time|relative&smooth=0.6&log=1&only=1&a=A&b=B
// Metric charts of the runs (lib/charts.js), their params and final metrics side by side
// (optionally only the rows that differ), and the six-section diff of a pair of them
// (GET /api/v1/diff?patch=true: what `mlvc diff` prints). Every choice is in the address.
import { colour, fetchSeries, limitFor, metricChart } from '../lib/charts.js';
import { fmtNumber, path } from '../lib/dom.js';

const X_AXES = [['step', 'step'], ['time', 'wall time'], ['relative', 'relative time']];
const DEFAULT_CHARTS = 6;

function stylesheet(el, rel) {
  const href = new URL(rel, import.meta.url).pathname;
  if (![...document.querySelectorAll('link[rel=stylesheet]')].some((l) => l.getAttribute('href') === href)) {
    document.head.append(el('link', { rel: 'stylesheet', href }));
  }
}

function list(text) {
  return (text || '').split(',').map((s) => s.trim()).filter(Boolean);
}

function show(v) {
  if (v === null || v === undefined) return '';
  if (typeof v === 'number') return fmtNumber(v);
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

/** Labels for the runs: the name, with the short id when two runs share a name. */
function labelled(runs) {
  const count = new Map();
  for (const r of runs) count.set(r.name || '', (count.get(r.name || '') || 0) + 1);
  return runs.map((r) => ({
    id: r.id,
    run: r,
    label: !r.name ? r.short_id : count.get(r.name) > 1 ? `${r.name} (${r.short_id})` : r.name,
  }));
}

export async function render(root, ctx) {
  const { el, api, params } = ctx;
  stylesheet(el, '../vendor/uPlot.min.css');
  stylesheet(el, '../compare.css');
  const specs = list(params.get('runs'));
  root.append(el('h1', {}, 'Compare'));
  if (!specs.length) {
    root.append(el('p', { class: 'muted' }, 'Select runs in the runs table, then Compare (or open /compare?runs=A,B).'));
    return undefined;
  }
  // the runs and the keys they logged, asked for at once (the series endpoint takes run specs);
  // with the metrics named in the address, their series come in that same answer
  const named = list(params.get('metrics') || params.get('metric'));
  const x0 = X_AXES.some(([v]) => v === params.get('x')) ? params.get('x') : 'step';
  const early = named.length && named.length <= 20 ? named : null;
  const cache = new Map();  // (key, x) -> the series answer for that key
  let shown;
  let keys;
  try {
    let answer;
    [shown, answer] = await Promise.all([
      Promise.all(specs.map((s) => api(path('api', 'v1', 'runs', s), { query: { files: 'false' } }))),
      fetchSeries(api, specs, early, x0, early ? limitFor(specs.length) : 8, null),
    ]);
    keys = answer.keys;
    for (const key of early || []) {
      cache.set(`${key}\u0000${x0}`, { ...answer, series: answer.series.filter((s) => s.key === key) });
    }
  } catch (e) {
    if (e.status !== 404 && e.status !== 400) throw e;
    root.append(el('p', { class: 'error', role: 'alert' }, e.message));  // an unknown run, named
    return undefined;
  }
  const runs = labelled(shown);

  const state = {
    // `metric=` (one key) is what the run page's chart links use
    metrics: params.has('metrics') || params.has('metric')
      ? list(params.get('metrics') || params.get('metric')).filter((k) => keys.includes(k))
      : keys.slice(0, DEFAULT_CHARTS),
    x: X_AXES.some(([v]) => v === params.get('x')) ? params.get('x') : 'step',
    smooth: Math.min(0.99, Math.max(0, Number(params.get('smooth')) || 0)),
    log: params.get('log') === '1',
    only: params.get('only') === '1',
    a: params.get('a') || specs[0],
    b: params.get('b') || specs[1] || specs[0],
  };
  const save = () => {
    const q = new URLSearchParams({ runs: specs.join(',') });
    q.set('metrics', state.metrics.join(','));
    if (state.x !== 'step') q.set('x', state.x);
    if (state.smooth) q.set('smooth', String(state.smooth));
    if (state.log) q.set('log', '1');
    if (state.only) q.set('only', '1');
    if (runs.length > 2) { q.set('a', state.a); q.set('b', state.b); }
    ctx.setParams(q);
  };

  root.append(el('div', { class: 'cmp-runs' }, runs.map((r, i) => el('a', {
    class: 'cmp-run', href: path('runs', r.id), title: r.id, dataset: { run: r.id },
  }, el('span', { class: 'cmp-swatch', style: { background: colour(i) } }), r.label))));

  // -- charts ------------------------------------------------------------------------------
  const charts = el('div', { class: 'cmp-charts', id: 'charts' });
  let live = [];
  let generation = 0;
  async function drawCharts() {
    const mine = ++generation;
    for (const c of live) c.destroy();
    live = [];
    charts.replaceChildren();
    charts.dataset.drawn = 'false';
    if (!state.metrics.length) {
      charts.append(el('p', { class: 'muted' }, keys.length ? 'No metric chosen.' : 'These runs logged no metrics.'));
      return;
    }
    const width = Math.max(320, Math.min(640, Math.floor((root.clientWidth || 1200) / 2) - 40));
    const boxes = state.metrics.map((key) => el('div', { class: 'cmp-chart', dataset: { key } }));
    charts.append(...boxes);
    let pending = boxes.length;
    const made = await Promise.all(state.metrics.map((key, i) => metricChart(boxes[i], key, runs, {
      api, x: state.x, smooth: state.smooth, log: state.log, width, cache,
      onError: (e) => boxes[i].append(el('p', { class: 'error' }, e.message || String(e))),
      onDrawn: () => {
        pending -= 1;
        if (pending === 0 && mine === generation) {
          charts.dataset.drawn = 'true';
          performance.mark('mlvc-charts-drawn');
        }
      },
    })));
    if (mine !== generation) { for (const c of made) c.destroy(); return; }
    live = made;
  }

  // from a control: a failure shows where the charts were, not as an uncaught error
  const redraw = () => drawCharts().catch((e) => charts.replaceChildren(
    el('p', { class: 'error', role: 'alert' }, e.message || String(e))));

  const chooser = el('details', { class: 'chooser cmp-metrics' },
    el('summary', {}, 'Metrics'),
    el('div', { class: 'chooser-panel' }, keys.map((k) => el('label', {},
      el('input', {
        type: 'checkbox', value: k, checked: state.metrics.includes(k),
        onchange: (e) => {
          state.metrics = keys.filter((key) => (key === k ? e.target.checked : state.metrics.includes(key)));
          save(); redraw();
        },
      }), ' ', k))));
  const xSelect = el('select', { id: 'x-axis', onchange: (e) => { state.x = e.target.value; save(); redraw(); } },
    X_AXES.map(([v, text]) => el('option', { value: v, selected: v === state.x }, text)));
  const smoothLabel = el('span', { class: 'mono' }, state.smooth.toFixed(2));
  let smoothTimer = null;
  const smooth = el('input', {
    type: 'range', id: 'smooth', min: '0', max: '0.99', step: '0.01', value: String(state.smooth),
    oninput: (e) => {
      state.smooth = Number(e.target.value);
      smoothLabel.textContent = state.smooth.toFixed(2);
      clearTimeout(smoothTimer);
      smoothTimer = setTimeout(() => { save(); redraw(); }, 150);
    },
  });
  const log = el('input', { type: 'checkbox', id: 'log-scale', checked: state.log, onchange: (e) => { state.log = e.target.checked; save(); redraw(); } });
  const resetZoom = el('button', { type: 'button', id: 'reset-zoom', onclick: () => live.forEach((c) => c.reset()) }, 'Reset zoom');
  root.append(
    el('h2', {}, 'Metrics'),
    el('div', { class: 'toolbar' }, chooser,
      el('label', {}, 'x axis ', xSelect),
      el('label', {}, 'smoothing ', smooth, ' ', smoothLabel),
      el('label', {}, log, ' log scale'),
      resetZoom,
      el('span', { class: 'muted' }, 'drag to zoom (full resolution), double-click to reset')),
    charts);

  // -- params and final metrics ---------------------------------------------------------------
  const table = el('div', { class: 'cmp-table' });
  const only = el('input', { type: 'checkbox', id: 'only-diff', checked: state.only, onchange: (e) => { state.only = e.target.checked; save(); drawTable(); } });
  function drawTable() {
    const rows = [];
    for (const [section, field] of [['params', 'params'], ['metrics', 'metrics']]) {
      const names = [...new Set(runs.flatMap((r) => Object.keys(r.run[field] || {})))].sort();
      for (const k of names) {
        const cells = runs.map((r) => show((r.run[field] || {})[k]));
        const differs = cells.some((c) => c !== cells[0]);
        if (state.only && !differs) continue;
        rows.push(el('tr', { class: differs ? 'differs' : null, dataset: { key: `${section}.${k}` } },
          el('th', {}, `${section}.${k}`), cells.map((c) => el('td', { class: 'num' }, c))));
      }
    }
    table.replaceChildren(rows.length
      ? el('table', { class: 'grid' },
        el('thead', {}, el('tr', {}, el('th', {}, ''), runs.map((r) => el('th', { title: r.id }, r.label)))),
        el('tbody', {}, rows))
      : el('p', { class: 'muted' }, state.only ? 'No params or metrics differ.' : 'No params or metrics.'));
  }
  root.append(el('h2', {}, 'Params and metrics'),
    el('div', { class: 'toolbar' }, el('label', {}, only, ' only differences')), table);
  drawTable();

  // -- the diff of a pair -----------------------------------------------------------------------
  const diffBox = el('div', { class: 'cmp-diff', id: 'diff' });
  async function drawDiff() {
    diffBox.replaceChildren(el('p', { class: 'muted' }, 'Loading the diff…'));
    const d = await api('/api/v1/diff', { query: { a: state.a, b: state.b, patch: 'true' } });
    diffBox.replaceChildren(...renderDiff(el, d));
  }
  if (runs.length >= 2) {
    const pick = (side) => el('select', {
      id: `pair-${side}`,
      onchange: (e) => { state[side] = e.target.value; save(); drawDiff().catch(fail); },
    }, runs.map((r, i) => el('option', { value: specs[i], selected: specs[i] === state[side] }, r.label)));
    const fail = (e) => diffBox.replaceChildren(el('p', { class: 'error', role: 'alert' }, e.message || String(e)));
    // (a DOM append writes null as the text "null": only nodes go in)
    root.append(el('h2', {}, 'Diff'),
      ...(runs.length > 2 ? [el('div', { class: 'toolbar' }, el('label', {}, 'from ', pick('a')), el('label', {}, 'to ', pick('b')))] : []),
      diffBox);
    drawDiff().catch(fail);
  }

  save();
  await drawCharts();
  return () => { generation += 1; for (const c of live) c.destroy(); };
}

// -- rendering `mlvc diff --json` -----------------------------------------------------------

function section(el, title, count, body) {
  return el('section', { class: 'cmp-section', dataset: { section: title } },
    el('h3', {}, title, ' ', el('span', { class: 'muted' }, count ? `${count} changed` : 'no change')),
    count ? body : null);
}

function pairs(el, head, rows) {
  return el('table', { class: 'grid' },
    el('thead', {}, el('tr', {}, head.map((h) => el('th', {}, h)))),
    el('tbody', {}, rows.map((r) => el('tr', {}, r.map((c) => el('td', {}, show(c)))))));
}

function patchView(el, text) {
  return el('pre', { class: 'patch' }, text.split('\n').map((line) => el('span', {
    class: line.startsWith('+') && !line.startsWith('+++') ? 'add'
      : line.startsWith('-') && !line.startsWith('---') ? 'del'
        : line.startsWith('@@') ? 'hunk' : null,
  }, line)));
}

function files(el, title, f) {
  const rows = [
    ...f.added.map((x) => ['added', x.path, '', x.size, x.patch]),
    ...f.removed.map((x) => ['removed', x.path, x.size, '', x.patch]),
    ...f.modified.map((x) => ['modified', x.path, x.old_size, x.new_size, x.patch]),
  ].sort((p, q) => (p[1] < q[1] ? -1 : p[1] > q[1] ? 1 : 0));
  return section(el, title, rows.length, el('div', {}, rows.map(([what, p, before, after, patch]) => el('div', { class: 'cmp-file' },
    el('div', {}, el('span', { class: `pill ${what}` }, what), ' ', el('code', {}, p), ' ',
      el('span', { class: 'muted' }, before !== '' && after !== '' ? `${before} → ${after} bytes` : `${before}${after} bytes`)),
    patch ? patchView(el, patch) : null))));
}

function envRows(prefix, value, out) {
  if (value === null || value === undefined) return out;
  if (Array.isArray(value)) {
    if (value.length) out.push([prefix, value.length === 2 ? `${show(value[0])} → ${show(value[1])}` : value.map(show).join(', ')]);
  } else if (typeof value === 'object') {
    if ('old' in value && 'new' in value && Object.keys(value).length === 2) out.push([prefix, `${show(value.old)} → ${show(value.new)}`]);
    else for (const [k, v] of Object.entries(value)) envRows(prefix ? `${prefix}.${k}` : k, v, out);
  } else {
    out.push([prefix, show(value)]);
  }
  return out;
}

export function renderDiff(el, d) {
  const p = d.params || { changed: {}, added: {}, removed: {} };
  const paramRows = [
    ...Object.entries(p.changed).map(([k, [a, b]]) => [k, a, b]),
    ...Object.entries(p.added).map(([k, b]) => [k, '(absent)', b]),
    ...Object.entries(p.removed).map(([k, a]) => [k, a, '(absent)']),
  ];
  const metricRows = Object.entries(d.metrics || {}).map(([k, m]) => [k, m.old, m.new, m.delta, m.pct === null || m.pct === undefined ? '' : `${fmtNumber(m.pct)}%`]);
  const env = envRows('', d.env, []);
  return [
    el('p', { class: 'muted' }, 'from ', el('code', {}, d.a.slice(0, 12)), ' to ', el('code', {}, d.b.slice(0, 12))),
    section(el, 'params', paramRows.length, pairs(el, ['param', 'from', 'to'], paramRows)),
    section(el, 'metrics', metricRows.length, pairs(el, ['metric', 'from', 'to', 'Δ', '%'], metricRows)),
    files(el, 'code', d.code),
    files(el, 'data', d.data),
    files(el, 'artifacts', d.artifacts),
    section(el, 'env', env.length, pairs(el, ['environment', 'change'], env)),
  ];
}
