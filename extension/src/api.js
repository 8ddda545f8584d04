// The client of the Unmask server: timeouts, retries with capped backoff, SSE with a polling
// fallback. Only the background worker imports this module.

import {
  CHECK_DEADLINE_MS,
  POLL_CAP_MS,
  POLL_FIRST_MS,
  REQUEST_TIMEOUT_MS,
  RETRY_ATTEMPTS,
  RETRY_BASE_MS,
  RETRY_CAP_MS,
  SSE_IDLE_MS,
  SSE_RECONNECTS,
  UPLOAD_TIMEOUT_MS,
} from './limits.js';
import { sseParser } from './sse.js';

/** A failed server call: ``status`` 0 means no HTTP answer (network, timeout). */
export class ApiError extends Error {
  constructor(status, code, message, { requestId = null, retryable = false } = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.requestId = requestId;
    this.retryable = retryable;
  }
}

// Answers that a later try may not repeat; 502 from our server with a code is the upstream's fault.
const RETRY_STATUSES = new Set([408, 425, 429, 500, 502, 503, 504]);
const FINAL_CODES = new Set(['fetch_failed', 'url_refused', 'unsupported_media', 'undecodable_media']);

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Delay before try ``attempt + 1``: capped exponential with jitter, or the server's Retry-After. */
export function backoff(attempt, retryAfterS = null) {
  if (retryAfterS !== null && Number.isFinite(retryAfterS)) return Math.min(retryAfterS * 1000, RETRY_CAP_MS);
  const ceiling = Math.min(RETRY_BASE_MS * 2 ** attempt, RETRY_CAP_MS);
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

function headers(settings, extra = {}) {
  const out = { Accept: 'application/json', ...extra };
  if (settings.token) out.Authorization = `Bearer ${settings.token}`;
  return out;
}

function endpoint(settings, path) {
  return settings.serverUrl.replace(/\/+$/, '') + path;
}

async function errorOf(res) {
  let body = null;
  try {
    body = await res.json();
  } catch {
    // not our JSON error: a proxy or a crash
  }
  const err = body?.error ?? {};
  const code = err.code ?? `http_${res.status}`;
  const retryable = RETRY_STATUSES.has(res.status) && !FINAL_CODES.has(code);
  const message = err.message ?? `the server answered ${res.status} ${res.statusText}`.trim();
  return new ApiError(res.status, code, message, { requestId: err.request_id ?? null, retryable });
}

function networkError(err) {
  if (err?.name === 'TimeoutError' || err?.name === 'AbortError')
    return new ApiError(0, 'timeout', 'the server did not answer in time', { retryable: true });
  return new ApiError(0, 'network', `cannot reach the server (${err?.message ?? err})`, { retryable: true });
}

/**
 * One call with retries. ``body`` is a JSON value or FormData; ``notFound`` makes 404 return null.
 * Resolves ``{status, body}``.
 */
export async function request(settings, path, { method = 'GET', json, form, timeoutMs, notFound = false } = {}) {
  const init = { method, credentials: 'omit', cache: 'no-store', headers: headers(settings) };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers['Content-Type'] = 'application/json';
  } else if (form !== undefined) {
    init.body = form;
  }
  const timeout = timeoutMs ?? (form ? UPLOAD_TIMEOUT_MS : REQUEST_TIMEOUT_MS);
  for (let attempt = 0; ; attempt++) {
    let err;
    let retryAfter = null;
    try {
      const res = await fetch(endpoint(settings, path), { ...init, signal: AbortSignal.timeout(timeout) });
      if (res.ok) return { status: res.status, body: await res.json() };
      if (res.status === 404 && notFound) return { status: 404, body: null };
      err = await errorOf(res);
      retryAfter = Number.parseFloat(res.headers.get('Retry-After') ?? '');
      if (Number.isNaN(retryAfter)) retryAfter = null;
    } catch (caught) {
      err = caught instanceof ApiError ? caught : networkError(caught);
    }
    if (!err.retryable || attempt + 1 >= RETRY_ATTEMPTS) throw err;
    await sleep(backoff(attempt, retryAfter));
  }
}

// ---------------------------------------------------------------- the routes we use
export const modelCard = async (settings) => (await request(settings, '/v1/models')).body.active;

/** Cached verdict by URL or frame hashes: ``{check_id, matched_by, verdict}`` or null. */
export async function lookup(settings, { url, frameHashes }) {
  const json = {};
  if (url) json.url = url;
  if (frameHashes?.length) json.frame_hashes = frameHashes;
  return (await request(settings, '/v1/verdicts/lookup', { method: 'POST', json, notFound: true })).body;
}

/** Start (or join) a check of a video URL: 200 with a cached verdict, or 202 with an id. */
export const startUrlCheck = async (settings, url, pageUrl) =>
  (await request(settings, '/v1/checks', { method: 'POST', json: { url, page_url: pageUrl } })).body;

/** Open a check that will receive captured frames. */
export const startFramesCheck = async (settings, pageUrl, frameHashes) =>
  (
    await request(settings, '/v1/checks', {
      method: 'POST',
      json: { source: 'frames', page_url: pageUrl, frame_hashes: frameHashes },
    })
  ).body;

/** Post JPEG frames (``[{blob, t}]``) to a frames check; ``final`` ends it. */
export async function postFrames(settings, checkId, frames, final) {
  const form = new FormData();
  frames.forEach(({ blob, t, patch, patchAt }, i) => {
    form.append('frame', blob, `frame-${i}.jpg`);
    form.append('t', String(t));
    // A lossless patch follows its own frame (the server pastes it in and runs the tamper check).
    if (patch) {
      form.append('patch', patch, `patch-${i}.png`);
      form.append('patch_at', `${patchAt[0]},${patchAt[1]}`);
    }
  });
  if (final) form.append('final', '1');
  return (await request(settings, `/v1/checks/${encodeURIComponent(checkId)}/frames`, { method: 'POST', form })).body;
}

export const getCheck = async (settings, checkId) =>
  (await request(settings, `/v1/checks/${encodeURIComponent(checkId)}`)).body;

// ---------------------------------------------------------------- following a check
const TERMINAL = new Set(['verdict', 'error']);

/** One event stream; resolves true when a terminal event arrived, false when it ended early. */
async function streamOnce(settings, checkId, cursor, onEvent, onAlive) {
  const abort = new AbortController();
  let idle = setTimeout(() => abort.abort(), SSE_IDLE_MS);
  const extra = { Accept: 'text/event-stream' };
  if (cursor.lastEventId) extra['Last-Event-ID'] = String(cursor.lastEventId);
  try {
    const res = await fetch(endpoint(settings, `/v1/checks/${encodeURIComponent(checkId)}/events`), {
      headers: headers(settings, extra),
      credentials: 'omit',
      cache: 'no-store',
      signal: abort.signal,
    });
    if (!res.ok) throw await errorOf(res);
    if (!res.body || !(res.headers.get('Content-Type') ?? '').startsWith('text/event-stream'))
      throw new ApiError(res.status, 'no_stream', 'the server did not stream events');
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let terminal = false;
    const queue = [];
    const feed = sseParser(
      (ev) => queue.push(ev),
      () => onAlive(),
    );
    while (!terminal) {
      const { value, done } = await reader.read();
      if (done) break;
      clearTimeout(idle);
      idle = setTimeout(() => abort.abort(), SSE_IDLE_MS);
      feed(value);
      for (const ev of queue.splice(0)) {
        let data;
        try {
          data = JSON.parse(ev.data);
        } catch {
          continue; // not ours
        }
        if (ev.id) cursor.lastEventId = ev.id;
        await onEvent(ev.event, data, cursor.lastEventId);
        if (TERMINAL.has(ev.event)) terminal = true;
      }
    }
    reader.cancel().catch(() => {});
    return terminal;
  } catch (err) {
    if (err instanceof ApiError) throw err;
    throw networkError(err);
  } finally {
    clearTimeout(idle);
    abort.abort();
  }
}

/** Poll the check until it is done or failed, reporting progress like the stream does. */
async function poll(settings, checkId, onEvent, deadline) {
  let wait = POLL_FIRST_MS;
  while (Date.now() < deadline) {
    const body = await getCheck(settings, checkId);
    if (body.status === 'done' && body.verdict) return onEvent('verdict', body.verdict, null);
    if (body.status === 'failed')
      return onEvent('error', body.error ?? { code: 'failed', message: 'the check failed' }, null);
    await onEvent('progress', { status: body.status, frames: body.frames_analyzed ?? 0 }, null);
    await sleep(wait);
    wait = Math.min(wait * 1.5, POLL_CAP_MS);
  }
  throw new ApiError(0, 'timeout', 'the check did not finish in time');
}

/**
 * Follow a check to its end: SSE (resuming after ``lastEventId``), reconnecting with backoff,
 * then polling when streaming does not work. ``onEvent(name, data, lastEventId)`` is awaited.
 */
export async function followCheck(settings, checkId, { lastEventId = null, startedAt = Date.now(), onEvent, onAlive }) {
  const cursor = { lastEventId };
  const deadline = startedAt + CHECK_DEADLINE_MS;
  for (let attempt = 0; attempt <= SSE_RECONNECTS && Date.now() < deadline; attempt++) {
    try {
      if (await streamOnce(settings, checkId, cursor, onEvent, onAlive ?? (() => {}))) return;
    } catch (err) {
      if (err.code === 'no_stream') break;
      if (!err.retryable) throw err;
    }
    await sleep(backoff(attempt));
  }
  await poll(settings, checkId, onEvent, deadline);
}
