// The fallback for videos whose canvas is tainted (cross-origin without CORS): capture the
// visible tab and crop it to the video's rectangle. Runs in the background worker.

import * as ext from './ext.js';
import { FRAME_JPEG_QUALITY, FRAME_MAX_HEIGHT, FRAME_MAX_WIDTH } from './limits.js';
import { MessageError } from './messages.js';
import { phashHex } from './phash.js';

/** Scale ``w``x``h`` down (never up) to fit the frame limits. */
export function fitFrame(w, h) {
  const scale = Math.min(1, FRAME_MAX_WIDTH / w, FRAME_MAX_HEIGHT / h);
  return { width: Math.max(2, Math.round(w * scale)), height: Math.max(2, Math.round(h * scale)) };
}

async function blobToDataUrl(blob) {
  const bytes = new Uint8Array(await blob.arrayBuffer());
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return `data:${blob.type};base64,${btoa(binary)}`;
}

/**
 * One frame of a video as the user sees it: ``rect`` and ``viewport`` are CSS pixels of the page.
 * Resolves ``{jpeg, hash}``.
 */
export async function captureVideoRect(tabId, rect, viewport) {
  const tab = await ext.getTab(tabId);
  // captureVisibleTab shows whatever tab is in front: capture only when that is this one.
  if (!tab.active)
    throw new MessageError('not_visible', 'The tab is in the background, so its video cannot be captured');
  let shot;
  try {
    shot = await ext.captureVisibleTab(tab.windowId);
  } catch (err) {
    throw new MessageError('capture_refused', `The browser refused to capture the tab: ${err?.message ?? err}`);
  }
  const bitmap = await createImageBitmap(await (await fetch(shot)).blob());
  const scale = bitmap.width / viewport.width;
  const sx = Math.max(0, Math.round(rect.x * scale));
  const sy = Math.max(0, Math.round(rect.y * scale));
  const sw = Math.min(bitmap.width - sx, Math.round(rect.width * scale));
  const sh = Math.min(bitmap.height - sy, Math.round(rect.height * scale));
  if (sw < 2 || sh < 2) throw new MessageError('not_visible', 'The video is outside the visible part of the page');
  const { width, height } = fitFrame(sw, sh);
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(bitmap, sx, sy, sw, sh, 0, 0, width, height);
  bitmap.close();
  const hash = phashHex(ctx.getImageData(0, 0, width, height));
  const jpeg = await blobToDataUrl(await canvas.convertToBlob({ type: 'image/jpeg', quality: FRAME_JPEG_QUALITY }));
  return { jpeg, hash };
}
