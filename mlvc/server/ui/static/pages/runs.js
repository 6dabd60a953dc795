// /: every run in one virtual table, paged from the server (GET /api/v1/ui/table): a SQL
// filter, sort by any column, a column chooser, grouping by experiment, selection for
// compare. Its state lives in the address (where, sort, col, group).
import { VirtualGrid } from '../lib/vgrid.js';
import { el, path, fmtNumber, fmtTime } from '../lib/dom.js';

// a page of rows holds at most this many cells: 200 rows of up to 100 columns, 40 rows of
// 500 (the server reads, and the browser parses, a fifth of 200 rows' cells before the
// first rows show)
const PAGE_CELLS = 20000;
const AHEAD = 60;  // rows below the view whose page is fetched before it scrolls in
const MAX_INFLIGHT = 2;  // page requests at once
const POLL_MS = 5000;
const WIDTHS = { short_id: 104, name: 170, message: 240, created: 160, started: 160, ended: 160, status: 90 };

function cellText(value, type) {
  if (value === null || value === undefined) return '';
  if (typeof value === 'number') return fmtNumber(value);
  if (typeof value === 'boolean') return String(value);
  if (Array.isArray(value)) return value.join(', ');
  if (type && type.startsWith('TIMESTAMP')) return fmtTime(value);
  return String(value);
}

export async function render(root, ctx) {
  const { api, params, setParams } = ctx;
  const state = {
    where: params.get('where') || '',
    sort: params.getAll('sort'),
    cols: params.getAll('col'),
    group: params.get('group') === 'experiment' ? 'experiment' : '',
  };
  const selected = new Set();
  const pages = new Map();
  let pageRows = pageSize();
  let meta = { columns: [], total: 0, groups: [] };
  let experiments = { 0: 'Default' };
  let generation = 0;
  let allColumns = null;
  let reveal = null;  // the column the chooser just added
  const timers = [];

  // -- the toolbar --------------------------------------------------------------------
  const filter = el('input', {
    type: 'search', class: 'grow mono', name: 'where', value: state.where, spellcheck: 'false',
    placeholder: 'SQL filter, e.g. "metrics.acc" > 0.8 AND status = \'finished\'',
    'aria-label': 'filter (a SQL WHERE clause)',
    onkeydown: (e) => { if (e.key === 'Enter') apply(); },
  });
  const error = el('p', { class: 'error', role: 'alert', id: 'filter-error' });
  const count = el('span', { class: 'muted', id: 'run-count' });
  const compare = el('span', { id: 'compare-link' });
  const groupBox = el('input', { type: 'checkbox', checked: state.group === 'experiment', onchange: () => {
    state.group = groupBox.checked ? 'experiment' : '';
    saveAndLoad();
  } });
  const chooser = el('div', { class: 'chooser' });
  const chooserButton = el('button', { type: 'button', onclick: () => toggleChooser() }, 'Columns');
  chooser.append(chooserButton);
  const live = el('div', { id: 'live' });
  const gridRoot = el('div');
  root.append(
    el('div', { class: 'toolbar' }, el('h1', {}, 'Runs'), count, compare),
    el('div', { class: 'toolbar' }, filter, el('button', { type: 'button', onclick: () => apply() }, 'Filter'),
      chooser, el('label', {}, groupBox, ' group by experiment')),
    error, live, gridRoot,
  );

  const grid = new VirtualGrid(gridRoot, {
    columns: [], count: 0,
    itemAt, rowAt,
    rowClass: (i) => { const r = rowAt(i); return r && selected.has(r.id) ? 'selected' : ''; },
    onHeader: (c, e) => sortBy(c, e.shiftKey),
    onRange: (a, b) => fetchRange(a, b),
  });

  function itemAt(i) {
    if (!state.group) return { kind: 'row', index: i };
    let pos = 0;
    for (const g of meta.groups) {
      if (i === pos) {
        const name = experiments[g.experiment_id];
        return { kind: 'group', label: `experiment ${g.experiment_id ?? '(none)'}${name ? ` · ${name}` : ''} · ${g.count} runs` };
      }
      if (i <= pos + g.count) return { kind: 'row', index: g.start + (i - pos - 1) };
      pos += g.count + 1;
    }
    return { kind: 'row', index: i };
  }

  // the chooser's columns and the experiments' names, asked once (the names label groups)
  let columnsAsked = null;
  function loadColumns() {
    if (!columnsAsked) {
      columnsAsked = api('/api/v1/ui/columns').then((data) => {
        allColumns = data.columns;
        experiments = data.experiments;
      }, (e) => { columnsAsked = null; throw e; });
    }
    return columnsAsked;
  }

  function pageSize() {
    const n = state.cols.length || 12;
    return Math.max(25, Math.min(200, Math.floor(PAGE_CELLS / n)));
  }

  function rowAt(index) {
    const page = pages.get(Math.floor(index / pageRows));
    if (!page || page === 'loading') return null;
    return page[index % pageRows] || null;
  }

  function query(offset, limit, counted = true, columns = true) {
    const q = new URLSearchParams({ offset, limit });
    if (!counted) q.set('count', 'false');  // the first page counted them
    if (state.where.trim()) q.set('where', state.where);
    for (const s of state.sort) q.append('sort', s);
    if (columns) for (const c of state.cols) q.append('col', c);
    if (state.group) q.set('group', state.group);
    return `/api/v1/ui/table?${q}`;
  }

  async function fetchPage(n, gen) {
    pages.set(n, 'loading');
    try {
      const data = await api(query(n * pageRows, pageRows, n === 0));
      if (gen !== generation) return null;
      pages.set(n, data.ids.map((id, k) => ({ id, values: data.rows[k] })));
      grid.schedule();
      return data;
    } catch (e) {
      if (gen === generation) { pages.delete(n); error.textContent = e.message; }
      return null;
    }
  }

  // Pages are asked for in view order, at most MAX_INFLIGHT at a time, and only while
  // still in view: a fast scroll over 100,000 runs asks for where it stops, not for every
  // page it passed (the server and the browser share the machine's cores).
  let want = [0, -1];
  let inflight = 0;
  function fetchRange(a, b) {
    const end = Math.min(b + AHEAD, Math.max(0, meta.total - 1));
    want = [Math.floor(a / pageRows), Math.floor(Math.max(a, end) / pageRows)];
    pump();
  }

  function pump() {
    for (let n = want[0]; n <= want[1] && inflight < MAX_INFLIGHT; n += 1) {
      if (pages.has(n)) continue;
      inflight += 1;
      fetchPage(n, generation).finally(() => { inflight -= 1; pump(); });
    }
  }

  function columnsOf(data) {
    const sorts = new Map(state.sort.map((s) => (s.startsWith('-') ? [s.slice(1), 'desc'] : [s, 'asc'])));
    // cells holding a node fill the one they have (a pooled row's checkbox or link is
    // updated as rows scroll, not made again)
    const check = {
      key: '', label: '', width: 34, title: 'select runs to compare', cls: 'check',
      fill: (cell, r) => {
        let box = cell.firstChild;
        if (!box || box.tagName !== 'INPUT') {
          box = el('input', { type: 'checkbox', 'aria-label': 'select run', onchange: (e) => {
            const { id } = e.target.dataset;
            if (e.target.checked) selected.add(id); else selected.delete(id);
            showCompare(); grid.schedule();
          } });
          cell.replaceChildren(box);
        }
        box.disabled = r === null;  // its row is loading
        const id = r === null ? '' : r.id;
        if (box.dataset.id !== id) box.dataset.id = id;
        box.checked = r !== null && selected.has(id);
      },
    };
    return [check, ...data.columns.map((c, k) => ({
      key: c.name, label: c.name, title: `${c.name} (${c.type})`,
      width: WIDTHS[c.name] || (c.family === 'params' || c.family === 'metrics' ? 110 : 130),
      num: /^(DOUBLE|BIGINT|INTEGER|FLOAT|HUGEINT|DECIMAL)/.test(c.type), sorted: sorts.get(c.name),
      cell: (r) => cellText(r.values[k], c.type),
      fill: c.name === 'short_id' || c.name === 'name' ? (cell, r) => {
        let a = cell.firstChild;
        if (!a || a.tagName !== 'A') { a = document.createElement('a'); cell.replaceChildren(a); }
        if (r === null) {  // loading: no link yet
          a.removeAttribute('href');
          a.textContent = '…';
          return;
        }
        const text = cellText(r.values[k], c.type) || (c.name === 'name' ? '' : r.id.slice(0, 10));
        const href = path('runs', r.id);
        if (a.getAttribute('href') !== href) a.setAttribute('href', href);
        if (a.textContent !== text) a.textContent = text;
      } : null,
    }))];
  }

  async function load(keepScroll = false) {
    generation += 1;
    const gen = generation;
    pages.clear();
    pageRows = pageSize();
    error.textContent = '';
    const data = await fetchPage(0, gen);
    if (gen !== generation) return;
    if (data === null) { meta = { columns: [], total: 0, groups: [] }; grid.setColumns([]); grid.setCount(0); count.textContent = ''; return; }
    meta = data;
    if (state.group && allColumns === null) loadColumns().then(() => grid.schedule(), () => {});
    grid.setColumns(columnsOf(data));
    grid.setCount(data.total + (state.group ? data.groups.length : 0));
    if (!keepScroll) grid.box.scrollTop = 0;
    if (reveal !== null) {  // a column just added goes last: scroll it into view
      const at = grid.columns.findIndex((col) => col.key === reveal);
      reveal = null;
      if (at >= 0) {
        const right = grid.lefts[at] + grid.columns[at].width;
        if (right > grid.box.scrollLeft + grid.box.clientWidth) grid.box.scrollLeft = right - grid.box.clientWidth;
      }
    }
    count.textContent = `${data.total} run${data.total === 1 ? '' : 's'}${state.where.trim() ? ' match the filter' : ''}`;
  }

  function save() {
    const q = new URLSearchParams();
    if (state.where.trim()) q.set('where', state.where);
    for (const s of state.sort) q.append('sort', s);
    for (const c of state.cols) q.append('col', c);
    if (state.group) q.set('group', state.group);
    setParams(q);
  }

  function saveAndLoad() { save(); return load(); }

  function apply() {
    state.where = filter.value;
    saveAndLoad();
  }

  function sortBy(column, add) {
    if (!column.key) return;
    const now = state.sort.find((s) => s === column.key || s === `-${column.key}`);
    const next = now === undefined ? column.key : now === column.key ? `-${column.key}` : null;
    const rest = add ? state.sort.filter((s) => s !== now) : [];
    state.sort = next === null ? rest : [...rest, next];
    saveAndLoad();
  }

  function showCompare() {
    const ids = [...selected];
    compare.replaceChildren(ids.length >= 2
      ? el('a', { href: `/compare?runs=${ids.map(encodeURIComponent).join(',')}`, class: 'pill' }, `Compare ${ids.length} runs`)
      : el('span', { class: 'muted' }, ids.length ? 'select one more run to compare' : 'select runs to compare'));
  }

  // -- the column chooser: type-ahead over every param, metric, tag and run column --------
  let panel = null;
  async function toggleChooser() {
    if (panel) { panel.remove(); panel = null; return; }
    panel = el('div', { class: 'chooser-panel', role: 'dialog', 'aria-label': 'columns' }, el('p', { class: 'muted' }, 'Loading…'));
    chooser.append(panel);
    await loadColumns();
    if (!panel) return;
    const shown = () => (state.cols.length ? state.cols : meta.columns.map((c) => c.name));
    const list = el('div');
    const search = el('input', { type: 'search', placeholder: 'type to find a column', 'aria-label': 'find a column', oninput: () => fill() });
    function fill() {
      const needle = search.value.toLowerCase();
      const on = new Set(shown());
      const hits = allColumns.filter((c) => c.name.toLowerCase().includes(needle));
      list.replaceChildren(...hits.slice(0, 200).map((c) => el('label', { title: c.name },
        el('input', { type: 'checkbox', checked: on.has(c.name), value: c.name, onchange: (e) => {
          const cols = shown().filter((n) => n !== c.name);
          if (e.target.checked) { cols.push(c.name); reveal = c.name; }
          state.cols = cols;
          saveAndLoad();
        } }), ` ${c.name} `, el('span', { class: 'muted' }, c.family))),
      ...(hits.length > 200 ? [el('p', { class: 'muted' }, `${hits.length - 200} more: type to narrow`)] : []));
    }
    panel.replaceChildren(search, el('button', { type: 'button', class: 'link', onclick: () => { state.cols = []; saveAndLoad(); fill(); } }, 'defaults'), list);
    fill();
    search.focus();
  }

  // -- runs in progress, and new runs, by polling ---------------------------------------
  async function poll() {
    try {
      const [head, running] = await Promise.all([api(query(0, 0, true, false)), api('/api/v1/ui/live')]);
      const groups = JSON.stringify(head.groups);
      if (head.total !== meta.total || groups !== JSON.stringify(meta.groups)) await load(true);
      live.replaceChildren(...(running.runs.length ? [el('h2', {}, `In progress (${running.runs.length})`),
        el('table', { class: 'grid' }, el('tbody', {}, running.runs.map((r) => el('tr', {},
          el('td', {}, el('span', { class: `status-${r.status}` }, r.status)), el('td', {}, r.name || r.key),
          el('td', { class: 'muted' }, `${r.points} points`),
          el('td', {}, Object.entries(r.metrics || {}).slice(0, 8).map(([k, v]) => el('span', { class: 'pill' }, `${k} ${fmtNumber(v)}`)))))))] : []));
    } catch (e) {
      if (e.status === 401) throw e;
    }
  }

  showCompare();
  await load();
  timers.push(setInterval(() => poll().catch(() => {}), POLL_MS));
  poll().catch(() => {});
  return () => { for (const t of timers) clearInterval(t); generation += 1; grid.destroy(); };
}
