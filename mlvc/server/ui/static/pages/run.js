// /runs/<id>: every section of one run, with previews of its files.
import { el, path, fmtNumber, fmtBytes, fmtTime } from '../lib/dom.js';

const MAX_FILES = 500;
const PREVIEWABLE = /\.(png|jpe?g|gif|webp|json|csv|tsv|parquet|txt|log|md|py|ya?ml|toml|cfg|ini|sh|out|err|rst|sql)$/i;
const IMAGE = /\.(png|jpe?g|gif|webp)$/i;

function kv(entries, render = (v) => (typeof v === 'object' && v !== null ? JSON.stringify(v) : fmtNumber(v))) {
  if (!entries.length) return el('p', { class: 'muted' }, 'none');
  return el('table', { class: 'grid kv' }, el('tbody', {}, entries.map(([k, v]) => el('tr', {}, el('td', {}, k), el('td', {}, render(v, k))))));
}

function fileUrl(id, p) {
  return `/api/v1/ui/runs/${encodeURIComponent(id)}/file?path=${encodeURIComponent(p)}`;
}

function runLink(r) {
  const id = typeof r === 'string' ? r : r.id;
  const text = typeof r === 'string' ? r.slice(0, 10) : `${r.short_id}${r.name ? ` ${r.name}` : ''}`;
  return el('a', { href: path('runs', id), class: 'mono' }, text);
}

async function showPreview(box, api, id, p) {
  box.replaceChildren(el('p', { class: 'muted' }, 'Loading…'));
  try {
    if (IMAGE.test(p)) {
      box.replaceChildren(el('img', { src: fileUrl(id, p), alt: p }));
      return;
    }
    const got = await api(`/api/v1/ui/runs/${encodeURIComponent(id)}/preview`, { query: { path: p } });
    const parts = [];
    if (got.kind === 'table') {
      parts.push(el('table', { class: 'grid' },
        el('thead', {}, el('tr', {}, got.columns.map((c) => el('th', {}, String(c))))),
        el('tbody', {}, got.rows.map((r) => el('tr', {}, r.map((v) => el('td', {}, typeof v === 'object' && v !== null ? JSON.stringify(v) : fmtNumber(v))))))));
      if (got.truncated) parts.push(el('p', { class: 'muted' }, `first ${got.rows.length} rows${got.total_rows ? ` of ${got.total_rows}` : ''}`));
    } else if (got.kind === 'text' || got.kind === 'json') {
      parts.push(el('pre', {}, got.text));
      if (got.truncated) parts.push(el('p', { class: 'muted' }, 'the start of the file'));
    } else {
      parts.push(el('p', { class: 'muted' }, 'no preview for this kind of file: download it'));
    }
    box.replaceChildren(...parts);
  } catch (e) {
    box.replaceChildren(el('p', { class: 'error' }, e.message));
  }
}

function files(section, id, api, prefix) {
  if (!section || !section.entries || !section.entries.length) return el('p', { class: 'muted' }, 'no files');
  const box = el('div', { class: 'preview', hidden: true });
  const rows = section.entries.slice(0, MAX_FILES).map((f) => {
    const p = `${prefix}/${f.path}`;
    return el('tr', {},
      el('td', { class: 'mono' }, f.path),
      el('td', { class: 'num' }, fmtBytes(f.size)),
      el('td', {}, PREVIEWABLE.test(f.path)
        ? el('button', { type: 'button', class: 'link', dataset: { path: p }, onclick: () => { box.hidden = false; showPreview(box, api, id, p); } }, 'preview')
        : ''),
      el('td', {}, el('a', { href: fileUrl(id, p), 'data-external': '', download: f.path.split('/').pop() }, 'download')));
  });
  return [
    el('p', { class: 'muted' }, `${section.files} files, ${fmtBytes(section.size)}${section.files > MAX_FILES ? ` (the first ${MAX_FILES} listed)` : ''}`),
    el('table', { class: 'grid' }, el('tbody', {}, rows)), box,
  ];
}

function signature(sig) {
  if (!sig) return el('span', { class: 'muted' }, 'no signature');
  const side = (s) => {
    if (!s) return el('span', { class: 'muted' }, 'unknown');
    if (s.kind === 'tensor') return el('span', { class: 'mono' }, `tensor ${s.dtype} (${(s.shape || []).join(', ')})`);
    return el('span', {}, (s.columns || []).map((c) => el('span', { class: 'pill mono' }, `${c.name}: ${c.type}`)));
  };
  return el('div', {}, el('div', {}, 'inputs: ', side(sig.inputs)), el('div', {}, 'outputs: ', side(sig.outputs)));
}

export async function render(root, ctx) {
  const { api, parts } = ctx;
  const ref = parts[1];
  let timer = null;
  const draw = async () => {
    const run = await api(`/api/v1/runs/${encodeURIComponent(ref)}`);
    if (run.key && !run.id) return drawLive(run);
    const rel = await api(`/api/v1/ui/runs/${encodeURIComponent(run.id)}/relatives`);
    document.title = `mlvc · ${run.name || run.short_id}`;
    const metrics = Object.entries(run.metrics || {}).sort(([a], [b]) => (a < b ? -1 : 1));
    const artifacts = run.artifacts || { entries: [] };
    const logs = (artifacts.entries || []).filter((f) => f.path.startsWith('logs/'));
    const logBox = el('div');
    root.replaceChildren(
      el('h1', {}, run.name || run.short_id, ' ', el('span', { class: `status-${run.status}` }, `(${run.status})`)),
      el('p', {}, el('span', { class: 'mono' }, run.id), run.head ? el('span', { class: 'pill' }, 'HEAD') : null),
      el('div', { class: 'sections' },
        kv([['message', run.message], ['author', run.author], ['started', fmtTime(run.started)], ['ended', fmtTime(run.ended)],
          ['duration', run.duration_s === null ? '' : `${run.duration_s} s`], ['command', (run.command || []).join(' ')],
          ['exit code', run.exit_code ?? ''], ['working directory', run.cwd || '.']], (v) => String(v ?? '')),
        el('h2', {}, 'Params'), kv(Object.entries(run.params || {}).sort(([a], [b]) => (a < b ? -1 : 1))),
        el('h2', {}, 'Metrics'),
        metrics.length ? el('table', { class: 'grid kv', id: 'metrics' }, el('tbody', {}, metrics.map(([k, v]) => el('tr', {},
          el('td', {}, k), el('td', { class: 'num' }, fmtNumber(v)),
          el('td', {}, el('a', { href: `/compare?runs=${encodeURIComponent(run.id)}&metric=${encodeURIComponent(k)}` }, 'chart')))))) : el('p', { class: 'muted' }, 'none'),
        el('h2', {}, 'Tags'), kv(Object.entries(run.tags || {}), (v) => String(v)),
        el('h2', {}, 'Code'), kv(Object.entries(run.git || {}), (v) => String(v)), files(run.code, run.id, api, 'code'),
        el('h2', {}, 'Data'), files(run.data, run.id, api, 'data'),
        el('h2', {}, 'Environment'), run.env ? kv([['python', run.env.python], ['platform', run.env.platform],
          ['packages', run.env.packages], ['id', run.env.id], ...Object.entries(run.env.variables || {})], (v) => String(v)) : el('p', { class: 'muted' }, 'not captured'),
        el('h2', {}, 'Artifacts'), files(artifacts, run.id, api, 'artifacts'),
        el('h2', {}, 'Models'), Object.keys(run.models || {}).length ? el('div', {}, Object.entries(run.models).map(([name, m]) => el('div', { class: 'preview model-card' },
          el('strong', {}, name), ' ', el('span', { class: 'muted' }, `${m.flavor || ''} · artifacts/${m.path || ''}`),
          el('div', {}, (m.flavors || []).map((f) => el('span', { class: 'pill' }, f))), signature(m.signature)))) : el('p', { class: 'muted' }, 'none'),
        el('h2', {}, 'Logs'), logs.length ? logBox : el('p', { class: 'muted' }, 'none'),
        el('h2', {}, 'Lineage'),
        kv([['parents', run.parents.length ? run.parents.map((p) => [runLink(p), ' ']) : 'none (a root run)'],
          ['reproduces', run.reproduces ? runLink(run.reproduces) : '—'],
          ['children', rel.children.length ? rel.children.map((r) => [runLink(r), ' ']) : 'none'],
          ['reproductions', rel.reproductions.length ? rel.reproductions.map((r) => [runLink(r), ' ', el('span', { class: `status-${r.status}` }, r.status), ' ']) : 'none']],
        (v) => el('span', {}, v)),
      ),
    );
    for (const f of logs.slice(0, 5)) {
      const box = el('div', { class: 'preview' });
      logBox.append(el('div', { class: 'mono' }, f.path), box);
      showPreview(box, api, run.id, `artifacts/${f.path}`);
    }
    return null;
  };
  const drawLive = (run) => {
    root.replaceChildren(
      el('h1', {}, run.name || run.key, ' ', el('span', { class: `status-${run.status}` }, `(${run.status})`)),
      el('p', { class: 'muted' }, `in progress: ${run.points} metric points so far; this page refreshes`),
      el('h2', {}, 'Params'), kv(Object.entries(run.params || {})),
      el('h2', {}, 'Metrics (latest)'), kv(Object.entries(run.metrics || {})),
      el('h2', {}, 'Tags'), kv(Object.entries(run.tags || {}), (v) => String(v)),
    );
    if (!timer) timer = setInterval(() => draw().catch(() => {}), 3000);
  };
  await draw();
  return () => { if (timer) clearInterval(timer); };
}
