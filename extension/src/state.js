// Video and check records in storage.session, so a restarted worker carries on where it stopped.
//
// ``v|<tabId>|<videoKey>`` holds what one video on one page shows; ``c|<checkId>`` holds how far
// the worker followed a server check, and exists only until that check ends. Video keys are
// random per video element.

import * as ext from './ext.js';

const VIDEO = 'v|';
const CHECK = 'c|';
const MODEL = 'model';
const FORCED = 'run|';

export const videoId = (tabId, videoKey) => `${VIDEO}${tabId}|${videoKey}`;

// Patches of one record run one after another inside this worker (a lock, not state).
const chains = new Map();
function serialized(key, fn) {
  const run = (chains.get(key) ?? Promise.resolve()).then(fn, fn);
  const tail = run.catch(() => {});
  chains.set(key, tail);
  tail.then(() => chains.get(key) === tail && chains.delete(key));
  return run;
}

export async function getVideo(tabId, videoKey) {
  const id = videoId(tabId, videoKey);
  return (await ext.sessionGet(id))[id] ?? null;
}

/** Merge ``patch`` into a video record (created when missing); resolves the new record. */
export function patchVideo(tabId, videoKey, patch) {
  const id = videoId(tabId, videoKey);
  return serialized(id, async () => {
    const current = (await ext.sessionGet(id))[id] ?? { tabId, videoKey, createdAt: Date.now() };
    const next = { ...current, ...patch, updatedAt: Date.now() };
    await ext.sessionSet({ [id]: next });
    return next;
  });
}

async function all(prefix) {
  const items = await ext.sessionGet(null);
  return Object.entries(items).filter(([k]) => k.startsWith(prefix));
}

export const videosOfTab = async (tabId) => (await all(`${VIDEO}${tabId}|`)).map(([, v]) => v);
export const videosOfCheck = async (checkId) =>
  (await all(VIDEO)).map(([, v]) => v).filter((v) => v.checkId === checkId);

export async function removeVideo(tabId, videoKey) {
  await ext.sessionRemove(videoId(tabId, videoKey));
}

/** Forget a tab (closed) or one frame of it (its document was replaced). */
export async function removeTab(tabId, frameId = null) {
  const keys = (await all(`${VIDEO}${tabId}|`))
    .filter(([, v]) => frameId === null || v.frameId === frameId)
    .map(([k]) => k);
  if (keys.length) await ext.sessionRemove(keys);
  if (frameId === null) await ext.sessionRemove(`${FORCED}${tabId}`);
}

// ---------------------------------------------------------------- checks being followed
export async function getCheckState(checkId) {
  const id = CHECK + checkId;
  return (await ext.sessionGet(id))[id] ?? null;
}

export function patchCheckState(checkId, patch) {
  const id = CHECK + checkId;
  return serialized(id, async () => {
    const current = (await ext.sessionGet(id))[id] ?? { checkId, startedAt: Date.now() };
    const next = { ...current, ...patch };
    await ext.sessionSet({ [id]: next });
    return next;
  });
}

/** A check that ended needs no resuming: forget it (a video joining it later starts afresh). */
export const removeCheckState = (checkId) => ext.sessionRemove(CHECK + checkId);

export const unfinishedChecks = async () => (await all(CHECK)).map(([, c]) => c);

// ---------------------------------------------------------------- small caches and flags
export async function cachedModel(maxAgeMs) {
  const entry = (await ext.sessionGet(MODEL))[MODEL];
  return entry && Date.now() - entry.at < maxAgeMs ? entry.card : null;
}
export const storeModel = (card) => ext.sessionSet({ [MODEL]: { card, at: Date.now() } });

/** The user asked (popup) to check this tab although its site is not enabled. */
export const forceTab = (tabId) => ext.sessionSet({ [`${FORCED}${tabId}`]: true });
export const isForced = async (tabId) => !!(await ext.sessionGet(`${FORCED}${tabId}`))[`${FORCED}${tabId}`];
