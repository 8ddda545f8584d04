// The check flows of the background worker: ask the cache, start or join a check, follow it and
// tell the page. Every step writes to storage first, so a restarted worker can resume it.

import * as api from './api.js';
import { loadSettings } from './config.js';
import * as ext from './ext.js';
import { MODEL_CARD_TTL_MS, RESUME_ALARM_MIN } from './limits.js';
import { MSG, MessageError, sendToFrame } from './messages.js';
import * as state from './state.js';
import { COLORS, FINAL_STATES, stateOfLabel, viewOf } from './verdict.js';

export const RESUME_ALARM = 'unmask-resume';

// Checks this worker instance is following right now: only to avoid following one twice.
const following = new Map();

// Answers that say "this URL is no use to the server", not "the server is in trouble".
const URL_PROBLEMS = new Set([
  'url_refused',
  'fetch_failed',
  'unsupported_media',
  'undecodable_media',
  'invalid_field',
]);
const usableWithFrames = (err) =>
  err instanceof api.ApiError && (URL_PROBLEMS.has(err.code) || [400, 404, 410, 415, 422].includes(err.status));

/** Human words for a failed server call, shown on the badge and in the panel. */
export function describeError(err, settings) {
  if (err instanceof api.ApiError) {
    if (err.status === 0 && err.code === 'network')
      return { code: 'network', message: `Cannot reach the Unmask server at ${settings.serverUrl}` };
    if (err.status === 0) return { code: err.code, message: err.message };
    if (err.status === 401 || err.status === 403)
      return { code: err.code, message: 'The server refused the API token (see the options)' };
    return { code: err.code, message: err.message, requestId: err.requestId };
  }
  return { code: err?.code ?? 'error', message: String(err?.message ?? err) };
}

/** The toolbar button's count of flagged videos on a tab ('!' when a check failed). */
export async function flagTab(tabId) {
  const videos = await state.videosOfTab(tabId);
  const flagged = videos.filter((v) => v.state === 'manipulated' || v.state === 'tampered').length;
  const failed = videos.some((v) => v.state === 'error');
  const text = flagged ? String(flagged) : failed ? '!' : '';
  await ext.setActionBadge(tabId, text, flagged ? COLORS.manipulated : COLORS.error);
}

/** Store a change of one video and tell its page. */
export async function updateVideo(tabId, videoKey, patch) {
  const record = await state.patchVideo(tabId, videoKey, patch);
  await sendToFrame(record.tabId, record.frameId ?? 0, MSG.VIDEO_UPDATE, viewOf(record));
  if (FINAL_STATES.has(patch.state)) await flagTab(record.tabId);
  return record;
}

async function updateCheckVideos(checkId, patchOf) {
  for (const video of await state.videosOfCheck(checkId)) {
    if (FINAL_STATES.has(video.state) && video.state !== 'error') continue;
    await updateVideo(video.tabId, video.videoKey, patchOf(video));
  }
}

/** The active model card, cached for a while; null when the server cannot say. */
async function modelCard(settings) {
  const cached = await state.cachedModel(MODEL_CARD_TTL_MS);
  if (cached) return cached;
  try {
    const card = await api.modelCard(settings);
    await state.storeModel(card);
    return card;
  } catch {
    return null; // the check itself will report the server's problem
  }
}

function finalPatch(verdict, { cached, checkId }) {
  return {
    state: stateOfLabel(verdict.label),
    verdict,
    cached: !!(verdict.cached ?? cached),
    checkId: verdict.check_id ?? checkId,
    demo: !!verdict.model?.demo,
    error: null,
    finishedAt: Date.now(),
  };
}

// ---------------------------------------------------------------- following checks
async function onCheckEvent(checkId, name, data, lastEventId) {
  if (lastEventId) await state.patchCheckState(checkId, { lastEventId });
  if (name === 'progress') {
    const progress = { phase: data.status ?? null, frames: data.frames ?? 0, fraction: data.fraction ?? null };
    await updateCheckVideos(checkId, () => ({ state: 'checking', progress }));
  } else if (name === 'frame') {
    await updateCheckVideos(checkId, (v) => ({
      state: 'checking',
      progress: { ...(v.progress ?? {}), frames: Math.max(v.progress?.frames ?? 0, (data.index ?? 0) + 1) },
    }));
  } else if (name === 'purified') {
    await updateCheckVideos(checkId, (v) => ({ progress: { ...(v.progress ?? {}), phase: 'purifying' } }));
  } else if (name === 'verdict') {
    await endCheck(checkId, () => finalPatch(data, { cached: false, checkId }));
  } else if (name === 'error') {
    const error = { code: data.code ?? 'failed', message: data.message ?? 'the check failed' };
    await endCheck(checkId, () => ({ state: 'error', error, finishedAt: Date.now() }));
  }
}

// Videos first, then the check's record: a worker stopped in between resumes and repeats both.
async function endCheck(checkId, patchOf) {
  await updateCheckVideos(checkId, patchOf);
  await state.removeCheckState(checkId);
}

/** Follow a server check until its verdict (resuming where a previous worker stopped). */
export function follow(checkId) {
  if (following.has(checkId)) return following.get(checkId);
  const run = (async () => {
    const settings = await loadSettings();
    const check = await state.patchCheckState(checkId, {});
    await ext.alarmCreate(RESUME_ALARM, RESUME_ALARM_MIN);
    try {
      await api.followCheck(settings, checkId, {
        lastEventId: check.lastEventId ?? null,
        startedAt: check.startedAt,
        onEvent: (name, data, id) => onCheckEvent(checkId, name, data, id),
        // Touching storage is an extension API call: it keeps the worker alive between frames.
        onAlive: () => state.patchCheckState(checkId, { aliveAt: Date.now() }),
      });
    } catch (err) {
      const error = describeError(err, settings);
      await endCheck(checkId, () => ({ state: 'error', error, finishedAt: Date.now() }));
    }
  })().finally(() => following.delete(checkId));
  following.set(checkId, run);
  return run;
}

/** Resume every check a previous worker left unfinished; stop the alarm when none is left. */
export async function resumeAll() {
  const open = await state.unfinishedChecks();
  if (!open.length) {
    await ext.alarmClear(RESUME_ALARM);
    return;
  }
  open.forEach((check) => follow(check.checkId));
}

async function attach(tabId, videoKey, checkId, progressPhase) {
  await state.patchCheckState(checkId, {});
  await updateVideo(tabId, videoKey, { checkId, state: 'checking', progress: { phase: progressPhase } });
  follow(checkId); // not awaited: progress and the verdict are pushed to the page
}

// ---------------------------------------------------------------- the flows the page asks for
/** A new video (or a new source of one) on a page. */
export async function videoSeen(sender, { videoKey, kind, src, pageUrl, checking }) {
  await updateVideo(sender.tab.id, videoKey, {
    frameId: sender.frameId,
    pageUrl,
    kind,
    src,
    state: checking ? 'checking' : 'idle',
    progress: checking ? { phase: 'starting' } : null,
    verdict: null,
    error: null,
    cached: false,
    checkId: null,
  });
}

/** Check a video by its URL: cache first, else the server fetches it. */
export async function checkUrl(sender, { videoKey, url, pageUrl }) {
  const settings = await loadSettings();
  const tabId = sender.tab.id;
  await updateVideo(tabId, videoKey, {
    frameId: sender.frameId,
    kind: 'url',
    src: url,
    pageUrl,
    state: 'checking',
    progress: { phase: 'cache' },
  });
  try {
    const [hit, card] = await Promise.all([api.lookup(settings, { url }), modelCard(settings)]);
    if (card) await state.patchVideo(tabId, videoKey, { demo: !!card.demo });
    if (hit) {
      await updateVideo(tabId, videoKey, finalPatch(hit.verdict, { cached: true, checkId: hit.check_id }));
      return { status: 'cached' };
    }
    const started = await api.startUrlCheck(settings, url, pageUrl);
    if (started.status === 'done' && started.verdict) {
      await updateVideo(tabId, videoKey, finalPatch(started.verdict, { cached: true, checkId: started.id }));
      return { status: 'cached' };
    }
    await attach(tabId, videoKey, started.id, started.status);
    return { status: 'started', checkId: started.id };
  } catch (err) {
    // The server cannot fetch or read this URL (private, signed, a playlist…): frames can still work.
    if (settings.allowFrames && usableWithFrames(err)) return { status: 'fallback', reason: err.message };
    await updateVideo(tabId, videoKey, { state: 'error', error: describeError(err, settings) });
    return { status: 'error' };
  }
}

/** Ask the cache about the first frames' hashes; on a hit the video is done. */
export async function lookupFrames(sender, { videoKey, hashes, pageUrl }) {
  const settings = await loadSettings();
  if (!settings.allowFrames) throw new MessageError('frames_off', 'Frame capture is turned off in the options');
  const tabId = sender.tab.id;
  await updateVideo(tabId, videoKey, {
    frameId: sender.frameId,
    kind: 'frames',
    pageUrl,
    state: 'checking',
    progress: { phase: 'cache' },
  });
  try {
    const [hit, card] = await Promise.all([api.lookup(settings, { frameHashes: hashes }), modelCard(settings)]);
    if (card) await state.patchVideo(tabId, videoKey, { demo: !!card.demo });
    if (!hit) return { hit: false };
    await updateVideo(tabId, videoKey, finalPatch(hit.verdict, { cached: true, checkId: hit.check_id }));
    return { hit: true };
  } catch (err) {
    await updateVideo(tabId, videoKey, { state: 'error', error: describeError(err, settings) });
    throw new MessageError('server', describeError(err, settings).message);
  }
}

/** Open a frames check for a video; its frames follow with ``sendFrames``. */
export async function openFrames(sender, { videoKey, hashes, pageUrl }) {
  const settings = await loadSettings();
  if (!settings.allowFrames) throw new MessageError('frames_off', 'Frame capture is turned off in the options');
  try {
    const started = await api.startFramesCheck(settings, pageUrl, hashes);
    await attach(sender.tab.id, videoKey, started.id, started.status);
    return { checkId: started.id };
  } catch (err) {
    await updateVideo(sender.tab.id, videoKey, { state: 'error', error: describeError(err, settings) });
    throw new MessageError('server', describeError(err, settings).message);
  }
}

function dataUrlToBlob(dataUrl) {
  const comma = dataUrl.indexOf(',');
  const type = dataUrl.slice(5, dataUrl.indexOf(';')); // data:<type>;base64,
  const binary = atob(dataUrl.slice(comma + 1));
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return new Blob([bytes], { type });
}

/** Post a batch of captured frames to the video's own frames check. */
export async function sendFrames(sender, { videoKey, frames, final }) {
  const settings = await loadSettings();
  const video = await state.getVideo(sender.tab.id, videoKey);
  // The page names its video, never a check: frames go only where this worker opened one.
  if (!video?.checkId || video.kind !== 'frames' || video.frameId !== sender.frameId)
    throw new MessageError('no_check', 'no frames check is open for this video');
  if (FINAL_STATES.has(video.state)) return { accepted: 0, closed: true };
  try {
    const blobs = frames.map((f) => ({
      blob: dataUrlToBlob(f.jpeg),
      t: f.t,
      ...(f.patch ? { patch: dataUrlToBlob(f.patch), patchAt: f.patchAt } : {}),
    }));
    return await api.postFrames(settings, video.checkId, blobs, final);
  } catch (err) {
    // The server already ended the check (its cache knew the frames): the verdict is on its way.
    if (err instanceof api.ApiError && err.status === 409) return { accepted: 0, closed: true };
    await updateVideo(sender.tab.id, videoKey, { state: 'error', error: describeError(err, settings) });
    throw new MessageError('server', describeError(err, settings).message);
  }
}

/** The page reports a failure of its own (capture refused, frames off…): never silent. */
export const videoError = (sender, { videoKey, code, message }) =>
  updateVideo(sender.tab.id, videoKey, { frameId: sender.frameId, state: 'error', error: { code, message } });
