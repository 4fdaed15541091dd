// Asking before acting: a modal dialog that says what will happen and to how many tasks. For the widest
// actions the operator types a word (the queue's name, or ALL) before the button unlocks.
import { h } from './dom.js';

/**
 * Resolves to true when the operator confirms.
 * @param {{title: string, message: (string|Node)[]|string, action: string, danger?: boolean, typed?: string}} o
 */
export function confirmAction(o) {
  return new Promise((resolve) => {
    const ok = h('button', { id: 'confirm-ok', class: o.danger ? 'danger' : 'primary', type: 'submit' }, o.action);
    const cancel = h('button', { id: 'confirm-cancel', type: 'button' }, 'Cancel');
    let input = null;
    if (o.typed) {
      input = h('input', { id: 'confirm-typed', type: 'text', autocomplete: 'off', spellcheck: 'false',
        'aria-label': `Type ${o.typed} to confirm` });
      ok.disabled = true;
      input.addEventListener('input', () => { ok.disabled = input.value.trim() !== o.typed; });
    }
    const form = h('form', { method: 'dialog', class: 'confirm' },
      h('h2', { id: 'confirm-title' }, o.title),
      h('div', { class: 'confirm-message' }, o.message),
      input && h('label', { class: 'typed' }, 'Type ', h('code', {}, o.typed), ' to confirm: ', input),
      h('div', { class: 'buttons' }, cancel, ok));
    const dialog = h('dialog', { id: 'confirm', 'aria-labelledby': 'confirm-title' }, form);
    let answered = false;
    const done = (yes) => {
      if (answered) return;
      answered = true;
      dialog.close();
      dialog.remove();
      resolve(yes);
    };
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      if (!ok.disabled) done(true);
    });
    cancel.addEventListener('click', () => done(false));
    dialog.addEventListener('close', () => done(false));
    document.body.append(dialog);
    dialog.showModal();
    (input || cancel).focus();
  });
}
