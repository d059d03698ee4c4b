/**
 * Markdown to safe DOM.
 *
 * Replies come from a model, so they are untrusted. Two layers keep them
 * inert: raw HTML written in the Markdown is escaped and shown as text (a
 * reply containing `<script>` displays those characters), and the generated
 * HTML then goes through DOMPurify, which returns a DOM fragment; no string
 * of reply HTML is ever assigned to `innerHTML`. Links open in a new tab with
 * `rel="noopener noreferrer"`. Images are replaced by a link or a label,
 * because the page's CSP only allows same-origin and `data:` images and a
 * remote image would be a tracking beacon.
 *
 * @module render
 */

import { Marked } from './vendor/marked/marked.esm.js';
import DOMPurify from './vendor/dompurify/purify.es.js';

const ESCAPES = /** @type {Record<string, string>} */ ({
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
});

/** @param {string} text */
function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

const markdown = new Marked({
  gfm: true,
  breaks: true,
  async: false,
  renderer: {
    /** Raw HTML (block or inline) is displayed as text, never interpreted. */
    html({ text, block }) {
      if (!block) return escapeHtml(text);
      const lines = text.trim().split('\n').map(escapeHtml);
      return `<p>${lines.join('<br>')}</p>\n`;
    },
  },
});

const PURIFY_OPTIONS = {
  RETURN_DOM_FRAGMENT: true,
  // Inline styles would be refused by the CSP anyway; forms and media have
  // no place in a chat reply.
  FORBID_ATTR: ['style', 'class', 'id'],
  FORBID_TAGS: ['style', 'form', 'input', 'button', 'textarea', 'select', 'option', 'video', 'audio', 'source', 'picture', 'svg', 'math'],
  ALLOW_DATA_ATTR: false,
};

DOMPurify.addHook('uponSanitizeAttribute', (node, data) => {
  // Keep only the `language-xxx` class marked puts on code blocks.
  if (data.attrName === 'class' && node.nodeName === 'CODE' && /^language-[\w+#.-]{1,32}$/.test(data.attrValue)) {
    data.forceKeepAttr = true;
  }
});

DOMPurify.addHook('afterSanitizeAttributes', (node) => {
  if (node.nodeName === 'A' && node.hasAttribute('href')) {
    node.setAttribute('target', '_blank');
    node.setAttribute('rel', 'noopener noreferrer');
  }
});

DOMPurify.addHook('afterSanitizeElements', (node) => {
  if (node.nodeName !== 'IMG' || !node.parentNode) return;
  const element = /** @type {Element} */ (node);
  const src = element.getAttribute('src') || '';
  const label = element.getAttribute('alt') || 'image';
  const doc = node.ownerDocument || document;
  let replacement;
  if (/^https?:\/\//i.test(src)) {
    replacement = doc.createElement('a');
    replacement.setAttribute('href', src);
    replacement.setAttribute('target', '_blank');
    replacement.setAttribute('rel', 'noopener noreferrer');
    replacement.textContent = `[${label}]`;
  } else {
    replacement = doc.createElement('span');
    replacement.textContent = `[${label}]`;
  }
  node.parentNode.replaceChild(replacement, node);
});

/**
 * Render Markdown into a sanitized fragment.
 * @param {string} text
 * @returns {DocumentFragment}
 */
export function renderMarkdown(text) {
  const html = /** @type {string} */ (markdown.parse(text));
  const fragment = /** @type {DocumentFragment} */ (/** @type {unknown} */ (DOMPurify.sanitize(html, PURIFY_OPTIONS)));
  decorateCodeBlocks(fragment);
  return fragment;
}

/**
 * Give each fenced code block a header with its language and a copy button.
 * @param {DocumentFragment} fragment
 */
function decorateCodeBlocks(fragment) {
  for (const pre of fragment.querySelectorAll('pre')) {
    const code = pre.querySelector('code');
    const language = code ? (/language-([\w+#.-]+)/.exec(code.className) || [])[1] || '' : '';
    const wrapper = document.createElement('div');
    wrapper.className = 'code-block';
    const header = document.createElement('div');
    header.className = 'code-header';
    const name = document.createElement('span');
    name.className = 'code-lang';
    name.textContent = language || 'text';
    const copy = document.createElement('button');
    copy.type = 'button';
    copy.className = 'copy-code';
    copy.dataset.testid = 'copy-code';
    copy.textContent = 'Copy';
    header.append(name, copy);
    pre.replaceWith(wrapper);
    wrapper.append(header, pre);
  }
}

/**
 * Copy text to the clipboard, falling back to a selection copy where the
 * async clipboard API is unavailable (plain-HTTP deployments).
 * @param {string} text
 * @returns {Promise<boolean>} whether it worked
 */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const area = document.createElement('textarea');
    area.value = text;
    area.className = 'offscreen';
    document.body.append(area);
    area.select();
    let ok = false;
    try {
      ok = document.execCommand('copy');
    } catch {
      ok = false;
    }
    area.remove();
    return ok;
  }
}
