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

/**
 * A function that grabs the current frame of ``video`` as ``{jpeg, hash, t}``.
 * It throws a ``SecurityError`` DOMException when the video taints the canvas.
 */
export function canvasGrabber() {
  const canvas = document.createElement('canvas');
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  return (video) => {
    const t = video.currentTime;
    const [w, h] = frameSize(video);
    canvas.width = w;
    canvas.height = h;
    ctx.drawImage(video, 0, 0, w, h);
    const pixels = ctx.getImageData(0, 0, w, h);
    return { jpeg: canvas.toDataURL('image/jpeg', FRAME_JPEG_QUALITY), hash: phashHex(pixels), t };
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
