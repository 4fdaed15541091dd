// How figures, times and states read on the page.
import { h } from './dom.js';

/** A count with thousands separators. */
export function count(n) {
  return n === null || n === undefined ? '–' : Number(n).toLocaleString('en-US');
}

/** A rate per second: one decimal below 10, whole numbers above. */
export function rate(r) {
  const n = Number(r) || 0;
  if (n === 0) return '0';
  return n < 10 ? n.toFixed(1) : Math.round(n).toLocaleString('en-US');
}

/** A duration in milliseconds as `850 ms`, `12.3 s`, `4 min 10 s`, `2 h 5 min`. */
export function duration(ms) {
  if (ms === null || ms === undefined) return '–';
  const n = Number(ms);
  if (n < 1000) return `${Math.round(n)} ms`;
  if (n < 60_000) return `${(n / 1000).toFixed(n < 10_000 ? 2 : 1)} s`;
  if (n < 3_600_000) return `${Math.floor(n / 60_000)} min ${Math.floor((n % 60_000) / 1000)} s`;
  return `${Math.floor(n / 3_600_000)} h ${Math.floor((n % 3_600_000) / 60_000)} min`;
}

/** An RFC 3339 time as local date and time, with the full value as the tooltip; `–` for none. */
export function time(iso) {
  if (!iso) return h('span', { class: 'muted' }, '–');
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return h('span', {}, String(iso));
  const today = new Date().toDateString() === d.toDateString();
  const text = today ? d.toLocaleTimeString() : d.toLocaleString();
  return h('time', { datetime: iso, title: `${iso} (${ago(d)})` }, text);
}

/** How long ago a date was, in words. */
export function ago(d) {
  const s = Math.round((Date.now() - d.getTime()) / 1000);
  if (s < 0) return `in ${duration(-s * 1000)}`;
  return `${duration(s * 1000)} ago`;
}

/** The states a task can be in, in the order a filter lists them. */
export const STATES = ['ready', 'delayed', 'leased', 'dead', 'succeeded', 'failed', 'cancelled'];

/** A task state as a coloured badge. */
export function stateBadge(state) {
  return h('span', { class: `badge state-${String(state).replace(/[^a-z-]/g, '')}` }, state);
}

/** Whether a task in this state may still change. */
export function isLive(state) {
  return state === 'ready' || state === 'delayed' || state === 'leased';
}

/** The first `n` characters of a text, with `…` when cut. */
export function clip(text, n) {
  const t = String(text ?? '');
  return t.length > n ? `${t.slice(0, n)}…` : t;
}
