/**
 * The message list: history, streamed replies, inline errors, token usage
 * and scrolling.
 *
 * A streamed reply is re-rendered from its whole text as deltas arrive, but
 * at most once per animation frame and further apart when rendering gets
 * slow (a long reply is re-parsed less often), so a fast stream never queues
 * up work. The view follows the newest text only while the reader is at the
 * bottom; scrolling up pauses that until they come back down.
 *
 * @module chat
 */

import { h, show } from './dom.js';
import { icon } from './icons.js';
import { copyText, renderMarkdown } from './render.js';

/** Distance from the bottom (px) that still counts as "at the bottom". */
const PIN_THRESHOLD = 48;

const numbers = new Intl.NumberFormat();
const times = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

/**
 * @typedef {{input_tokens: number, output_tokens: number}} Usage
 * @typedef {{role: string, content: string, usage: Usage | null, stopped: boolean, created_at: number}} StoredMessage
 */

/**
 * Fill a usage element with "12 in · 345 out" and machine-readable data.
 * @param {HTMLElement} element
 * @param {Usage} usage
 */
function showUsage(element, usage) {
  const input = usage.input_tokens || 0;
  const output = usage.output_tokens || 0;
  element.dataset.inputTokens = String(input);
  element.dataset.outputTokens = String(output);
  element.textContent = `${numbers.format(input)} in · ${numbers.format(output)} out tokens`;
  element.title = `${numbers.format(input + output)} tokens: ${numbers.format(input)} input, ${numbers.format(output)} output`;
}

export class ChatView {
  /**
   * @param {{scroller: HTMLElement, list: HTMLElement, empty: HTMLElement, jump: HTMLElement, total: HTMLElement}} elements
   */
  constructor({ scroller, list, empty, jump, total }) {
    this.scroller = scroller;
    this.list = list;
    this.empty = empty;
    this.jump = jump;
    this.total = total;
    /** Whether new content should scroll into view. */
    this.pinned = true;
    /** scrollTop at the previous scroll event, to tell the direction. */
    this.lastTop = 0;
    this.totals = { input_tokens: 0, output_tokens: 0 };

    scroller.addEventListener('scroll', () => this.updatePinned(), { passive: true });
    // A wheel turn upwards is intent, even before the scroll event arrives.
    scroller.addEventListener('wheel', (event) => {
      if (event.deltaY < 0) this.setPinned(false);
    }, { passive: true });
    jump.addEventListener('click', () => {
      this.setPinned(true);
      this.scrollToBottom('smooth');
    });
    list.addEventListener('click', (event) => this.onClick(event));
    this.updateTotal();
  }

  /** Remove every message and reset the running total. */
  clear() {
    this.list.replaceChildren();
    this.totals = { input_tokens: 0, output_tokens: 0 };
    this.updateTotal();
    this.setPinned(true);
    this.updateEmpty();
  }

  /**
   * Show a stored conversation.
   * @param {StoredMessage[]} messages
   */
  showHistory(messages) {
    this.clear();
    for (const message of messages) {
      if (message.role === 'user') {
        this.addUser(message.content, message.created_at);
      } else if (message.role === 'assistant') {
        const reply = this.startReply(message.created_at);
        reply.finish({ reply: message.content, usage: message.usage, stopped: Boolean(message.stopped) });
      }
    }
    this.scrollToBottom();
  }

  /**
   * @param {string} text
   * @param {number} [createdAt]  epoch seconds
   * @returns {HTMLElement}
   */
  addUser(text, createdAt) {
    const item = h('li', { class: 'message user', 'data-testid': 'message', 'data-role': 'user' },
      h('div', { class: 'bubble', text }));
    stamp(item, createdAt);
    this.append(item);
    return item;
  }

  /**
   * Add an error as its own message.
   * @param {string} text  The server's one-line error.
   * @returns {HTMLElement}
   */
  addError(text) {
    const item = h('li', { class: 'message error', 'data-testid': 'message', 'data-role': 'error', role: 'alert' },
      icon('alert'), h('p', { class: 'error-text', text }));
    this.append(item);
    return item;
  }

  /**
   * Add an empty assistant message to stream into.
   * @param {number} [createdAt]
   * @returns {Reply}
   */
  startReply(createdAt) {
    const reply = new Reply(this);
    stamp(reply.item, createdAt);
    this.append(reply.item);
    return reply;
  }

  /**
   * Count a finished turn's usage into the conversation total.
   * @param {Usage | null | undefined} usage
   */
  addUsage(usage) {
    if (!usage) return;
    this.totals.input_tokens += usage.input_tokens || 0;
    this.totals.output_tokens += usage.output_tokens || 0;
    this.updateTotal();
  }

  updateTotal() {
    const { input_tokens: input, output_tokens: output } = this.totals;
    show(this.total, input + output > 0);
    showUsage(this.total, this.totals);
    this.total.textContent = `Σ ${numbers.format(input + output)} tokens`;
  }

  /** @param {HTMLElement} item */
  append(item) {
    this.list.append(item);
    this.updateEmpty();
    this.follow();
  }

  updateEmpty() {
    show(this.empty, this.list.childElementCount === 0);
  }

  /** Keep the newest content in view if the reader is at the bottom. */
  follow() {
    if (this.pinned) this.scrollToBottom();
    else show(this.jump, true);
  }

  /** @param {ScrollBehavior} [behavior] */
  scrollToBottom(behavior = 'auto') {
    this.scroller.scrollTo({ top: this.scroller.scrollHeight, behavior });
  }

  /**
   * Any upward scroll unpins (even a small first step of a smooth scroll,
   * which must not be undone by the next render); reaching the bottom pins.
   * Content that shrinks clamps scrollTop to the very bottom, so it is not
   * mistaken for the reader moving up.
   */
  updatePinned() {
    const { scrollHeight, scrollTop, clientHeight } = this.scroller;
    const distance = scrollHeight - scrollTop - clientHeight;
    if (scrollTop < this.lastTop && distance > 1) this.setPinned(false);
    else if (distance < PIN_THRESHOLD) this.setPinned(true);
    this.lastTop = scrollTop;
  }

  /** @param {boolean} pinned */
  setPinned(pinned) {
    this.pinned = pinned;
    if (pinned) show(this.jump, false);
  }

  /** @param {MouseEvent} event */
  async onClick(event) {
    const target = /** @type {Element} */ (event.target);
    const button = target.closest('button');
    if (!button) return;
    let text = null;
    if (button.classList.contains('copy-code')) {
      text = button.closest('.code-block')?.querySelector('pre')?.textContent ?? '';
    } else if (button.classList.contains('copy-message')) {
      text = /** @type {any} */ (button.closest('.message'))?.replyText ?? '';
    }
    if (text === null) return;
    const ok = await copyText(text);
    const label = button.querySelector('.label') ?? button;
    const original = label.textContent;
    label.textContent = ok ? 'Copied' : 'Copy failed';
    setTimeout(() => { label.textContent = original; }, 1500);
  }
}

/**
 * @param {HTMLElement} item
 * @param {number} [createdAt]  epoch seconds
 */
function stamp(item, createdAt) {
  const date = createdAt ? new Date(createdAt * 1000) : new Date();
  item.title = times.format(date);
}

/** One assistant message, filled while its stream runs. */
export class Reply {
  /** @param {ChatView} view */
  constructor(view) {
    this.view = view;
    this.text = '';
    this.renderQueued = false;
    this.nextRenderAt = 0;
    this.content = h('div', { class: 'content markdown' },
      h('span', { class: 'typing', 'aria-label': 'Thinking' }, h('span'), h('span'), h('span')));
    this.meta = h('div', { class: 'meta' });
    this.item = h('li', { class: 'message assistant streaming', 'data-testid': 'message', 'data-role': 'assistant', 'aria-busy': 'true' },
      this.content, this.meta);
  }

  /** @param {string} delta */
  append(delta) {
    this.text += delta;
    this.queueRender();
  }

  queueRender() {
    if (this.renderQueued) return;
    this.renderQueued = true;
    const wait = Math.max(0, this.nextRenderAt - performance.now());
    const run = () => requestAnimationFrame(() => {
      if (!this.renderQueued) return; // finished in the meantime
      this.renderQueued = false;
      this.render();
    });
    if (wait > 0) setTimeout(run, wait);
    else run();
  }

  render() {
    if (!this.item.isConnected) return;
    const started = performance.now();
    this.content.replaceChildren(renderMarkdown(this.text));
    const cost = performance.now() - started;
    // Spend at most about a fifth of the time re-rendering, capped at 1 s.
    this.nextRenderAt = performance.now() + Math.min(cost * 4, 1000);
    this.view.follow();
  }

  /** Show that a stop was requested; the stream still ends with `done`. */
  markStopping() {
    this.item.classList.add('stopping');
  }

  /**
   * Final state of a turn (also used for stored messages).
   * @param {{reply: string, usage: Usage | null, stopped: boolean}} done
   */
  finish({ reply, usage, stopped }) {
    this.renderQueued = false;
    const visible = this.item.isConnected;
    this.text = typeof reply === 'string' ? reply : this.text;
    /** @type {any} */ (this.item).replyText = this.text;
    this.item.classList.remove('streaming', 'stopping');
    this.item.removeAttribute('aria-busy');
    this.content.replaceChildren(renderMarkdown(this.text));
    const parts = [];
    if (stopped) {
      this.item.classList.add('stopped');
      parts.push(h('span', { class: 'stopped-marker', 'data-testid': 'stopped', text: '(stopped)' }));
    }
    if (usage) {
      const element = h('span', { class: 'usage', 'data-testid': 'usage' });
      showUsage(element, usage);
      parts.push(element);
      // A reply whose conversation is no longer shown counts for that one only.
      if (visible) this.view.addUsage(usage);
    }
    if (this.text) {
      parts.push(h('button', { type: 'button', class: 'copy-message', 'data-testid': 'copy-message', 'aria-label': 'Copy reply' },
        icon('copy'), h('span', { class: 'label', text: 'Copy' })));
    }
    this.meta.replaceChildren(...parts);
    if (visible) this.view.follow();
  }

  /**
   * End the turn with an error. Text already streamed stays visible.
   * @param {string} message
   */
  fail(message) {
    this.renderQueued = false;
    if (!this.item.isConnected) return;
    if (this.text) {
      this.item.classList.remove('streaming', 'stopping');
      this.item.removeAttribute('aria-busy');
      this.content.replaceChildren(renderMarkdown(this.text));
      this.item.classList.add('incomplete');
    } else {
      this.item.remove();
    }
    this.view.addError(message);
  }

  /**
   * The stream was cut locally (Stop fallback): keep the partial text.
   */
  abandon() {
    this.finish({ reply: this.text, usage: null, stopped: true });
  }
}
