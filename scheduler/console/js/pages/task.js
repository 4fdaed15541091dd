// One task: its state, attempts and times; each step's commands with exit code, duration and the tails of
// their output (from the agent's result document, docs/task-format.md); and the flow it belongs to, from its
// root down, each follow-up marked as the onSuccess or onFailure branch of its parent. While the task can
// still change, the page refreshes every two seconds.
import { get } from '../api.js';
import { cancelTasks, deadLetters } from '../actions.js';
import { fill, h } from '../dom.js';
import { duration, isLive, stateBadge, time } from '../format.js';
import { errorBox } from '../notice.js';

/** Most tasks of a flow the page fetches. */
const MAX_FLOW = 200;

/** Mounts the page; returns its cleanup. */
export function mount(main, route) {
  const id = Number(route.match[1]);
  const head = h('div');
  const body = h('div');
  const flow = h('section', { id: 'flow' });
  fill(main, h('p', { class: 'crumbs' }, h('a', { href: '#/tasks' }, '← Tasks')), head, body, flow);
  let timer = null;
  let flowShown = '';
  async function load() {
    let t;
    try {
      t = await get(`/api/tasks/${id}`);
    } catch (e) {
      fill(head, h('h1', {}, `Task ${id}`), errorBox(e, `Could not read task ${id}`));
      return;
    }
    paintHead(head, t, load);
    paintResult(body, t);
    // The flow is read again only when this task's family may have changed.
    const sig = `${t.state}:${t.parentId}:${(t.children || []).join(',')}`;
    if ((t.parentId || (t.children || []).length) && sig !== flowShown) {
      flowShown = sig;
      paintFlow(flow, t).catch((e) => fill(flow, errorBox(e, 'Could not read the flow')));
    }
    clearTimeout(timer);
    if (isLive(t.state)) timer = setTimeout(load, 2000);
  }
  load();
  return () => clearTimeout(timer);
}

function field(label, ...value) {
  return [h('dt', {}, label), h('dd', {}, ...value)];
}

function paintHead(el, t, reload) {
  const actions = h('div', { class: 'actions' });
  if (isLive(t.state)) {
    const b = h('button', { class: 'danger', id: 'task-cancel' }, 'Cancel task…');
    b.addEventListener('click', async () => { if (await cancelTasks([t.taskId])) reload(); });
    actions.append(b);
  }
  if (t.state === 'dead') {
    const r = h('button', { class: 'primary', id: 'task-redrive' }, 'Redrive');
    r.addEventListener('click', async () => {
      if (await deadLetters('redrive', { queue: t.queue, ids: [t.taskId] })) reload();
    });
    const d = h('button', { class: 'danger', id: 'task-delete' }, 'Delete…');
    d.addEventListener('click', async () => {
      if (await deadLetters('delete', { queue: t.queue, ids: [t.taskId] })) reload();
    });
    actions.append(r, d);
  }
  fill(el,
    h('div', { class: 'title-row' }, h('h1', {}, `Task ${t.taskId} `, stateBadge(t.state)), actions),
    h('dl', { class: 'facts', id: 'task-facts' },
      field('State', h('span', { id: 'task-state' }, t.state)),
      field('Queue', h('a', { href: `#/tasks?queue=${encodeURIComponent(t.queue)}` }, t.queue)),
      field('Key', t.key ? h('a', { href: `#/tasks?key=${encodeURIComponent(t.key)}` }, t.key) : '–'),
      field('Attempts', `${t.attempts ?? 0}${t.maxAttempts ? ` of ${t.maxAttempts}` : ''}`),
      field('Submitted', time(t.submitted)),
      field('Started', time(t.started)),
      field('Finished', time(t.finished)),
      t.leaseDeadline && field('Lease until', time(t.leaseDeadline)),
      t.flowId && field('Flow', h('a', { href: `#/tasks?flow=${encodeURIComponent(t.flowId)}` }, t.flowId)),
      t.parentId && field('Follows', h('a', { href: `#/task/${t.parentId}` }, `task ${t.parentId}`)),
      t.reason && field('Reason', h('span', { class: 'reason-text' }, t.reason))));
}

function paintResult(el, t) {
  const r = t.result;
  if (r === null || r === undefined) {
    fill(el, h('section', {}, h('h2', {}, 'Result'), h('p', { class: 'muted' },
      isLive(t.state) ? 'No result yet.' : 'No result was kept for this task.')));
    return;
  }
  if (typeof r !== 'object' || !Array.isArray(r.steps)) {
    fill(el, h('section', {}, h('h2', {}, 'Result'), h('pre', { class: 'output' },
      typeof r === 'string' ? r : JSON.stringify(r, null, 2))));
    return;
  }
  fill(el, h('section', { id: 'steps' },
    h('h2', {}, 'Steps ', h('span', { class: `badge ${r.ok ? 'state-succeeded' : 'state-failed'}` },
      r.ok ? 'ok' : 'failed')),
    r.error && h('p', { class: 'error-text' }, r.error),
    r.resumedSteps ? h('p', { class: 'muted' }, `${r.resumedSteps} step(s) skipped: an earlier attempt completed them.`) : null,
    r.steps.map((s, i) => step(s, i))));
}

function exitText(c) {
  if (c.error) return h('span', { class: 'bad' }, 'could not run');
  if (c.timedOut) return h('span', { class: 'bad' }, 'timed out');
  if (c.signal !== null && c.signal !== undefined) return h('span', { class: 'bad' }, `signal ${c.signal}`);
  if (c.exitCode === null || c.exitCode === undefined) return h('span', { class: 'muted' }, '–');
  return h('span', { class: c.exitCode === 0 ? 'good' : 'bad' }, `exit ${c.exitCode}`);
}

function step(s, i) {
  return h('div', { class: 'step' },
    h('h3', {}, `Step ${i + 1} `, h('span', { class: 'muted' }, 'on '), h('code', {}, s.executor || '?')),
    (s.commands || []).map((c) => h('details', { class: 'command', open: c.exitCode !== 0 || undefined },
      h('summary', {}, exitText(c), h('code', { class: 'cmd' }, c.run), h('span', { class: 'muted dur' },
        duration(c.durationMs))),
      c.error && h('p', { class: 'error-text' }, c.error),
      tail('stdout', c.stdoutTail), tail('stderr', c.stderrTail))));
}

function tail(name, text) {
  if (!text) return h('p', { class: 'muted small' }, `${name}: empty`);
  return h('div', { class: `tail tail-${name}` }, h('div', { class: 'tail-name' }, `${name} (last bytes)`),
    h('pre', { class: 'output' }, text));
}

/** The flow: up through `parentId` to the root, then down through `children`, level by level. */
async function paintFlow(el, t) {
  const known = new Map([[t.taskId, t]]);
  let root = t;
  for (let hops = 0; root.parentId && hops < 64; hops++) {
    const up = await get(`/api/tasks/${root.parentId}`).catch(() => null);
    if (!up) break; // the root's outcome is no longer kept: show what is left
    known.set(up.taskId, up);
    root = up;
  }
  let level = [...(root.children || [])];
  while (level.length && known.size < MAX_FLOW) {
    const ids = level.filter((id) => !known.has(id)).slice(0, MAX_FLOW - known.size);
    const got = await Promise.all(ids.map((id) => get(`/api/tasks/${id}`).catch(() => null)));
    level = [];
    for (const s of got) {
      if (!s) continue;
      known.set(s.taskId, s);
      level.push(...(s.children || []));
    }
  }
  fill(el, h('h2', {}, 'Flow', root.flowId ? [' ', h('code', {}, root.flowId)] : ''),
    h('ul', { class: 'tree' }, node(root, null, known, t.taskId)),
    known.size >= MAX_FLOW ? h('p', { class: 'muted' }, `Showing the first ${MAX_FLOW} tasks.`) : null);
}

/** A task of the tree and its follow-ups. A follow-up is submitted when its parent finishes: onSuccess when
 * the parent succeeded, onFailure when it failed for good. */
function node(s, parent, known, current) {
  const branch = parent === null ? null : parent.state === 'succeeded' ? 'onSuccess' : 'onFailure';
  const kids = (s.children || []).map((id) => known.get(id)).filter(Boolean);
  return h('li', { class: s.taskId === current ? 'current' : '' },
    h('div', { class: 'tree-node' },
      branch && h('span', { class: `branch branch-${branch}` }, branch),
      h('a', { href: `#/task/${s.taskId}` }, `task ${s.taskId}`), ' ', stateBadge(s.state), ' ',
      h('span', { class: 'muted' }, s.queue)),
    kids.length ? h('ul', {}, kids.map((k) => node(k, s, known, current))) : null);
}
