/**
 * The conversation list: open, rename in place, delete after an inline
 * confirmation, export as Markdown or JSON.
 *
 * The list is redrawn from the server's answer after every change; an item
 * being renamed keeps its input (and the text typed so far) across redraws.
 * No `window.prompt`/`confirm`: they block the page and automation.
 *
 * @module sidebar
 */

import { exportPath } from './api.js';
import { h, show } from './dom.js';
import { icon } from './icons.js';

/**
 * @typedef {{id: string, title: string, created_at: number, updated_at: number, message_count: number, provider: string|null, model: string|null}} Conversation
 * @typedef {object} ListHandlers
 * @property {(id: string) => void} open
 * @property {(id: string, title: string) => Promise<void>} rename
 * @property {(id: string) => Promise<void>} remove
 * @property {(id: string, format: 'md' | 'json') => Promise<void>} exportAs
 */

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto', style: 'short' });
const shortDate = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' });
const fullDate = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

/**
 * "just now", "5 min. ago", "yesterday", "Mar 3".
 * @param {number} epochSeconds
 * @param {number} [now]  epoch milliseconds
 * @returns {string}
 */
export function relativeTime(epochSeconds, now = Date.now()) {
  const seconds = epochSeconds - now / 1000;
  const elapsed = Math.abs(seconds);
  if (elapsed < 45) return 'just now';
  if (elapsed < 3600) return relative.format(Math.round(seconds / 60), 'minute');
  if (elapsed < 86400) return relative.format(Math.round(seconds / 3600), 'hour');
  if (elapsed < 7 * 86400) return relative.format(Math.round(seconds / 86400), 'day');
  return shortDate.format(new Date(epochSeconds * 1000));
}

export class ConversationList {
  /**
   * @param {HTMLElement} list  The `<ul>`.
   * @param {HTMLElement} empty  Shown when there are no conversations.
   * @param {ListHandlers} handlers
   */
  constructor(list, empty, handlers) {
    this.list = list;
    this.empty = empty;
    this.handlers = handlers;
    /** @type {Conversation[]} */
    this.conversations = [];
    /** @type {string | null} */
    this.currentId = null;
    /** @type {{id: string, draft: string} | null} */
    this.editing = null;
    /** @type {string | null} */
    this.confirming = null;
    /** @type {string | null} */
    this.exporting = null;
    /** True while the items are being replaced (removal may fire blur). */
    this.rendering = false;

    list.addEventListener('click', (event) => this.onClick(event));
    list.addEventListener('keydown', (event) => this.onKeyDown(event));
    // Keep the rename input focused when its buttons are pressed, so its
    // blur (which saves) does not pre-empt "cancel".
    list.addEventListener('mousedown', (event) => {
      if ((/** @type {Element} */ (event.target)).closest('.rename-save, .rename-cancel')) event.preventDefault();
    });
    document.addEventListener('click', (event) => {
      if (this.exporting && !(/** @type {Element} */ (event.target)).closest('.export, .export-menu')) {
        this.exporting = null;
        this.render();
      }
    });
    setInterval(() => this.refreshTimes(), 60_000);
  }

  /**
   * @param {Conversation[]} conversations
   * @param {string | null} currentId
   */
  update(conversations, currentId) {
    this.conversations = conversations;
    this.currentId = currentId;
    const ids = new Set(conversations.map((c) => c.id));
    if (this.editing && !ids.has(this.editing.id)) this.editing = null;
    if (this.confirming && !ids.has(this.confirming)) this.confirming = null;
    if (this.exporting && !ids.has(this.exporting)) this.exporting = null;
    this.render();
  }

  /** @param {string | null} id */
  setCurrent(id) {
    this.currentId = id;
    for (const item of this.list.children) {
      const current = /** @type {HTMLElement} */ (item).dataset.id === id;
      item.classList.toggle('current', current);
      const open = item.querySelector('.conversation-open');
      if (current) open?.setAttribute('aria-current', 'true');
      else open?.removeAttribute('aria-current');
    }
  }

  /** @param {string} id */
  title(id) {
    return this.conversations.find((c) => c.id === id)?.title ?? '';
  }

  render() {
    const focused = document.activeElement?.closest('#conversations li');
    const focusId = focused ? /** @type {HTMLElement} */ (focused).dataset.id : null;
    this.rendering = true;
    try {
      this.list.replaceChildren(...this.conversations.map((c) => this.item(c)));
    } finally {
      this.rendering = false;
    }
    show(this.empty, this.conversations.length === 0);
    if (this.editing) {
      const input = /** @type {HTMLInputElement | null} */ (this.list.querySelector('.rename-input'));
      input?.focus();
    } else if (focusId) {
      /** @type {HTMLElement | null} */ (this.list.querySelector(`li[data-id="${CSS.escape(focusId)}"] .conversation-open`))?.focus();
    }
  }

  refreshTimes() {
    for (const time of this.list.querySelectorAll('time[data-epoch]')) {
      time.textContent = relativeTime(Number(/** @type {HTMLElement} */ (time).dataset.epoch));
    }
  }

  /**
   * @param {Conversation} conversation
   * @returns {HTMLElement}
   */
  item(conversation) {
    const { id } = conversation;
    const current = id === this.currentId;
    const title = conversation.title || 'Untitled';
    const item = h('li', { class: current ? 'conversation current' : 'conversation', 'data-id': id, 'data-testid': 'conversation' });

    if (this.editing?.id === id) {
      const input = h('input', {
        class: 'rename-input', 'data-testid': 'rename-input', type: 'text', maxlength: 200,
        'aria-label': 'Conversation title', value: this.editing.draft,
      });
      input.addEventListener('input', () => {
        if (this.editing) this.editing.draft = /** @type {HTMLInputElement} */ (input).value;
      });
      input.addEventListener('blur', () => {
        if (!this.rendering) this.commitRename(id);
      });
      item.classList.add('editing');
      item.append(input,
        h('div', { class: 'conversation-actions visible' },
          iconButton('check', 'rename-save', 'Save title'),
          iconButton('x', 'rename-cancel', 'Cancel renaming')));
      return item;
    }

    const time = h('time', {
      class: 'conversation-time', datetime: new Date(conversation.updated_at * 1000).toISOString(),
      'data-epoch': conversation.updated_at, title: fullDate.format(new Date(conversation.updated_at * 1000)),
      text: relativeTime(conversation.updated_at),
    });
    item.append(
      h('button', { type: 'button', class: 'conversation-open', 'data-testid': 'conversation-open', 'aria-current': current ? 'true' : null },
        h('span', { class: 'conversation-title', text: title }), time),
      h('div', { class: 'conversation-actions' },
        iconButton('pencil', 'rename', `Rename “${title}”`),
        iconButton('download', 'export', `Export “${title}”`, { 'aria-haspopup': 'menu', 'aria-expanded': this.exporting === id ? 'true' : 'false' }),
        iconButton('trash', 'delete', `Delete “${title}”`)),
    );

    if (this.exporting === id) {
      item.append(h('div', { class: 'export-menu', role: 'menu', 'data-testid': 'export-menu' },
        h('a', { class: 'export-md', 'data-testid': 'export-md', role: 'menuitem', href: exportPath(id, 'md'), download: '', text: 'Markdown (.md)' }),
        h('a', { class: 'export-json', 'data-testid': 'export-json', role: 'menuitem', href: exportPath(id, 'json'), download: '', text: 'JSON (.json)' })));
    }
    if (this.confirming === id) {
      item.classList.add('confirming');
      item.append(h('div', { class: 'confirm', role: 'group', 'aria-label': 'Confirm deletion' },
        h('span', { text: 'Delete this chat?' }),
        h('button', { type: 'button', class: 'confirm-delete danger', 'data-testid': 'confirm-delete', text: 'Delete' }),
        h('button', { type: 'button', class: 'cancel-delete', 'data-testid': 'cancel-delete', text: 'Cancel' })));
    }
    return item;
  }

  /** @param {MouseEvent} event */
  onClick(event) {
    const target = /** @type {Element} */ (event.target);
    const item = /** @type {HTMLElement | null} */ (target.closest('li[data-id]'));
    if (!item) return;
    const id = /** @type {string} */ (item.dataset.id);
    const link = target.closest('a');
    if (link) {
      event.preventDefault();
      const format = link.classList.contains('export-json') ? 'json' : 'md';
      this.exporting = null;
      this.render();
      this.handlers.exportAs(id, format);
      return;
    }
    const button = target.closest('button');
    if (!button) return;
    const kind = button.dataset.testid;
    if (kind === 'conversation-open') {
      this.handlers.open(id);
    } else if (kind === 'rename') {
      this.editing = { id, draft: this.title(id) };
      this.confirming = null;
      this.exporting = null;
      this.render();
      /** @type {HTMLInputElement | null} */ (this.list.querySelector('.rename-input'))?.select();
    } else if (kind === 'rename-save') {
      this.commitRename(id);
    } else if (kind === 'rename-cancel') {
      this.cancelRename();
    } else if (kind === 'export') {
      this.exporting = this.exporting === id ? null : id;
      this.confirming = null;
      this.render();
    } else if (kind === 'delete') {
      this.confirming = id;
      this.exporting = null;
      this.render();
      /** @type {HTMLElement | null} */ (this.list.querySelector('.cancel-delete'))?.focus();
    } else if (kind === 'cancel-delete') {
      this.confirming = null;
      this.render();
    } else if (kind === 'confirm-delete') {
      this.confirming = null;
      this.handlers.remove(id);
    }
  }

  /** @param {KeyboardEvent} event */
  onKeyDown(event) {
    const target = /** @type {Element} */ (event.target);
    if (target.classList.contains('rename-input')) {
      const id = /** @type {HTMLElement} */ (target.closest('li')).dataset.id;
      if (event.key === 'Enter' && !event.isComposing) {
        event.preventDefault();
        this.commitRename(/** @type {string} */ (id));
      } else if (event.key === 'Escape') {
        event.preventDefault();
        this.cancelRename();
      }
    } else if (event.key === 'Escape' && (this.confirming || this.exporting)) {
      this.confirming = null;
      this.exporting = null;
      this.render();
    }
  }

  /** @param {string} id */
  commitRename(id) {
    if (!this.editing || this.editing.id !== id) return;
    const title = this.editing.draft.trim();
    this.editing = null;
    const unchanged = !title || title === this.title(id);
    if (!unchanged) {
      // Show the new title at once; the server's answer redraws the list.
      const conversation = this.conversations.find((c) => c.id === id);
      if (conversation) conversation.title = title;
    }
    this.render();
    if (!unchanged) this.handlers.rename(id, title);
  }

  cancelRename() {
    this.editing = null;
    this.render();
  }
}

/**
 * @param {Parameters<typeof icon>[0]} name
 * @param {string} kind  class and data-testid
 * @param {string} label
 * @param {Record<string, string>} [extra]
 */
function iconButton(name, kind, label, extra = {}) {
  const button = h('button', { type: 'button', class: `icon-button ${kind}`, 'data-testid': kind, 'aria-label': label, title: label.replace(/ “.*”$/, ''), ...extra });
  button.append(icon(name));
  return button;
}
