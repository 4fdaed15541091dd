// Every action the console can take, each asking first and saying how many tasks it reaches.
//
// The rule of bulk actions: a request reaches exactly the set the operator looked at. A filter is sent as
// that filter (the server counts and acts on the same predicate); "everything" is only ever sent as an
// explicit `all: true`, and only after the operator typed ALL. A body that names no task and no filter is
// never built here (and the API would refuse it with 400).
import { ApiError, get, markReadOnly, post } from './api.js';
import { confirmAction } from './confirm.js';
import { h } from './dom.js';
import { count } from './format.js';
import { notify, notifyError } from './notice.js';

/** The non-empty fields of a task filter (`queue`, `state`, `key`, `flow`). */
export function filterOf(f) {
  const out = {};
  for (const k of ['queue', 'state', 'key', 'flow']) if (f[k]) out[k] = f[k];
  return out;
}

/** A filter in words: `queue q, state dead`, or `no filter`. */
export function describeFilter(f) {
  const parts = Object.entries(filterOf(f)).map(([k, v]) => `${k} ${v}`);
  return parts.length ? parts.join(', ') : 'no filter';
}

async function run(doing, fn) {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof ApiError && e.status === 403 && e.code === 'ROLE_NOT_ALLOWED') markReadOnly();
    notifyError(e, doing);
    return null;
  }
}

/** Pauses a queue (nothing of it is leased; submits are still accepted). */
export async function pauseQueue(queue) {
  const yes = await confirmAction({ title: `Pause ${queue}?`, action: 'Pause',
    message: [h('p', {}, 'No task of ', h('code', {}, queue), ' will be leased until it is resumed, on every member. ',
      'Submits are still accepted; tasks already running finish.')] });
  if (!yes) return null;
  const r = await run(`Pausing ${queue}`, () => post(`/api/queues/${encodeURIComponent(queue)}/pause`));
  if (r) notify(`Queue ${queue} is paused.`, 'ok');
  return r;
}

/** Resumes a paused queue. */
export async function resumeQueue(queue) {
  const yes = await confirmAction({ title: `Resume ${queue}?`, action: 'Resume',
    message: [h('p', {}, 'Tasks of ', h('code', {}, queue), ' will be leased again.')] });
  if (!yes) return null;
  const r = await run(`Resuming ${queue}`, () => post(`/api/queues/${encodeURIComponent(queue)}/resume`));
  if (r) notify(`Queue ${queue} is running again.`, 'ok');
  return r;
}

/** Purges a queue: cancels its ready and delayed tasks (the operator types the queue's name). */
export async function purgeQueue(queue, figures) {
  const n = (Number(figures?.ready) || 0) + (Number(figures?.delayed) || 0);
  const yes = await confirmAction({ title: `Purge ${queue}?`, action: `Purge ${queue}`, danger: true, typed: queue,
    message: [h('p', {}, 'Every ready and delayed task of ', h('code', {}, queue), ` (about ${count(n)} now) is `,
      h('strong', {}, 'cancelled for good'), '. Leased tasks are untouched.')] });
  if (!yes) return null;
  const r = await run(`Purging ${queue}`, () => post(`/api/queues/${encodeURIComponent(queue)}/purge`));
  if (r) notify(`Purged ${count(r.purged)} task(s) of ${queue}.`, 'ok');
  return r;
}

/** Cancels the tasks named by `ids`. */
export async function cancelTasks(ids) {
  const yes = await confirmAction({ title: `Cancel ${ids.length === 1 ? `task ${ids[0]}` : `${ids.length} tasks`}?`,
    action: 'Cancel tasks', danger: true,
    message: [h('p', {}, `${count(ids.length)} task(s) will never run again (a running one is stopped).`)] });
  if (!yes) return null;
  const r = await run('Cancelling', () => post('/api/tasks/cancel', { ids }));
  if (r) notify(`Cancelled ${count(r.cancelled)} task(s).`, 'ok');
  return r;
}

/** Cancels every task of a filter, after counting it; with no filter, only as an explicit "all". */
export async function cancelFiltered(f) {
  const filter = filterOf(f);
  const all = Object.keys(filter).length === 0;
  const counted = await run('Counting the tasks', () => get('/api/tasks/count', filter));
  if (!counted) return null;
  const n = `${counted.exact ? '' : 'at least '}${count(counted.count)}`;
  if (counted.count === 0) {
    notify(`No task matches (${describeFilter(f)}): nothing to cancel.`, 'info');
    return null;
  }
  const yes = await confirmAction({ title: `Cancel ${n} task(s)?`, action: `Cancel ${n} task(s)`, danger: true,
    typed: all ? 'ALL' : null,
    message: [h('p', {}, all ? 'No filter is set: this cancels ' : 'This cancels the tasks matching ',
      h('strong', {}, all ? 'every task' : describeFilter(f)), ` — ${n} right now. They never run again.`)] });
  if (!yes) return null;
  const r = await run('Cancelling', () => post('/api/tasks/cancel', all ? { all: true } : filter));
  if (r) notify(`Cancelled ${count(r.cancelled)} task(s).`, 'ok');
  return r;
}

/** Redrives (`redrive`) or deletes (`delete`) dead letters: the `ids` given, or all of `queue` (all of every
 * queue when `queue` is empty) when `ids` is null. `n` is how many that is, said before acting. */
export async function deadLetters(verb, { queue, ids, n }) {
  const many = ids === null || ids === undefined;
  const where = queue ? [' of ', h('code', {}, queue)] : many ? ' of every queue' : '';
  const what = many ? `all ${count(n)} dead letter(s)` : ids.length === 1 ? `dead letter ${ids[0]}` :
    `${count(ids.length)} dead letters`;
  const redrive = verb === 'redrive';
  const yes = await confirmAction({
    title: `${redrive ? 'Redrive' : 'Delete'} ${what}?`, action: redrive ? 'Redrive' : 'Delete', danger: !redrive,
    typed: many ? (queue || 'ALL') : null,
    message: [h('p', {}, redrive ? 'Redrive ' : 'Delete ', what, where, redrive
      ? ': ready again, with their attempts reset.' : ': finished as cancelled, for good.')],
  });
  if (!yes) return null;
  const body = many ? { all: true } : { ids };
  if (queue) body.queue = queue;
  const r = await run(redrive ? 'Redriving' : 'Deleting', () => post(`/api/dead/${verb}`, body));
  if (r) notify(redrive ? `Redrove ${count(r.redriven)} task(s).` : `Deleted ${count(r.deleted)} dead letter(s).`, 'ok');
  return r;
}
