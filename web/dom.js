/**
 * A tiny element builder, so views create DOM nodes directly instead of
 * assembling HTML strings (which the CSP and the XSS rules both discourage).
 *
 * @module dom
 */

/**
 * @typedef {Record<string, string | number | boolean | null | undefined>} Props
 * Keys are attributes, except `class` (className), `text` (textContent) and
 * `dataset` entries written as `data-*` attributes. `false`/`null`/`undefined`
 * values are skipped, `true` sets an empty attribute.
 */

/**
 * Create an element.
 * @param {string} tag
 * @param {Props} [props]
 * @param {...(Node | string | null | undefined | false)} children
 * @returns {HTMLElement}
 */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === false || value === null || value === undefined) continue;
    if (key === 'class') element.className = String(value);
    else if (key === 'text') element.textContent = String(value);
    else element.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child);
  }
  return element;
}

/**
 * Show or hide an element with the `hidden` attribute.
 * @param {HTMLElement} element
 * @param {boolean} visible
 */
export function show(element, visible) {
  element.hidden = !visible;
}
