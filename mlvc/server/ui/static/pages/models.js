// /models: the registry; /models/<name>: a model's versions, aliases and alias history.
// A write-scope session can point an alias at a version from here.
import { el, path, fmtTime } from '../lib/dom.js';

const when = (t) => (t ? fmtTime(new Date(t * 1000).toISOString()) : '');

async function list(root, { api }) {
  const { models } = await api('/api/v1/models');
  root.append(el('h1', {}, 'Models'));
  if (!models.length) {
    root.append(el('p', { class: 'muted' }, 'No registered models yet: mlvc models register NAME URI, or log_model(..., registered_model_name=NAME).'));
    return;
  }
  root.append(el('table', { class: 'grid', id: 'models' },
    el('thead', {}, el('tr', {}, ['name', 'versions', 'latest', 'aliases', 'registered'].map((h) => el('th', {}, h)))),
    el('tbody', {}, models.map((m) => el('tr', {},
      el('td', {}, el('a', { href: path('models', m.name) }, m.name)),
      el('td', { class: 'num' }, m.versions), el('td', { class: 'num' }, m.latest),
      el('td', {}, Object.entries(m.aliases || {}).map(([a, v]) => el('span', { class: 'pill' }, `@${a} → v${v}`))),
      el('td', {}, when(m.registered_at)))))));
}

async function one(root, ctx, name) {
  const { api, canWrite } = ctx;
  const [model, { history }] = await Promise.all([
    api(`/api/v1/models/${encodeURIComponent(name)}`),
    api(`/api/v1/ui/models/${encodeURIComponent(name)}/history`),
  ]);
  const message = el('p', { class: 'error', role: 'alert', id: 'alias-error' });
  const versions = model.versions.map((v) => v.version);
  const form = () => {
    const alias = el('input', { type: 'text', name: 'alias', placeholder: 'alias (e.g. prod)', 'aria-label': 'alias' });
    const version = el('select', { name: 'version', 'aria-label': 'version' }, versions.map((v) => el('option', { value: v }, `v${v}`)));
    return el('form', {
      class: 'toolbar', id: 'move-alias',
      onsubmit: async (e) => {
        e.preventDefault();
        message.textContent = '';
        try {
          await api(`/api/v1/models/${encodeURIComponent(name)}/aliases/${encodeURIComponent(alias.value.trim())}`,
            { method: 'PUT', body: { version: Number(version.value) } });
          root.replaceChildren();
          await one(root, ctx, name);
        } catch (err) {
          message.textContent = err.message;
        }
      },
    }, 'Point ', alias, ' at ', version, ' ', el('button', { type: 'submit' }, 'Move alias'));
  };
  root.append(
    el('p', {}, el('a', { href: '/models' }, '← all models')),
    el('h1', {}, name),
    el('h2', {}, 'Aliases'),
    Object.keys(model.aliases).length
      ? el('div', { id: 'aliases' }, Object.entries(model.aliases).map(([a, v]) => el('span', { class: 'pill' }, `@${a} → v${v}`)))
      : el('p', { class: 'muted' }, 'none'),
    canWrite() ? form() : el('p', { class: 'muted' }, 'Log in with a write token to move aliases.'),
    message,
    el('h2', {}, 'Versions'),
    el('table', { class: 'grid', id: 'versions' },
      el('thead', {}, el('tr', {}, ['version', 'aliases', 'run', 'source', 'registered', 'by'].map((h) => el('th', {}, h)))),
      el('tbody', {}, model.versions.slice().reverse().map((v) => el('tr', {},
        el('td', { class: 'num' }, `v${v.version}`),
        el('td', {}, v.aliases.map((a) => el('span', { class: 'pill' }, `@${a}`))),
        el('td', {}, v.run_id ? el('a', { href: path('runs', v.run_id), class: 'mono' }, v.run_id.slice(0, 10)) : ''),
        el('td', { class: 'mono' }, v.source), el('td', {}, when(v.registered_at)), el('td', {}, v.registered_by))))),
    el('h2', {}, 'Alias history'),
    history.length ? el('table', { class: 'grid', id: 'history' },
      el('thead', {}, el('tr', {}, ['when', 'alias', 'change', 'by'].map((h) => el('th', {}, h)))),
      el('tbody', {}, history.slice().reverse().map((h) => el('tr', {},
        el('td', {}, when(h.at)), el('td', {}, `@${h.alias}`),
        el('td', {}, h.action === 'set' ? (h.previous ? `v${h.previous} → v${h.version}` : `set to v${h.version}`) : `removed (was v${h.version})`),
        el('td', {}, h.by))))) : el('p', { class: 'muted' }, 'no alias moves yet'),
  );
}

export async function render(root, ctx) {
  if (ctx.parts.length > 1) return one(root, ctx, ctx.parts[1]);
  return list(root, ctx);
}
