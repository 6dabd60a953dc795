// /login: trade a token for a session cookie (the token is not kept by the page).
export async function render(root, ctx) {
  const { el, api, params, navigate } = ctx;
  const next = params.get('next');
  const target = next && next.startsWith('/') && !next.startsWith('//') ? next : '/';
  const message = el('p', { class: 'error', role: 'alert' }, params.get('error') || '');
  const input = el('input', {
    type: 'password', name: 'token', autocomplete: 'off', placeholder: 'mlvc_…', size: 50,
    'aria-label': 'token',
  });
  const form = el('form', {
    class: 'login',
    onsubmit: async (event) => {
      event.preventDefault();
      message.textContent = '';
      try {
        await api('/api/v1/ui/session', { method: 'POST', body: { token: input.value } });
        await window.mlvc.loggedIn();
        navigate(target, { replace: true });
      } catch (e) {
        message.textContent = e.message;
      }
    },
  },
  el('label', {}, 'Token ', input), ' ', el('button', { type: 'submit' }, 'Log in'));
  root.append(
    el('h1', {}, 'Log in'),
    el('p', {}, 'Paste a token made with ', el('code', {}, 'mlvc token create'),
      ' (read scope to look, write scope to move aliases). ', el('code', {}, 'mlvc ui'),
      ' prints an address that logs you in.'),
    form, message,
  );
  input.focus();
}
