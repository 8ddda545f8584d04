// The options page: server, token, when and where to check, frame capture, and the disclosure.

import { loadSettings, saveSettings, validateSettings } from './config.js';
import * as ext from './ext.js';
import { MSG, send } from './messages.js';

const $ = (id) => document.getElementById(id);
const status = (text, isError = false) => {
  $('status').textContent = text;
  $('status').className = isError ? 'error' : '';
};

function fill(settings) {
  $('serverUrl').value = settings.serverUrl;
  $('token').value = settings.token;
  $(settings.mode === 'click' ? 'mode-click' : 'mode-auto').checked = true;
  $('sites').value = settings.sites.join('\n');
  $('allowFrames').checked = settings.allowFrames;
}

function read() {
  return {
    serverUrl: $('serverUrl').value,
    token: $('token').value,
    mode: $('mode-click').checked ? 'click' : 'auto',
    sites: $('sites').value,
    allowFrames: $('allowFrames').checked,
  };
}

function showErrors(errors) {
  for (const field of ['serverUrl', 'token', 'sites']) $(`${field}-error`).textContent = errors[field] ?? '';
}

$('form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const { settings, patterns, errors } = validateSettings(read());
  showErrors(errors);
  if (Object.keys(errors).length) {
    status('Please fix the fields marked in red.', true);
    return;
  }
  // Asked first, while the click still counts as a user gesture.
  let granted;
  try {
    granted = await ext.requestOrigins(patterns);
  } catch (err) {
    status(`Cannot ask for access: ${err.message}`, true);
    return;
  }
  if (!granted) {
    status('Not saved: Unmask needs access to the server and the listed sites.', true);
    return;
  }
  await saveSettings(settings);
  try {
    const { sites } = await send(MSG.APPLY_SETTINGS, {});
    status('saved');
    $('status').title = sites.length ? `active on ${sites.join(', ')}` : 'no sites enabled';
  } catch (err) {
    status(`Saved, but the sites could not be enabled: ${err.message}`, true);
  }
});

$('test').addEventListener('click', async () => {
  status('Connecting…');
  try {
    const { card } = await send(MSG.TEST_SERVER, {});
    status(`Connected: model ${card.id} v${card.version}${card.demo ? ' (demo model)' : ''}`);
  } catch (err) {
    status(err.message, true);
  }
});

fill(await loadSettings());
