/**
 * Incremental parser for `text/event-stream` bodies.
 *
 * `EventSource` cannot POST, so the chat stream is read with `fetch` and its
 * bytes are fed here. Network chunks may split an event (or a line, or a
 * CRLF pair) anywhere; the parser keeps the unfinished tail and only emits
 * events whose terminating blank line has arrived. It follows the HTML
 * event-stream rules: `\r\n`, `\r` and `\n` all end a line, lines starting
 * with `:` are comments, several `data:` lines are joined with `\n`, and an
 * event without an `event:` field is called "message".
 *
 * @module sse
 */

/**
 * @typedef {object} SSEEvent
 * @property {string} event  The event name ("message" when none was given).
 * @property {string} data   The joined `data:` lines.
 */

export class SSEParser {
  constructor() {
    /** Text received but not yet split into complete lines. */
    this.buffer = '';
    /** @type {string[]} data lines of the event being assembled */
    this.dataLines = [];
    /** @type {string} */
    this.eventName = '';
  }

  /**
   * Feed decoded text; returns the events completed by it, in order.
   * @param {string} text
   * @returns {SSEEvent[]}
   */
  feed(text) {
    this.buffer += text;
    /** @type {SSEEvent[]} */
    const events = [];
    let start = 0;
    for (;;) {
      const cr = this.buffer.indexOf('\r', start);
      const lf = this.buffer.indexOf('\n', start);
      if (cr === -1 && lf === -1) break;
      let end;
      let next;
      if (cr !== -1 && (lf === -1 || cr < lf)) {
        // A lone CR at the very end may be the first half of CRLF: wait.
        if (cr === this.buffer.length - 1) break;
        end = cr;
        next = this.buffer[cr + 1] === '\n' ? cr + 2 : cr + 1;
      } else {
        end = lf;
        next = lf + 1;
      }
      const event = this.line(this.buffer.slice(start, end));
      if (event) events.push(event);
      start = next;
    }
    this.buffer = this.buffer.slice(start);
    return events;
  }

  /**
   * Flush at end of stream. A CR held back as a possible CRLF half is a line
   * end after all; a final event without its blank line is dropped, as the
   * spec requires, so a truncated stream never yields half an event.
   * @returns {SSEEvent[]}
   */
  end() {
    const events = this.buffer.endsWith('\r') ? this.feed('\n') : [];
    this.buffer = '';
    this.dataLines = [];
    this.eventName = '';
    return events;
  }

  /**
   * @param {string} line
   * @returns {SSEEvent | null}
   */
  line(line) {
    if (line === '') {
      if (this.dataLines.length === 0) {
        this.eventName = '';
        return null;
      }
      const event = { event: this.eventName || 'message', data: this.dataLines.join('\n') };
      this.dataLines = [];
      this.eventName = '';
      return event;
    }
    if (line.startsWith(':')) return null;
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') this.dataLines.push(value);
    else if (field === 'event') this.eventName = value;
    // `id` and `retry` only matter to EventSource reconnection; ignored.
    return null;
  }
}
