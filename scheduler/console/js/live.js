// The live figures: one `GET /api/events` stream for the whole console, read with fetch() (an EventSource
// cannot send the Authorization header). Each `queues` event (once a second) is the body of
// `GET /api/queues`; the last minute of each queue's rates is kept for the sparklines. The stream
// reconnects with backoff, and again with the new token when the token changes.
import { headers, ApiError, onTokenChange } from './api.js';

/** Points of history kept per queue (one a second). */
export const HISTORY = 60;

const state = { data: null, history: new Map(), status: 'connecting', error: null };
const listeners = new Set();
let controller = null;
let retry = null;
let backoff = 1000;

/** Calls `fn(state)` on every event and status change (and at once if there is data); returns the unsubscribe. */
export function subscribe(fn) {
  listeners.add(fn);
  if (state.data || state.error) fn(state);
  return () => listeners.delete(fn);
}

/** The latest state: `{data, history, status, error}`. */
export function current() {
  return state;
}

function emit() {
  for (const fn of listeners) fn(state);
}

function setStatus(status, error = null) {
  state.status = status;
  state.error = error;
  emit();
}

/** (Re)starts the stream. */
export function start() {
  if (controller) controller.abort();
  clearTimeout(retry);
  controller = new AbortController();
  connect(controller);
}

onTokenChange(() => {
  backoff = 1000;
  start();
});

async function connect(ctl) {
  setStatus('connecting');
  try {
    const res = await fetch('/api/events', { headers: headers({ Accept: 'text/event-stream' }), signal: ctl.signal,
      cache: 'no-store' });
    if (!res.ok) {
      const body = await res.json().catch(() => null);
      throw new ApiError(res.status, body?.code || `HTTP_${res.status}`, body?.error || res.statusText, body);
    }
    setStatus('live');
    backoff = 1000;
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf = (buf + value).replace(/\r\n?/g, '\n');
      let end;
      while ((end = buf.indexOf('\n\n')) >= 0) {
        onBlock(buf.slice(0, end));
        buf = buf.slice(end + 2);
      }
    }
    throw new ApiError(0, 'STREAM_ENDED', 'the live stream ended');
  } catch (e) {
    if (ctl.signal.aborted) return;
    const refused = e instanceof ApiError && (e.status === 401 || e.status === 403);
    setStatus(refused ? 'refused' : 'retrying', e);
    if (refused) return; // until the token changes
    retry = setTimeout(() => { if (controller === ctl) connect(ctl); }, backoff);
    backoff = Math.min(backoff * 2, 15000);
  }
}

/** One server-sent event: `event:` and `data:` lines. */
function onBlock(block) {
  let event = 'message';
  const data = [];
  for (const line of block.split('\n')) {
    if (line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
  }
  if (event !== 'queues' || data.length === 0) return;
  try {
    accept(JSON.parse(data.join('\n')));
  } catch {
    // A malformed event is skipped; the next one comes within a second.
  }
}

/** Takes a `GET /api/queues` body (from the stream, or fetched by a page) as the latest figures; `record`
 * false leaves the sparklines' history alone (a figure fetched right after an action, between two events). */
export function accept(data, record = true) {
  state.data = data;
  for (const q of record ? data.queues || [] : []) {
    let h = state.history.get(q.queue);
    if (!h) state.history.set(q.queue, (h = { submitted: [], completed: [] }));
    h.submitted.push(Number(q.submittedPerSec) || 0);
    h.completed.push(Number(q.completedPerSec) || 0);
    if (h.submitted.length > HISTORY) h.submitted.shift();
    if (h.completed.length > HISTORY) h.completed.shift();
  }
  emit();
}
