// One message envelope ``{type, target, data}``, a typed handler map and sender checks.
//
// Replies are ``{ok: true, data}`` or ``{ok: false, error: {code, message}}``. Content scripts
// run inside web pages and are treated as untrusted: each handler names who may call it and
// validates its data before anything is done with it.

import * as ext from './ext.js';

/** Where a message goes. */
export const TARGET = Object.freeze({ background: 'background', content: 'content' });

/** Every message type, by direction. */
export const MSG = Object.freeze({
  // content script → background
  HELLO: 'hello',
  VIDEO_SEEN: 'video-seen',
  VIDEO_GONE: 'video-gone',
  VIDEO_ERROR: 'video-error',
  VIDEO_STATUS: 'video-status',
  CHECK_URL: 'check-url',
  LOOKUP_FRAMES: 'lookup-frames',
  OPEN_FRAMES: 'open-frames',
  SEND_FRAMES: 'send-frames',
  CAPTURE_TAB: 'capture-tab',
  // extension pages (options, popup, panel) → background
  GET_VIDEO: 'get-video',
  TAB_VIDEOS: 'tab-videos',
  CHECK_TAB: 'check-tab',
  APPLY_SETTINGS: 'apply-settings',
  TEST_SERVER: 'test-server',
  // background → content script
  VIDEO_UPDATE: 'video-update',
  RUN_ALL: 'run-all',
});

/** Who may send a message: a content script in a web page, or one of our own pages. */
export const FROM = Object.freeze({ content: 'content', extension: 'extension', background: 'background' });

/** An error with a stable code, carried across the message boundary. */
export class MessageError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

export const envelope = (type, target, data = {}) => ({ type, target, data });

function unwrap(reply, type) {
  if (!reply) throw new MessageError('no_reply', `no answer to ${type}`);
  if (!reply.ok) throw new MessageError(reply.error?.code ?? 'error', reply.error?.message ?? `${type} failed`);
  return reply.data;
}

/** Send ``type`` to the background and return its data; throws MessageError on failure. */
export async function send(type, data) {
  let reply = await ext.sendMessage(envelope(type, TARGET.background, data));
  // The worker was stopped while it held this message: a second one wakes a new worker.
  if (reply?.error?.code === 'no_receiver' && ext.contextAlive())
    reply = await ext.sendMessage(envelope(type, TARGET.background, data));
  return unwrap(reply, type);
}

/** Push ``type`` to the content script in one frame of a tab, or all its frames (fire and forget). */
export function sendToFrame(tabId, frameId, type, data) {
  return ext.sendTabMessage(tabId, frameId, envelope(type, TARGET.content, data));
}

/** Which kind of sender this is, or null when it is not ours at all. */
export function senderKind(sender) {
  if (!sender || sender.id !== ext.runtimeId()) return null;
  const ownPrefix = ext.getURL('');
  const url = String(sender.url ?? '');
  // Our own pages (options, popup, the details panel framed in a tab) and the worker. A web page
  // can frame panel.html, but cannot read what it shows (another origin).
  if (url.startsWith(ownPrefix)) return FROM.extension;
  if (sender.tab && Number.isInteger(sender.frameId) && /^https?:/.test(url)) return FROM.content;
  return null;
}

/**
 * Listen for messages to ``target``.
 *
 * ``handlers`` maps a type to ``{from: [FROM...], validate(data) -> data, handle(data, sender)}``.
 * Returns a function that removes the listener.
 */
export function listen(target, handlers) {
  const listener = (message, sender, sendResponse) => {
    if (!message || typeof message !== 'object' || message.target !== target) return false;
    const handler = Object.hasOwn(handlers, message.type) ? handlers[message.type] : undefined;
    if (!handler) return false;
    const kind = target === TARGET.content ? contentSide(sender) : senderKind(sender);
    if (!kind || !handler.from.includes(kind)) {
      sendResponse({ ok: false, error: { code: 'forbidden', message: `${message.type} is not allowed here` } });
      return false;
    }
    Promise.resolve()
      .then(() => handler.handle(handler.validate ? handler.validate(message.data ?? {}) : message.data, sender))
      .then(
        (data) => sendResponse({ ok: true, data: data ?? null }),
        (err) =>
          sendResponse({
            ok: false,
            error: { code: err?.code ?? 'error', message: String(err?.message ?? err).slice(0, 500) },
          }),
      );
    return true; // the reply comes asynchronously
  };
  ext.onMessage(listener);
  return () => ext.offMessage(listener);
}

// In a content script only our background (no tab, our id) may talk to us.
function contentSide(sender) {
  return sender && sender.id === ext.runtimeId() && !sender.tab ? FROM.background : null;
}

// ---------------------------------------------------------------- validation helpers
/** Throw a ``bad_message`` error unless ``condition`` holds. */
export function expect(condition, what) {
  if (!condition) throw new MessageError('bad_message', `invalid message: ${what}`);
}

export const isKey = (v) => typeof v === 'string' && /^[a-z0-9]{8,40}$/.test(v);
export const isHttpUrl = (v, max = 2048) => typeof v === 'string' && v.length <= max && /^https?:\/\//i.test(v);
export const isHash = (v) => typeof v === 'string' && /^[0-9a-f]{16}$/.test(v);
export const isTime = (v) => typeof v === 'number' && Number.isFinite(v) && v >= 0 && v < 86_400;
