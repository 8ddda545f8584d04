// The toolbar popup: the verdicts on the current tab, and "check this page" (activeTab).

import * as ext from './ext.js';
import { MSG, send } from './messages.js';
import { COLORS, badgeText, viewOf } from './verdict.js';

const $ = (id) => document.getElementById(id);

// ?tab=<id> names the tab explicitly (the popup opened as a page, e.g. in tests).
async function currentTabId() {
  const named = Number.parseInt(new URLSearchParams(location.search).get('tab') ?? '', 10);
  if (Number.isInteger(named)) return named;
  return (await ext.activeTab())?.id;
}

function row(record) {
  const li = document.createElement('li');
  li.dataset.state = record.state;
  const label = document.createElement('span');
  label.className = 'label';
  label.style.background = COLORS[record.state] ?? COLORS.idle;
  label.textContent = badgeText(viewOf(record));
  const src = document.createElement('span');
  src.className = 'src';
  // The file name says which video it is; the whole address is in the tooltip.
  src.textContent =
    record.kind === 'url' ? record.src.split(/[?#]/)[0].split('/').pop() || record.src : 'captured frames';
  src.title = record.src ?? 'frames captured from the page';
  li.append(label, src);
  if (record.cached) {
    const cached = document.createElement('span');
    cached.className = 'muted';
    cached.textContent = 'cached';
    li.append(cached);
  }
  if (viewOf(record).demo) {
    const demo = document.createElement('span');
    demo.className = 'demo';
    demo.textContent = 'demo model';
    li.append(demo);
  }
  return li;
}

async function refresh(tabId) {
  const { videos } = await send(MSG.TAB_VIDEOS, { tabId });
  videos.sort((a, b) => (a.createdAt ?? 0) - (b.createdAt ?? 0));
  $('videos').replaceChildren(...videos.map(row));
  $('empty').hidden = videos.length > 0;
}

const tabId = await currentTabId();
$('options').addEventListener('click', () => ext.openOptionsPage());
$('check').addEventListener('click', async () => {
  $('status').textContent = 'Starting…';
  try {
    await send(MSG.CHECK_TAB, { tabId });
    $('status').textContent = 'Checking the videos on this page.';
  } catch (err) {
    $('status').textContent = `Cannot check this page: ${err.message}`;
  }
});
if (Number.isInteger(tabId)) {
  await refresh(tabId).catch((err) => {
    $('status').textContent = String(err.message ?? err);
  });
  ext.onStorageChanged((_changes, area) => area === 'session' && refresh(tabId).catch(() => {}));
}
