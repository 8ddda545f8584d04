// The badge over one video: its own closed shadow root, positioned over the video's top-left
// corner, following resizes and scrolling, removed with the video. Text goes in via textContent.

import * as ext from '../ext.js';
import { MIN_VIDEO_PX } from '../limits.js';
import { COLORS, badgeDescription, badgeText } from '../verdict.js';

const CSS = `
.badge {
  display: inline-flex; align-items: center; gap: 6px; max-width: 320px;
  font: 600 12px/1.2 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: #fff; background: var(--color, #4b5563); border: 0; border-radius: 12px;
  padding: 4px 10px 4px 8px; cursor: pointer; box-shadow: 0 1px 4px rgba(0,0,0,.35);
  opacity: .94; white-space: nowrap;
}
.badge:hover, .badge:focus-visible { opacity: 1; outline: 2px solid #fff; outline-offset: 1px; }
.dot { width: 8px; height: 8px; border-radius: 50%; background: #fff; flex: none; }
.checking .dot { animation: pulse 1s ease-in-out infinite alternate; }
@keyframes pulse { from { opacity: .3 } to { opacity: 1 } }
.text { overflow: hidden; text-overflow: ellipsis; }
.demo { font-weight: 700; font-size: 10px; text-transform: uppercase; letter-spacing: .04em;
  background: #fde68a; color: #78350f; border-radius: 6px; padding: 1px 5px; }
.wrap { font: 12px/1.3 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
.detail { display: block; width: max-content; max-width: 300px; margin-top: 4px; padding: 4px 8px;
  font-weight: 400; font-size: 11px; white-space: normal; color: #fff; background: rgba(17, 24, 39, .88);
  border-radius: 6px; }
iframe { display: block; margin-top: 6px; width: 360px; height: 340px; border: 0; border-radius: 10px;
  box-shadow: 0 4px 18px rgba(0,0,0,.45); background: #fff; color-scheme: light; }
[hidden] { display: none !important; }
`;

function styleRoot(root) {
  try {
    const sheet = new CSSStyleSheet();
    sheet.replaceSync(CSS);
    root.adoptedStyleSheets = [sheet];
  } catch {
    const style = document.createElement('style'); // older engines, Firefox xrays
    style.textContent = CSS;
    root.append(style);
  }
}

function el(tag, className) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  return node;
}

export class Badge {
  /** ``onClick()`` runs when the user activates the badge. */
  constructor(video, { onClick }) {
    this.video = video;
    this.host = document.createElement('unmask-badge');
    this.host.setAttribute('data-unmask-badge', '');
    // Inline and important: no page rule can move or restyle the host (a :host rule could not win).
    this.host.style.setProperty('all', 'initial', 'important');
    const root = this.host.attachShadow({ mode: 'closed' });
    styleRoot(root);
    this.button = el('button', 'badge');
    this.button.type = 'button';
    this.dot = el('span', 'dot');
    this.text = el('span', 'text');
    this.demo = el('span', 'demo');
    this.demo.textContent = 'demo model';
    this.demo.hidden = true;
    this.button.append(this.dot, this.text, this.demo);
    this.detail = el('span', 'detail');
    this.detail.hidden = true;
    this.frame = null;
    this.wrap = el('div', 'wrap');
    this.wrap.append(this.button, this.detail);
    root.append(this.wrap);
    this.root = root;
    // The whole badge (button and error line) opens the panel; clicks inside the panel stay there.
    this.wrap.addEventListener('click', (event) => {
      event.stopPropagation(); // the page's own click handlers (play/pause) must not fire
      event.preventDefault();
      onClick();
    });
    this.schedule = () => {
      if (!this.pending) this.pending = requestAnimationFrame(() => this.place());
    };
    this.resizeObserver = new ResizeObserver(this.schedule);
    this.resizeObserver.observe(video);
    window.addEventListener('scroll', this.schedule, { capture: true, passive: true });
    window.addEventListener('resize', this.schedule, { passive: true });
    this.ticker = setInterval(this.schedule, 500); // layout shifts without resize (animations, reflow)
    document.documentElement.append(this.host);
    this.place();
  }

  /** Show a video view ``{state, score, cached, demo, progress, error}``. */
  render(view, videoKey) {
    const h = this.host;
    h.setAttribute('data-unmask-badge', videoKey);
    h.setAttribute('data-state', view.state);
    h.setAttribute('data-demo', String(!!view.demo));
    h.setAttribute('data-cached', String(!!view.cached));
    this.button.className = `badge ${view.state}`;
    this.button.style.setProperty('--color', COLORS[view.state] ?? COLORS.idle);
    this.text.textContent = badgeText(view);
    this.demo.hidden = !view.demo;
    const description = badgeDescription(view);
    this.button.title = description;
    this.button.setAttribute('aria-label', description);
    this.detail.hidden = view.state !== 'error' || !view.error?.message;
    this.detail.textContent = view.error?.message ?? '';
  }

  /** Open or close the details panel (our own page, framed: the site cannot read or change it). */
  togglePanel(videoKey) {
    if (this.frame) {
      this.frame.remove();
      this.frame = null;
      this.host.removeAttribute('data-panel');
      return;
    }
    this.frame = el('iframe');
    this.frame.src = `${ext.getURL('panel.html')}#${videoKey}`;
    this.frame.title = 'Unmask: details of this video';
    this.wrap.append(this.frame);
    this.host.setAttribute('data-panel', 'open');
    this.place();
  }

  /** Hide for a moment (a tab capture must not photograph the badge). */
  setVisible(visible) {
    this.host.style.setProperty('visibility', visible ? 'visible' : 'hidden', 'important');
  }

  place() {
    this.pending = 0;
    const r = this.video.getBoundingClientRect();
    const shown =
      this.video.isConnected &&
      r.width >= MIN_VIDEO_PX &&
      r.height >= MIN_VIDEO_PX &&
      r.bottom > 0 &&
      r.right > 0 &&
      r.top < innerHeight &&
      r.left < innerWidth;
    const s = this.host.style;
    s.setProperty('display', shown ? 'block' : 'none', 'important');
    if (!shown) return;
    s.setProperty('position', 'fixed', 'important');
    s.setProperty('z-index', '2147483647', 'important');
    s.setProperty('top', `${Math.max(0, Math.min(r.top + 8, innerHeight - 32))}px`, 'important');
    s.setProperty('left', `${Math.max(0, Math.min(r.left + 8, innerWidth - 120))}px`, 'important');
  }

  /** True when the video is big enough to deserve a check. */
  get sized() {
    const r = this.video.getBoundingClientRect();
    return r.width >= MIN_VIDEO_PX && r.height >= MIN_VIDEO_PX;
  }

  destroy() {
    this.resizeObserver.disconnect();
    window.removeEventListener('scroll', this.schedule, { capture: true });
    window.removeEventListener('resize', this.schedule);
    clearInterval(this.ticker);
    cancelAnimationFrame(this.pending);
    this.host.remove();
  }
}
