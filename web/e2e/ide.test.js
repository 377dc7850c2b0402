// End-to-end tests of the web IDE in headless Chromium against a real `onpyrunner serve`
// (real daemon, real images). Run through scripts/e2e.sh, which starts the server and sets
// ONPYRUNNER_URL and E2E_ARTIFACTS.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import {
  BASE, TOKEN_BASE, TOKEN, PHONE, DESKTOP, RUN_TIMEOUT, useBrowser, getBrowser, openIde, setCode, getCode,
  terminalText, waitForBadge, waitForTerminal, screenshot, assertNoProblems,
} from './lib.js';

useBrowser();

test('languages: CPython and PyPy side by side with versions, greeting sample loaded', async (t) => {
  const { page, problems } = await openIde(t, DESKTOP);
  const options = await page.$$eval('#language option', (os) => os.map((o) => ({ value: o.value, text: o.textContent })));
  const byId = Object.fromEntries(options.map((o) => [o.value, o.text]));
  assert.match(byId.python, /^CPython 3\.\d+/);
  assert.match(byId.pypy, /^PyPy 3\.\d+/);
  assert.ok(byId.node && byId.java, JSON.stringify(options));
  assert.equal(await page.inputValue('#language'), 'python');
  assert.match(await getCode(page), /input\(/, 'a fresh browser gets the greeting sample');
  await page.selectOption('#language', 'java');
  assert.match(await getCode(page), /class Main/);
  assertNoProblems(problems);
});

test('phone: a Python program asks for a name, the user types it in the terminal, sees the greeting and FINISHED', async (t) => {
  const { page, problems } = await openIde(t, PHONE);
  await screenshot(page, 'phone-start');
  await setCode(page, 'name = input("What is your name? ")\nprint(f"Hello, {name}!")\n');
  await page.tap('#run');
  await waitForTerminal(page, 'What is your name?');
  await waitForBadge(page, 'RUNNING');
  // Type into the terminal, with a typo fixed by Backspace (the line is edited locally).
  await page.tap('#terminal');
  await page.keyboard.type('Ada Lovelacx');
  await page.keyboard.press('Backspace');
  await page.keyboard.type('e');
  await page.keyboard.press('Enter');
  await waitForTerminal(page, 'Hello, Ada Lovelace!');
  await waitForBadge(page, 'FINISHED');
  assert.equal(await page.textContent('[data-testid="summary-exit"]'), 'exit 0');
  assert.match(await page.textContent('[data-testid="summary-time"]'), /^time \d/);
  assert.match(await page.textContent('[data-testid="summary-memory"]'), /^mem \d/);
  assert.equal(await page.textContent('#state'), 'OK');
  // Phone first: no sideways scrolling, every control a large touch target, and after Run the
  // output has the screen (the editor is one tap away, on its tab).
  const layout = await page.evaluate(() => ({
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
    small: [...document.querySelectorAll('button, select')]
      .filter((b) => b.offsetParent !== null && getComputedStyle(b).visibility === 'visible' && !b.closest('#keyrow'))
      .map((b) => ({ id: b.id || b.textContent, r: b.getBoundingClientRect() }))
      .filter(({ r }) => r.width < 44 || r.height < 44)
      .map(({ id, r }) => `${id} ${r.width}x${r.height}`),
    editorShown: getComputedStyle(document.getElementById('panel-code')).visibility === 'visible',
    terminalHeight: document.getElementById('terminal').getBoundingClientRect().height,
  }));
  assert.ok(layout.scrollWidth <= layout.innerWidth, `no horizontal scroll (${layout.scrollWidth} > ${layout.innerWidth})`);
  assert.deepEqual(layout.small, [], 'touch targets are at least 44px');
  assert.equal(layout.editorShown, false, 'the output, not the editor, after Run');
  assert.ok(layout.terminalHeight > 844 / 2, `the output takes most of the screen (${layout.terminalHeight}px)`);
  await screenshot(page, 'phone-greeting-finished');
  // With the on-screen keyboard up only about half the height is left: everything still fits.
  await page.setViewportSize({ width: 390, height: 470 });
  await page.waitForTimeout(200);
  const small = await page.evaluate(() => {
    const inView = (id) => {
      const r = document.getElementById(id).getBoundingClientRect();
      return r.top >= 0 && r.bottom <= window.innerHeight && r.height > 0;
    };
    return {
      run: inView('run'), terminal: inView('terminal'), summary: inView('summary'),
      scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
      terminalHeight: document.getElementById('terminal').getBoundingClientRect().height,
    };
  });
  assert.ok(small.run && small.terminal && small.summary, JSON.stringify(small));
  assert.ok(small.terminalHeight >= 100, 'the terminal keeps room to type in: ' + JSON.stringify(small));
  assert.ok(small.scrollWidth <= small.innerWidth);
  await screenshot(page, 'phone-keyboard-up');
  assertNoProblems(problems);
});

test('desktop: an infinite loop runs until Stop, then STOPPED', async (t) => {
  const { page, problems } = await openIde(t, DESKTOP);
  await setCode(page, 'import itertools\nfor i in itertools.count():\n    if i % 5_000_000 == 0:\n        print("still going", i, flush=True)\n');
  await page.click('#run');
  await waitForBadge(page, 'RUNNING');
  await waitForTerminal(page, 'still going');
  assert.equal(await page.isDisabled('#run'), true, 'no second run while one is going');
  await page.click('#stop');
  await waitForBadge(page, 'STOPPED');
  assert.match(await page.textContent('#summary'), /time \d/);
  assert.equal(await page.textContent('#state'), 'Stopped');
  // A killed run's CPU time is the container's, not 0 (docs/protocol.md, the summary).
  assert.doesNotMatch(await page.textContent('[data-testid="summary-cpu"]'), /^cpu (0 ms|–)$/);
  assert.equal(await page.isDisabled('#run'), false);
  // Side by side at desktop size.
  const [editor, terminal] = await Promise.all(['#panel-code', '#terminal'].map((s) => page.locator(s).boundingBox()));
  assert.ok(terminal.x >= editor.x + editor.width - 1, 'terminal beside the editor');
  await screenshot(page, 'desktop-stopped');
  assertNoProblems(problems);
});

test('a share link reopens with the same code, language and input', async (t) => {
  const { page, problems } = await openIde(t, DESKTOP);
  const code = `# shared ${Date.now()}\ns = input()\nprint(s[::-1], "ünïcode ✓")\n`;
  await page.selectOption('#language', 'pypy');
  await setCode(page, code);
  await page.click('#tab-input');
  await page.fill('#stdin-input', 'stressed');
  await page.click('#share');
  await page.waitForFunction(() => document.getElementById('share-url').value.includes('#'));
  const url = await page.inputValue('#share-url');
  assert.ok(url.startsWith(BASE + '/#'), url);
  await screenshot(page, 'desktop-share');

  // A new browser (nothing in localStorage) opening the link.
  const other = await openIde(t, PHONE, url.slice(BASE.length));
  await other.page.waitForFunction((c) => window.onpyrunnerIDE.getCode() === c, code);
  assert.equal(await other.page.inputValue('#language'), 'pypy');
  assert.equal(await other.page.inputValue('#stdin-input'), 'stressed');
  assert.equal(await other.page.textContent('#stdin-note'), 'Input: 1 line from the Input tab');
  // And it runs as shared: the input goes in as stdin, then end of input.
  await other.page.tap('#run');
  await waitForBadge(other.page, 'FINISHED');
  await waitForTerminal(other.page, 'desserts ünïcode ✓');
  // Editing drops the fragment, so that a reload keeps the edits.
  await other.page.evaluate(() => window.onpyrunnerIDE.typeCode('# edited\n'));
  await other.page.waitForFunction(() => location.hash === '');
  assertNoProblems(problems);
  assertNoProblems(other.problems);
});

test('pasted lines go to stdin, Ctrl+D ends it; stderr and the exit code are shown', async (t) => {
  const { page, problems } = await openIde(t, DESKTOP);
  // stderr before reading: the two pipes keep no order between them.
  await setCode(page, 'import sys\nprint("oops", file=sys.stderr, flush=True)\nnums = [int(x) for x in sys.stdin]\nprint("sum", sum(nums))\nsys.exit(3)\n');
  await page.click('#editor');
  await page.keyboard.press('Control+Enter');
  await waitForBadge(page, 'RUNNING');
  await waitForTerminal(page, 'oops');
  const stderrColor = await page.evaluate(() => {
    const buffer = window.onpyrunnerIDE.term.buffer.active;
    for (let i = 0; i < buffer.length; i++) {
      const line = buffer.getLine(i);
      const x = line.translateToString(true).indexOf('oops');
      if (x >= 0) {
        const cell = line.getCell(x);
        return { palette: cell.isFgPalette(), color: cell.getFgColor() };
      }
    }
    return null;
  });
  assert.deepEqual(stderrColor, { palette: true, color: 9 }, 'stderr is bright red');
  await page.click('#terminal');
  // What a clipboard paste does: xterm turns the newlines into Enter.
  await page.evaluate(() => window.onpyrunnerIDE.term.paste('1\n2\n3\n4'));
  await page.keyboard.press('Control+D');
  await waitForTerminal(page, 'sum 10');
  await waitForBadge(page, 'FINISHED');
  assert.equal(await page.textContent('[data-testid="summary-exit"]'), 'exit 3');
  assertNoProblems(problems);
});

test('a server error is shown and nothing runs; the IDE reconnects after the connection drops', async (t) => {
  const { page, problems } = await openIde(t, DESKTOP);
  await setCode(page, ('#'.repeat(99) + '\n').repeat(10_500)); // past the 1 MiB source cap
  await page.click('#run');
  await page.waitForSelector('#error:not([hidden])');
  assert.match(await page.textContent('#error'), /exceeds|limit|too large/i);
  assert.equal(await page.isDisabled('#run'), false);

  await page.evaluate(() => window.onpyrunnerIDE.dropConnection());
  await page.waitForFunction(() => document.getElementById('conn').dataset.conn !== 'open');
  await page.waitForFunction(() => window.onpyrunnerIDE.connected, null, { timeout: 15_000 });
  await setCode(page, 'print("back again")\n');
  await page.click('#run');
  await waitForBadge(page, 'FINISHED');
  await waitForTerminal(page, 'back again');
  assertNoProblems(problems);
});

test('with every slot taken a run shows its queue position, then runs', async (t) => {
  // scripts/e2e.sh starts the server with --max-running 1.
  const first = await openIde(t, DESKTOP);
  const second = await openIde(t, PHONE);
  await setCode(first.page, 'import time\nprint("holding the slot", flush=True)\ntime.sleep(120)\n');
  await first.page.click('#run');
  await waitForTerminal(first.page, 'holding the slot');
  await setCode(second.page, 'print("my turn")\n');
  await second.page.tap('#run');
  await waitForBadge(second.page, 'QUEUED #1');
  await screenshot(second.page, 'phone-queued');
  await first.page.click('#stop');
  await waitForBadge(first.page, 'STOPPED');
  await waitForBadge(second.page, 'FINISHED');
  await waitForTerminal(second.page, 'my turn');
  assert.match(await second.page.textContent('#summary'), /queued \d/);
  assertNoProblems(first.problems);
  assertNoProblems(second.problems);
});

test('a Java compile error is told apart from the program failing', async (t) => {
  const { page, problems } = await openIde(t, DESKTOP);
  await page.selectOption('#language', 'java');
  await setCode(page, 'public class Main {\n    public static void main(String[] args) {\n        int x = "text";\n    }\n}\n');
  await page.click('#run');
  await waitForBadge(page, 'FINISHED');
  assert.equal(await page.textContent('#state'), 'Compile error');
  assert.equal(await page.getAttribute('#state', 'data-verdict'), 'compile');
  await waitForTerminal(page, 'incompatible types');
  assertNoProblems(problems);
});

// A TCP proxy in front of the server whose traffic can be held, both ways, with every socket
// kept open: what a phone that lost signal looks like to both ends (nothing closes, nothing
// arrives). Connections made while it is held wait, as the phone's would.
async function holdableProxy(t, target) {
  const { hostname, port } = new URL(target);
  const pairs = new Set();
  let held = false;
  let waiting = [];
  function link(client) {
    const upstream = net.connect(Number(port), hostname);
    const pair = [client, upstream];
    pairs.add(pair);
    const forward = (from, to) => {
      from.on('data', (chunk) => {
        if (!to.write(chunk)) from.pause();
      });
      to.on('drain', () => { if (!held) from.resume(); });
      from.on('end', () => to.end());
    };
    forward(client, upstream);
    forward(upstream, client);
    const drop = () => { client.destroy(); upstream.destroy(); pairs.delete(pair); };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
  }
  const server = net.createServer((client) => {
    if (held) { client.pause(); waiting.push(client); } else link(client);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    server.close();
    for (const s of [...waiting, ...[...pairs].flat()]) s.destroy();
  });
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    hold() {
      held = true;
      for (const s of [...pairs].flat()) s.pause();
    },
    release() {
      held = false;
      for (const s of [...pairs].flat()) s.resume();
      const clients = waiting;
      waiting = [];
      for (const c of clients) { link(c); c.resume(); }
    },
  };
}

test('a run outlives a silent connection: the page says it is reconnecting, resumes, and no output is lost or repeated', async (t) => {
  const proxy = await holdableProxy(t, BASE);
  const context = await getBrowser().newContext(PHONE);
  t.after(() => context.close());
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  const problems = [];
  page.on('pageerror', (e) => problems.push('page error: ' + e.message));
  await page.goto(proxy.url + '/');
  await page.waitForFunction(() => window.onpyrunnerIDE && window.onpyrunnerIDE.connected
    && !document.getElementById('run').disabled);

  // The whole run has to fit in the default 10 s wall-time limit, silence included.
  await setCode(page, 'import time\nfor i in range(60):\n    print(f"line {i:02d}", flush=True)\n    time.sleep(0.05)\n'
    + 'name = input("name? ")\nprint(f"got {name}")\n');
  await page.tap('#run');
  await waitForTerminal(page, 'line 05');

  // The network goes silent: the page hears nothing (no close, no error) and must notice by
  // itself, after 6 s of silence.
  proxy.hold();
  const heldAt = Date.now();
  const linesWhenHeld = (await terminalText(page)).split('\n').filter((l) => /^line \d\d$/.test(l)).length;
  await waitForBadge(page, 'RECONNECTING', 9_000);
  const detectedMs = Date.now() - heldAt;
  assert.ok(detectedMs >= 3_000, `noticed after ${detectedMs} ms: not before it was silent for a while`);
  assert.notEqual(await page.getAttribute('#conn', 'data-conn'), 'open');
  assert.match(await page.textContent('#error'), /lost the connection/i);
  assert.equal(await page.evaluate(() => window.onpyrunnerIDE.running), true, 'the run is not given up');
  await screenshot(page, 'phone-reconnecting');
  proxy.release();

  // Back: resumed where it left off, the rest of the output arrives, stdin works again.
  await waitForBadge(page, 'RUNNING', 20_000);
  await waitForTerminal(page, 'name? ');
  await page.waitForFunction(() => document.getElementById('error').hidden);
  await page.tap('#terminal');
  await page.keyboard.type('Ada');
  await page.keyboard.press('Enter');
  await waitForTerminal(page, 'got Ada');
  await waitForBadge(page, 'FINISHED');
  assert.equal(await page.textContent('[data-testid="summary-exit"]'), 'exit 0');

  const lines = (await terminalText(page)).split('\n');
  const numbered = lines.filter((l) => /^line \d\d$/.test(l));
  const expected = Array.from({ length: 60 }, (_, i) => `line ${String(i).padStart(2, '0')}`);
  assert.deepEqual(numbered, expected, 'every line exactly once, in order');
  assert.ok(linesWhenHeld < 60, `output went on after the reconnection (${linesWhenHeld} lines before)`);
  const start = lines.indexOf('line 00');
  assert.deepEqual(lines.slice(start, start + 61), [...expected, 'name? Ada'], 'nothing else among the output');
  await screenshot(page, 'phone-resumed-finished');
  assertNoProblems(problems);
});

test('links in program output (OSC 8) never run script and open only after the user saw where they go', async (t) => {
  const { page, problems } = await openIde(t, DESKTOP);
  const dialogs = [];
  page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss(); });
  let opened = 0;
  page.context().on('page', () => { opened += 1; });
  const osc8 = (uri, text) => `\\x1b]8;;${uri}\\x1b\\\\${text}\\x1b]8;;\\x1b\\\\`;
  await setCode(page, `print("${osc8('javascript:window.__pwned=1', 'docs')} and ${osc8('https://example.org/x', 'example')}")\n`);
  await page.click('#run');
  await waitForBadge(page, 'FINISHED');
  // The link text shows as text, the escape sequences not at all.
  await waitForTerminal(page, 'docs and example');
  // Click on the link texts as a user would: hover, then click, on the cells that show them.
  const clickText = async (text) => {
    const at = await page.evaluate((word) => {
      const term = window.onpyrunnerIDE.term;
      const buffer = term.buffer.active;
      for (let y = buffer.viewportY; y < buffer.viewportY + term.rows; y++) {
        const x = buffer.getLine(y)?.translateToString(true).indexOf(word) ?? -1;
        if (x >= 0) {
          const screen = document.querySelector('#terminal .xterm-screen').getBoundingClientRect();
          const w = screen.width / term.cols, h = screen.height / term.rows;
          return { x: screen.left + (x + 1) * w, y: screen.top + (y - buffer.viewportY + 0.5) * h };
        }
      }
      return null;
    }, text);
    assert.ok(at, `${text} is on screen`);
    await page.mouse.move(at.x - 3, at.y);
    await page.mouse.move(at.x, at.y);
    await page.waitForTimeout(200);
    await page.mouse.click(at.x, at.y);
    await page.waitForTimeout(200);
  };
  await clickText('docs');
  // Also what the handler does with other schemes a link may carry.
  await page.evaluate(() => window.onpyrunnerIDE.term.options.linkHandler.activate(new MouseEvent('click'), 'data:text/html,<script>alert(1)</script>'));
  assert.deepEqual(dialogs, [], 'non-http links are not even offered');
  await clickText('example');
  assert.equal(dialogs.length, 1);
  assert.match(dialogs[0], /https:\/\/example\.org\/x/, 'the real address is shown before anything opens');
  assert.equal(opened, 0, 'declined: nothing opened');
  assert.equal(await page.evaluate(() => window.__pwned), undefined);
  assertNoProblems(problems);
});

// The server with tokens refuses the WebSocket until the page has one; the browser logs those
// refusals (a failed handshake, a 401 fetch) as console errors, which are expected here.
async function openTokenIde(t, device, path = '/') {
  const context = await getBrowser().newContext(device);
  t.after(() => context.close());
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  const problems = [];
  page.on('pageerror', (e) => problems.push('page error: ' + e.message));
  await page.goto(TOKEN_BASE + path);
  return { page, problems };
}

const ready = (page) => page.waitForFunction(() => window.onpyrunnerIDE && window.onpyrunnerIDE.connected
  && !document.getElementById('run').disabled);

test('on a server with tokens the IDE asks for one, refuses a wrong one, keeps the right one and runs with it', async (t) => {
  const { page, problems } = await openTokenIde(t, DESKTOP);
  await page.waitForSelector('#token-box:not([hidden])');
  assert.ok(!(await page.evaluate(() => window.onpyrunnerIDE.connected)), 'not connected without a token');
  await screenshot(page, 'desktop-token-asked');
  await page.fill('#token-input', 'wrong-token-0123456789');
  await page.click('#token-save');
  await page.waitForSelector('#token-box:not([hidden])');
  await page.waitForFunction(() => /refused/.test(document.getElementById('token-status').textContent));
  await page.fill('#token-input', TOKEN);
  await page.press('#token-input', 'Enter');
  await ready(page);
  assert.equal(await page.isHidden('#token-box'), true);
  await setCode(page, 'print("ran with a token")\n');
  await page.click('#run');
  await waitForBadge(page, 'FINISHED');
  await waitForTerminal(page, 'ran with a token');
  // Kept in this browser: a reload connects at once.
  await page.reload();
  await ready(page);
  assert.equal(await page.isHidden('#token-box'), true);
  assert.deepEqual(problems, []);
});

test('a #token= link gives the IDE its token and leaves the address bar', async (t) => {
  const { page, problems } = await openTokenIde(t, PHONE, '/#token=' + TOKEN);
  await ready(page);
  assert.equal(new URL(page.url()).hash, '', 'the token is not left in the URL');
  assert.equal(await page.evaluate(() => localStorage.getItem('onpyrunner.token')), TOKEN);
  assert.equal(await page.isHidden('#token-box'), true);
  await setCode(page, 'print("linked")\n');
  await page.tap('#run');
  await waitForBadge(page, 'FINISHED');
  await waitForTerminal(page, 'linked');
  assert.deepEqual(problems, []);
});
