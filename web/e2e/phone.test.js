// The phone-first IDE (issue 11): touch, the layout after Run, the editor on a phone, input,
// verdicts, sharing, Korean, the installed app offline, accessibility, and screenshots of every
// screen at phone and desktop sizes. Run through scripts/e2e.sh.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { createRequire } from 'node:module';
import {
  BASE, PHONE, DESKTOP, CHROMIUM_ARGS, useBrowser, getBrowser, openIde, setCode, getCode, terminalText,
  waitForBadge, waitForTerminal, screenshot, assertNoProblems,
} from './lib.js';

useBrowser();
const require = createRequire(import.meta.url);
const AXE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

const PHONE_SMALL = { viewport: { width: 360, height: 740 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true };
const WIDE = { viewport: { width: 1440, height: 900 }, deviceScaleFactor: 1 };

const JAVA_ERROR = 'public class Main {\n    public static void main(String[] args) {\n'
  + '        int x = "text";\n        String s = 42;\n        System.out.println(undefinedName);\n    }\n}\n';

// The terminal's lines on screen, as text (a line the terminal wrapped counts once, whole; the
// first row on screen may be the rest of a line that starts above it).
const visibleRows = (page) => page.evaluate(() => {
  const term = window.onpyrunnerIDE.term;
  const b = term.buffer.active;
  const rows = [];
  for (let y = b.viewportY; y < b.viewportY + term.rows; y++) {
    const line = b.getLine(y);
    if (!line) continue;
    const text = line.translateToString(true);
    if (line.isWrapped && rows.length) rows[rows.length - 1] += text;
    else rows.push((line.isWrapped ? '…' : '') + text);
  }
  return rows;
});

// A finger's swipe on the page, through the DevTools protocol (Playwright only taps).
async function swipe(page, selector, dy, { steps = 8, ms = 12 } = {}) {
  const box = await page.locator(selector).boundingBox();
  const x = box.x + box.width / 2;
  const y0 = dy > 0 ? box.y + 30 : box.y + box.height - 30;
  const cdp = await page.context().newCDPSession(page);
  const at = (y) => [{ x, y, id: 1, radiusX: 5, radiusY: 5, force: 1 }];
  await cdp.send('Input.dispatchTouchEvent', { type: 'touchStart', touchPoints: at(y0) });
  for (let i = 1; i <= steps; i++) {
    await cdp.send('Input.dispatchTouchEvent', { type: 'touchMove', touchPoints: at(y0 + (dy * i) / steps) });
    await page.waitForTimeout(ms);
  }
  await cdp.send('Input.dispatchTouchEvent', { type: 'touchEnd', touchPoints: [] });
  await cdp.detach();
}

test('phone: a swipe scrolls the terminal by finger, with momentum, and not the page; a long press copies a line', async (t) => {
  const { page, problems } = await openIde(t, PHONE, '/', { permissions: ['clipboard-read', 'clipboard-write'] });
  await setCode(page, 'for i in range(400):\n    print(f"row {i:03d}")\n');
  await page.tap('#run');
  await waitForBadge(page, 'FINISHED');
  await waitForTerminal(page, 'row 399');
  const bottom = await page.evaluate(() => window.onpyrunnerIDE.term.buffer.active.viewportY);
  assert.ok(bottom > 300, `at the end after the run (${bottom})`);
  // Down the screen: back towards the start of the output.
  await swipe(page, '#terminal', 300);
  const afterSwipe = await page.evaluate(() => window.onpyrunnerIDE.term.buffer.active.viewportY);
  assert.ok(afterSwipe < bottom - 5, `a swipe scrolled the terminal (${bottom} -> ${afterSwipe})`);
  await page.waitForTimeout(600);
  const afterMomentum = await page.evaluate(() => window.onpyrunnerIDE.term.buffer.active.viewportY);
  assert.ok(afterMomentum < afterSwipe, `it went on after the finger left (${afterSwipe} -> ${afterMomentum})`);
  assert.equal(await page.evaluate(() => document.scrollingElement.scrollTop), 0, 'the page did not move');
  // And back up the screen: towards the end.
  await swipe(page, '#terminal', -250);
  await page.waitForTimeout(600);
  const back = await page.evaluate(() => window.onpyrunnerIDE.term.buffer.active.viewportY);
  assert.ok(back > afterMomentum, `swiping up scrolls towards the end (${afterMomentum} -> ${back})`);
  // A long press copies the line under the finger.
  const box = await page.locator('#terminal .xterm-screen').boundingBox();
  const rows = await page.evaluate(() => window.onpyrunnerIDE.term.rows);
  const cdp = await page.context().newCDPSession(page);
  const point = [{ x: box.x + 40, y: box.y + (box.height / rows) * 2.5, id: 1 }];
  await cdp.send('Input.dispatchTouchEvent', { type: 'touchStart', touchPoints: point });
  await page.waitForTimeout(800);
  await cdp.send('Input.dispatchTouchEvent', { type: 'touchEnd', touchPoints: [] });
  const expected = await page.evaluate(() => {
    const b = window.onpyrunnerIDE.term.buffer.active;
    return b.getLine(b.viewportY + 2).translateToString(true).trim();
  });
  assert.match(expected, /^row \d{3}$/);
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), expected);
  await page.waitForSelector('#toast:not([hidden])');
  assert.equal(await page.textContent('#toast'), 'Line copied.');
  assertNoProblems(problems);
});

test('phone: after Run a whole javac error is on screen, under its verdict', async (t) => {
  const { page, problems } = await openIde(t, PHONE);
  await page.selectOption('#language', 'java');
  await setCode(page, JAVA_ERROR);
  await page.tap('#run');
  await waitForBadge(page, 'FINISHED');
  await waitForTerminal(page, 'errors');
  assert.equal(await page.textContent('#state'), 'Compile error');
  const rows = (await visibleRows(page)).join('\n');
  const full = await terminalText(page);
  // Every line javac wrote, from the first "Main.java:" to "3 errors", is in view.
  const start = full.indexOf('Main.java:');
  const end = full.indexOf('3 errors');
  assert.ok(start >= 0 && end > start, full);
  for (const line of full.slice(start, end + '3 errors'.length).split('\n')) {
    assert.ok(rows.includes(line), `on screen: ${JSON.stringify(line)}\nscreen:\n${rows}`);
  }
  const state = await page.locator('#state').boundingBox();
  assert.ok(state.y > 0 && state.y + state.height <= 844, 'the verdict is on screen');
  await screenshot(page, 'phone-390x844-java-compile-error');
  assertNoProblems(problems);
});

test('phone: a long run that fails shows where its traceback starts, Runtime error, and time and cpu', async (t) => {
  const { page, problems } = await openIde(t, PHONE);
  await setCode(page, 'for i in range(300):\n    print("line", i)\ndef f(n):\n    return 1 // n\nf(0)\n');
  await page.tap('#run');
  await waitForBadge(page, 'FINISHED');
  assert.equal(await page.textContent('#state'), 'Runtime error');
  assert.equal(await page.getAttribute('#state', 'data-verdict'), 'runtime');
  const rows = await visibleRows(page);
  assert.ok(rows.some((r) => r.startsWith('Traceback')), 'the traceback\'s first line is on screen:\n' + rows.join('\n'));
  assert.ok(rows.some((r) => r.startsWith('ZeroDivisionError')), rows.join('\n'));
  assert.match(await page.textContent('[data-testid="summary-exit"]'), /^exit 1$/);
  assert.match(await page.textContent('[data-testid="summary-cpu"]'), /^cpu \d+ ms$/);
  assertNoProblems(problems);
});

test('a busy loop ends as Time limit exceeded, in red, with the CPU time it used', async (t) => {
  const { page, problems } = await openIde(t, PHONE);
  await setCode(page, 'while True:\n    pass\n');
  await page.tap('#run');
  await waitForBadge(page, 'TIMEOUT', 30_000);
  assert.equal(await page.textContent('#state'), 'Time limit exceeded');
  assert.equal(await page.getAttribute('#state', 'data-verdict'), 'time');
  const colors = await page.$eval('#state', (b) => [getComputedStyle(b).color, getComputedStyle(b).backgroundColor]);
  assert.deepEqual(colors, ['rgb(255, 196, 189)', 'rgb(90, 31, 31)']);
  const cpu = await page.textContent('[data-testid="summary-cpu"]');
  const ms = /^cpu (\d+(?:\.\d+)?) (ms|s)$/.exec(cpu);
  assert.ok(ms, cpu);
  const cpuMs = Number(ms[1]) * (ms[2] === 's' ? 1000 : 1);
  // Seconds, not 0 (how many depends on what else this machine's cores do meanwhile).
  assert.ok(cpuMs > 1000, `a 10 s busy loop used seconds of CPU, and says so (${cpu})`);
  await screenshot(page, 'phone-390x844-time-limit-exceeded');
  assertNoProblems(problems);
});

test('output past the cap ends as Output limit exceeded, with its CPU time', async (t) => {
  const { page, problems } = await openIde(t, PHONE);
  await setCode(page, 'import sys\nline = "x" * 999 + "\\n"\nwhile True:\n    sys.stdout.write(line)\n');
  await page.tap('#run');
  await waitForBadge(page, 'FINISHED', 30_000);
  assert.equal(await page.textContent('#state'), 'Output limit exceeded');
  assert.equal(await page.getAttribute('#state', 'data-verdict'), 'output');
  assert.equal(await page.textContent('[data-testid="summary-truncated"]'), 'output cut at the limit');
  assert.doesNotMatch(await page.textContent('[data-testid="summary-cpu"]'), /^cpu (0 ms|–)$/);
  assertNoProblems(problems);
});

test('phone: switching CPython and PyPy keeps the code, and it stays after a reload', async (t) => {
  const { page, problems } = await openIde(t, PHONE);
  const code = `# my solution ${Date.now()}\nprint(sum(map(int, input().split())))\n`;
  await page.evaluate((c) => { window.onpyrunnerIDE.setCode(''); window.onpyrunnerIDE.typeCode(c); }, code);
  await page.selectOption('#language', 'pypy');
  assert.equal(await getCode(page), code, 'PyPy keeps the CPython code');
  await page.selectOption('#language', 'python');
  assert.equal(await getCode(page), code);
  await page.selectOption('#language', 'pypy');
  await page.selectOption('#language', 'java');
  assert.match(await getCode(page), /class Main/, 'another kind of language has its own buffer');
  // Each kind's mode is loaded when first chosen, and colours the code.
  const keywordColour = () => page.evaluate(async () => {
    for (let i = 0; i < 50 && !document.querySelector('.cm-line span'); i++) await new Promise((r) => setTimeout(r, 50));
    const span = [...document.querySelectorAll('.cm-line span')].find((s) => /^(public|class|const|import)$/.test(s.textContent));
    return span ? getComputedStyle(span).color : null;
  });
  assert.equal(await keywordColour(), 'rgb(215, 168, 255)', 'Java is highlighted');
  await page.selectOption('#language', 'node');
  assert.match(await getCode(page), /readline/);
  assert.equal(await keywordColour(), 'rgb(215, 168, 255)', 'JavaScript is highlighted');
  await page.selectOption('#language', 'pypy');
  assert.equal(await getCode(page), code, 'and back');
  await page.reload();
  await page.waitForFunction((c) => window.onpyrunnerIDE && window.onpyrunnerIDE.getCode() === c, code);
  assert.equal(await page.inputValue('#language'), 'pypy');
  assertNoProblems(problems);
});

test('phone: a share link opens as a draft and leaves the saved code alone', async (t) => {
  const { page, problems } = await openIde(t, PHONE, '/', { permissions: ['clipboard-read', 'clipboard-write'] });
  const mine = `# mine ${Date.now()}\nprint("mine")\n`;
  await page.evaluate((c) => { window.onpyrunnerIDE.setCode(''); window.onpyrunnerIDE.typeCode(c); }, mine);
  await page.waitForTimeout(400); // saved after 300 ms
  // Someone else's link, made in another browser.
  const other = await openIde(t, DESKTOP);
  const theirs = '# theirs\nprint("theirs")\n';
  await setCode(other.page, theirs);
  await other.page.click('#share');
  await other.page.waitForFunction(() => document.getElementById('share-url').value.includes('#'));
  const url = await other.page.inputValue('#share-url');
  await page.goto(url);
  await page.waitForFunction((c) => window.onpyrunnerIDE && window.onpyrunnerIDE.getCode() === c, theirs);
  assert.equal(await page.isVisible('#draft-bar'), true);
  assert.match(await page.textContent('#draft-bar'), /separate draft/);
  await screenshot(page, 'phone-390x844-shared-draft');
  // Edited, the draft is still not the user's code.
  await page.evaluate(() => window.onpyrunnerIDE.typeCode('# edited\n'));
  await page.waitForTimeout(400);
  assert.equal(await page.evaluate(() => localStorage.getItem('onpyrunner.code.py')), mine, 'saved code untouched');
  await page.tap('#draft-primary'); // back to my code
  assert.equal(await getCode(page), mine);
  assert.match(await page.textContent('#draft-bar'), /kept aside/);
  await page.tap('#draft-primary'); // the draft again, with its edit
  assert.equal(await getCode(page), '# edited\n' + theirs);
  assertNoProblems(problems);
});

test('phone: the Input tab\'s text reaches the program even when the tab is not shown, and says so', async (t) => {
  const { page, problems } = await openIde(t, PHONE);
  await setCode(page, 'a, b = map(int, input().split())\nprint("sum", a + b)\nprint("rest", len(open(0).read()))\n');
  await page.tap('#tab-input');
  await page.fill('#stdin-input', '20 22\n');
  assert.equal(await page.isVisible('#input-dot'), true, 'the tab shows that it holds input');
  await screenshot(page, 'phone-390x844-input');
  await page.reload();
  await page.waitForFunction(() => window.onpyrunnerIDE && window.onpyrunnerIDE.connected && !document.getElementById('run').disabled);
  await setCode(page, 'a, b = map(int, input().split())\nprint("sum", a + b)\nprint("rest", len(open(0).read()))\n');
  assert.equal(await page.textContent('#stdin-note'), 'Input: 1 line from the Input tab');
  await page.tap('#run');
  await waitForBadge(page, 'FINISHED', 15_000);
  await waitForTerminal(page, 'sum 42');
  await waitForTerminal(page, 'rest 0');
  assert.equal(await page.textContent('#state'), 'OK');
  assertNoProblems(problems);
});

test('phone: while it runs the time goes by, a program that reads says it waits for input; limits shown before', async (t) => {
  const { page, problems } = await openIde(t, PHONE);
  assert.match(await page.textContent('[data-testid="summary-limits"]'), /^limits: \d+(\.\d+)? s, \d+ MiB$/);
  await setCode(page, 'name = input()\nprint("hi", name)\n');
  await page.tap('#run');
  await page.waitForSelector('[data-testid="summary-waiting"]', { timeout: 15_000 });
  const first = await page.textContent('[data-testid="summary-elapsed"]');
  await page.waitForTimeout(400);
  const later = await page.textContent('[data-testid="summary-elapsed"]');
  assert.notEqual(first, later, 'the elapsed time moves');
  assert.match(later, /^\d+ ms of \d+(\.\d+)? s$|^\d+\.\d+ s of \d+(\.\d+)? s$/);
  await screenshot(page, 'phone-390x844-waiting-for-input');
  await page.tap('#terminal');
  await page.keyboard.type('Ada');
  await page.keyboard.press('Enter');
  await waitForTerminal(page, 'hi Ada');
  await waitForBadge(page, 'FINISHED');
  assertNoProblems(problems);
});

test('phone: the key row types a Tab, Backspace takes back a whole indent, wrapped lines keep their indent', async (t) => {
  const { page, problems } = await openIde(t, PHONE);
  await setCode(page, 'if True:\n');
  await page.tap('.cm-content');
  await page.evaluate(() => {
    const v = window.onpyrunnerIDE.editor;
    v.dispatch({ selection: { anchor: v.state.doc.length } });
  });
  assert.equal(await page.isVisible('#keyrow'), true);
  await screenshot(page, 'phone-390x844-code');
  await page.tap('#keyrow [data-key="tab"]');
  await page.keyboard.type('x = ');
  await page.tap('#keyrow [data-insert="()"]');
  await page.keyboard.type('1');
  assert.equal(await getCode(page), 'if True:\n    x = (1)');
  assert.equal(await page.evaluate(() => document.activeElement.classList.contains('cm-content')), true, 'the editor kept the focus');
  await page.keyboard.press('End');
  await page.keyboard.press('Enter');
  await page.keyboard.press('Enter');
  await page.tap('#keyrow [data-key="tab"]');
  await page.tap('#keyrow [data-key="tab"]');
  // Enter keeps the block's indent (4); two Tabs add 8.
  const blanks = async () => /( *)$/.exec(await getCode(page))[1].length;
  assert.equal(await blanks(), 12, JSON.stringify(await getCode(page)));
  await page.keyboard.press('Backspace');
  assert.equal(await blanks(), 8, 'one Backspace removes one indent unit');
  await page.keyboard.press('Backspace');
  assert.equal(await blanks(), 4);
  // A long indented line: its second screen line starts under its first character, not at 0.
  await setCode(page, 'def f():\n        return "' + 'word '.repeat(30) + '"\n');
  const indent = await page.evaluate(() => {
    const line = document.querySelectorAll('.cm-line')[1];
    const range = document.createRange();
    range.selectNodeContents(line);
    const rects = [...range.getClientRects()];
    const left = Math.min(...rects.map((r) => r.left));
    const lines = new Set(rects.map((r) => Math.round(r.top)));
    const firstText = line.textContent.indexOf('r');
    return { lines: lines.size, left, lineLeft: line.getBoundingClientRect().left, style: line.style.cssText, firstText };
  });
  assert.ok(indent.lines > 1, 'the line wraps: ' + JSON.stringify(indent));
  assert.match(indent.style, /padding-left/, JSON.stringify(indent));
  assertNoProblems(problems);
});

test('Korean UI by the browser\'s language, switchable to English', async (t) => {
  const { page, problems } = await openIde(t, PHONE, '/', { locale: 'ko-KR' });
  assert.equal(await page.getAttribute('html', 'lang'), 'ko');
  assert.equal((await page.textContent('#run')).trim(), '▶ 실행');
  assert.equal(await page.textContent('#tab-code'), '코드');
  assert.equal(await page.getAttribute('.cm-content', 'aria-label'), '코드 편집기');
  await setCode(page, 'print(1/0)\n');
  await page.tap('#run');
  await waitForBadge(page, 'FINISHED');
  assert.equal(await page.textContent('#state'), '런타임 에러');
  await screenshot(page, 'phone-390x844-korean-runtime-error');
  await page.tap('#settings-toggle');
  await page.selectOption('#ui-lang', 'en');
  assert.equal(await page.textContent('#state'), 'Runtime error');
  assert.equal((await page.textContent('#run')).trim(), '▶ Run');
  await page.reload();
  await page.waitForFunction(() => window.onpyrunnerIDE);
  assert.equal(await page.getAttribute('html', 'lang'), 'en', 'the choice is kept');
  assertNoProblems(problems);
});

test('copy all and download give the whole output; the terminal says when it dropped lines', async (t) => {
  const { page, problems } = await openIde(t, PHONE, '/', { permissions: ['clipboard-read', 'clipboard-write'], acceptDownloads: true });
  await setCode(page, 'import sys\nsys.stdout.write("".join(f"n{i}\\n" for i in range(6000)))\n');
  await page.tap('#run');
  await waitForBadge(page, 'FINISHED');
  await page.waitForSelector('#dropped:not([hidden])');
  assert.match(await page.textContent('#dropped'), /last 5,000 lines; 1,000 earlier lines/);
  assert.ok(!(await terminalText(page)).includes('n0\n'), 'the terminal itself lost the start');
  await page.tap('#copy-all');
  const copied = await page.evaluate(() => navigator.clipboard.readText());
  assert.equal(copied.split('\n').length, 6001);
  assert.ok(copied.startsWith('n0\nn1\n'));
  const [download] = await Promise.all([page.waitForEvent('download'), page.tap('#download')]);
  const file = readFileSync(await download.path(), 'utf8');
  assert.equal(file, copied);
  assertNoProblems(problems);
});

test('desktop: Esc then Tab leaves the editor and the terminal; every control is reachable by keyboard', async (t) => {
  const { page, problems } = await openIde(t, DESKTOP);
  await page.click('.cm-content');
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.classList.contains('cm-content')), true, 'Tab indents');
  await page.keyboard.press('Escape');
  await page.keyboard.press('Tab');
  const next = await page.evaluate(() => document.activeElement.closest('.cm-editor') === null);
  assert.ok(next, 'Esc then Tab moved out of the editor');
  await page.click('#terminal');
  await page.keyboard.press('Escape');
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.closest('#terminal') === null), true, 'out of the terminal');
  // Tab through the page from the top: Run, the tabs, Share and the editor are all reached.
  await page.evaluate(() => document.activeElement.blur());
  const reached = new Set();
  for (let i = 0; i < 25; i++) {
    await page.keyboard.press('Tab');
    reached.add(await page.evaluate(() => document.activeElement.id || document.activeElement.className));
    if (reached.has('cm-content')) await page.keyboard.press('Escape');
  }
  for (const id of ['language', 'tab-output', 'share', 'settings-toggle', 'run', 'copy-all']) assert.ok(reached.has(id), `${id} reached: ${[...reached]}`);
  assertNoProblems(problems);
});

async function axe(page) {
  await page.evaluate(AXE);
  return page.evaluate(async () => {
    const result = await window.axe.run(document, { resultTypes: ['violations'] });
    return result.violations
      .filter((v) => v.impact === 'serious' || v.impact === 'critical')
      .map((v) => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map((n) => n.target.join(' ') + ' ' + n.html.slice(0, 120) + ' ' + (n.failureSummary || '').slice(0, 200)).join(' | ')}`);
  });
}

test('accessibility: axe-core finds no serious violations on any screen, phone or desktop', async (t) => {
  for (const [device, name] of [[PHONE, 'phone'], [DESKTOP, 'desktop']]) {
    const { page, problems } = await openIde(t, device, '/', { bypassCSP: true });
    const found = [];
    found.push(...(await axe(page)).map((v) => `${name} code: ${v}`));
    await page.click('#tab-input');
    found.push(...(await axe(page)).map((v) => `${name} input: ${v}`));
    await setCode(page, 'print("x")\nraise SystemExit(2)\n');
    await page.click('#run');
    await waitForBadge(page, 'FINISHED');
    found.push(...(await axe(page)).map((v) => `${name} output: ${v}`));
    // The tests panel, with a verdict, a difference and a test's output open.
    await page.click('#tab-tests');
    found.push(...(await axe(page)).map((v) => `${name} tests empty: ${v}`));
    await setCode(page, 'a, b = map(int, input().split())\nprint(a * b)\n');
    for (const [input, expected] of [['1 1', '1'], ['2 3', '5']]) {
      await page.click('#test-add');
      await page.locator('[data-testid="test-input"]').last().fill(input);
      await page.locator('[data-testid="test-expected"]').last().fill(expected);
    }
    await page.click('#samples-toggle');
    await page.click('#run-tests');
    await waitForBadge(page, 'FINISHED');
    await page.locator('[data-testid="test-output"] summary').last().click();
    found.push(...(await axe(page)).map((v) => `${name} tests: ${v}`));
    await page.click('#settings-toggle');
    found.push(...(await axe(page)).map((v) => `${name} settings: ${v}`));
    assert.deepEqual(found, []);
    assertNoProblems(problems);
  }
});

test('the app installs (manifest, service worker) and opens offline; a run waits for the connection', async (t) => {
  // A profile on disk: Chromium does not install apps from incognito contexts.
  const dir = mkdtempSync(join(tmpdir(), 'onpyrunner-e2e-'));
  const context = await chromium.launchPersistentContext(dir, {
    ...PHONE, executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: CHROMIUM_ARGS,
  });
  t.after(async () => { await context.close(); rmSync(dir, { recursive: true, force: true }); });
  const page = context.pages()[0] || await context.newPage();
  page.setDefaultTimeout(30_000);
  const problems = [];
  page.on('pageerror', (e) => problems.push('page error: ' + e.message));
  await page.goto(BASE + '/');
  await page.waitForFunction(() => window.onpyrunnerIDE && window.onpyrunnerIDE.connected && !document.getElementById('run').disabled);
  const cdp = await page.context().newCDPSession(page);
  const manifest = await cdp.send('Page.getAppManifest');
  assert.deepEqual(manifest.errors, [], JSON.stringify(manifest.errors));
  await page.evaluate(() => navigator.serviceWorker.ready);
  await page.waitForFunction(() => navigator.serviceWorker.controller !== null || true);
  const { installabilityErrors } = await cdp.send('Page.getInstallabilityErrors');
  assert.deepEqual(installabilityErrors, [], 'installable: ' + JSON.stringify(installabilityErrors));
  const mine = `# offline ${Date.now()}\nprint("back online")\n`;
  await page.evaluate((c) => { window.onpyrunnerIDE.setCode(''); window.onpyrunnerIDE.typeCode(c); }, mine);
  await page.waitForTimeout(400);
  // Wait until the worker has everything, then lose the network.
  await page.evaluate(async () => {
    for (let i = 0; i < 50; i++) {
      const keys = await (await caches.open('onpyrunner-ide')).keys();
      if (keys.length >= 16) return;
      await new Promise((r) => setTimeout(r, 100));
    }
  });
  await page.context().setOffline(true);
  await page.reload();
  await page.waitForFunction((c) => window.onpyrunnerIDE && window.onpyrunnerIDE.getCode() === c, mine);
  assert.equal(await page.isDisabled('#run'), false, 'Run is there offline');
  await page.evaluate(() => window.onpyrunnerIDE.typeCode('# edited offline\n'));
  await page.tap('#run');
  await waitForBadge(page, 'WAITING', 10_000);
  assert.match(await page.textContent('#summary'), /Offline: runs once back online/);
  await screenshot(page, 'phone-390x844-offline-waiting');
  await page.context().setOffline(false);
  await page.evaluate(() => window.dispatchEvent(new Event('online')));
  await waitForTerminal(page, 'back online', 30_000);
  await waitForBadge(page, 'FINISHED');
  // The server's files change (here: the cache holds an older app.css): the next start fetches
  // them in the background, takes them, and offers to reload.
  await page.evaluate(async () => {
    const cache = await caches.open('onpyrunner-ide');
    await cache.put('/assets/app.css', new Response('/* older */', { headers: { etag: '"older"', 'content-type': 'text/css' } }));
  });
  await page.reload();
  await page.waitForSelector('#notice:not([hidden])', { timeout: 15_000 });
  assert.match(await page.textContent('#notice'), /A new version of the IDE is ready/);
  const css = await page.evaluate(async () => (await (await caches.open('onpyrunner-ide')).match('/assets/app.css')).text());
  assert.match(css, /onpyrunner IDE/, 'the cache took the server\'s files');
  await page.click('#notice-action');
  await page.waitForFunction(() => window.onpyrunnerIDE && document.getElementById('notice').hidden);
  // The console logs the refused connections while offline; no page errors.
  assert.deepEqual(problems.filter((p) => p.startsWith('page error')), []);
});

// Every screen at phone sizes (portrait, landscape, with the on-screen keyboard's share of the
// height taken, as `interactive-widget=resizes-content` makes it) and at desktop size, into
// target/e2e-artifacts/screens-*.png, to be looked at. Asserts what must hold on all of them.
const SCREENS = [
  ['390x844', { width: 390, height: 844 }, true],
  ['390x844-keyboard', { width: 390, height: 470 }, true],
  ['844x390-landscape', { width: 844, height: 390 }, true],
  ['844x390-landscape-keyboard', { width: 844, height: 200 }, true],
  ['360x740', { width: 360, height: 740 }, true],
  ['360x740-keyboard', { width: 360, height: 400 }, true],
  ['740x360-landscape', { width: 740, height: 360 }, true],
  ['1440x900-desktop', { width: 1440, height: 900 }, false],
];

test('screenshots of every screen at phone and desktop sizes; the run bar and Run always in view', async (t) => {
  for (const [name, viewport, phone] of SCREENS) {
    const device = phone ? { viewport, deviceScaleFactor: 2, isMobile: true, hasTouch: true } : { viewport, deviceScaleFactor: 1 };
    const { page, problems } = await openIde(t, device);
    const tap = (sel) => (phone ? page.tap(sel) : page.click(sel));
    const check = async (screen) => {
      const seen = await page.evaluate(() => {
        const inView = (el) => {
          const r = el.getBoundingClientRect();
          return r.height > 0 && r.top >= 0 && r.bottom <= window.innerHeight + 1 && r.left >= 0 && r.right <= window.innerWidth + 1;
        };
        const shown = document.getElementById('run').hidden ? 'stop' : 'run';
        return {
          run: inView(document.getElementById(shown)),
          state: inView(document.getElementById('state')),
          sideways: document.documentElement.scrollWidth > window.innerWidth,
        };
      });
      assert.ok(seen.run && seen.state && !seen.sideways, `${name} ${screen}: ${JSON.stringify(seen)}`);
      await screenshot(page, `screens-${name}-${screen}`);
    };
    await setCode(page, 'def solve(n):\n    # the answer, slowly\n    return sum(range(n)) // (n - n)\n\nn = int(input())\nprint("n =", n)\nprint(solve(n))\n');
    if (phone) {
      await page.tap('.cm-content');
    }
    await check('code');
    await tap('#tab-input');
    await page.fill('#stdin-input', '12\n');
    await check('input');
    await tap('#run');
    await waitForBadge(page, 'FINISHED');
    await check('output-runtime-error');
    await tap('#tab-tests');
    await tap('#test-add');
    await page.locator('[data-testid="test-input"]').fill('12');
    await page.locator('[data-testid="test-expected"]').fill('n = 12\n66');
    await check('tests');
    await tap('#share');
    await page.waitForSelector('#share-box:not([hidden])');
    await check('share');
    await tap('#share-close');
    await tap('#settings-toggle');
    await check('settings');
    assertNoProblems(problems);
  }
});
