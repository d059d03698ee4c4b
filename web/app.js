/**
 * Entry point: wires the views to the API and holds the page state.
 *
 * State kept here: the server status (connection), which conversation is
 * shown, and the running turn. Only one turn streams into the view at a
 * time. Switching conversation (or connecting again) while a reply streams
 * detaches that turn instead of stopping it: it finishes on the server and
 * is shown when its conversation is opened again. Stop asks the server to
 * stop (`POST api/stop`) and waits for the stream's `done` event, so the
 * partial reply is kept exactly as stored; if that event does not come in
 * time, the request is aborted, which stops the turn server-side too.
 *
 * @module app
 */

import { ApiError, api, downloadExport, onAuthRequired, streamChat } from './api.js';
import { ChatView } from './chat.js';
import { ConnectPanel } from './connect.js';
import { show } from './dom.js';
import { NARROW, autosize, bindDrawers, closeDrawers, notify } from './layout.js';
import { loginPrompt } from './login.js';
import { ConversationList } from './sidebar.js';

/** How long Stop waits for the server's `done` before aborting the request. */
const STOP_GRACE_MS = 5000;

/** @param {string} id */
const $ = (id) => /** @type {any} */ (document.getElementById(id));

const elements = {
  status: /** @type {HTMLElement} */ ($('status')),
  title: /** @type {HTMLElement} */ ($('chat-title')),
  input: /** @type {HTMLTextAreaElement} */ ($('input')),
  composer: /** @type {HTMLFormElement} */ ($('composer')),
  send: /** @type {HTMLButtonElement} */ ($('send')),
  stop: /** @type {HTMLButtonElement} */ ($('stop')),
  emptyTitle: /** @type {HTMLElement} */ ($('empty-title')),
  emptyText: /** @type {HTMLElement} */ ($('empty-text')),
  openSettings: /** @type {HTMLButtonElement} */ ($('open-settings')),
  importFile: /** @type {HTMLInputElement} */ ($('import-file')),
};

/**
 * @typedef {object} Turn
 * @property {AbortController} controller
 * @property {import('./chat.js').Reply} reply
 * @property {string | null} conversationId
 * @property {boolean} stopping
 * @property {boolean} detached  The view moved to another conversation.
 * @property {ReturnType<typeof setTimeout> | undefined} stopTimer
 */

const state = {
  /** @type {{connected: boolean, provider: string|null, model: string|null, provider_error: string|null, conversation_id: string|null}} */
  status: { connected: false, provider: null, model: null, provider_error: null, conversation_id: null },
  /** @type {string | null} the conversation shown */
  conversationId: null,
  /** @type {Turn | null} the turn streaming into the view */
  turn: null,
  /** Increases on every navigation, so a slow load cannot overwrite a newer one. */
  navigation: 0,
};

const chat = new ChatView({
  scroller: $('messages-scroller'),
  list: $('messages'),
  empty: $('empty-state'),
  jump: $('jump-latest'),
  total: $('total-usage'),
});

const connectPanel = new ConnectPanel($('connect-form'), connectTo);

const conversations = new ConversationList($('conversations'), $('conversations-empty'), {
  open: (id) => { void openConversation(id); },
  rename: renameConversation,
  remove: deleteConversation,
  exportAs: (id, format) => downloadExport(id, format).catch(notify),
});

// ---------------------------------------------------------------- status

/** Show the connection in the header and the empty-chat hint. */
function renderStatus() {
  const { connected, provider, model, provider_error: problem } = state.status;
  const label = connectPanel.providers.find((p) => p.name === provider)?.label ?? provider;
  let text;
  let kind;
  if (connected) {
    kind = 'connected';
    text = `${label} · ${model}`;
  } else if (problem) {
    kind = 'error';
    text = problem;
  } else {
    kind = 'disconnected';
    text = 'Not connected';
  }
  elements.status.dataset.state = kind;
  elements.status.textContent = text;
  elements.status.title = text;
  elements.emptyTitle.textContent = connected ? 'How can I help?' : 'Connect to a model to start';
  elements.emptyText.textContent = connected
    ? `Chatting with ${model} via ${label}. Enter sends, Shift+Enter adds a line.`
    : problem ?? 'Choose a provider, enter a model and an API key if it needs one, then press Connect.';
  show(elements.openSettings, !connected);
}

/** @param {string} title */
function setTitle(title) {
  elements.title.textContent = title || 'New chat';
  document.title = title ? `${title} · Chatbot` : 'Chatbot';
}

/** @param {string | null} provider */
async function loadModels(provider) {
  if (!provider) return;
  try {
    connectPanel.setModels(provider, await api.models());
  } catch {
    // Suggestions are optional; the model field still accepts any name.
  }
}

/**
 * @param {import('./connect.js').ConnectSettings} settings
 * @throws {ApiError} shown by the panel
 */
async function connectTo(settings) {
  const result = await api.connect(settings);
  detachTurn();
  state.status = {
    ...state.status,
    connected: true,
    provider: result.provider,
    model: result.model,
    provider_error: null,
    conversation_id: result.conversation_id,
  };
  renderStatus();
  showConversation(result.conversation_id ?? null);
  chat.clear();
  await refreshConversations();
  setTitle(conversations.title(state.conversationId ?? ''));
  closeDrawers();
  elements.input.focus();
  void loadModels(result.provider);
}

// --------------------------------------------------------- conversations

async function refreshConversations() {
  try {
    conversations.update(await api.conversations(), state.conversationId);
  } catch (error) {
    notify(error);
  }
}

/**
 * Mark a conversation as the shown one (before its messages arrive).
 * @param {string | null} id
 * @returns {number} the navigation number, to detect a newer navigation
 */
function showConversation(id) {
  state.conversationId = id;
  conversations.setCurrent(id);
  return ++state.navigation;
}

/** @param {string} id */
async function openConversation(id) {
  if (id === state.conversationId && !state.turn && chat.list.childElementCount > 0) {
    closeDrawers();
    return;
  }
  detachTurn();
  const navigation = showConversation(id);
  setTitle(conversations.title(id));
  closeDrawers();
  try {
    const data = await api.conversation(id);
    if (navigation !== state.navigation) return;
    chat.showHistory(data.messages ?? []);
    setTitle(data.conversation?.title ?? '');
  } catch (error) {
    if (navigation !== state.navigation) return;
    notify(error);
    if (error instanceof ApiError && error.status === 404) {
      showConversation(null);
      chat.clear();
      setTitle('');
      await refreshConversations();
    }
  }
}

async function newChat() {
  detachTurn();
  try {
    const conversation = await api.createConversation();
    showConversation(conversation.id);
    chat.clear();
    setTitle(conversation.title);
    await refreshConversations();
    closeDrawers();
    elements.input.focus();
  } catch (error) {
    notify(error);
  }
}

/**
 * @param {string} id
 * @param {string} title
 */
async function renameConversation(id, title) {
  try {
    const conversation = await api.rename(id, title);
    if (id === state.conversationId) setTitle(conversation?.title ?? title);
  } catch (error) {
    notify(error);
  }
  await refreshConversations();
}

/** @param {string} id */
async function deleteConversation(id) {
  try {
    await api.remove(id);
  } catch (error) {
    notify(error);
  }
  if (id !== state.conversationId) {
    await refreshConversations();
    return;
  }
  detachTurn();
  showConversation(null);
  chat.clear();
  setTitle('');
  await refreshConversations();
  const next = conversations.conversations[0];
  if (next) await openConversation(next.id);
}

async function importConversation() {
  const file = elements.importFile.files?.[0];
  elements.importFile.value = '';
  if (!file) return;
  try {
    const text = await file.text();
    try {
      JSON.parse(text);
    } catch {
      throw new Error(`${file.name} is not a JSON export of a conversation.`);
    }
    const conversation = await api.importConversation(text);
    await refreshConversations();
    if (conversation?.id) await openConversation(conversation.id);
    notify(`Imported “${conversation?.title ?? file.name}”.`, 'info');
  } catch (error) {
    notify(error);
  }
}

// ------------------------------------------------------------------ chat

/** @param {boolean} streaming */
function setStreaming(streaming) {
  show(elements.send, !streaming);
  show(elements.stop, streaming);
  elements.stop.disabled = false;
  document.body.classList.toggle('streaming', streaming);
}

async function sendMessage() {
  const message = elements.input.value.trim();
  if (!message || state.turn) return;
  elements.input.value = '';
  autosize(elements.input);
  chat.setPinned(true);
  chat.addUser(message);
  /** @type {Turn} */
  const turn = {
    controller: new AbortController(),
    reply: chat.startReply(),
    conversationId: state.conversationId,
    stopping: false,
    detached: false,
    stopTimer: undefined,
  };
  state.turn = turn;
  setStreaming(true);
  /** @type {{message: string, conversation_id?: string}} */
  const body = { message };
  if (turn.conversationId) body.conversation_id = turn.conversationId;
  try {
    await streamChat(body, {
      onDelta: (text) => turn.reply.append(text),
      onDone: (done) => {
        turn.conversationId = done.conversation_id ?? turn.conversationId;
        turn.reply.finish(done);
        if (!turn.detached && !state.conversationId && turn.conversationId) showConversation(turn.conversationId);
      },
    }, turn.controller.signal);
  } catch (error) {
    if (error instanceof DOMException && error.name === 'AbortError') {
      turn.reply.abandon();
    } else {
      turn.reply.fail(error instanceof Error ? error.message : String(error));
      // Give the text back so it can be sent again, unless something new was typed.
      if (!turn.detached && !elements.input.value) {
        elements.input.value = message;
        autosize(elements.input);
      }
    }
  } finally {
    clearTimeout(turn.stopTimer);
    if (state.turn === turn) {
      state.turn = null;
      setStreaming(false);
    }
  }
  await refreshConversations();
  if (turn.detached && turn.conversationId && turn.conversationId === state.conversationId) {
    // Its conversation was reopened mid-stream: show the stored result.
    state.navigation++;
    state.conversationId = null;
    await openConversation(turn.conversationId);
  } else if (turn.conversationId === state.conversationId) {
    setTitle(conversations.title(state.conversationId ?? ''));
  }
}

async function stopTurn() {
  const turn = state.turn;
  if (!turn || turn.stopping) return;
  turn.stopping = true;
  turn.reply.markStopping();
  elements.stop.disabled = true;
  turn.stopTimer = setTimeout(() => turn.controller.abort(), STOP_GRACE_MS);
  try {
    await api.stop(turn.conversationId);
  } catch {
    turn.controller.abort();
  }
}

/** Let the running turn finish in the background; the view moves on. */
function detachTurn() {
  const turn = state.turn;
  if (!turn) return;
  turn.detached = true;
  state.turn = null;
  setStreaming(false);
}

// ---------------------------------------------------------------- events

function bindEvents() {
  elements.composer.addEventListener('submit', (event) => {
    event.preventDefault();
    void sendMessage();
  });
  elements.input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      void sendMessage();
    } else if (event.key === 'Escape' && state.turn) {
      event.preventDefault();
      void stopTurn();
    }
  });
  elements.input.addEventListener('input', () => autosize(elements.input));
  elements.stop.addEventListener('click', () => { void stopTurn(); });
  $('new-chat').addEventListener('click', () => { void newChat(); });
  elements.importFile.addEventListener('change', () => { void importConversation(); });
  bindDrawers();
}

async function start() {
  onAuthRequired(loginPrompt($('login-dialog')));
  bindEvents();
  renderStatus();
  try {
    const [status, providers] = await Promise.all([api.status(), api.providers()]);
    state.status = status;
    connectPanel.setProviders(providers, status.provider);
    if (status.connected) connectPanel.select(/** @type {string} */ (status.provider), status.model);
    renderStatus();
    if (status.connected) void loadModels(status.provider);
  } catch (error) {
    elements.status.dataset.state = 'error';
    elements.status.textContent = error instanceof Error ? error.message : String(error);
    return;
  }
  showConversation(state.status.conversation_id);
  await refreshConversations();
  if (state.status.conversation_id) {
    const id = state.status.conversation_id;
    state.conversationId = null; // force the load
    await openConversation(id);
  } else {
    setTitle('');
  }
  if (!NARROW.matches) elements.input.focus();
}

void start();
