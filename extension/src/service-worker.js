// The background worker: the extension's only network client.
//
// It keeps nothing in memory that it needs later (it is stopped when idle): settings come from
// storage.sync/local, video and check state from storage.session, and unfinished checks are
// resumed whenever it starts. Listeners are registered synchronously at the top level, as MV3
// requires for a worker woken by an event.

import * as api from './api.js';
import { captureVideoRect } from './capture.js';
import * as checks from './checks.js';
import { loadSettings, sitePatterns } from './config.js';
import * as ext from './ext.js';
import { FRAMES_PER_BATCH, MAX_FRAME_DATA_URL_CHARS, MAX_PATCH_DATA_URL_CHARS, MAX_URL_CHARS } from './limits.js';
import {
  FROM,
  MSG,
  MessageError,
  TARGET,
  expect,
  isHash,
  isHttpUrl,
  isKey,
  isTime,
  listen,
  sendToFrame,
} from './messages.js';
import * as state from './state.js';
import { viewOf } from './verdict.js';

const SCRIPT_ID = 'unmask-videos';
const LOADER = 'content/loader.js';

/** Register the content script for the sites the user enabled (and granted). */
async function applyRegistration() {
  const settings = await loadSettings();
  const patterns = [...new Set(settings.sites.flatMap((site) => sitePatterns(site) ?? []))];
  const granted = [];
  for (const pattern of patterns) if (await ext.hasOrigins([pattern])) granted.push(pattern);
  if ((await ext.registeredScripts([SCRIPT_ID])).length) await ext.unregisterScripts([SCRIPT_ID]);
  if (granted.length)
    await ext.registerScripts([
      {
        id: SCRIPT_ID,
        matches: granted,
        js: [LOADER],
        runAt: 'document_idle',
        allFrames: true,
        persistAcrossSessions: true,
      },
    ]);
  return { sites: granted, missing: patterns.filter((p) => !granted.includes(p)) };
}

// ---------------------------------------------------------------- validation of page messages
const pageUrl = (v) => (isHttpUrl(v, MAX_URL_CHARS) ? v : null);

function videoData(d) {
  expect(isKey(d.videoKey), 'videoKey');
  return { videoKey: d.videoKey, pageUrl: pageUrl(d.pageUrl) };
}

function hashList(d) {
  expect(Array.isArray(d.hashes) && d.hashes.length >= 1 && d.hashes.length <= 16 && d.hashes.every(isHash), 'hashes');
  return { ...videoData(d), hashes: [...d.hashes] };
}

function frameBatch(d) {
  expect(Array.isArray(d.frames) && d.frames.length <= FRAMES_PER_BATCH, 'frames');
  const frames = d.frames.map((f) => {
    expect(
      typeof f?.jpeg === 'string' &&
        f.jpeg.startsWith('data:image/jpeg;base64,') &&
        f.jpeg.length <= MAX_FRAME_DATA_URL_CHARS,
      'frame jpeg',
    );
    expect(isTime(f.t), 'frame time');
    if (f.patch === undefined) return { jpeg: f.jpeg, t: f.t };
    expect(
      typeof f.patch === 'string' &&
        f.patch.startsWith('data:image/png;base64,') &&
        f.patch.length <= MAX_PATCH_DATA_URL_CHARS,
      'frame patch',
    );
    expect(
      Array.isArray(f.patchAt) &&
        f.patchAt.length === 2 &&
        f.patchAt.every((v) => Number.isInteger(v) && v >= 0 && v < 1e5),
      'patch position',
    );
    return { jpeg: f.jpeg, t: f.t, patch: f.patch, patchAt: [...f.patchAt] };
  });
  return { ...videoData(d), frames, final: d.final === true };
}

const isRect = (r) =>
  r &&
  ['x', 'y', 'width', 'height'].every((k) => typeof r[k] === 'number' && Number.isFinite(r[k]) && Math.abs(r[k]) < 1e5);

// ---------------------------------------------------------------- the handler map
const handlers = {
  // Content scripts (untrusted: they run inside web pages).
  [MSG.HELLO]: {
    from: [FROM.content],
    handle: async (_data, sender) => {
      await state.removeTab(sender.tab.id, sender.frameId); // a new document in this frame
      await checks.flagTab(sender.tab.id);
      const settings = await loadSettings();
      return { mode: settings.mode, allowFrames: settings.allowFrames, forced: await state.isForced(sender.tab.id) };
    },
  },
  [MSG.VIDEO_SEEN]: {
    from: [FROM.content],
    validate: (d) => {
      expect(['url', 'frames', null].includes(d.kind ?? null), 'kind');
      expect(d.src === null || d.src === undefined || isHttpUrl(d.src, MAX_URL_CHARS), 'src');
      return { ...videoData(d), kind: d.kind ?? null, src: d.src ?? null, checking: d.checking === true };
    },
    handle: (data, sender) => checks.videoSeen(sender, data),
  },
  [MSG.VIDEO_GONE]: {
    from: [FROM.content],
    validate: videoData,
    handle: async ({ videoKey }, sender) => {
      await state.removeVideo(sender.tab.id, videoKey);
      await checks.flagTab(sender.tab.id);
    },
  },
  [MSG.VIDEO_ERROR]: {
    from: [FROM.content],
    validate: (d) => ({
      ...videoData(d),
      code: String(d.code ?? 'error').slice(0, 40),
      message: String(d.message ?? 'failed').slice(0, 300),
    }),
    handle: (data, sender) => checks.videoError(sender, data),
  },
  [MSG.VIDEO_STATUS]: {
    from: [FROM.content],
    validate: videoData,
    handle: async ({ videoKey }, sender) => {
      await checks.resumeAll(); // this message may be what woke the worker
      const record = await state.getVideo(sender.tab.id, videoKey);
      return record && viewOf(record);
    },
  },
  [MSG.CHECK_URL]: {
    from: [FROM.content],
    validate: (d) => {
      expect(isHttpUrl(d.url, MAX_URL_CHARS), 'url');
      return { ...videoData(d), url: d.url };
    },
    handle: (data, sender) => checks.checkUrl(sender, data),
  },
  [MSG.LOOKUP_FRAMES]: { from: [FROM.content], validate: hashList, handle: (d, s) => checks.lookupFrames(s, d) },
  [MSG.OPEN_FRAMES]: { from: [FROM.content], validate: hashList, handle: (d, s) => checks.openFrames(s, d) },
  [MSG.SEND_FRAMES]: { from: [FROM.content], validate: frameBatch, handle: (d, s) => checks.sendFrames(s, d) },
  [MSG.CAPTURE_TAB]: {
    from: [FROM.content],
    validate: (d) => {
      expect(isRect(d.rect) && isRect({ x: 0, y: 0, ...d.viewport }) && d.viewport.width > 0, 'rect');
      return { ...videoData(d), rect: d.rect, viewport: d.viewport };
    },
    handle: async ({ rect, viewport }, sender) => {
      if (!(await loadSettings()).allowFrames)
        throw new MessageError('frames_off', 'Frame capture is turned off in the options');
      return captureVideoRect(sender.tab.id, rect, viewport);
    },
  },

  // Our own pages.
  [MSG.GET_VIDEO]: {
    from: [FROM.extension],
    validate: (d) => {
      expect(isKey(d.videoKey), 'videoKey');
      return { videoKey: d.videoKey, tabId: Number.isInteger(d.tabId) ? d.tabId : null };
    },
    handle: async ({ videoKey, tabId }, sender) => {
      const record = await state.getVideo(tabId ?? sender.tab?.id, videoKey);
      return record && { record, serverUrl: (await loadSettings()).serverUrl };
    },
  },
  [MSG.TAB_VIDEOS]: {
    from: [FROM.extension],
    validate: (d) => {
      expect(Number.isInteger(d.tabId), 'tabId');
      return d;
    },
    handle: async ({ tabId }) => ({
      videos: await state.videosOfTab(tabId),
      serverUrl: (await loadSettings()).serverUrl,
    }),
  },
  [MSG.CHECK_TAB]: {
    from: [FROM.extension],
    validate: (d) => {
      expect(Number.isInteger(d.tabId), 'tabId');
      return d;
    },
    handle: async ({ tabId }) => {
      await state.forceTab(tabId);
      await ext.executeScript(tabId, [LOADER]);
      await sendToFrame(tabId, null, MSG.RUN_ALL, {}); // pages where it was already running
      return { injected: true };
    },
  },
  [MSG.APPLY_SETTINGS]: { from: [FROM.extension], handle: () => applyRegistration() },
  [MSG.TEST_SERVER]: {
    from: [FROM.extension],
    handle: async () => {
      const settings = await loadSettings();
      try {
        const card = await api.modelCard(settings);
        await state.storeModel(card);
        return { card };
      } catch (err) {
        throw new MessageError('server', checks.describeError(err, settings).message);
      }
    },
  },
};

listen(TARGET.background, handlers);
ext.onAlarm((alarm) => alarm.name === checks.RESUME_ALARM && checks.resumeAll());
ext.onTabRemoved((tabId) => state.removeTab(tabId));
ext.onInstalled(() => applyRegistration());
ext.onPermissionsRemoved(() => applyRegistration());

// A worker that was stopped in the middle of a check picks it up again.
checks.resumeAll();
