/**
 * Page chrome: the two drawers used on narrow screens (conversations from
 * the left, connection settings from the right), the short notice above the
 * composer, and the composer's growing textarea.
 *
 * On wide screens both panels are columns and the drawer classes have no
 * effect; the breakpoints match style.css.
 *
 * @module layout
 */

import { show } from './dom.js';

/** Below this width the connection panel is a drawer (style.css agrees). */
export const NARROW = window.matchMedia('(max-width: 1099px)');

/** @param {string} id */
const byId = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

/**
 * Open a drawer (closing the other), or close it if it is open.
 * @param {'sidebar' | 'settings'} which
 */
export function toggleDrawer(which) {
  const open = !document.body.classList.contains(`${which}-open`);
  closeDrawers();
  if (!open) return;
  document.body.classList.add(`${which}-open`);
  byId(`toggle-${which}`).setAttribute('aria-expanded', 'true');
  byId(which === 'settings' ? 'provider' : 'new-chat').focus();
}

export function closeDrawers() {
  document.body.classList.remove('sidebar-open', 'settings-open');
  byId('toggle-sidebar').setAttribute('aria-expanded', 'false');
  byId('toggle-settings').setAttribute('aria-expanded', 'false');
}

/** Wire the drawer buttons, the backdrop and Escape. */
export function bindDrawers() {
  byId('toggle-sidebar').addEventListener('click', () => toggleDrawer('sidebar'));
  byId('toggle-settings').addEventListener('click', () => toggleDrawer('settings'));
  byId('close-sidebar').addEventListener('click', closeDrawers);
  byId('close-settings').addEventListener('click', closeDrawers);
  byId('backdrop').addEventListener('click', closeDrawers);
  byId('open-settings').addEventListener('click', () => {
    if (NARROW.matches) toggleDrawer('settings');
    else byId('provider').focus();
  });
  document.addEventListener('keydown', (event) => {
    const open = document.body.classList.contains('sidebar-open') || document.body.classList.contains('settings-open');
    if (event.key === 'Escape' && open) closeDrawers();
  });
  NARROW.addEventListener('change', closeDrawers);
}

/** @type {ReturnType<typeof setTimeout> | undefined} */
let noticeTimer;

/**
 * Show a short message above the composer for a few seconds (failed
 * sidebar actions, confirmations). Chat errors go into the message list.
 * @param {unknown} message  An Error (its message is shown) or text.
 * @param {'error' | 'info'} [kind]
 */
export function notify(message, kind = 'error') {
  const notice = byId('notice');
  notice.textContent = message instanceof Error ? message.message : String(message);
  notice.dataset.kind = kind;
  show(notice, true);
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => show(notice, false), 6000);
}

const fieldSizing = CSS.supports('field-sizing', 'content');

/**
 * Grow a textarea with its content where CSS `field-sizing` is missing.
 * (CSSOM writes are allowed by the CSP; only style attributes are not.)
 * @param {HTMLTextAreaElement} textarea
 */
export function autosize(textarea) {
  if (fieldSizing) return;
  textarea.style.height = 'auto';
  textarea.style.height = `${Math.min(textarea.scrollHeight, 240)}px`;
}
