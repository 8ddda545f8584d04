// Unit tests of the pure modules (node --test): SSE parsing, settings, hashes, badge texts.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { normalizeServerUrl, serverPattern, sitePatterns, validateSettings } from '../src/config.js';
import { hammingHex, phashHex } from '../src/phash.js';
import { expectedBoxes, nextGrow, patchRegion, recordFaces } from '../src/content/frames.js';
import { PATCH_GROW, PATCH_GROW_MAX } from '../src/limits.js';
import { sseParser } from '../src/sse.js';
import { badgeText, stateOfLabel, viewOf } from '../src/verdict.js';

test('SSE events split across chunks and line endings are reassembled', () => {
  const events = [];
  let comments = 0;
  const feed = sseParser(
    (e) => events.push(e),
    () => comments++,
  );
  for (const chunk of [
    'id: 1\nevent: progress\nda',
    'ta: {"a":1}\n\n: keep-alive\n\r',
    '\nid: 2\r\nevent: verdict\r\ndata: {}\r',
    '\n\r\n',
  ])
    feed(chunk);
  assert.deepEqual(events, [
    { event: 'progress', data: '{"a":1}', id: '1' },
    { event: 'verdict', data: '{}', id: '2' },
  ]);
  assert.equal(comments, 1);
});

test('sites become match patterns; bad lines are refused', () => {
  assert.deepEqual(sitePatterns('Example.com'), ['*://example.com/*', '*://*.example.com/*']);
  assert.deepEqual(sitePatterns('127.0.0.1'), ['*://127.0.0.1/*']);
  assert.deepEqual(sitePatterns('*'), ['http://*/*', 'https://*/*']);
  assert.deepEqual(sitePatterns('https://*.example.org/videos/*'), ['https://*.example.org/videos/*']);
  assert.equal(sitePatterns('javascript:alert(1)'), null);
  assert.equal(sitePatterns('ftp://x.org/*'), null);
});

test('settings validation names the bad field and lists every pattern to ask for', () => {
  const ok = validateSettings({ serverUrl: 'https://u.example/api/', sites: 'a.org\n', mode: 'click', allowFrames: 1 });
  assert.deepEqual(ok.errors, {});
  assert.equal(ok.settings.serverUrl, 'https://u.example/api');
  assert.deepEqual(ok.patterns, ['*://a.org/*', '*://*.a.org/*', 'https://u.example/*']);
  assert.equal(ok.settings.allowFrames, true);
  const bad = validateSettings({ serverUrl: 'file:///etc/passwd', token: 'two words', sites: 'bad site' });
  assert.deepEqual(Object.keys(bad.errors).sort(), ['serverUrl', 'sites', 'token']);
  assert.equal(normalizeServerUrl('http://user:pw@x.org'), null);
  assert.equal(serverPattern('http://127.0.0.1:8000'), 'http://127.0.0.1/*');
});

test('pHash: a known frame, brightness invariance, and hamming distance', () => {
  const width = 64;
  const height = 48;
  const data = new Uint8ClampedArray(width * height * 4);
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 4;
      data[i] = (x * 4) % 256;
      data[i + 1] = (y * 5) % 256;
      data[i + 2] = ((x + y) * 3) % 256;
      data[i + 3] = 255;
    }
  const hash = phashHex({ data, width, height });
  assert.match(hash, /^[0-9a-f]{16}$/);
  const brighter = data.map((v, i) => (i % 4 === 3 ? v : Math.min(255, v + 10)));
  assert.ok(hammingHex(hash, phashHex({ data: brighter, width, height })) <= 4);
  assert.equal(hammingHex('0000000000000000', 'ffffffffffffffff'), 64);
});

test('badge texts and states', () => {
  assert.equal(stateOfLabel('authentic'), 'authentic');
  assert.equal(stateOfLabel('something-new'), 'inconclusive'); // never shown as authentic
  assert.equal(badgeText({ state: 'manipulated', score: 0.873 }), 'Manipulated · 87%');
  assert.equal(badgeText({ state: 'checking', progress: { fraction: 0.4 } }), 'Checking… 40%');
  assert.equal(badgeText({ state: 'checking', progress: { frames: 3 } }), 'Checking… 3 frames');
  const view = viewOf({ videoKey: 'k', state: 'tampered', verdict: { score: 0.2, model: { demo: true } }, cached: 1 });
  assert.deepEqual(view, {
    videoKey: 'k',
    state: 'tampered',
    score: 0.2,
    cached: true,
    demo: true,
    progress: null,
    error: null,
  });
});

test('lossless patch region: faces grown around their centres, joined, clipped to the frame', () => {
  assert.equal(PATCH_GROW, 2.2); // the numbers below
  assert.equal(patchRegion(null, 640, 360), null);
  assert.equal(patchRegion([], 640, 360), null);
  const side = 80 * PATCH_GROW; // the server's crop is 1.3x the box: this leaves room for motion
  assert.deepEqual(patchRegion([[280, 140, 80, 80]], 640, 360), {
    x: 320 - side / 2,
    y: 180 - side / 2,
    width: side,
    height: side,
  });
  // At the frame's corner: clipped.
  const reach = Math.ceil(20 + (40 * PATCH_GROW) / 2);
  assert.deepEqual(patchRegion([[0, 0, 40, 40]], 640, 360), { x: 0, y: 0, width: reach, height: reach });
  // Two faces: one region around both.
  assert.deepEqual(
    patchRegion(
      [
        [100, 100, 20, 20],
        [300, 200, 20, 20],
      ],
      640,
      360,
    ),
    { x: 110 - 22, y: 110 - 22, width: 200 + 44, height: 100 + 44 }, // half of 20 * PATCH_GROW = 22
  );
});

test('face history: the two latest frames with faces; junk and faceless frames change nothing', () => {
  assert.deepEqual(recordFaces([], undefined), []);
  let h = recordFaces([], [{ t: 0, boxes: [] }]);
  assert.deepEqual(h, []);
  h = recordFaces(h, [
    { t: 0, boxes: [[1, 2, 3, 4]] },
    { t: 0.5, boxes: [[5, 6, 7, 8]] },
    { t: 1, boxes: [] },
  ]);
  assert.deepEqual(h, [
    { t: 0, boxes: [[1, 2, 3, 4]] },
    { t: 0.5, boxes: [[5, 6, 7, 8]] },
  ]);
  assert.deepEqual(
    recordFaces(h, [
      { t: 1, boxes: [[1, 2, 3]] },
      { t: 1.5, boxes: [[1, 2, 3, 'x']] },
    ]),
    h,
  );
  assert.deepEqual(recordFaces(h, [{ t: 2, boxes: [[9, 9, 9, 9]] }]).at(-1), { t: 2, boxes: [[9, 9, 9, 9]] });
});

test('expected boxes: the latest, and each face moved on at its last speed', () => {
  assert.equal(expectedBoxes([], 1), null);
  const still = [{ t: 1, boxes: [[100, 50, 80, 80]] }];
  assert.deepEqual(expectedBoxes(still, 2), [[100, 50, 80, 80]]);
  const moving = [
    { t: 1, boxes: [[100, 50, 80, 80]] },
    { t: 1.5, boxes: [[140, 50, 80, 80]] },
  ];
  // 40 px per half second; one second after the last frame: 80 px further.
  assert.deepEqual(expectedBoxes(moving, 2.5), [
    [140, 50, 80, 80],
    [220, 50, 80, 80],
  ]);
  // No prediction backwards (a looping video starts over) or too far ahead.
  assert.deepEqual(expectedBoxes(moving, 0.2), [[140, 50, 80, 80]]);
  assert.deepEqual(expectedBoxes(moving, 60), [[140, 50, 80, 80]]);
  // A box of another size in the frame before is not the same face.
  const other = [
    { t: 1, boxes: [[100, 50, 20, 20]] },
    { t: 1.5, boxes: [[140, 50, 80, 80]] },
  ];
  assert.deepEqual(expectedBoxes(other, 2), [[140, 50, 80, 80]]);
});

test('patch growth: larger after a face left its patch, back towards the default once covered', () => {
  const sent = [{ jpeg: 'a' }, { jpeg: 'b', patch: 'p' }, { jpeg: 'c', patch: 'p' }];
  const missed = [
    { boxes: [[1, 1, 9, 9]], tamper_checked: false }, // no patch sent: says nothing
    { boxes: [[1, 1, 9, 9]], tamper_checked: true },
    { boxes: [[1, 1, 9, 9]], tamper_checked: false },
  ];
  assert.equal(nextGrow(PATCH_GROW, sent, missed), PATCH_GROW * 1.5);
  assert.equal(nextGrow(PATCH_GROW_MAX, sent, missed), PATCH_GROW_MAX);
  const covered = missed.map((f) => ({ ...f, tamper_checked: true }));
  assert.equal(nextGrow(4, sent, covered), 4 / 1.25);
  assert.equal(nextGrow(PATCH_GROW, sent, covered), PATCH_GROW);
  // Patched frames without a face, or a reply without faces: unchanged.
  assert.equal(nextGrow(3, sent, [{}, { boxes: [] }, { boxes: [] }]), 3);
  assert.equal(nextGrow(3, sent, undefined), 3);
});
