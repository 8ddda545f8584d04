// Finds every <video> on the page, including ones added later and ones inside open shadow roots.

import { RESCAN_MS } from '../limits.js';

export class VideoFinder {
  /** ``onFound(video)`` for each new video, ``onLost(video)`` when one leaves the document. */
  constructor({ onFound, onLost }) {
    this.onFound = onFound;
    this.onLost = onLost;
    this.videos = new Set();
    this.roots = new WeakSet();
    this.observers = [];
    this.timer = null;
  }

  start() {
    this.watch(document);
    this.scan(document);
    // attachShadow() after insertion fires no mutation: look again now and then.
    this.timer = setInterval(() => {
      this.scan(document);
      this.sweep();
    }, RESCAN_MS);
  }

  stop() {
    this.observers.forEach((o) => o.disconnect());
    this.observers = [];
    clearInterval(this.timer);
    this.videos.clear();
  }

  watch(root) {
    if (this.roots.has(root)) return;
    this.roots.add(root);
    const observer = new MutationObserver((records) => this.changed(records));
    observer.observe(root, { childList: true, subtree: true });
    this.observers.push(observer);
  }

  changed(records) {
    let removed = false;
    for (const record of records) {
      if (record.removedNodes.length) removed = true;
      for (const node of record.addedNodes) if (node.nodeType === Node.ELEMENT_NODE) this.scan(node);
    }
    if (removed) this.sweep();
  }

  /** Every video in ``root`` and in the open shadow roots below it. */
  scan(root) {
    if (root instanceof HTMLVideoElement) this.found(root);
    if (root.shadowRoot) this.enter(root.shadowRoot);
    for (const video of root.querySelectorAll('video')) this.found(video);
    for (const el of root.querySelectorAll('*')) if (el.shadowRoot) this.enter(el.shadowRoot);
  }

  enter(shadow) {
    if (!this.roots.has(shadow)) this.watch(shadow);
    this.scan(shadow);
  }

  found(video) {
    if (this.videos.has(video)) return;
    this.videos.add(video);
    this.onFound(video);
  }

  /** Videos no longer in the document are lost (their badge goes with them). */
  sweep() {
    for (const video of [...this.videos]) {
      if (!video.isConnected) {
        this.videos.delete(video);
        this.onLost(video);
      }
    }
  }
}
