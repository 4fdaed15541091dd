// The console's shell: the router (the page and its filters live in the URL's fragment, `#/tasks?queue=q`,
// so every view can be bookmarked and shared), the token field, and the live-stream indicator.
import { readOnly, token, setToken } from './api.js';
import { fill, h, setText } from './dom.js';
import * as live from './live.js';
import { route } from './nav.js';
import * as overview from './pages/overview.js';
import * as tasks from './pages/tasks.js';
import * as task from './pages/task.js';
import * as dead from './pages/dead.js';
import * as apps from './pages/apps.js';

/** Each page: the nav entry it lights, and its module (`mount(main, route) → cleanup?`). */
const PAGES = [
  { re: /^\/?$/, nav: 'overview', page: overview },
  { re: /^\/tasks$/, nav: 'tasks', page: tasks },
  { re: /^\/task\/(\d+)$/, nav: 'tasks', page: task },
  { re: /^\/dead$/, nav: 'dead', page: dead },
  { re: /^\/apps$/, nav: 'apps', page: apps },
];

let cleanup = null;

function render() {
  const r = route();
  const found = PAGES.find((p) => p.re.test(r.path));
  if (typeof cleanup === 'function') cleanup();
  cleanup = null;
  for (const a of document.querySelectorAll('#nav a')) {
    a.classList.toggle('active', found?.nav === a.dataset.page);
  }
  const main = document.getElementById('main');
  if (!found) {
    fill(main, h('div', { class: 'error-box' }, h('strong', {}, 'No such page'), h('p', {}, r.path)));
    return;
  }
  r.match = r.path.match(found.re);
  main.replaceChildren();
  cleanup = found.page.mount(main, r);
}

function tokenUi() {
  const input = document.getElementById('token-input');
  const stateEl = document.getElementById('token-state');
  const show = () => {
    setText(stateEl, !token() ? 'no token' : readOnly() ? 'read-only token' : 'token set');
    stateEl.title = readOnly() ? 'An action was refused for this token: actions need an admin token' : '';
    document.body.classList.toggle('read-only', readOnly());
  };
  window.addEventListener('pm-read-only', show);
  document.getElementById('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    setToken(input.value);
    input.value = '';
    show();
    render();
  });
  document.getElementById('token-forget').addEventListener('click', () => {
    setToken('');
    show();
    render();
  });
  show();
}

function liveUi() {
  const el = document.getElementById('live');
  const words = { connecting: 'connecting…', live: 'live', retrying: 'reconnecting…', refused: 'not live' };
  live.subscribe((s) => {
    setText(el, words[s.status] || s.status);
    el.className = `live live-${s.status}`;
    el.title = s.error ? `Live stream: ${s.error.message}` : 'Live stream of queue figures (GET /api/events)';
  });
}

tokenUi();
liveUi();
window.addEventListener('hashchange', render);
render();
live.start();
