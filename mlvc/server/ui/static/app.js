// The router of the mlvc web UI: each page is ./pages/<page>.js exporting
// `async function render(root, ctx)`, which may return a cleanup function.
import { api, ApiError } from './lib/api.js';
import { el } from './lib/dom.js';

const ROUTES = [
  [/^\/$/, 'runs'],
  [/^\/runs\/[^/]+\/?$/, 'run'],
  [/^\/compare\/?$/, 'compare'],
  [/^\/models\/?$/, 'models'],
  [/^\/models\/[^/]+\/?$/, 'models'],
  [/^\/events\/?$/, 'events'],
  [/^\/login\/?$/, 'login'],
];

let cleanup = null;
let current = 0;
let session = null;

function pageOf(pathname) {
  for (const [re, page] of ROUTES) if (re.test(pathname)) return page;
  return null;
}

export function navigate(url, { replace = false } = {}) {
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  return route();
}

/** Put `params` in the address without rendering again (deep-linkable page state). */
function setParams(params) {
  const q = params.toString();
  history.replaceState(null, '', location.pathname + (q ? `?${q}` : ''));
}

async function whoami() {
  try {
    session = await api('/api/v1/ui/session');
  } catch (e) {
    session = null;
    if (!(e instanceof ApiError && e.status === 401)) throw e;
  }
  const who = document.getElementById('who');
  if (session && !session.anonymous) {
    const out = el('button', {
      type: 'button', class: 'link', onclick: async () => {
        await api('/api/v1/ui/session', { method: 'DELETE' });
        session = null;
        navigate('/login');
      },
    }, 'log out');
    who.replaceChildren(el('span', { class: 'muted' }, `${session.name} (${session.scope}) `), out);
  } else {
    who.replaceChildren(el('a', { href: `/login?next=${encodeURIComponent(location.pathname + location.search)}` }, 'log in'));
  }
  return session;
}

async function route() {
  const mine = ++current;
  if (cleanup) {
    try { cleanup(); } catch (e) { console.error(e); }
    cleanup = null;
  }
  const root = document.getElementById('app');
  const page = pageOf(location.pathname);
  for (const a of document.querySelectorAll('#nav a')) {
    a.classList.toggle('active', a.dataset.page === page);
  }
  if (page === null) {
    root.replaceChildren(el('p', { class: 'error' }, `No page at ${location.pathname}.`));
    return;
  }
  const ctx = {
    params: new URLSearchParams(location.search),
    parts: location.pathname.split('/').filter(Boolean).map(decodeURIComponent),
    api, navigate, el, setParams,
    session: () => session,
    canWrite: () => !!session && (session.scope === 'write' || session.scope === 'admin'),
  };
  try {
    // the page's code loads while the session is asked for, not after
    const loading = import(`./pages/${page}.js`);
    loading.catch(() => {});  // awaited below; a failure is reported there
    if (page !== 'login' && session === null) await whoami();
    if (page !== 'login' && session === null) {
      await navigate(`/login?next=${encodeURIComponent(location.pathname + location.search)}`, { replace: true });
      return;
    }
    const module = await loading;
    if (mine !== current) return;
    // each page draws into a view of its own: a page left while its data was still
    // loading then draws into a detached node, never over the page that replaced it
    const view = el('div', { class: 'view' });
    root.replaceChildren(view);
    document.title = `mlvc · ${page}`;
    const done = await module.render(view, ctx);
    if (typeof done === 'function') {
      if (mine === current) cleanup = done;
      else done();
    }
  } catch (e) {
    if (mine !== current) return;
    if (e instanceof ApiError && e.status === 401) {
      session = null;
      await navigate(`/login?next=${encodeURIComponent(location.pathname + location.search)}`, { replace: true });
      return;
    }
    console.error(e);
    root.replaceChildren(el('p', { class: 'error', role: 'alert' }, e.message || String(e)));
  }
}

// Links inside the app change the page without reloading it.
document.addEventListener('click', (event) => {
  if (event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const a = event.target.closest('a');
  if (!a || a.target || a.hasAttribute('download') || a.dataset.external !== undefined) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || url.pathname.startsWith('/api/') || url.pathname.startsWith('/ui/')) return;
  if (pageOf(url.pathname) === null) return;
  event.preventDefault();
  navigate(url.pathname + url.search + url.hash);
});
window.addEventListener('popstate', () => route());
window.mlvc = { loggedIn: () => whoami() };  // the login page refreshes the header with it
route();
