/**
 * HTTP client for the chatbot JSON API and its event stream.
 *
 * Every request carries the session cookie (`credentials: 'same-origin'`)
 * and `X-Requested-With: chatbot`; requests with a body are sent as JSON.
 * Failures always surface as {@link ApiError} whose message is the server's
 * one-line `error` (or a plain sentence for network trouble), so the UI can
 * show it as is. A 401 with code `auth_required` asks the registered login
 * handler for the access token, then retries the request once logged in.
 *
 * Paths are relative (`api/...`), so the UI also works when the server is
 * mounted below a path prefix.
 *
 * @module api
 */

import { SSEParser } from './sse.js';

/** An API call that did not succeed; `message` is fit to show to users. */
export class ApiError extends Error {
  /**
   * @param {string} message  One sentence for users.
   * @param {{status?: number, code?: string}} [details]
   */
  constructor(message, { status = 0, code = 'error' } = {}) {
    super(message);
    this.name = 'ApiError';
    /** HTTP status, or 0 when the server could not be reached. */
    this.status = status;
    /** Machine-readable code from the server (`not_connected`, ...). */
    this.code = code;
  }
}

/** @type {(() => Promise<void>) | null} */
let loginHandler = null;
/** @type {Promise<void> | null} one login shared by every request waiting on it */
let pendingLogin = null;

/**
 * Register the function that obtains a session after a 401 `auth_required`.
 * It must resolve once `POST api/login` succeeded (it may take as long as the
 * user needs to type the token).
 * @param {() => Promise<void>} handler
 */
export function onAuthRequired(handler) {
  loginHandler = handler;
}

function waitForLogin() {
  if (!loginHandler) return Promise.reject(new ApiError('Access token required.', { status: 401, code: 'auth_required' }));
  pendingLogin ??= loginHandler().finally(() => {
    pendingLogin = null;
  });
  return pendingLogin;
}

/**
 * @param {string} method
 * @param {unknown} [body]
 * @param {AbortSignal} [signal]
 * @returns {RequestInit}
 */
function init(method, body, signal) {
  /** @type {Record<string, string>} */
  const headers = { 'X-Requested-With': 'chatbot', Accept: 'application/json' };
  /** @type {RequestInit} */
  const options = { method, headers, credentials: 'same-origin', cache: 'no-store', signal };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    options.body = typeof body === 'string' ? body : JSON.stringify(body);
  } else if (method !== 'GET' && method !== 'HEAD') {
    // State-changing requests always declare JSON, even without a payload.
    headers['Content-Type'] = 'application/json';
  }
  return options;
}

/**
 * Turn a non-2xx response into an ApiError carrying the server's sentence.
 * @param {Response} response
 * @returns {Promise<ApiError>}
 */
async function errorFrom(response) {
  let payload = null;
  try {
    payload = await response.json();
  } catch {
    // Not JSON (a proxy's HTML error page, for instance).
  }
  if (payload && typeof payload.error === 'string') {
    return new ApiError(payload.error, { status: response.status, code: payload.code || 'error' });
  }
  return new ApiError(`The server answered with an error (HTTP ${response.status}).`, { status: response.status });
}

/**
 * Fetch with the common options; retries once after a successful login.
 * @param {string} method
 * @param {string} path  Relative to the page, e.g. `api/status`.
 * @param {unknown} [body]
 * @param {AbortSignal} [signal]
 * @returns {Promise<Response>} a response with a 2xx status
 * @throws {ApiError}
 */
async function send(method, path, body, signal) {
  for (let attempt = 0; ; attempt++) {
    let response;
    try {
      response = await fetch(path, init(method, body, signal));
    } catch (error) {
      if (error instanceof DOMException && error.name === 'AbortError') throw error;
      throw new ApiError('Could not reach the server. Check your connection and try again.', { code: 'network' });
    }
    if (response.ok) return response;
    const error = await errorFrom(response);
    if (error.status === 401 && error.code === 'auth_required' && attempt === 0 && path !== 'api/login') {
      await waitForLogin();
      continue;
    }
    throw error;
  }
}

/**
 * Call a JSON endpoint.
 * @param {string} method
 * @param {string} path
 * @param {unknown} [body]  Serialized as JSON (a string is sent as is).
 * @param {{signal?: AbortSignal}} [options]
 * @returns {Promise<any>} the parsed `{ok: true, ...}` payload
 * @throws {ApiError}
 */
export async function request(method, path, body, { signal } = {}) {
  const response = await send(method, path, body, signal);
  if (response.status === 204) return { ok: true };
  try {
    return await response.json();
  } catch {
    throw new ApiError('The server sent a response that could not be read.', { status: response.status, code: 'bad_response' });
  }
}

export const api = {
  /** @returns {Promise<{connected: boolean, provider: string|null, model: string|null, provider_error: string|null, conversation_id: string|null, auth_required: boolean}>} */
  status: () => request('GET', 'api/status'),
  providers: () => request('GET', 'api/providers').then((r) => r.providers),
  models: () => request('GET', 'api/models').then((r) => r.models),
  /** @param {object} settings */
  connect: (settings) => request('POST', 'api/connect', settings),
  /** @param {string} token */
  login: (token) => request('POST', 'api/login', { token }),
  /** @param {string|null} conversationId */
  stop: (conversationId) => request('POST', 'api/stop', conversationId ? { conversation_id: conversationId } : {}),
  conversations: () => request('GET', 'api/conversations').then((r) => r.conversations),
  /** @param {string} [title] */
  createConversation: (title) => request('POST', 'api/conversations', title ? { title } : {}).then((r) => r.conversation),
  /** @param {string} id */
  conversation: (id) => request('GET', conversationPath(id)),
  /** @param {string} id @param {string} title */
  rename: (id, title) => request('PATCH', conversationPath(id), { title }).then((r) => r.conversation),
  /** @param {string} id */
  remove: (id) => request('DELETE', conversationPath(id)),
  /** @param {string} json  The text of a JSON export. */
  importConversation: (json) => request('POST', 'api/conversations/import', json).then((r) => r.conversation),
};

/**
 * @param {string} id
 * @returns {string}
 */
export function conversationPath(id) {
  return `api/conversations/${encodeURIComponent(id)}`;
}

/**
 * @param {string} id
 * @param {'md' | 'json'} format
 * @returns {string}
 */
export function exportPath(id, format) {
  return `${conversationPath(id)}/export?format=${format}`;
}

/**
 * Download an export through fetch (so it carries the API headers and the
 * login flow) and hand it to the browser as a file.
 * @param {string} id
 * @param {'md' | 'json'} format
 * @throws {ApiError}
 */
export async function downloadExport(id, format) {
  const response = await send('GET', exportPath(id, format));
  const blob = await response.blob();
  const disposition = response.headers.get('Content-Disposition') || '';
  const match = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(disposition);
  const filename = match ? decodeURIComponent(match[1]) : `conversation-${id}.${format}`;
  const url = URL.createObjectURL(blob);
  const link = document.createElement('a');
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/**
 * @typedef {object} StreamHandlers
 * @property {(text: string) => void} onDelta
 * @property {(data: {reply: string, usage: {input_tokens: number, output_tokens: number} | null, stopped: boolean, conversation_id: string}) => void} onDone
 */

/**
 * Run one streamed chat turn: `POST api/chat/stream` and dispatch its events.
 *
 * Resolves after the `done` event. An `error` event, an HTTP error before the
 * stream starts, or a stream that ends without `done` rejects with ApiError.
 * Aborting `signal` rejects with the AbortError (the server stops the turn
 * when the connection closes).
 *
 * @param {{message: string, conversation_id?: string}} body
 * @param {StreamHandlers} handlers
 * @param {AbortSignal} signal
 * @returns {Promise<void>}
 * @throws {ApiError | DOMException}
 */
export async function streamChat(body, handlers, signal) {
  const response = await send('POST', 'api/chat/stream', body, signal);
  const type = response.headers.get('Content-Type') || '';
  if (!type.startsWith('text/event-stream') || !response.body) {
    throw new ApiError('The server did not answer with a stream.', { status: response.status, code: 'bad_response' });
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const parser = new SSEParser();
  const lost = () => new ApiError('The connection was lost before the reply finished.', { code: 'network' });
  try {
    for (;;) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch (error) {
        if (signal.aborted) throw signal.reason ?? error;
        throw lost();
      }
      const events = chunk.done ? parser.end() : parser.feed(chunk.value);
      for (const { event, data } of events) {
        if (dispatch(event, data, handlers)) return;
      }
      if (chunk.done) throw lost();
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/**
 * @param {string} event
 * @param {string} data
 * @param {StreamHandlers} handlers
 * @returns {boolean} whether the turn is over
 * @throws {ApiError} for an `error` event
 */
function dispatch(event, data, handlers) {
  let payload;
  try {
    payload = JSON.parse(data);
  } catch {
    throw new ApiError('The server sent a malformed stream event.', { code: 'bad_response' });
  }
  if (event === 'delta') {
    if (typeof payload.text === 'string') handlers.onDelta(payload.text);
    return false;
  }
  if (event === 'done') {
    handlers.onDone(payload);
    return true;
  }
  if (event === 'error') {
    throw new ApiError(payload.error || 'The reply failed.', { code: payload.code || 'error' });
  }
  return false; // Unknown events are ignored, for forward compatibility.
}
