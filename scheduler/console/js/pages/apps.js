// Applications: their pipelines, each with a submit form built from its template's parameters (required
// ones marked, defaults and descriptions from the definition). Submitting is
// `POST /api/applications/{app}/pipelines/{pipeline}` with the parameters as the body and the task options
// (key, priority, delay, idempotency key) in the query string.
import { get, post, query } from '../api.js';
import { fill, h } from '../dom.js';
import { errorBox, notify, notifyError } from '../notice.js';

/** Mounts the page. */
export function mount(main) {
  const list = h('div', { id: 'apps' }, h('p', { class: 'muted' }, 'Loading…'));
  fill(main, h('h1', {}, 'Applications'), list);
  get('/api/applications').then((r) => {
    const apps = r.applications || [];
    if (!apps.length) {
      fill(list, h('p', { class: 'muted empty' }, 'No application yet: create one with ',
        h('code', {}, 'pmctl app create FILE'), ' (docs/apps.md).'));
      return;
    }
    fill(list, apps.map(app));
  }).catch((e) => fill(list, errorBox(e, 'Could not list the applications')));
}

function app(a) {
  return h('section', { class: 'app', dataset: { app: a.name } },
    h('h2', {}, a.name, ' ', h('span', { class: 'muted small' }, `version ${a.version ?? '–'}`)),
    (a.pipelines || []).map((p) => pipeline(a.name, p)));
}

function pipeline(appName, p) {
  const formBox = h('div', { class: 'submit-box' });
  const toggle = h('button', { class: 'small', dataset: { pipeline: p.name } }, 'Submit a task…');
  let open = false;
  toggle.addEventListener('click', async () => {
    open = !open;
    if (!open) {
      formBox.replaceChildren();
      return;
    }
    let def = null;
    try {
      def = await get(`/api/applications/${encodeURIComponent(appName)}/pipelines/${encodeURIComponent(p.name)}`);
    } catch (e) {
      fill(formBox, errorBox(e, 'Could not read the pipeline'));
      return;
    }
    fill(formBox, submitForm(appName, p, def));
  });
  return h('div', { class: 'pipeline' },
    h('div', { class: 'title-row' },
      h('h3', {}, p.name, ' ', h('span', { class: 'muted small' }, 'queue '),
        h('a', { href: `#/tasks?queue=${encodeURIComponent(p.queue)}` }, p.queue)),
      toggle),
    h('p', { class: 'muted small' }, (p.params || []).length ? `Parameters: ${p.params.join(', ')}` : 'No parameters.'),
    formBox);
}

function submitForm(appName, p, def) {
  const schema = def?.definition?.params || {};
  const required = new Set(def?.required || p.required || []);
  const inputs = (def?.params || p.params || []).map((name) => {
    const spec = schema[name] || {};
    const input = h('input', { name, required: required.has(name), spellcheck: 'false',
      placeholder: spec.default !== undefined ? `default: ${spec.default}` : '' });
    return h('label', {}, h('span', {}, name, required.has(name) ? h('span', { class: 'req', title: 'required' }, ' *') : ''),
      input, spec.description ? h('span', { class: 'hint' }, spec.description) : null);
  });
  const opt = (name, label, type = 'text') => h('label', {}, h('span', {}, label), h('input', { name: `opt-${name}`, type }));
  const result = h('div', { class: 'submit-result' });
  const form = h('form', { class: 'submit-form' },
    h('fieldset', {}, h('legend', {}, 'Parameters'), inputs.length ? inputs : h('p', { class: 'muted' }, 'none')),
    h('fieldset', {}, h('legend', {}, 'Options'),
      opt('key', 'Key'), opt('priority', 'Priority', 'number'), opt('delaySeconds', 'Delay (s)', 'number'),
      opt('idempotencyKey', 'Idempotency key')),
    h('div', { class: 'buttons' }, h('button', { type: 'submit', class: 'primary' }, 'Submit')),
    result);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const params = {};
    const opts = {};
    for (const [k, v] of new FormData(form)) {
      if (k.startsWith('opt-')) opts[k.slice(4)] = v;
      else if (v !== '') params[k] = v;
    }
    const path = `/api/applications/${encodeURIComponent(appName)}/pipelines/${encodeURIComponent(p.name)}`;
    try {
      const r = await post(path + query(opts), params);
      const id = r.taskId;
      fill(result, h('p', { class: 'ok-text' }, r.duplicate ? 'Already submitted as ' : 'Submitted: ',
        h('a', { href: `#/task/${id}` }, `task ${id}`)));
      notify(`Task ${id} submitted to ${p.queue}.`, 'ok');
    } catch (err) {
      notifyError(err, 'Submit refused');
      fill(result, errorBox(err, 'Submit refused'));
    }
  });
  return form;
}
