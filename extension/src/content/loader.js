// The content script the browser injects. A classic script cannot use `import`, so it loads the
// module graph (listed in web_accessible_resources); the modules run in this same isolated world.
// This is the one chrome.*/browser.* call outside ext.js: nothing can be imported before it.
(() => {
  const api = globalThis.browser ?? globalThis.chrome;
  import(api.runtime.getURL('content/main.js')).catch((err) => console.error('Unmask: cannot start', err));
})();
