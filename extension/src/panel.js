// The details panel of one video: our own page, framed next to the badge inside the site.

import * as ext from './ext.js';
import { MSG, send } from './messages.js';
import { videoId } from './state.js';
import { COLORS, TITLES, percent } from './verdict.js';

const SVG = 'http://www.w3.org/2000/svg';
const $ = (id) => document.getElementById(id);
const videoKey = location.hash.slice(1);

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

/** Per-frame scores as bars, the threshold as a line, tamper (▲) and purified (●) markers. */
function drawTimeline(verdict) {
  const box = $('timeline');
  box.replaceChildren();
  // In time order: captured frames of a looping clip may arrive out of order.
  const points = [...(verdict?.timeline ?? [])].sort((a, b) => a.t - b.t);
  box.dataset.points = String(points.length);
  box.dataset.tamper = String(
    points.filter((p) => p.tamper !== null && p.tamper >= (verdict.tamper?.threshold ?? Infinity)).length,
  );
  box.dataset.purified = String(points.filter((p) => typeof p.purified_score === 'number').length);
  if (!points.length) return;
  const W = 300;
  const H = 70;
  const top = 10;
  const step = W / points.length;
  const threshold = verdict.model?.threshold ?? 0.5;
  points.forEach((p, i) => {
    const x = i * step;
    if (typeof p.score === 'number') {
      const h = Math.max(1, p.score * (H - top));
      const color = p.score >= threshold ? COLORS.manipulated : COLORS.authentic;
      const bar = svg('rect', { x: x + step * 0.1, y: H - h, width: Math.max(1, step * 0.8), height: h, fill: color });
      bar.classList.add('bar');
      const title = svg('title', {});
      title.textContent = `t=${Number(p.t).toFixed(1)} s score ${p.score.toFixed(3)}`;
      bar.append(title);
      box.append(bar);
    }
    if (p.tamper !== null && p.tamper >= (verdict.tamper?.threshold ?? Infinity)) {
      const cx = x + step / 2;
      box.append(svg('path', { d: `M${cx - 4} 9 L${cx + 4} 9 L${cx} 2 Z`, fill: COLORS.tampered, class: 'tamper' }));
    }
    if (typeof p.purified_score === 'number') {
      const cy = H - p.purified_score * (H - top);
      box.append(svg('circle', { cx: x + step / 2, cy, r: 3, fill: '#f59e0b', class: 'purified' }));
    }
  });
  const y = H - threshold * (H - top);
  box.append(
    svg('line', { x1: 0, x2: W, y1: y, y2: y, stroke: 'currentColor', 'stroke-dasharray': '4 3', 'stroke-width': 1 }),
  );
}

function render(record, serverUrl) {
  const verdict = record.verdict;
  const state = record.state;
  document.body.dataset.state = state;
  $('label').textContent = TITLES[state] ?? state;
  $('label').style.background = COLORS[state] ?? COLORS.idle;
  $('demo').hidden = !(verdict?.model?.demo ?? record.demo);
  const p = record.progress ?? {};
  $('summary').textContent =
    state === 'checking'
      ? `Checking (${p.phase ?? 'starting'})${p.frames ? `, ${p.frames} frames scored` : ''}${typeof p.fraction === 'number' ? `, ${percent(p.fraction)}` : ''}`
      : (verdict?.reason ?? (state === 'idle' ? 'Not checked yet: click the badge to check this video.' : ''));
  $('error').hidden = state !== 'error';
  $('error').textContent = record.error?.message ?? '';
  drawTimeline(verdict);
  $('details').hidden = !verdict;
  if (!verdict) return;
  const threshold = verdict.model?.threshold;
  $('score').textContent =
    verdict.score === null || verdict.score === undefined
      ? 'n/a'
      : `${verdict.score.toFixed(3)} (${percent(verdict.score)} likely manipulated; threshold ${threshold?.toFixed?.(3) ?? 'n/a'})`;
  const faces = verdict.faces ?? {};
  $('faces').textContent =
    `${faces.total ?? 0} in ${faces.frames_with_faces ?? 0} of ${verdict.frames_analyzed ?? 0} frames (at most ${faces.max_per_frame ?? 0} per frame)`;
  const t = verdict.tamper ?? {};
  // Captured frames are checked only where a lossless face patch came with them: say how many were.
  const checked = t.checked_frames ?? null;
  $('tamper').textContent =
    `${t.suspicious_frames ?? 0} suspicious frames, ${t.purified_frames ?? 0} purified` +
    (checked === null ? '' : ` (${checked} of ${verdict.faces?.frames_with_faces ?? 0} face frames checked)`);
  $('cached').textContent = record.cached
    ? `cached${verdict.cache?.matched_by ? ` (matched by ${verdict.cache.matched_by})` : ''}`
    : 'fresh';
  const m = verdict.model ?? {};
  $('model').textContent = `${m.id ?? '?'} v${m.version ?? '?'}${m.architecture ? ` (${m.architecture})` : ''}`;
  const checkId = verdict.check_id ?? record.checkId;
  if (checkId) {
    $('report').href = `${serverUrl}/checks/${encodeURIComponent(checkId)}`;
    $('report').hidden = false;
  }
}

async function refresh() {
  try {
    const found = await send(MSG.GET_VIDEO, { videoKey });
    if (!found) {
      $('summary').textContent = 'This video is no longer tracked.';
      return null;
    }
    render(found.record, found.serverUrl);
    return found.record;
  } catch (err) {
    $('error').hidden = false;
    $('error').textContent = String(err?.message ?? err);
    return null;
  }
}

const first = await refresh();
if (first) {
  const key = videoId(first.tabId, videoKey);
  ext.onStorageChanged((changes, area) => area === 'session' && key in changes && refresh());
}
