// Talking to the scheduler's HTTP API (docs/http-api.md) from the page.
//
// The token an operator pastes lives in sessionStorage (gone when the tab closes) and travels only in the
// `Authorization: Bearer` header, never in a cookie: a page of another site cannot make the browser send it.
// Every error of the API is `{"error", "code"}`; `ApiError` keeps both with the HTTP status.

const KEY = 'pm.console.token';
const tokenListeners = new Set();

/** The token in use (empty: none; the API then serves only on a loopback address). */
export function token() {
  return sessionStorage.getItem(KEY) || '';
}

/** Keeps `t` for this tab (empty forgets it) and tells the listeners. */
export function setToken(t) {
  const v = (t || '').trim();
  if (v) sessionStorage.setItem(KEY, v);
  else sessionStorage.removeItem(KEY);
  sessionStorage.removeItem(READ_ONLY);
  for (const fn of tokenListeners) fn(v);
}

const READ_ONLY = 'pm.console.readOnly';

/** Whether an action with the current token was refused for its role (a producer token: it may only read). */
export function readOnly() {
  return sessionStorage.getItem(READ_ONLY) === '1';
}

/** Notes that the current token may only read, and says so to the page (`pm-read-only` event). */
export function markReadOnly() {
  sessionStorage.setItem(READ_ONLY, '1');
  window.dispatchEvent(new Event('pm-read-only'));
}

/** Calls `fn(token)` whenever the token changes. */
export function onTokenChange(fn) {
  tokenListeners.add(fn);
}

/** An answer that was not a success: HTTP status (0: no answer), the API's code and message. */
export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

/** The headers of every request: JSON, and the token if there is one. */
export function headers(extra) {
  const hs = { Accept: 'application/json', ...extra };
  const t = token();
  if (t) hs.Authorization = `Bearer ${t}`;
  return hs;
}

/** A query string of the non-empty values of `params` (`?a=1&b=x`, or empty). */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

/** One request; resolves to the JSON answer, rejects with an `ApiError`. A `207` (some members answered)
 * resolves, with the answer's per-member outcomes for the caller to show. */
export async function api(method, path, body) {
  const init = { method, headers: headers(body === undefined ? {} : { 'Content-Type': 'application/json' }),
    cache: 'no-store' };
  if (body !== undefined) init.body = JSON.stringify(body);
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'NO_ANSWER', `the scheduler did not answer (${e.message})`);
  }
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!res.ok) {
    const code = (data && data.code) || `HTTP_${res.status}`;
    const message = (data && data.error) || text.trim() || res.statusText;
    throw new ApiError(res.status, code, message, data);
  }
  return data;
}

/** `GET path` with a query string. */
export function get(path, params) {
  return api('GET', path + query(params));
}

/** `POST path` with a JSON body. */
export function post(path, body) {
  return api('POST', path, body ?? {});
}

/** An error in words an operator can act on. */
export function describe(err) {
  if (!(err instanceof ApiError)) return String(err && err.message ? err.message : err);
  const said = `${err.message} (${err.status || 'no answer'}${err.code ? ` ${err.code}` : ''})`;
  if (err.status === 401) return `This needs a token: paste one in the Token field above. The scheduler said: ${said}`;
  if (err.status === 403 && err.code === 'ROLE_NOT_ALLOWED') {
    return `This token may only read: actions need an admin token. The scheduler said: ${said}`;
  }
  if (err.status === 403 && err.code === 'HTTP_API_OFF') {
    return `The scheduler's HTTP API is off (it listens on a public address without tokens): ${said}`;
  }
  return said;
}
