// The IDE's service worker: the page and its files come from this cache, so the IDE opens at
// once and without a network; each time the page opens, the files are asked again in the
// background (no-cache: a 304 when nothing changed) and, when the server's files changed, the
// cache takes the new ones together and the page is told (it offers to reload).
// Runs and the API are never cached here: they go to the network as if there were no worker.
// web/src/assets.rs serves this file with `Service-Worker-Allowed: /` (its scope is the page).
'use strict';

const CACHE = 'onpyrunner-ide';
// Everything the page loads; a test in web/src/assets.rs keeps this list true.
const FILES = [
  '/',
  '/assets/app.js',
  '/assets/app.css',
  '/assets/i18n.js',
  '/assets/icon.svg',
  '/assets/icon-192.png',
  '/assets/icon-512.png',
  '/assets/manifest.webmanifest',
  '/assets/vendor/xterm/xterm.js',
  '/assets/vendor/xterm/xterm.css',
  '/assets/vendor/xterm-addon-fit/addon-fit.js',
  '/assets/vendor/codemirror/codemirror.js',
  '/assets/vendor/codemirror/lang-python.js',
  '/assets/vendor/codemirror/lang-javascript.js',
  '/assets/vendor/codemirror/lang-java.js',
  '/assets/vendor/codemirror/lang-cpp.js',
];

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(CACHE)
    .then((cache) => cache.addAll(FILES.map((f) => new Request(f, { cache: 'no-cache' }))))
    .then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  event.waitUntil(self.clients.claim());
});

// Fetches every file again; if any changed, stores them all and tells the pages.
let refreshing = null;
function refresh() {
  if (refreshing) return refreshing;
  refreshing = (async () => {
    const cache = await caches.open(CACHE);
    const fresh = await Promise.all(FILES.map((f) => fetch(f, { cache: 'no-cache' })));
    if (!fresh.every((r) => r.ok)) return;
    let changed = false;
    for (let i = 0; i < FILES.length; i++) {
      const old = await cache.match(FILES[i]);
      if (!old || old.headers.get('etag') !== fresh[i].headers.get('etag')) changed = true;
    }
    if (!changed) return;
    await Promise.all(FILES.map((f, i) => cache.put(f, fresh[i])));
    for (const client of await self.clients.matchAll()) client.postMessage({ type: 'updated' });
  })().catch(() => { /* offline: keep what we have */ }).finally(() => { refreshing = null; });
  return refreshing;
}

self.addEventListener('fetch', (event) => {
  const request = event.request;
  if (request.method !== 'GET') return;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  const path = url.pathname;
  if (!FILES.includes(path)) return;
  event.respondWith((async () => {
    const cached = await caches.match(path);
    if (request.mode === 'navigate') event.waitUntil(refresh());
    return cached || fetch(request);
  })());
});
