/**
 * The connection form: provider, API key, model, base URL, system prompt
 * and max tokens.
 *
 * Choosing a provider fills in its default model and base URL and enables
 * the key field only for providers that need one. Model suggestions come
 * from the connected provider (`GET api/models`), so they are kept per
 * provider name and shown while that provider is selected.
 *
 * @module connect
 */

import { h, show } from './dom.js';

/**
 * @typedef {{name: string, label: string, default_model: string, default_base_url: string, needs_key: boolean}} ProviderInfo
 * @typedef {{provider: string, model: string, api_key?: string, base_url?: string, system_prompt?: string, max_tokens?: number}} ConnectSettings
 */

export class ConnectPanel {
  /**
   * @param {HTMLFormElement} form  Holds #provider, #api-key, #model, #base-url, #system-prompt, #max-tokens, #connect.
   * @param {(settings: ConnectSettings) => Promise<void>} onConnect
   */
  constructor(form, onConnect) {
    const field = (/** @type {string} */ id) => /** @type {any} */ (form.querySelector(`#${id}`));
    /** @type {HTMLSelectElement} */ this.provider = field('provider');
    /** @type {HTMLInputElement} */ this.apiKey = field('api-key');
    /** @type {HTMLElement} */ this.apiKeyHint = field('api-key-hint');
    /** @type {HTMLInputElement} */ this.model = field('model');
    /** @type {HTMLDataListElement} */ this.modelOptions = field('model-options');
    /** @type {HTMLInputElement} */ this.baseUrl = field('base-url');
    /** @type {HTMLTextAreaElement} */ this.systemPrompt = field('system-prompt');
    /** @type {HTMLInputElement} */ this.maxTokens = field('max-tokens');
    /** @type {HTMLButtonElement} */ this.button = field('connect');
    /** @type {HTMLElement} */ this.error = field('connect-error');
    this.form = form;
    /** @type {ProviderInfo[]} */
    this.providers = [];
    /** @type {Map<string, string[]>} model names per provider */
    this.models = new Map();

    this.provider.addEventListener('change', () => this.applyDefaults());
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const settings = this.read();
      if (!settings) return;
      this.setBusy(true);
      this.showError(null);
      try {
        await onConnect(settings);
      } catch (error) {
        this.showError(error instanceof Error ? error.message : String(error));
      } finally {
        this.setBusy(false);
      }
    });
  }

  /**
   * Fill the provider select.
   * @param {ProviderInfo[]} providers
   * @param {string | null} selected  Provider to preselect (the connected one).
   */
  setProviders(providers, selected) {
    this.providers = providers;
    this.provider.replaceChildren(...providers.map((p) => h('option', { value: p.name, text: p.label || p.name })));
    const initial = providers.find((p) => p.name === selected) ?? providers[0];
    if (initial) this.provider.value = initial.name;
    this.applyDefaults();
  }

  /** @returns {ProviderInfo | undefined} */
  selected() {
    return this.providers.find((p) => p.name === this.provider.value);
  }

  /** Put the selected provider's defaults into the form. */
  applyDefaults() {
    const info = this.selected();
    if (!info) return;
    this.model.value = info.default_model || '';
    this.model.placeholder = info.default_model || 'Model name';
    this.baseUrl.value = info.default_base_url || '';
    this.baseUrl.placeholder = info.default_base_url || '';
    this.apiKey.disabled = !info.needs_key;
    this.apiKey.required = info.needs_key;
    if (!info.needs_key) this.apiKey.value = '';
    this.apiKey.placeholder = info.needs_key ? 'Paste your API key' : 'Not needed';
    this.apiKeyHint.textContent = info.needs_key
      ? 'Sent once to this server and kept there for your session; it is never shown again.'
      : `${info.label || info.name} does not use an API key.`;
    this.showModels(this.models.get(info.name) ?? []);
  }

  /**
   * Show the connected provider's model.
   * @param {string} provider
   * @param {string | null} model
   */
  select(provider, model) {
    if (!this.providers.some((p) => p.name === provider)) return;
    if (this.provider.value !== provider) {
      this.provider.value = provider;
      this.applyDefaults();
    }
    if (model) this.model.value = model;
  }

  /**
   * Remember model suggestions for a provider.
   * @param {string} provider
   * @param {string[]} models
   */
  setModels(provider, models) {
    this.models.set(provider, models);
    if (this.provider.value === provider) this.showModels(models);
  }

  /** @param {string[]} models */
  showModels(models) {
    this.modelOptions.replaceChildren(...models.map((name) => h('option', { value: name })));
  }

  /**
   * Validate and collect the form; shows the problem and returns null when invalid.
   * @returns {ConnectSettings | null}
   */
  read() {
    const info = this.selected();
    if (!info) {
      this.showError('No providers are available.');
      return null;
    }
    const model = this.model.value.trim();
    if (!model) {
      this.showError('Enter a model name.');
      this.model.focus();
      return null;
    }
    /** @type {ConnectSettings} */
    const settings = { provider: info.name, model };
    const key = this.apiKey.value.trim();
    if (info.needs_key && key) settings.api_key = key;
    const baseUrl = this.baseUrl.value.trim();
    if (baseUrl) settings.base_url = baseUrl;
    const system = this.systemPrompt.value.trim();
    if (system) settings.system_prompt = system;
    const maxTokens = this.maxTokens.value.trim();
    if (maxTokens) {
      const value = Number(maxTokens);
      if (!Number.isInteger(value) || value < 1) {
        this.showError('Max tokens must be a whole number above zero.');
        this.maxTokens.focus();
        return null;
      }
      settings.max_tokens = value;
    }
    return settings;
  }

  /** @param {boolean} busy */
  setBusy(busy) {
    this.button.disabled = busy;
    this.button.textContent = busy ? 'Connecting…' : 'Connect';
    this.form.setAttribute('aria-busy', String(busy));
  }

  /** @param {string | null} message */
  showError(message) {
    this.error.textContent = message ?? '';
    show(this.error, Boolean(message));
  }
}
