// One video on the page: its badge, how it is sent (URL or frames) and what the worker reports.

import {
  FRAMES_PER_BATCH,
  HASH_PROBE_FRAMES,
  PATCH_GROW,
  HEARTBEAT_MS,
  MAX_URL_CHARS,
  TAB_CAPTURE_INTERVAL_MS,
} from '../limits.js';
import { MSG, send } from '../messages.js';
import { FINAL_STATES } from '../verdict.js';
import { Badge } from './badge.js';
import {
  canvasGrabber,
  expectedBoxes,
  nextGrow,
  patchRegion,
  recordFaces,
  sampleFrames,
  waitForData,
} from './frames.js';

const randomKey = () =>
  Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => b.toString(36).padStart(2, '0')).join('');

/** The page address sent with a check: no query or fragment (they can carry personal data). */
export const pageAddress = () => (location.origin + location.pathname).slice(0, MAX_URL_CHARS);

/** How a video can be sent: its http(s) URL, or frames (blob:, MediaSource, streams), or not yet. */
export function sourceOf(video) {
  const url = video.currentSrc || video.src || video.querySelector('source[src]')?.src || '';
  if (/^https?:\/\//i.test(url) && url.length <= MAX_URL_CHARS) return { kind: 'url', url };
  if (url || video.srcObject) return { kind: 'frames', url: null };
  return { kind: null, url: null };
}

const nextPaint = () => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class VideoCheck {
  /** ``options``: ``{mode, allowFrames, forced}``; ``registry``: videoKey → VideoCheck. */
  constructor(video, options, registry) {
    this.video = video;
    this.options = options;
    this.registry = registry;
    this.badge = new Badge(video, { onClick: () => this.clicked() });
    this.onSource = () => {
      const now = sourceOf(video);
      if (now.kind !== this.source.kind || now.url !== this.source.url) this.begin();
    };
    video.addEventListener('loadstart', this.onSource);
    this.begin();
  }

  /** (Re)start for the video's current source, under a new key. */
  begin() {
    this.stop();
    if (this.key) send(MSG.VIDEO_GONE, { videoKey: this.key }).catch(() => {});
    this.key = randomKey();
    this.registry.set(this.key, this);
    this.abort = new AbortController();
    this.source = sourceOf(this.video);
    this.started = false;
    const auto = this.options.mode === 'auto' || this.options.forced;
    this.view = { state: auto ? 'checking' : 'idle', progress: { phase: 'waiting for the video' } };
    this.badge.render(this.view, this.key);
    if (auto && this.source.kind) this.whenSized(() => this.run());
  }

  /** Run ``fn`` once the video is big enough to matter (not a hidden or 1-pixel player). */
  whenSized(fn) {
    this.sizeWatch?.disconnect();
    this.sizeWatch = new ResizeObserver(() => {
      if (!this.badge.sized) return;
      this.sizeWatch.disconnect();
      fn();
    });
    this.sizeWatch.observe(this.video);
  }

  /** Check now whatever the mode (the popup's "check this page"). */
  runNow() {
    this.options = { ...this.options, forced: true };
    if (this.view.state === 'idle' && this.source.kind) this.run();
  }

  clicked() {
    if (this.view.state === 'idle' && this.source.kind) this.run();
    else this.badge.togglePanel(this.key);
  }

  /** A view pushed by the worker. */
  update(view) {
    if (FINAL_STATES.has(this.view.state) && view.state === 'checking') return; // late progress
    this.view = view;
    this.heardAt = performance.now();
    this.badge.render(view, this.key);
    if (FINAL_STATES.has(view.state)) {
      this.abort?.abort();
      clearInterval(this.heartbeat);
    }
  }

  /** While checking, ask about a silent check now and then (wakes and resumes a stopped worker). */
  listen() {
    clearInterval(this.heartbeat);
    this.heartbeat = setInterval(async () => {
      if (this.view.state !== 'checking' || performance.now() - this.heardAt < HEARTBEAT_MS) return;
      this.heardAt = performance.now();
      const view = await send(MSG.VIDEO_STATUS, { videoKey: this.key }).catch(() => null);
      if (view && view.videoKey === this.key) this.update(view);
    }, HEARTBEAT_MS / 2);
  }

  async run() {
    if (this.started) return;
    this.started = true;
    const { signal } = this.abort;
    const videoKey = this.key;
    this.update({ state: 'checking', progress: { phase: 'starting' } });
    this.listen();
    try {
      await send(MSG.VIDEO_SEEN, {
        videoKey,
        kind: this.source.kind,
        src: this.source.url,
        pageUrl: pageAddress(),
        checking: true,
      });
      if (this.source.kind === 'url') {
        const reply = await send(MSG.CHECK_URL, { videoKey, url: this.source.url, pageUrl: pageAddress() });
        if (reply.status !== 'fallback') return; // progress and the verdict are pushed
      }
      if (!this.options.allowFrames) {
        throw Object.assign(
          new Error('This video can only be checked from captured frames, and frame capture is off in the options'),
          { code: 'frames_off' },
        );
      }
      await this.runFrames(videoKey, signal);
    } catch (err) {
      if (signal.aborted) return;
      const error = { code: err?.code ?? 'error', message: String(err?.message ?? err).slice(0, 300) };
      this.update({ state: 'error', error });
      send(MSG.VIDEO_ERROR, { videoKey, ...error }).catch(() => {});
    }
  }

  /** Capture frames; ask the cache about the first ones, then stream them to a frames check. */
  async runFrames(videoKey, signal) {
    await waitForData(this.video, signal);
    const frames = sampleFrames(this.video, this.grabber(), signal);
    const hashes = [];
    let batch = [];
    let opened = false;
    let sent = false;
    this.faces = []; // the frames whose faces the server reported (see recordFaces)
    this.grow = PATCH_GROW;
    this.patches = true; // until the server says it has no tamper check to read them
    for (;;) {
      const { value, done } = await frames.next();
      if (signal.aborted) return;
      if (!done) {
        const { jpeg, t, patch, patchAt } = value;
        batch.push(patch ? { jpeg, t, patch, patchAt } : { jpeg, t });
        hashes.push(value.hash);
      }
      if (!opened && (hashes.length >= HASH_PROBE_FRAMES || done)) {
        if (!hashes.length) throw new Error('No frame of this video could be captured');
        if ((await send(MSG.LOOKUP_FRAMES, { videoKey, hashes, pageUrl: pageAddress() })).hit) {
          await frames.return();
          return;
        }
        await send(MSG.OPEN_FRAMES, { videoKey, hashes, pageUrl: pageAddress() });
        opened = true;
      }
      // The first batch (the frames the cache was asked about) goes as soon as the check is open:
      // its reply names the faces, so every later frame can carry a lossless patch.
      if (opened && (batch.length >= (sent ? FRAMES_PER_BATCH : 1) || done)) {
        const reply = await send(MSG.SEND_FRAMES, { videoKey, frames: batch, final: done });
        sent = true;
        if (reply?.closed) return;
        this.faces = recordFaces(this.faces, reply?.faces);
        this.grow = nextGrow(this.grow, batch, reply?.faces);
        this.patches = reply?.patches !== false;
        batch = [];
      }
      if (done) return;
    }
  }

  /** Canvas capture; on a tainted canvas, captures of the visible tab cropped to the video. */
  grabber() {
    // Later frames carry a lossless patch around the faces the server found (tab captures cannot:
    // the page's zoom and scaling already changed their pixels).
    const fromCanvas = canvasGrabber((t, w, h) =>
      this.patches ? patchRegion(expectedBoxes(this.faces, t), w, h, this.grow) : null,
    );
    let tainted = false;
    let lastShot = 0;
    const fromTab = async (video) => {
      const t = video.currentTime;
      await sleep(Math.max(0, lastShot + TAB_CAPTURE_INTERVAL_MS - performance.now()));
      lastShot = performance.now();
      this.badge.setVisible(false);
      try {
        await nextPaint();
        const r = video.getBoundingClientRect();
        const shot = await send(MSG.CAPTURE_TAB, {
          videoKey: this.key,
          rect: { x: r.x, y: r.y, width: r.width, height: r.height },
          viewport: { width: innerWidth, height: innerHeight },
        });
        return { ...shot, t };
      } finally {
        this.badge.setVisible(true);
      }
    };
    return async (video) => {
      if (!tainted) {
        try {
          return fromCanvas(video);
        } catch (err) {
          if (err?.name !== 'SecurityError') throw err;
          tainted = true; // cross-origin without CORS: the page's pixels are not ours to read
        }
      }
      return fromTab(video);
    };
  }

  stop() {
    this.abort?.abort();
    clearInterval(this.heartbeat);
    this.sizeWatch?.disconnect();
    if (this.key) this.registry.delete(this.key);
  }

  /** The video left the page: its badge goes, and the worker forgets it. */
  destroy() {
    this.stop();
    this.video.removeEventListener('loadstart', this.onSource);
    this.badge.destroy();
    send(MSG.VIDEO_GONE, { videoKey: this.key }).catch(() => {});
  }
}
