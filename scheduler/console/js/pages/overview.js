// Overview: every queue with its figures, live rates and sparklines (from the `queues` events of the live
// stream), its agents and its controls; the cluster's members, their health and the ring epoch. Rows are kept
// per queue and updated in place each second: nothing is rebuilt, so the table does not flicker or lose focus.
import { get } from '../api.js';
import { pauseQueue, purgeQueue, resumeQueue } from '../actions.js';
import { fill, h, setText } from '../dom.js';
import { count, duration, rate } from '../format.js';
import * as live from '../live.js';
import { errorBox } from '../notice.js';
import { draw, sparkline } from '../sparkline.js';

const COLUMNS = [
  ['queue', 'Queue'], ['ready', 'Ready'], ['delayed', 'Delayed'], ['leased', 'Leased'], ['dead', 'Dead'],
  ['agents', 'Agents'], ['credits', 'Credits'], ['oldest', 'Oldest ready'], ['submitted', 'Submitted/s'],
  ['completed', 'Completed/s'], ['actions', ''],
];

/** Mounts the page; returns its cleanup. */
export function mount(main) {
  const summary = h('div', { class: 'cards' });
  const tbody = h('tbody');
  const empty = h('p', { class: 'muted empty' }, 'No queue yet: a queue appears once a task or an agent names it.');
  const membersBody = h('tbody');
  const problem = h('div');
  fill(main,
    h('h1', {}, 'Overview'),
    problem,
    summary,
    h('section', {},
      h('h2', {}, 'Queues'),
      h('div', { class: 'table-wrap' }, h('table', { class: 'grid', id: 'queues' },
        h('thead', {}, h('tr', {}, COLUMNS.map(([k, t]) => h('th', { class: `col-${k}` }, t)))), tbody)),
      empty),
    h('section', {},
      h('h2', {}, 'Cluster members'),
      h('div', { class: 'table-wrap' }, h('table', { class: 'grid', id: 'members' },
        h('thead', {}, h('tr', {}, ['Member', 'Health', 'Node id', 'Connections', 'Ring epoch', 'Error']
          .map((t) => h('th', {}, t)))), membersBody))));

  const rows = new Map();
  const paint = (s) => {
    if (!s.data) {
      if (s.error) fill(problem, errorBox(s.error, 'The live figures are not available'));
      return;
    }
    problem.replaceChildren();
    paintSummary(summary, s.data);
    paintQueues(tbody, rows, s.data, s.history);
    empty.hidden = (s.data.queues || []).length > 0;
    paintMembers(membersBody, s.data);
  };
  const unsubscribe = live.subscribe(paint);
  // A first picture at once (the stream's first event may be a second away), and polling while the stream
  // is down, so the page never shows stale figures as if they were live.
  const poll = async () => {
    if (live.current().status === 'live' && live.current().data) return;
    try {
      live.accept(await get('/api/queues'));
    } catch (e) {
      fill(problem, errorBox(e, 'Could not read the queues'));
    }
  };
  poll();
  const timer = setInterval(poll, 2000);
  return () => {
    unsubscribe();
    clearInterval(timer);
  };
}

function card(label, value, note) {
  return h('div', { class: 'card' }, h('div', { class: 'card-label' }, label), h('div', { class: 'card-value' }, value),
    note && h('div', { class: 'card-note' }, note));
}

function paintSummary(el, data) {
  const qs = data.queues || [];
  const sum = (k) => qs.reduce((a, q) => a + (Number(q[k]) || 0), 0);
  const members = data.members || [];
  const up = members.filter((m) => m.up).length;
  fill(el,
    card('Ready', count(sum('ready')), `${count(sum('delayed'))} delayed`),
    card('Leased', count(sum('leased')), `${count(sum('agents'))} agent(s), ${count(sum('credits'))} credits`),
    card('Dead letters', count(sum('dead'))),
    card('Throughput', `${rate(sum('completedPerSec'))}/s`, `${rate(sum('submittedPerSec'))}/s submitted`),
    card('Members', `${up} / ${members.length}`, up < members.length ? 'some are down' : 'all up'),
    card('Ring epoch', String(data.ringEpoch ?? '–')));
}

function newRow(name) {
  const link = (path, text) => h('a', { href: `#${path}?queue=${encodeURIComponent(name)}` }, text);
  const cells = {};
  const tr = h('tr', { dataset: { queue: name } });
  for (const [k] of COLUMNS) {
    cells[k] = h('td', { class: `col-${k}` });
    tr.append(cells[k]);
  }
  cells.queue.append(link('/tasks', name), ' ', h('span', { class: 'badge paused', hidden: true }, 'paused'));
  cells.deadLink = link('/dead', '0');
  cells.dead.append(cells.deadLink);
  for (const k of ['submitted', 'completed']) {
    cells[`${k}Spark`] = sparkline(k);
    cells[`${k}Text`] = h('span', { class: 'rate' });
    cells[k].append(cells[`${k}Spark`], cells[`${k}Text`]);
  }
  cells.pause = h('button', { class: 'small', dataset: { action: 'pause', queue: name } }, 'Pause');
  cells.resume = h('button', { class: 'small', dataset: { action: 'resume', queue: name } }, 'Resume');
  cells.purge = h('button', { class: 'small danger', dataset: { action: 'purge', queue: name } }, 'Purge…');
  cells.actions.append(cells.pause, cells.resume, cells.purge);
  return { tr, cells, figures: null };
}

function paintQueues(tbody, rows, data, history) {
  const seen = new Set();
  for (const q of data.queues || []) {
    seen.add(q.queue);
    let row = rows.get(q.queue);
    if (!row) {
      row = newRow(q.queue);
      // After an action, the figures are read again at once rather than at the next event.
      const then = (r) => r && get('/api/queues').then((d) => live.accept(d, false)).catch(() => {});
      row.cells.pause.addEventListener('click', async () => then(await pauseQueue(q.queue)));
      row.cells.resume.addEventListener('click', async () => then(await resumeQueue(q.queue)));
      row.cells.purge.addEventListener('click', async () => then(await purgeQueue(q.queue, row.figures)));
      rows.set(q.queue, row);
    }
    row.figures = q;
    const c = row.cells;
    for (const k of ['ready', 'delayed', 'leased', 'agents', 'credits']) setText(c[k], count(q[k]));
    setText(c.deadLink, count(q.dead));
    c.dead.classList.toggle('warn', Number(q.dead) > 0);
    setText(c.oldest, q.oldestReadyAgeMs ? duration(q.oldestReadyAgeMs) : '–');
    if (q.waitingExecutor) c.ready.title = `${q.waitingExecutor} wait for an executor no agent of this queue has`;
    c.queue.querySelector('.paused').hidden = !q.paused;
    row.tr.classList.toggle('is-paused', !!q.paused);
    c.pause.hidden = !!q.paused;
    c.resume.hidden = !q.paused;
    const hist = history.get(q.queue) || { submitted: [], completed: [] };
    draw(c.submittedSpark, hist.submitted);
    draw(c.completedSpark, hist.completed);
    setText(c.submittedText, rate(q.submittedPerSec));
    setText(c.completedText, rate(q.completedPerSec));
  }
  for (const [name, row] of rows) {
    if (!seen.has(name)) {
      row.tr.remove();
      rows.delete(name);
    }
  }
  // Keep the table in name order (the API's order) without touching rows already in place.
  let prev = null;
  for (const q of data.queues || []) {
    const tr = rows.get(q.queue).tr;
    const want = prev ? prev.nextSibling : tbody.firstChild;
    if (want !== tr) tbody.insertBefore(tr, want);
    prev = tr;
  }
}

function paintMembers(tbody, data) {
  fill(tbody, (data.members || []).map((m) => h('tr', { class: m.up ? '' : 'down' },
    h('td', {}, h('code', {}, m.node)),
    h('td', {}, h('span', { class: `badge ${m.up ? 'up' : 'down'}` }, m.up ? 'up' : 'down')),
    h('td', {}, m.nodeId ?? '–'),
    h('td', {}, m.up ? count(m.connections) : '–'),
    h('td', {}, m.ringEpoch ?? '–'),
    h('td', { class: 'muted' }, m.error || ''))));
}
