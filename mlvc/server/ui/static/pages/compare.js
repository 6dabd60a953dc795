// /compare?runs=A,B,...: the compare page (metric charts, the run diff) is built by the
// ui-charts branch; until it lands, this lists the runs asked for.
export async function render(root, ctx) {
  const { el, params } = ctx;
  const runs = (params.get('runs') || '').split(',').filter(Boolean);
  root.append(el('h1', {}, 'Compare'),
    el('p', { class: 'muted' }, runs.length ? 'Runs:' : 'Select runs in the runs table, then Compare.'),
    el('ul', {}, runs.map((r) => el('li', {}, el('a', { href: `/runs/${encodeURIComponent(r)}` }, r)))));
}
