// /events: what changed in the repository (when the server has /api/v1/events).
export async function render(root, ctx) {
  const { el, api } = ctx;
  root.append(el('h1', {}, 'Events'));
  let events;
  try {
    events = await api('/api/v1/events', { query: { limit: 200 } });
  } catch (e) {
    if (e.status === 404) {
      root.append(el('p', { class: 'muted' }, 'Events are not yet available on this server.'));
      return;
    }
    throw e;
  }
  const rows = Array.isArray(events) ? events : events.events || [];
  if (!rows.length) { root.append(el('p', { class: 'muted' }, 'No events yet.')); return; }
  const keys = Object.keys(rows[0]);
  root.append(el('table', { class: 'grid' },
    el('thead', {}, el('tr', {}, keys.map((k) => el('th', {}, k)))),
    el('tbody', {}, rows.map((r) => el('tr', {}, keys.map((k) => el('td', {}, typeof r[k] === 'object' ? JSON.stringify(r[k]) : r[k])))))));
}
