// Settings (storage.sync, the token in storage.local) and their validation.
//
// Nothing here is kept in module variables: the background worker is stopped when idle and
// must find everything again in storage when it wakes.

import * as ext from './ext.js';

export const MODES = Object.freeze({ auto: 'auto', click: 'click' });

/** Defaults of a fresh install: nothing runs until the user picks sites in the options. */
export const DEFAULTS = Object.freeze({
  serverUrl: 'http://127.0.0.1:8000',
  mode: MODES.auto,
  sites: [],
  allowFrames: true,
});

/** The current settings, defaults filled in. */
export async function loadSettings() {
  const [synced, local] = await Promise.all([ext.syncGet({ ...DEFAULTS }), ext.localGet({ token: '' })]);
  return { ...DEFAULTS, ...synced, token: local.token ?? '' };
}

/** Store validated settings; the token stays on this device. */
export async function saveSettings(settings) {
  const { token, ...rest } = settings;
  await Promise.all([ext.syncSet(rest), ext.localSet({ token })]);
}

/** The server's base URL without a trailing slash, or null if it is not http(s). */
export function normalizeServerUrl(raw) {
  let url;
  try {
    url = new URL(String(raw).trim());
  } catch {
    return null;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return null;
  if (url.username || url.password || url.search || url.hash) return null;
  return url.origin + url.pathname.replace(/\/+$/, '');
}

/** The host permission pattern that covers the server (ports are not part of match patterns). */
export function serverPattern(serverUrl) {
  const url = new URL(serverUrl);
  return `${url.protocol}//${url.hostname}/*`;
}

const PATTERN = /^(\*|https?):\/\/(\*|(\*\.)?[^/*:]+)(:\d+)?\/.*$/;

/**
 * Match patterns for one line of the "sites" box.
 *
 * ``example.com`` → the site and its subdomains over http and https; ``*`` → every site;
 * a full match pattern is kept as it is. Returns null for anything else.
 */
export function sitePatterns(line) {
  const text = String(line).trim().toLowerCase();
  if (!text) return [];
  if (text === '*' || text === '<all_urls>') return ['http://*/*', 'https://*/*'];
  if (text.includes('://')) return PATTERN.test(text) ? [text] : null;
  if (!/^[a-z0-9.-]+(:\d+)?$/.test(text) || text.startsWith('.') || text.endsWith('.')) return null;
  const host = text.replace(/:\d+$/, '');
  if (/^[\d.]+$/.test(host)) return [`*://${host}/*`]; // an IP address has no subdomains
  return [`*://${host}/*`, `*://*.${host}/*`];
}

/**
 * Validate the raw form values.
 *
 * Returns ``{settings, patterns, errors}``: the settings to store, every match pattern they
 * need (sites + server), and one message per bad field.
 */
export function validateSettings(raw) {
  const errors = {};
  const serverUrl = normalizeServerUrl(raw.serverUrl ?? '');
  if (!serverUrl) errors.serverUrl = 'Enter the server address, like https://unmask.example.org';
  const token = String(raw.token ?? '').trim();
  if (token.length > 512 || /[\s\u0000-\u001f]/.test(token)) errors.token = 'The token must be one line without spaces';
  const mode = raw.mode === MODES.click ? MODES.click : MODES.auto;
  const sites = [];
  const patterns = new Set();
  for (const line of String(raw.sites ?? '').split(/[\n,]+/)) {
    const found = sitePatterns(line);
    if (found === null) {
      errors.sites = `Not a site or match pattern: ${line.trim().slice(0, 80)}`;
      continue;
    }
    if (found.length) sites.push(line.trim().toLowerCase());
    found.forEach((p) => patterns.add(p));
  }
  const sitePatternList = [...patterns];
  if (serverUrl) patterns.add(serverPattern(serverUrl));
  return {
    settings: { serverUrl, token, mode, sites, allowFrames: !!raw.allowFrames },
    sitePatterns: sitePatternList,
    patterns: [...patterns],
    errors,
  };
}
