// The IDE's test panel (issue 12, judge mode): tests added, pasted and removed, Run all as one
// judged run with a verdict per test as it ends, the difference of a wrong answer, each test's
// output, the judge's summary, tests kept with the code and carried by share links. Run
// through scripts/e2e.sh.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  PHONE, useBrowser, openIde, setCode, getCode, terminalText, waitForBadge, screenshot, assertNoProblems,
} from './lib.js';

useBrowser();
const WIDE = { viewport: { width: 1440, height: 900 }, deviceScaleFactor: 1 };

// A+B, slow on its second test (so that the first's verdict is seen while it runs), and wrong
// there, with markup in its output (which must show as text).
const A_PLUS_B = 'import time\na, b = map(int, input().split())\nif a == 2:\n    time.sleep(2)\n'
  + '    print(a + b, "<img src=x onerror=alert(1)>")\nelse:\n    print(a + b)\n';

const card = (page, i) => page.locator('[data-testid="test"]').nth(i);
const chip = (page, i) => card(page, i).locator('[data-testid="test-verdict"]');

// Two tests through the panel's own controls: 1 2 -> 3 (right), 2 2 -> 5 (the program says 4).
async function addTwoTests(page, tap) {
  await tap('#tab-tests');
  await tap('#test-add');
  await card(page, 0).locator('[data-testid="test-input"]').fill('1 2');
  await card(page, 0).locator('[data-testid="test-expected"]').fill('3\n');
  await tap('#test-add');
  await card(page, 1).locator('[data-testid="test-input"]').fill('2 2');
  await card(page, 1).locator('[data-testid="test-expected"]').fill('5');
}

// Opens a test's output (drawn once its <details> has toggled) and gives its text.
async function openOutput(page, i) {
  await card(page, i).locator('[data-testid="test-output"] summary').tap();
  const pre = card(page, i).locator('[data-testid="test-output"] pre');
  await pre.evaluate((el) => new Promise((resolve) => {
    if (el.textContent) resolve();
    else new MutationObserver((_, o) => { o.disconnect(); resolve(); }).observe(el, { childList: true, subtree: true });
  }));
  return pre.textContent();
}

async function waitForChip(page, i, text, timeout = 60_000) {
  try {
    await page.waitForFunction(([n, want]) => {
      const c = document.querySelectorAll('[data-testid="test-verdict"]')[n];
      return c && !c.hidden && c.textContent === want;
    }, [i, text], { timeout });
  } catch (e) {
    throw new Error(`test ${i + 1} never showed ${text} (it shows ${await chip(page, i).textContent()}); terminal:\n${await terminalText(page)}`);
  }
}

test('phone: two tests, one right and one wrong; Run all shows Accepted and Wrong answer as each ends, with the difference as text', async (t) => {
  const { page, problems } = await openIde(t, PHONE);
  await setCode(page, A_PLUS_B);
  const tap = (s) => page.tap(s);
  await addTwoTests(page, tap);
  assert.equal(await page.textContent('#tests-count'), '2');
  await tap('#run-tests');
  // Live: the first test's verdict while the second still runs.
  await waitForChip(page, 0, 'Accepted');
  assert.equal(await page.evaluate(() => window.onpyrunnerIDE.running), true, 'the run goes on');
  assert.equal(await chip(page, 1).textContent(), 'Running…');
  assert.equal(await page.getAttribute('[data-testid="test-verdict"] >> nth=0', 'data-verdict'), 'accepted');
  await waitForChip(page, 1, 'Wrong answer');
  await waitForBadge(page, 'FINISHED');
  assert.equal(await page.textContent('#state'), 'Wrong answer', 'the run bar has the judge\'s verdict');
  assert.equal(await page.getAttribute('#state', 'data-verdict'), 'wrong');
  const colours = await chip(page, 1).evaluate((b) => [getComputedStyle(b).color, getComputedStyle(b).backgroundColor]);
  assert.deepEqual(colours, ['rgb(255, 196, 189)', 'rgb(90, 31, 31)'], 'red, as the limits in the run bar');
  assert.equal(await page.textContent('[data-testid="summary-passed"]'), '1/2 passed');
  // The judge's summary in the panel, and the difference.
  assert.equal(await page.textContent('[data-testid="tests-passed"]'), '1/2 passed');
  assert.equal(await page.textContent('[data-testid="tests-first-failing"]'), 'first failing: test 2, Wrong answer');
  const diff = card(page, 1).locator('[data-testid="test-diff"]');
  assert.equal(await diff.isVisible(), true);
  assert.equal(await card(page, 0).locator('[data-testid="test-diff"]').isVisible(), false);
  assert.equal(await diff.locator('[data-testid="test-diff-at"]').textContent(), 'Line 1, column 1');
  assert.equal(await diff.locator('[data-testid="test-diff-exp"]').textContent(), '5');
  assert.equal(await diff.locator('[data-testid="test-diff-act"]').textContent(), '4 <img src=x onerror=alert(1)>');
  assert.match(await diff.locator('[data-testid="test-diff-text"]').textContent(), /^- 1 \| 5\n\+ 1 \| 4 <img/);
  assert.equal(await page.locator('#tests-panel img, [data-testid="tests-panel"] img').count(), 0, 'program output never becomes markup');
  assert.match(await card(page, 0).locator('[data-testid="test-figures"]').textContent(), /^\d+ ms · cpu \d+ ms/);
  // Each test's own output; the Output tab has all of it.
  assert.equal(await openOutput(page, 1), '4 <img src=x onerror=alert(1)>\n');
  assert.equal(await openOutput(page, 0), '3\n');
  await screenshot(page, 'phone-390x844-tests-wrong-answer');
  // The first failing test is one tap away.
  await page.tap('[data-testid="tests-first-failing"]');
  const whole = await terminalText(page);
  assert.match(whole, /^3\n\[Test 1: Accepted,[^\]]*\]\n4 <img src=x onerror=alert\(1\)>\n\[Test 2: Wrong answer,[^\]]*\]/m, whole);
  // Run is still an ordinary run (the Input tab's text, here none: typed in the terminal).
  await tap('#run');
  await page.waitForFunction(() => document.getElementById('app').dataset.tab === 'output');
  await page.tap('#terminal');
  await page.keyboard.type('20 22');
  await page.keyboard.press('Enter');
  await waitForBadge(page, 'FINISHED');
  assert.equal(await page.textContent('#state'), 'OK');
  assert.match(await terminalText(page), /^42$/m);
  assertNoProblems(problems);
});

test('phone: a compile error shows once, and no test runs', async (t) => {
  const { page, problems } = await openIde(t, PHONE);
  await page.selectOption('#language', 'java');
  await setCode(page, 'public class Main {\n    public static void main(String[] args) {\n        int x = "text";\n    }\n}\n');
  await addTwoTests(page, (s) => page.tap(s));
  await page.tap('#run-tests');
  await waitForBadge(page, 'FINISHED');
  assert.equal(await page.textContent('#state'), 'Compile error');
  assert.equal(await page.textContent('[data-testid="tests-compile"]'), 'No test ran.');
  const compileChips = await page.locator('[data-testid="tests-panel"] .verdict:visible', { hasText: 'Compile error' }).count();
  assert.equal(compileChips, 1, 'one Compile error for the run, none per test');
  for (const i of [0, 1]) assert.equal(await chip(page, i).isVisible(), false, `test ${i + 1} has no verdict`);
  assert.match(await page.textContent('[data-testid="tests-compile-output"] pre'), /incompatible types/);
  await screenshot(page, 'phone-390x844-tests-compile-error');
  // A run the server refuses (here: source past its 1 MiB) leaves the tests as they were
  // before it, not waiting forever.
  await setCode(page, '// ' + 'x'.repeat(1100 * 1024) + '\n');
  await page.tap('#run-tests');
  await page.waitForSelector('#error:not([hidden])');
  assert.equal(await page.textContent('#state'), 'Not started');
  for (const i of [0, 1]) assert.equal(await chip(page, i).isVisible(), false, `test ${i + 1} is not left waiting`);
  assert.equal(await page.textContent('#tests-verdict'), '');
  assertNoProblems(problems);
});

test('phone: the compiler\'s warnings show as the compiler\'s, not as the first test\'s output', async (t) => {
  const { page, problems } = await openIde(t, PHONE);
  await page.selectOption('#language', 'c');
  await setCode(page, '#include <stdio.h>\n#warning careful\nint main(void) { long a, b; scanf("%ld %ld", &a, &b); printf("%ld\\n", a + b); }\n');
  await addTwoTests(page, (s) => page.tap(s));
  await page.tap('#run-tests');
  await waitForChip(page, 1, 'Wrong answer', 120_000);
  await waitForBadge(page, 'FINISHED');
  assert.equal(await waitForChip(page, 0, 'Accepted'), undefined);
  const first = await openOutput(page, 0);
  assert.equal(first.includes('warning'), false, `test 1's output is the program's alone: ${first}`);
  assert.match(first, /3/);
  await page.tap('[data-testid="tests-compile-warnings"] summary');
  assert.match(await page.textContent('[data-testid="tests-compile-warnings"] pre'), /#warning careful/);
  assert.match(await terminalText(page), /Compiled in \d+ ms/);
  await screenshot(page, 'phone-390x844-tests-compiler-warnings');
  assertNoProblems(problems);
});

test('tests are kept with the code, per buffer; a share link carries them, and an old link still opens', async (t) => {
  const { page, problems } = await openIde(t, PHONE, '/', { permissions: ['clipboard-read', 'clipboard-write'] });
  await setCode(page, 'print(sum(map(int, input().split())))\n');
  await addTwoTests(page, (s) => page.tap(s));
  await page.waitForTimeout(400); // saved after 300 ms
  const want = [{ input: '1 2', expected: '3\n', verdict: null }, { input: '2 2', expected: '5', verdict: null }];
  await page.reload();
  await page.waitForFunction(() => window.onpyrunnerIDE && window.onpyrunnerIDE.tests.length === 2);
  assert.deepEqual(await page.evaluate(() => window.onpyrunnerIDE.tests), want, 'kept across a reload');
  await page.selectOption('#language', 'java');
  assert.deepEqual(await page.evaluate(() => window.onpyrunnerIDE.tests), [], 'Java\'s buffer has its own tests');
  await page.selectOption('#language', 'pypy');
  assert.deepEqual(await page.evaluate(() => window.onpyrunnerIDE.tests), want, 'PyPy shares CPython\'s');
  await page.tap('#share');
  await page.waitForFunction(() => document.getElementById('share-url').value.includes('#'));
  const url = await page.inputValue('#share-url');
  // Someone else opens it.
  const other = await openIde(t, PHONE);
  await other.page.goto(url);
  await other.page.waitForFunction(() => window.onpyrunnerIDE && window.onpyrunnerIDE.tests.length === 2);
  assert.deepEqual(await other.page.evaluate(() => window.onpyrunnerIDE.tests), want);
  assert.equal(await getCode(other.page), 'print(sum(map(int, input().split())))\n');
  await other.page.tap('#tab-tests');
  await other.page.tap('#run-tests');
  await waitForBadge(other.page, 'FINISHED');
  assert.equal(await other.page.textContent('[data-testid="tests-passed"]'), '1/2 passed');
  // A link made before links had tests (`j=`, plain JSON).
  const old = Buffer.from(JSON.stringify({ v: 1, l: 'python', c: 'print("old link")\n', i: '7\n' })).toString('base64url');
  const third = await openIde(t, PHONE);
  await third.page.goto(url.split('#')[0] + '#j=' + old);
  await third.page.waitForFunction(() => window.onpyrunnerIDE && window.onpyrunnerIDE.getCode() === 'print("old link")\n');
  assert.deepEqual(await third.page.evaluate(() => window.onpyrunnerIDE.tests), []);
  assert.equal(await third.page.inputValue('#stdin-input'), '7\n');
  for (const p of [problems, other.problems, third.problems]) assertNoProblems(p);
});

const BAEKJOON = '예제 입력 1 복사\n1 2\n예제 출력 1 복사\n3\n예제 입력 2 복사\n10 20\n예제 출력 2 복사\n30\n힌트\n없음\n';
const CODEFORCES = 'Input\nThe first line holds n.\nOutput\nPrint the sum.\nExamples\nInput\nCopy\n3\n1 2 3\nOutput\nCopy\n6\nInput\nCopy\n1\n5\nOutput\nCopy\n5\nNote\nThe sum of 1, 2 and 3 is 6.\n';

test('phone: samples pasted as copied from Baekjoon or Codeforces become tests; a removed test comes back with Undo', async (t) => {
  const { page, problems } = await openIde(t, PHONE);
  assert.deepEqual(await page.evaluate((s) => window.onpyrunnerIDE.parseSamples(s), CODEFORCES), [
    { input: '3\n1 2 3\n', expected: '6\n' }, { input: '1\n5\n', expected: '5\n' },
  ]);
  assert.equal(await page.evaluate(() => window.onpyrunnerIDE.parseSamples('1 2\n3\n')), null, 'no headings: not samples');
  await page.tap('#tab-tests');
  assert.equal(await page.isVisible('#tests-empty'), true);
  await page.tap('#samples-toggle');
  await page.fill('#samples-text', BAEKJOON);
  await screenshot(page, 'phone-390x844-tests-paste-samples');
  await page.tap('#samples-add');
  assert.deepEqual(await page.evaluate(() => window.onpyrunnerIDE.tests), [
    { input: '1 2\n', expected: '3\n', verdict: null }, { input: '10 20\n', expected: '30\n', verdict: null },
  ]);
  assert.equal(await page.isVisible('#samples-box'), false);
  // Pasted straight into a new test's input, a sample block is split too.
  await page.tap('#test-add');
  await card(page, 2).locator('[data-testid="test-input"]').evaluate((area, text) => {
    const data = new DataTransfer();
    data.setData('text/plain', text);
    area.dispatchEvent(new ClipboardEvent('paste', { clipboardData: data, bubbles: true, cancelable: true }));
  }, CODEFORCES);
  assert.equal(await page.locator('[data-testid="test"]').count(), 4);
  assert.equal(await card(page, 3).locator('[data-testid="test-expected"]').inputValue(), '5\n');
  await card(page, 0).locator('[data-testid="test-remove"]').tap();
  assert.equal(await page.locator('[data-testid="test"]').count(), 3);
  assert.equal(await card(page, 0).locator('[data-testid="test-input"]').inputValue(), '10 20\n');
  await page.tap('#notice-action');
  assert.equal(await page.locator('[data-testid="test"]').count(), 4);
  assert.equal(await card(page, 0).locator('[data-testid="test-input"]').inputValue(), '1 2\n');
  assertNoProblems(problems);
});

test('Korean: the test panel in the judge\'s words', async (t) => {
  const { page, problems } = await openIde(t, PHONE, '/', { locale: 'ko-KR' });
  await setCode(page, A_PLUS_B.replace('time.sleep(2)', 'pass'));
  await addTwoTests(page, (s) => page.tap(s));
  assert.equal(await page.textContent('#tab-tests >> [data-i18n="tabTests"]'), '테스트');
  assert.equal((await page.textContent('#run-tests')).trim(), '▶ 모두 실행');
  await page.tap('#run-tests');
  await waitForBadge(page, 'FINISHED');
  assert.equal(await chip(page, 0).textContent(), '맞았습니다');
  assert.equal(await chip(page, 1).textContent(), '틀렸습니다');
  assert.equal(await page.textContent('#state'), '틀렸습니다');
  assert.equal(await page.textContent('[data-testid="tests-passed"]'), '1/2 통과');
  assert.equal(await page.textContent('[data-testid="tests-first-failing"]'), '처음 실패: 테스트 2, 틀렸습니다');
  assert.equal(await card(page, 1).locator('[data-testid="test-diff-at"]').textContent(), '1번째 줄, 1번째 글자');
  await screenshot(page, 'phone-390x844-tests-korean');
  assertNoProblems(problems);
});

test('desktop 1440x900: the tests beside the editor, verdicts and the difference', async (t) => {
  const { page, problems } = await openIde(t, WIDE);
  await setCode(page, A_PLUS_B.replace('time.sleep(2)', 'pass'));
  await addTwoTests(page, (s) => page.click(s));
  await page.click('#run-tests');
  await waitForBadge(page, 'FINISHED');
  assert.equal(await chip(page, 1).textContent(), 'Wrong answer');
  assert.equal(await page.isVisible('#editor'), true, 'the editor stays');
  await card(page, 1).locator('[data-testid="test-output"] summary').click();
  await screenshot(page, 'desktop-1440x900-tests');
  assertNoProblems(problems);
});
