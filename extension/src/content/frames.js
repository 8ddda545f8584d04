// Frames of a playing video: drawn to a canvas, encoded as JPEG and hashed, at the server's
// sampling rate. No seeking: the user's playback is never disturbed.

import {
  CAPTURE_WALL_MS,
  FRAME_INTERVAL_S,
  FRAME_JPEG_QUALITY,
  FRAME_MAX_HEIGHT,
  FRAME_MAX_WIDTH,
  FRAME_WAIT_MS,
  FRAMES_ENOUGH,
  FRAMES_MAX,
  MAX_PASSES,
  MAX_PATCH_DATA_URL_CHARS,
  PATCH_GROW,
  PATCH_GROW_MAX,
  PREDICT_MAX_S,
} from '../limits.js';
import { phashHex } from '../phash.js';

const HAVE_CURRENT_DATA = 2;

/** Resolves once the video has a frame to show; rejects when ``signal`` aborts. */
export function waitForData(video, signal) {
  if (video.readyState >= HAVE_CURRENT_DATA) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const done = () => {
      video.removeEventListener('loadeddata', done);
      signal.removeEventListener('abort', stop);
      resolve();
    };
    const stop = () => {
      video.removeEventListener('loadeddata', done);
      reject(signal.reason);
    };
    video.addEventListener('loadeddata', done);
    signal.addEventListener('abort', stop, { once: true });
  });
}

/** The size a captured frame gets: the video's own, scaled down to the limits. */
function frameSize(video) {
  const w = video.videoWidth || 2;
  const h = video.videoHeight || 2;
  const scale = Math.min(1, FRAME_MAX_WIDTH / w, FRAME_MAX_HEIGHT / h);
  return [Math.max(2, Math.round(w * scale)), Math.max(2, Math.round(h * scale))];
}

const isBox = (b) => Array.isArray(b) && b.length === 4 && b.every((v) => Number.isFinite(v) && v >= 0);

/**
 * ``history`` (the frames whose faces the server reported, oldest first, at most two) with the
 * frames of a frames reply (``faces: [{t, boxes}]``) that had faces added. Frames without one
 * change nothing: the face detector misses a face now and then, and a face that left costs only
 * a patch of where it was.
 */
export function recordFaces(history, faces) {
  if (!Array.isArray(faces)) return history;
  const seen = faces.filter(
    (f) => Number.isFinite(f?.t) && Array.isArray(f.boxes) && f.boxes.length && f.boxes.every(isBox),
  );
  return [...history, ...seen.map((f) => ({ t: f.t, boxes: f.boxes.slice(0, 8) }))].slice(-2);
}

/**
 * The face boxes a frame captured at ``t`` should hold in its patch: the latest ones the server
 * reported and, where a face moved between the two latest frames, the same face moved on at that
 * speed (a face sweeping across the frame would otherwise leave its patch). Null when none is known.
 */
export function expectedBoxes(history, t) {
  const last = history.at(-1);
  if (!last) return null;
  const prev = history.length > 1 ? history.at(-2) : null;
  const dt = t - last.t;
  if (!prev || !(dt > 0 && dt <= PREDICT_MAX_S) || !(last.t > prev.t)) return last.boxes;
  const k = dt / (last.t - prev.t);
  const moved = [];
  for (const [x, y, w, h] of last.boxes) {
    // The same face in the frame before: the nearest box of about the same size.
    let best = null;
    let bestDist = Infinity;
    for (const [px, py, pw, ph] of prev.boxes) {
      const dist = (px + pw / 2 - x - w / 2) ** 2 + (py + ph / 2 - y - h / 2) ** 2;
      if (Math.abs(pw - w) <= 0.5 * w && dist < bestDist) [best, bestDist] = [[px, py], dist];
    }
    if (best) moved.push([Math.max(0, x + (x - best[0]) * k), Math.max(0, y + (y - best[1]) * k), w, h]);
  }
  return [...last.boxes, ...moved];
}

/**
 * The region to send losslessly: the union of ``boxes`` ([x, y, w, h] in frame pixels), each grown
 * ``grow`` times around its centre, clipped to the ``w``x``h`` frame; null when there is none.
 */
export function patchRegion(boxes, w, h, grow = PATCH_GROW) {
  let x0 = Infinity;
  let y0 = Infinity;
  let x1 = -Infinity;
  let y1 = -Infinity;
  for (const [bx, by, bw, bh] of boxes ?? []) {
    const half = (Math.max(bw, bh) * grow) / 2;
    const cx = bx + bw / 2;
    const cy = by + bh / 2;
    x0 = Math.min(x0, cx - half);
    y0 = Math.min(y0, cy - half);
    x1 = Math.max(x1, cx + half);
    y1 = Math.max(y1, cy + half);
  }
  const x = Math.max(0, Math.floor(x0));
  const y = Math.max(0, Math.floor(y0));
  const right = Math.min(w, Math.ceil(x1));
  const bottom = Math.min(h, Math.ceil(y1));
  return right > x && bottom > y ? { x, y, width: right - x, height: bottom - y } : null;
}

/**
 * How much the next patches grow each face box, after a reply to frames ``sent``: more when a
 * patched frame's face crop fell outside its patch (``tamper_checked`` false: the face moved more
 * than expected), back towards ``PATCH_GROW`` when every patched face was covered.
 */
export function nextGrow(grow, sent, faces) {
  let missed = 0;
  let covered = 0;
  sent.forEach((frame, i) => {
    const answer = Array.isArray(faces) ? faces[i] : null;
    if (!frame.patch || !answer?.boxes?.length) return;
    if (answer.tamper_checked === true) covered += 1;
    else missed += 1;
  });
  if (missed) return Math.min(PATCH_GROW_MAX, grow * 1.5);
  if (covered) return Math.max(PATCH_GROW, grow / 1.25);
  return grow;
}

/**
 * A function that grabs the current frame of ``video`` as ``{jpeg, hash, t}``, plus
 * ``{patch, patchAt}`` (a PNG of ``regionFor(t, w, h)``, the region where the frame's faces are
 * expected) when there is one.
 * It throws a ``SecurityError`` DOMException when the video taints the canvas.
 */
export function canvasGrabber(regionFor = () => null) {
  const canvas = document.createElement('canvas');
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  const patchCanvas = document.createElement('canvas');
  return (video) => {
    const t = video.currentTime;
    const [w, h] = frameSize(video);
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = w;
      canvas.height = h;
    }
    ctx.drawImage(video, 0, 0, w, h);
    const pixels = ctx.getImageData(0, 0, w, h);
    const frame = { jpeg: canvas.toDataURL('image/jpeg', FRAME_JPEG_QUALITY), hash: phashHex(pixels), t };
    const region = regionFor(t, w, h);
    if (region) {
      // putImageData copies the pixels as they are (no scaling, no blending): the PNG is exact.
      patchCanvas.width = region.width;
      patchCanvas.height = region.height;
      patchCanvas
        .getContext('2d')
        .putImageData(ctx.getImageData(region.x, region.y, region.width, region.height), 0, 0);
      const patch = patchCanvas.toDataURL('image/png');
      if (patch.length <= MAX_PATCH_DATA_URL_CHARS) Object.assign(frame, { patch, patchAt: [region.x, region.y] });
    }
    return frame;
  };
}

/** Resolves true on the next presented frame (or time update), false after ``ms`` without one. */
function nextFrame(video, ms, signal) {
  return new Promise((resolve) => {
    let handle = null;
    const finish = (value) => {
      clearTimeout(timer);
      video.removeEventListener('timeupdate', onTime);
      video.removeEventListener('ended', onEnd);
      signal.removeEventListener('abort', onEnd);
      if (handle !== null && video.cancelVideoFrameCallback) video.cancelVideoFrameCallback(handle);
      resolve(value);
    };
    const onTime = () => finish(true);
    const onEnd = () => finish(false);
    const timer = setTimeout(onEnd, ms);
    // Frame callbacks are exact; timeupdate also fires where nothing is painted (hidden tabs).
    if (video.requestVideoFrameCallback) handle = video.requestVideoFrameCallback(() => finish(true));
    video.addEventListener('timeupdate', onTime);
    video.addEventListener('ended', onEnd);
    signal.addEventListener('abort', onEnd, { once: true });
  });
}

/**
 * Frames of ``video``, one per FRAME_INTERVAL_S of media time. A looping video is followed for
 * another pass while frames are missing (slow captures skip some), then the capture ends; it also
 * ends at the limits, or when no new frame comes for FRAME_WAIT_MS (paused, stalled).
 */
export async function* sampleFrames(video, grab, signal) {
  const started = performance.now();
  const taken = new Set(); // FRAME_INTERVAL_S slots of media time already captured
  let seen = -1;
  let passes = 1;
  while (taken.size < FRAMES_MAX && !signal.aborted && performance.now() - started < CAPTURE_WALL_MS) {
    const t = video.currentTime;
    if (t + 0.05 < seen && (++passes > MAX_PASSES || taken.size >= FRAMES_ENOUGH)) return;
    seen = t;
    const slot = Math.floor(t / FRAME_INTERVAL_S);
    if (!taken.has(slot)) {
      taken.add(slot);
      yield await grab(video);
    }
    if (video.ended || !(await nextFrame(video, FRAME_WAIT_MS, signal))) return;
  }
}
