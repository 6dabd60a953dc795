// JSON calls to the server: the session cookie authenticates them, and the header marks
// them as the UI's own (the server refuses cookie-authenticated writes without it).
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** api('/api/v1/runs', {method, body, query, signal, raw}) -> parsed JSON (or the Response). */
export async function api(path, opts = {}) {
  const headers = { 'X-Requested-With': 'mlvc-ui', Accept: 'application/json' };
  let url = path;
  if (opts.query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(opts.query)) if (v !== undefined && v !== null) q.set(k, v);
    const s = q.toString();
    if (s) url += (url.includes('?') ? '&' : '?') + s;
  }
  const init = { method: opts.method || 'GET', headers, credentials: 'same-origin', signal: opts.signal };
  if (opts.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(opts.body);
  }
  const response = await fetch(url, init);
  if (!response.ok) {
    let code = 'ERROR';
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      code = body.error_code || code;
      message = body.message || message;
    } catch { /* not JSON: keep the status line */ }
    throw new ApiError(response.status, code, message);
  }
  if (opts.raw) return response;
  return response.json();
}
