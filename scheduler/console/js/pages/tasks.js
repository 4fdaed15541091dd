// Tasks: live tasks and kept outcomes, newest first, filtered by queue, state, key and flow. The filters and
// the page (`cursor`) are in the URL, so a filtered view is a bookmark. One page is at most `limit` rows
// (100 by default), so the page stays fast however many tasks there are; "Older" follows the API's cursor,
// "Newest" goes back to the top. On the newest page, the list refreshes every two seconds.
import { get } from '../api.js';
import { cancelFiltered, describeFilter, filterOf } from '../actions.js';
import { fill, h } from '../dom.js';
import { clip, count, STATES, stateBadge, time } from '../format.js';
import * as live from '../live.js';
import { go } from '../nav.js';
import { errorBox } from '../notice.js';

const LIMITS = ['50', '100', '250', '1000'];

/** Mounts the page; returns its cleanup. */
export function mount(main, route) {
  const p = route.params;
  const f = { queue: p.get('queue') || '', state: p.get('state') || '', key: p.get('key') || '',
    flow: p.get('flow') || '' };
  const limit = LIMITS.includes(p.get('limit')) ? p.get('limit') : '100';
  const cursor = p.get('cursor') || '';

  const queues = h('datalist', { id: 'queue-names' },
    (live.current().data?.queues || []).map((q) => h('option', { value: q.queue })));
  const input = (name, label, extra) => h('label', {}, label,
    h('input', { name, value: f[name], type: 'search', spellcheck: 'false', ...extra }));
  const state = h('select', { name: 'state' }, h('option', { value: '' }, 'any'),
    STATES.map((s) => h('option', { value: s, selected: s === f.state }, s)));
  const size = h('select', { name: 'limit' }, LIMITS.map((n) => h('option', { value: n, selected: n === limit }, n)));
  const form = h('form', { class: 'filters', id: 'task-filters' },
    input('queue', 'Queue', { list: 'queue-names' }), queues,
    h('label', {}, 'State', state),
    input('key', 'Key'), input('flow', 'Flow'),
    h('label', {}, 'Per page', size),
    h('button', { type: 'submit', class: 'primary' }, 'Apply'),
    h('a', { href: '#/tasks', class: 'button quiet' }, 'Clear'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const data = Object.fromEntries(new FormData(form));
    go('/tasks', { ...filterOf(data), limit: data.limit === '100' ? '' : data.limit });
  });

  const tbody = h('tbody');
  const status = h('span', { class: 'muted' });
  const problem = h('div');
  const newest = h('button', { id: 'page-newest', disabled: !cursor }, '⇤ Newest');
  const older = h('button', { id: 'page-older', disabled: true }, 'Older →');
  newest.addEventListener('click', () => go('/tasks', { ...filterOf(f), limit: limit === '100' ? '' : limit }));
  const bulk = h('button', { class: 'danger', id: 'bulk-cancel' },
    Object.keys(filterOf(f)).length ? 'Cancel these tasks…' : 'Cancel all tasks…');
  bulk.title = `Cancels every task matching the filter (${describeFilter(f)}), after saying how many`;
  bulk.addEventListener('click', async () => {
    if (await cancelFiltered(f)) load();
  });

  fill(main,
    h('h1', {}, 'Tasks'),
    form,
    h('div', { class: 'toolbar' }, h('span', {}, h('strong', {}, describeFilter(f)), ' · ', status),
      h('span', { class: 'spacer' }), bulk, newest, older),
    problem,
    h('div', { class: 'table-wrap' }, h('table', { class: 'grid', id: 'tasks' },
      h('thead', {}, h('tr', {}, ['Task', 'State', 'Queue', 'Key', 'Flow', 'Attempts', 'Submitted', 'Finished',
        'Reason'].map((t) => h('th', {}, t)))), tbody)));

  let next = null;
  older.addEventListener('click', () => {
    if (next) go('/tasks', { ...filterOf(f), limit: limit === '100' ? '' : limit, cursor: next });
  });

  let busy = false;
  async function load() {
    if (busy) return;
    busy = true;
    try {
      const r = await get('/api/tasks', { ...filterOf(f), limit, cursor });
      problem.replaceChildren();
      next = r.nextCursor ?? null;
      older.disabled = !next;
      paint(tbody, r.tasks || []);
      status.textContent = `${count((r.tasks || []).length)} shown${cursor ? ` (older than ${cursor})` : ', newest first'}`;
    } catch (e) {
      fill(problem, errorBox(e, 'Could not list the tasks'));
    } finally {
      busy = false;
    }
  }
  load();
  const timer = cursor ? null : setInterval(() => { if (!document.hidden) load(); }, 2000);
  return () => clearInterval(timer);
}

function paint(tbody, tasks) {
  // Unchanged since the last refresh: leave the rows alone (no flicker, and a row being clicked stays put).
  const sig = JSON.stringify(tasks.map((t) => [t.taskId, t.state, t.attempts, t.finished, t.reason]));
  if (tbody.dataset.sig === sig) return;
  tbody.dataset.sig = sig;
  if (!tasks.length) {
    fill(tbody, h('tr', {}, h('td', { colspan: 9, class: 'muted empty' }, 'No task matches.')));
    return;
  }
  // Rows are rebuilt in one go (one DOM write): at most `limit` of them.
  const frag = document.createDocumentFragment();
  for (const t of tasks) {
    const open = `#/task/${t.taskId}`;
    frag.append(h('tr', { dataset: { taskId: t.taskId } },
      h('td', {}, h('a', { href: open, class: 'task-link' }, String(t.taskId))),
      h('td', {}, stateBadge(t.state)),
      h('td', {}, h('a', { href: `#/tasks?queue=${encodeURIComponent(t.queue || '')}` }, t.queue)),
      h('td', {}, t.key ? h('a', { href: `#/tasks?key=${encodeURIComponent(t.key)}` }, clip(t.key, 32)) : ''),
      h('td', {}, t.flowId ? h('a', { href: `#/tasks?flow=${encodeURIComponent(t.flowId)}` }, clip(t.flowId, 24)) : ''),
      h('td', { class: 'num' }, `${t.attempts ?? 0}${t.maxAttempts ? ` / ${t.maxAttempts}` : ''}`),
      h('td', {}, time(t.submitted)),
      h('td', {}, time(t.finished)),
      h('td', { class: 'reason', title: t.reason || '' }, clip(t.reason, 80))));
  }
  tbody.replaceChildren(frag);
}
