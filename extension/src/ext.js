// The only module that touches the browser's extension API (chrome.* / browser.*).
//
// Everything else imports these wrappers, so browser differences and "the worker went away"
// failures are handled in one place.

const api = globalThis.browser ?? globalThis.chrome;

// ---------------------------------------------------------------- runtime
export const runtimeId = () => api.runtime.id;
export const getURL = (path) => api.runtime.getURL(path);
export const manifest = () => api.runtime.getManifest();
export const openOptionsPage = () => api.runtime.openOptionsPage();
export const onInstalled = (fn) => api.runtime.onInstalled.addListener(fn);
export const onStartup = (fn) => api.runtime.onStartup.addListener(fn);

/** Send a message to the extension's background; resolves undefined when nobody answers. */
export async function sendMessage(message) {
  try {
    return await api.runtime.sendMessage(message);
  } catch (err) {
    // "Receiving end does not exist" / "Extension context invalidated": the caller decides.
    return { ok: false, error: { code: 'no_receiver', message: String(err?.message ?? err) } };
  }
}

/** Send a message to one frame of a tab (``frameId`` null: all frames); undefined when gone. */
export async function sendTabMessage(tabId, frameId, message) {
  try {
    return await api.tabs.sendMessage(tabId, message, frameId === null ? {} : { frameId });
  } catch {
    return undefined; // the page navigated away or the content script is gone: nothing to tell
  }
}

/** Listen for messages; ``fn(message, sender, sendResponse)`` returns true for async replies. */
export const onMessage = (fn) => api.runtime.onMessage.addListener(fn);
export const offMessage = (fn) => api.runtime.onMessage.removeListener(fn);
export const contextAlive = () => {
  try {
    return !!api.runtime?.id;
  } catch {
    return false;
  }
};

// ---------------------------------------------------------------- storage
// Settings live in sync (small, non-secret) and local (the token); state lives in session.
export const syncGet = (defaults) => api.storage.sync.get(defaults);
export const syncSet = (values) => api.storage.sync.set(values);
export const localGet = (defaults) => api.storage.local.get(defaults);
export const localSet = (values) => api.storage.local.set(values);
export const sessionGet = (keys) => api.storage.session.get(keys);
export const sessionSet = (values) => api.storage.session.set(values);
export const sessionRemove = (keys) => api.storage.session.remove(keys);
export const onStorageChanged = (fn) => api.storage.onChanged.addListener(fn);

// ---------------------------------------------------------------- tabs and capture
export const getTab = (tabId) => api.tabs.get(tabId);
export const activeTab = async () => (await api.tabs.query({ active: true, currentWindow: true }))[0];
export const onTabRemoved = (fn) => api.tabs.onRemoved.addListener(fn);
export const captureVisibleTab = (windowId) => api.tabs.captureVisibleTab(windowId, { format: 'png' });

// ---------------------------------------------------------------- scripting and permissions
export const registeredScripts = (ids) => api.scripting.getRegisteredContentScripts(ids ? { ids } : undefined);
export const registerScripts = (scripts) => api.scripting.registerContentScripts(scripts);
export const unregisterScripts = (ids) => api.scripting.unregisterContentScripts({ ids });
export const executeScript = (tabId, files) =>
  api.scripting.executeScript({ target: { tabId, allFrames: true }, files });
export const requestOrigins = (origins) => api.permissions.request({ origins });
export const hasOrigins = (origins) => api.permissions.contains({ origins });
export const onPermissionsRemoved = (fn) => api.permissions.onRemoved.addListener(fn);

// ---------------------------------------------------------------- alarms and the toolbar button
export const alarmCreate = (name, periodInMinutes) => api.alarms.create(name, { periodInMinutes });
export const alarmClear = (name) => api.alarms.clear(name);
export const onAlarm = (fn) => api.alarms.onAlarm.addListener(fn);

export async function setActionBadge(tabId, text, color) {
  try {
    await api.action.setBadgeText({ tabId, text });
    if (color) await api.action.setBadgeBackgroundColor({ tabId, color });
  } catch {
    // the tab closed meanwhile
  }
}
