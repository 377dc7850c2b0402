// What the IDE's end-to-end test files share: the browser, a fresh IDE page, and waiting for what
// the page shows. Each test file calls useBrowser() once.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const BASE = process.env.ONPYRUNNER_URL;
// A second server, started with --tokens, and the one token it accepts.
export const TOKEN_BASE = process.env.ONPYRUNNER_TOKEN_URL;
export const TOKEN = process.env.ONPYRUNNER_TOKEN;
export const ARTIFACTS = process.env.E2E_ARTIFACTS || new URL('../../target/e2e-artifacts', import.meta.url).pathname;
export const PHONE = { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true };
export const DESKTOP = { viewport: { width: 1366, height: 860 }, deviceScaleFactor: 1 };
// Without the background-networking flags Chromium's own connections are refused by this
// machine's closed network and slow everything down.
export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  // A page whose files Playwright fulfils counts as remote: let it reach the loopback server.
  ...(process.env.E2E_ASSETS_FROM_DISK ? ['--disable-features=LocalNetworkAccessChecks'] : []),
];
export const RUN_TIMEOUT = 60_000;

assert.ok(BASE, 'ONPYRUNNER_URL is not set: run the tests through scripts/e2e.sh');
assert.ok(TOKEN_BASE && TOKEN, 'ONPYRUNNER_TOKEN_URL or ONPYRUNNER_TOKEN is not set: run the tests through scripts/e2e.sh');
mkdirSync(ARTIFACTS, { recursive: true });

let browser;
export const getBrowser = () => browser;
export function useBrowser() {
before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: CHROMIUM_ARGS,
    timeout: 60_000,
  });
});
after(async () => {
  if (browser) await browser.close();
});
}

// A fresh browser context (empty localStorage) on the IDE, connected and ready to run.
export async function openIde(t, device, path = '/', options = {}) {
  const context = await browser.newContext({ ...device, ...options });
  t.after(() => context.close());
  await serveAssetsFromDisk(context);
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  const problems = [];
  page.on('pageerror', (e) => problems.push('page error: ' + e.message));
  page.on('console', (m) => { if (m.type() === 'error') problems.push('console: ' + m.text()); });
  await page.goto(BASE + path);
  try {
    await page.waitForFunction(() => window.onpyrunnerIDE && window.onpyrunnerIDE.connected
      && !document.getElementById('run').disabled);
  } catch (e) {
    const seen = await page.evaluate(() => ({
      connection: document.getElementById('conn').dataset.conn,
      error: document.getElementById('error').textContent,
    }));
    throw new Error(`the IDE did not get ready to run: ${JSON.stringify(seen)}; ${problems.join('; ')}`);
  }
  return { page, problems };
}

// E2E_ASSETS_FROM_DISK=1: the page's files come from web/assets/ as they are on disk, not from
// the binary (which embeds them at build time): for trying changes to the IDE without a rebuild.
// The suite itself always runs against what the binary serves.
const ASSETS_DIR = new URL('../assets/', import.meta.url).pathname;
const TYPES = { html: 'text/html', js: 'text/javascript', css: 'text/css', svg: 'image/svg+xml', png: 'image/png', webmanifest: 'application/manifest+json' };
export async function serveAssetsFromDisk(context) {
  if (!process.env.E2E_ASSETS_FROM_DISK) return;
  await context.route((url) => url.pathname === '/' || url.pathname.startsWith('/assets/'), async (route) => {
    const path = new URL(route.request().url()).pathname;
    const file = path === '/' ? 'index.html' : path.slice('/assets/'.length);
    const response = await route.fetch();
    const headers = { ...response.headers() };
    delete headers['content-encoding'];
    delete headers.etag;
    headers['content-type'] = TYPES[file.split('.').pop()] || 'application/octet-stream';
    await route.fulfill({ status: 200, headers, body: readFileSync(ASSETS_DIR + file) });
  });
}

export const setCode = (page, code) => page.evaluate((c) => window.onpyrunnerIDE.setCode(c), code);
export const getCode = (page) => page.evaluate(() => window.onpyrunnerIDE.getCode());
export const terminalText = (page) => page.evaluate(() => window.onpyrunnerIDE.terminalText());
export const badge = (page) => page.evaluate(() => {
  const b = document.getElementById('state');
  return `${b.textContent} (state ${b.dataset.state}, verdict ${b.dataset.verdict})`;
});

// The run's state as the badge shows it: RUNNING, FINISHED (any verdict), STOPPED, TIMEOUT,
// RECONNECTING, or QUEUED #N (the badge's text then names the position).
export async function waitForBadge(page, want, timeout = RUN_TIMEOUT) {
  try {
    await page.waitForFunction((w) => {
      const b = document.getElementById('state');
      const [state, position] = w.toLowerCase().split(' ');
      return b.dataset.state === state && (!position || b.textContent.includes(position));
    }, want, { timeout });
  } catch (e) {
    throw new Error(`state badge never showed ${want} (it shows ${await badge(page)}); terminal:\n${await terminalText(page)}`);
  }
}

export async function waitForTerminal(page, text, timeout = RUN_TIMEOUT) {
  try {
    await page.waitForFunction((s) => window.onpyrunnerIDE.terminalText().includes(s), text, { timeout });
  } catch (e) {
    throw new Error(`terminal never showed ${JSON.stringify(text)}; it shows:\n${await terminalText(page)}`);
  }
}

export async function screenshot(page, name) {
  await page.screenshot({ path: join(ARTIFACTS, name + '.png') });
}

export function assertNoProblems(problems) {
  assert.deepEqual(problems, [], 'no script errors or refused resources (CSP) in the page');
}

