// The content script's composition root: one instance per document, a VideoCheck per video.

import * as ext from '../ext.js';
import { FROM, MSG, TARGET, expect, isKey, listen, send } from '../messages.js';
import { STATES } from '../verdict.js';
import { VideoFinder } from './finder.js';
import { VideoCheck } from './video-check.js';

const INSTANCE = Symbol.for('unmask.content');

class PageController {
  constructor(options) {
    this.options = options;
    this.registry = new Map(); // videoKey → VideoCheck
    this.byVideo = new Map();
  }

  start() {
    this.unlisten = listen(TARGET.content, {
      [MSG.VIDEO_UPDATE]: {
        from: [FROM.background],
        validate: (d) => {
          expect(isKey(d.videoKey) && STATES.includes(d.state), 'video update');
          return d;
        },
        handle: (view) => this.registry.get(view.videoKey)?.update(view),
      },
      // The user asked from the popup to check this page now.
      [MSG.RUN_ALL]: {
        from: [FROM.background],
        handle: () => {
          this.options = { ...this.options, forced: true };
          for (const check of this.byVideo.values()) check.runNow();
        },
      },
    });
    this.finder = new VideoFinder({ onFound: (v) => this.add(v), onLost: (v) => this.remove(v) });
    this.finder.start();
    // The extension was reloaded or removed: this script is an orphan and clears its badges.
    this.watchdog = setInterval(() => ext.contextAlive() || this.destroy(), 2000);
  }

  add(video) {
    if (!this.byVideo.has(video)) this.byVideo.set(video, new VideoCheck(video, this.options, this.registry));
  }

  remove(video) {
    this.byVideo.get(video)?.destroy();
    this.byVideo.delete(video);
  }

  destroy() {
    clearInterval(this.watchdog);
    this.finder.stop();
    this.unlisten?.();
    for (const video of [...this.byVideo.keys()]) this.remove(video);
    delete globalThis[INSTANCE];
  }
}

async function main() {
  const hello = await send(MSG.HELLO, {});
  const controller = new PageController(hello);
  controller.start();
  return controller;
}

// Injected twice (registered script + the popup's "check this page")? The first one stays.
if (!globalThis[INSTANCE]) {
  globalThis[INSTANCE] = main().catch((err) => {
    delete globalThis[INSTANCE];
    console.warn('Unmask: not started:', err?.message ?? err);
  });
}
