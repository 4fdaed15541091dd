// Dead letters: tasks that used up their attempts, oldest first, a page at a time (the API's cursor, so
// paging stays fast through 100,000 of them). Each can be redriven (ready again, attempts reset) or deleted;
// so can a selection, or all dead letters of the chosen queue, after saying how many that is.
import { get } from '../api.js';
import { deadLetters } from '../actions.js';
import { fill, h } from '../dom.js';
import { clip, count } from '../format.js';
import * as live from '../live.js';
import { go } from '../nav.js';
import { errorBox } from '../notice.js';

/** Mounts the page; returns its cleanup. */
export function mount(main, route) {
  const queue = route.params.get('queue') || '';
  const cursor = route.params.get('cursor') || '';
  const queues = (live.current().data?.queues || []);
  const pick = h('select', { name: 'queue', id: 'dead-queue' }, h('option', { value: '' }, 'every queue'),
    queues.filter((q) => q.dead > 0 || q.queue === queue)
      .map((q) => h('option', { value: q.queue, selected: q.queue === queue }, `${q.queue} (${count(q.dead)})`)));
  if (queue && !queues.some((q) => q.queue === queue)) pick.append(h('option', { value: queue, selected: true }, queue));
  pick.addEventListener('change', () => go('/dead', { queue: pick.value }));

  const tbody = h('tbody');
  const problem = h('div');
  const selAll = h('input', { type: 'checkbox', 'aria-label': 'Select every row of this page' });
  const redriveSel = h('button', { id: 'dead-redrive-selected', disabled: true }, 'Redrive selected');
  const deleteSel = h('button', { id: 'dead-delete-selected', class: 'danger', disabled: true }, 'Delete selected…');
  const redriveAll = h('button', { id: 'dead-redrive-all' }, 'Redrive all…');
  const deleteAll = h('button', { id: 'dead-delete-all', class: 'danger' }, 'Delete all…');
  const newest = h('button', { disabled: !cursor }, '⇤ First page');
  const older = h('button', { id: 'dead-next', disabled: true }, 'Next page →');
  const status = h('span', { class: 'muted' });

  fill(main,
    h('h1', {}, 'Dead letters'),
    h('div', { class: 'filters' }, h('label', {}, 'Queue', pick)),
    h('div', { class: 'toolbar' }, status, h('span', { class: 'spacer' }), redriveSel, deleteSel, redriveAll,
      deleteAll, newest, older),
    problem,
    h('div', { class: 'table-wrap' }, h('table', { class: 'grid', id: 'dead' },
      h('thead', {}, h('tr', {}, h('th', {}, selAll), ['Task', 'Queue', 'Attempts', 'Reason', 'Payload', '']
        .map((t) => h('th', {}, t)))), tbody)));

  const selected = () => [...tbody.querySelectorAll('input[type=checkbox]:checked')].map((c) => Number(c.value));
  const onSelect = () => {
    const n = selected().length;
    redriveSel.disabled = deleteSel.disabled = n === 0;
    redriveSel.textContent = n ? `Redrive ${n} selected` : 'Redrive selected';
    deleteSel.textContent = n ? `Delete ${n} selected…` : 'Delete selected…';
  };
  selAll.addEventListener('change', () => {
    for (const c of tbody.querySelectorAll('input[type=checkbox]')) c.checked = selAll.checked;
    onSelect();
  });
  tbody.addEventListener('change', onSelect);
  const after = (r) => { if (r) load(); };
  redriveSel.addEventListener('click', async () => after(await deadLetters('redrive', { queue, ids: selected() })));
  deleteSel.addEventListener('click', async () => after(await deadLetters('delete', { queue, ids: selected() })));
  // "All" is the dead-letter count of the queue (or of every queue) from GET /api/queues, said first.
  const total = async () => {
    const data = await get('/api/queues');
    live.accept(data);
    return (data.queues || []).filter((q) => !queue || q.queue === queue).reduce((a, q) => a + (Number(q.dead) || 0), 0);
  };
  for (const [btn, verb] of [[redriveAll, 'redrive'], [deleteAll, 'delete']]) {
    btn.addEventListener('click', async () => {
      let n;
      try {
        n = await total();
      } catch (e) {
        fill(problem, errorBox(e, 'Could not count the dead letters'));
        return;
      }
      after(await deadLetters(verb, { queue, ids: null, n }));
    });
  }
  newest.addEventListener('click', () => go('/dead', { queue }));
  let next = null;
  older.addEventListener('click', () => { if (next) go('/dead', { queue, cursor: next }); });

  async function load() {
    try {
      const r = await get('/api/dead', { queue, cursor, limit: 100 });
      problem.replaceChildren();
      next = r.nextCursor ?? null;
      older.disabled = !next;
      const rows = r.deadLetters || [];
      status.textContent = `${count(rows.length)} shown, oldest first${cursor ? ` (after ${cursor})` : ''}`;
      redriveAll.disabled = deleteAll.disabled = rows.length === 0 && !cursor;
      redriveAll.textContent = queue ? `Redrive all of ${queue}…` : 'Redrive all…';
      deleteAll.textContent = queue ? `Delete all of ${queue}…` : 'Delete all…';
      selAll.checked = false;
      paint(tbody, rows, after, queue);
      onSelect();
    } catch (e) {
      fill(problem, errorBox(e, 'Could not list the dead letters'));
    }
  }
  load();
}

function payloadText(p) {
  if (p === null || p === undefined) return '';
  return typeof p === 'string' ? p : JSON.stringify(p);
}

function paint(tbody, rows, after, queue) {
  if (!rows.length) {
    fill(tbody, h('tr', {}, h('td', { colspan: 7, class: 'muted empty' }, 'No dead letter here.')));
    return;
  }
  fill(tbody, rows.map((d) => {
    const redrive = h('button', { class: 'small', dataset: { action: 'redrive', taskId: d.taskId } }, 'Redrive');
    const del = h('button', { class: 'small danger', dataset: { action: 'delete', taskId: d.taskId } }, 'Delete…');
    const q = queue || d.queue;
    redrive.addEventListener('click', async () => after(await deadLetters('redrive', { queue: q, ids: [d.taskId] })));
    del.addEventListener('click', async () => after(await deadLetters('delete', { queue: q, ids: [d.taskId] })));
    const payload = payloadText(d.payload);
    return h('tr', { dataset: { taskId: d.taskId } },
      h('td', {}, h('input', { type: 'checkbox', value: d.taskId, 'aria-label': `Select task ${d.taskId}` })),
      h('td', {}, h('a', { href: `#/task/${d.taskId}` }, String(d.taskId))),
      h('td', {}, d.queue),
      h('td', { class: 'num' }, d.attempts),
      h('td', { class: 'reason', title: d.reason || '' }, clip(d.reason, 100)),
      h('td', { class: 'payload', title: clip(payload, 2000) }, h('code', {}, clip(payload, 80))),
      h('td', { class: 'row-actions' }, redrive, del));
  }));
}
