// Messages at the top of the page: what an action did, or why it was refused. Errors stay until closed;
// successes fade after a few seconds.
import { h } from './dom.js';
import { describe } from './api.js';

/** Shows `text`; `kind` is `ok`, `info` or `error`. */
export function notify(text, kind = 'info') {
  const box = document.getElementById('notices');
  const close = h('button', { class: 'quiet close', title: 'Close', 'aria-label': 'Close' }, '×');
  const note = h('div', { class: `notice notice-${kind}`, role: kind === 'error' ? 'alert' : 'status' },
    h('span', { class: 'notice-text' }, text), close);
  close.addEventListener('click', () => note.remove());
  box.append(note);
  while (box.children.length > 4) box.firstElementChild.remove();
  if (kind !== 'error') setTimeout(() => note.remove(), 6000);
  return note;
}

/** Shows an API error (or any error) as a message that says what to do. */
export function notifyError(err, doing) {
  return notify(doing ? `${doing}: ${describe(err)}` : describe(err), 'error');
}

/** An error box inside a page, for a view that could not load. */
export function errorBox(err, doing) {
  return h('div', { class: 'error-box', role: 'alert' },
    h('strong', {}, doing || 'Could not load this view'), h('p', {}, describe(err)));
}
