// A Server-Sent Events parser for fetch() streams (EventSource cannot send our headers).

/**
 * Returns ``feed(text)``: pass decoded chunks in; ``onEvent({event, data, id})`` is called for
 * each complete event and ``onComment()`` for keep-alive comments.
 */
export function sseParser(onEvent, onComment = () => {}) {
  let buffer = '';
  let event = '';
  let data = [];
  let id = null;

  function line(text) {
    if (text === '') {
      if (data.length) onEvent({ event: event || 'message', data: data.join('\n'), id });
      event = '';
      data = [];
      return;
    }
    if (text.startsWith(':')) {
      onComment();
      return;
    }
    const colon = text.indexOf(':');
    const field = colon < 0 ? text : text.slice(0, colon);
    let value = colon < 0 ? '' : text.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
    else if (field === 'id' && !value.includes('\0')) id = value;
  }

  return function feed(chunk) {
    buffer += chunk;
    let start = 0;
    for (;;) {
      const match = /\r\n|\r|\n/g;
      match.lastIndex = start;
      const found = match.exec(buffer);
      // A lone "\r" at the end may be the first half of "\r\n": wait for more.
      if (!found || (found[0] === '\r' && found.index === buffer.length - 1)) break;
      line(buffer.slice(start, found.index));
      start = found.index + found[0].length;
    }
    buffer = buffer.slice(start);
  };
}
