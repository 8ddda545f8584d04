// How a video's state reads on the badge, the details panel and the popup (no DOM here).

/** Badge states; the last four are the server's verdict labels. */
export const STATES = Object.freeze([
  'idle',
  'checking',
  'error',
  'authentic',
  'manipulated',
  'tampered',
  'inconclusive',
]);
export const FINAL_STATES = new Set(['error', 'authentic', 'manipulated', 'tampered', 'inconclusive']);
const LABELS = new Set(['authentic', 'manipulated', 'tampered', 'inconclusive']);

/** The badge state for a verdict label (unknown labels are not trusted as authentic). */
export const stateOfLabel = (label) => (LABELS.has(label) ? label : 'inconclusive');

export const TITLES = Object.freeze({
  idle: 'Check this video',
  checking: 'Checking…',
  error: 'Check failed',
  authentic: 'Authentic',
  manipulated: 'Manipulated',
  tampered: 'Tampered',
  inconclusive: 'Inconclusive',
});

export const COLORS = Object.freeze({
  idle: '#4b5563',
  checking: '#2563eb',
  error: '#b45309',
  authentic: '#15803d',
  manipulated: '#b91c1c',
  tampered: '#7e22ce',
  inconclusive: '#4b5563',
});

export const percent = (x) => (typeof x === 'number' && Number.isFinite(x) ? `${Math.round(x * 100)}%` : 'n/a');

/** The one-line text of a badge for a video view ``{state, score, progress, error}``. */
export function badgeText(view) {
  const title = TITLES[view.state] ?? view.state;
  if (view.state === 'checking') {
    const p = view.progress ?? {};
    if (typeof p.fraction === 'number') return `${title} ${percent(p.fraction)}`;
    if (p.frames) return `${title} ${p.frames} frames`;
    return p.phase ? `${title} (${p.phase})` : title;
  }
  if (view.state === 'manipulated' || view.state === 'authentic') return `${title} · ${percent(view.score)}`;
  return title;
}

/** A sentence for screen readers and the badge's tooltip. */
export function badgeDescription(view) {
  const parts = [`Unmask: ${badgeText(view)}`];
  if (view.state === 'error' && view.error?.message) parts.push(view.error.message);
  if (view.state === 'tampered') parts.push('an adversarial perturbation aimed at the detector was found');
  if (view.cached) parts.push('cached verdict');
  if (view.demo) parts.push('demo model: not for real decisions');
  if (view.state === 'idle') parts.push('click to check');
  return parts.join('. ');
}

/** Summary the badge needs from a stored video record (kept small: it crosses into the page). */
export function viewOf(record) {
  const verdict = record.verdict;
  return {
    videoKey: record.videoKey,
    state: record.state,
    score: verdict?.score ?? null,
    cached: !!record.cached,
    demo: !!(verdict?.model?.demo ?? record.demo),
    progress: record.progress ?? null,
    error: record.error ?? null,
  };
}
