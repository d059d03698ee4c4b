/**
 * The access-token form, shown when the server answers 401 `auth_required`
 * (deployments that set CHATBOT_AUTH_TOKEN). A successful `POST api/login`
 * sets the session cookie; the requests that were waiting are then retried.
 *
 * @module login
 */

import { ApiError, api } from './api.js';
import { show } from './dom.js';

/**
 * Build the login handler for {@link import('./api.js').onAuthRequired}.
 * @param {HTMLDialogElement} dialog  Holds #login-form, #login-token, #login-error, #login-submit.
 * @returns {() => Promise<void>} resolves once logged in
 */
export function loginPrompt(dialog) {
  const form = /** @type {HTMLFormElement} */ (dialog.querySelector('#login-form'));
  const token = /** @type {HTMLInputElement} */ (dialog.querySelector('#login-token'));
  const error = /** @type {HTMLElement} */ (dialog.querySelector('#login-error'));
  const submit = /** @type {HTMLButtonElement} */ (dialog.querySelector('#login-submit'));
  /** @type {(() => void) | null} */
  let resolve = null;

  // The page is unusable without a session: Escape must not dismiss the form.
  dialog.addEventListener('cancel', (event) => event.preventDefault());
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const value = token.value.trim();
    if (!value) return;
    submit.disabled = true;
    show(error, false);
    try {
      await api.login(value);
      token.value = '';
      dialog.close();
      resolve?.();
      resolve = null;
    } catch (failure) {
      error.textContent = failure instanceof ApiError && failure.code === 'auth_required'
        ? 'That token was not accepted. Check it and try again.'
        : failure instanceof Error ? failure.message : String(failure);
      show(error, true);
      token.select();
    } finally {
      submit.disabled = false;
    }
  });

  return () => new Promise((done) => {
    resolve = done;
    if (!dialog.open) dialog.showModal();
    token.focus();
  });
}
