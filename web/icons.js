/**
 * Stroke icons drawn as SVG paths (24×24 grid). Colour, stroke width and
 * size come from the `.icon` rule in style.css, so icons follow the theme.
 *
 * @module icons
 */

const SVG = 'http://www.w3.org/2000/svg';

/** @type {Record<string, string[]>} path data per icon name */
const PATHS = {
  pencil: ['M4 20h4L19.5 8.5a2.1 2.1 0 0 0-3-3L5 17v3z', 'M14.5 7.5l3 3'],
  trash: ['M4 7h16', 'M9 7V4.5h6V7', 'M6.5 7l1 12.5h9l1-12.5', 'M10 11v5', 'M14 11v5'],
  download: ['M12 4v11', 'M7 10.5l5 5 5-5', 'M5 20h14'],
  check: ['M5 12.5l4.5 4.5L19 7.5'],
  x: ['M6 6l12 12', 'M18 6L6 18'],
  alert: ['M12 3.5l9.5 16.5h-19z', 'M12 10v4', 'M12 17h.01'],
  copy: ['M9 9h10v11H9z', 'M5 15V4h10'],
};

/**
 * Create an icon element.
 * @param {keyof typeof PATHS} name
 * @returns {SVGSVGElement}
 */
export function icon(name) {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('class', 'icon');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  for (const d of PATHS[name] ?? []) {
    const path = document.createElementNS(SVG, 'path');
    path.setAttribute('d', d);
    svg.append(path);
  }
  return svg;
}
