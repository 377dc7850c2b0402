// onpyrunner's judge process for Node.js (images/languages.toml `judge_process`).
//
// The launcher starts it at container start in a pooled container (`node FLAGS...
// onpyrunner_judge.js`: it then runs onpyrunner_judge_warmup.js once as a test, so that the
// first real test finds node's module loader warm), or else once per judged run after the
// compile stage (`node FLAGS... onpyrunner_judge.js -- RUN_ARGV...`). Each test's argv must
// start with the same program and flags (so that the heap limit and stack are the run
// command's). fd 0 is a memfd the launcher fills with the test's input and rewinds before each
// test, so fs.readFileSync(0), /dev/stdin and process.stdin read the test's input as they
// would in a fresh `node main.js`. fd 3 brings the
// launcher's messages, fd 4 takes the replies (protocol/src/warm.rs): this process says
// ["ready"], then per test it gets ["test", input path, run argv...] and answers
// ["tested", code] once the test is over, or ["tested", code, "last"] when the test left work
// that would run into the next one (the launcher then kills this process and runs the rest of
// the tests fresh). The launcher keeps the clock, the CPU time and the memory.
//
// A test runs in this process, as node would run main.js: process.argv, require.main, a fresh
// module cache for the program's own files; afterwards the program's globals, listeners,
// environment and working directory are put back. It ends as node ends: when the event loop has
// nothing left to do ('beforeExit', then the program's 'exit' listeners), at process.exit(), or at
// an uncaught exception (printed, code 1). After an exit, what the program left scheduled does not
// run and what it prints is dropped.
'use strict';

const fs = require('fs');
const path = require('path');
const Module = require('module');
const util = require('util');
const timers = require('timers');

const CONTROL_FD = 3;
const REPLY_FD = 4;
const MAX_MESSAGE = 4 * 1024 * 1024;
// How long work left after an exit may take to go away before this process gives up its
// place to a fresh one.
const LEFT_OVER_MS = 200;
const SELF = __filename;

function readExact(n) {
  const buf = Buffer.alloc(n);
  let got = 0;
  while (got < n) {
    const r = fs.readSync(CONTROL_FD, buf, got, n - got, null);
    if (r === 0) return null;
    got += r;
  }
  return buf;
}

function receive() {
  const prefix = readExact(4);
  if (prefix === null) return null;
  const len = prefix.readUInt32BE(0);
  if (len > MAX_MESSAGE) return null;
  const body = readExact(len);
  if (body === null) return null;
  const parts = [];
  let at = 4;
  for (let i = body.readUInt32BE(0); i > 0; i--) {
    const n = body.readUInt32BE(at);
    at += 4;
    parts.push(body.toString('utf8', at, at + n));
    at += n;
  }
  return parts;
}

function send(parts) {
  const bytes = parts.map((p) => Buffer.from(String(p), 'utf8'));
  const bodyLen = 4 + bytes.reduce((n, b) => n + 4 + b.length, 0);
  const out = Buffer.alloc(4 + bodyLen);
  let at = out.writeUInt32BE(bodyLen, 0);
  at = out.writeUInt32BE(bytes.length, at);
  for (const b of bytes) {
    at = out.writeUInt32BE(b.length, at);
    at += b.copy(out, at);
  }
  for (let done = 0; done < out.length; ) done += fs.writeSync(REPLY_FD, out, done);
}

// RUN_ARGV, when given, and each test's argv must start with this process's program and flags.
const dashes = process.argv.indexOf('--', 2);
const flags = process.execArgv;
function entryOf(argv) {
  if (argv.length < flags.length + 2) return null;
  for (let i = 0; i < flags.length; i++) if (argv[i + 1] !== flags[i]) return null;
  const entry = argv[flags.length + 1];
  return entry.startsWith('-') ? null : flags.length + 1;
}
const early = process.argv.length === 2;
if (!early && (dashes !== 2 || entryOf(process.argv.slice(3)) === null)) process.exit(3);

// The timers a test made, so that an exit can cancel them.
let made = new Set();
function tracked(make, clear) {
  const wrapper = {
    [make.name](...args) {
      const t = make(...args);
      made.add([t, clear]);
      return t;
    },
  }[make.name];
  return wrapper;
}
const real = {
  setTimeout: timers.setTimeout,
  setImmediate: timers.setImmediate,
  clearTimeout: timers.clearTimeout,
};
for (const [name, clear] of [
  ['setTimeout', timers.clearTimeout],
  ['setInterval', timers.clearInterval],
  ['setImmediate', timers.clearImmediate],
]) {
  const wrapper = tracked(timers[name], clear);
  for (const holder of [globalThis, timers]) {
    const d = Object.getOwnPropertyDescriptor(holder, name);
    Object.defineProperty(holder, name, { ...d, value: wrapper });
  }
}

// What a test may change and is put back after it.
// Only the names: reading the descriptors of node's lazy globals would make them all, which
// takes about 100 ms. So a global the program adds goes after its test, while a change to one of
// node's own (console.log replaced, a prototype extended) stays, as the JDK's state stays in
// the warm JVM.
const globalsBefore = new Set(Reflect.ownKeys(globalThis));
const cacheBefore = new Set(Object.keys(require.cache));
const listenersBefore = new Map();
const argvBefore = process.argv.slice(0, 1);
const cwdBefore = process.cwd();
const envBefore = { ...process.env };
const stdinBefore = Object.getOwnPropertyDescriptor(process, 'stdin');
const exitBefore = process.exit;

let test = null; // { exited, code, stdin, leftOver }
// The streams whose output an exit dropped (an own `write` over the prototype's).
let gated = [];

function freshStdin() {
  let stream = null;
  Object.defineProperty(process, 'stdin', {
    configurable: true,
    enumerable: stdinBefore ? stdinBefore.enumerable : true,
    get() {
      if (stream === null) {
        // As node makes it over a file: it reads on from fd 0's offset, and never closes it.
        stream = new fs.ReadStream(null, { fd: 0, autoClose: false });
        stream.fd = 0;
        test.stdin = stream;
      }
      return stream;
    },
  });
}

class Exit {
  constructor(code) {
    this.code = code;
  }
}

function exitCode() {
  const code = process.exitCode === undefined ? 0 : Number(process.exitCode);
  return Number.isInteger(code) ? code : 1;
}

// The test ends now: its code is set, its timers are cancelled, its output is dropped from
// here on, and it is reported once the event loop is empty (or `LEFT_OVER_MS` later, "last").
function exited(code) {
  if (test.exited) return;
  test.exited = true;
  test.code = code;
  for (const [t, clear] of made) clear(t);
  made = new Set();
  if (test.stdin) test.stdin.destroy();
  // process.stdout and stderr are made when first used (making them costs node ~10 ms).
  gated = [process.stdout, process.stderr];
  for (const s of gated) {
    s.write = (_chunk, encoding, cb) => {
      const done = typeof encoding === 'function' ? encoding : cb;
      if (typeof done === 'function') process.nextTick(done);
      return true;
    };
  }
  test.leftOver = real.setTimeout(() => finish(true), LEFT_OVER_MS);
  test.leftOver.unref();
}

// Run the program's 'exit' listeners, once a test, as node does; an exit in one of them sets
// the code. Returns what else one of them threw, if anything.
function emitExit(code) {
  if (test.exiting) return null;
  test.exiting = true;
  try {
    process.emit('exit', code);
  } catch (err) {
    if (!(err instanceof Exit)) return err;
  }
  return null;
}

process.exit = function exit(code) {
  if (test === null) return exitBefore.call(process, code);
  if (!test.exited) {
    if (code !== undefined && code !== null) process.exitCode = code;
    const thrown = emitExit(exitCode());
    if (thrown !== null) throw thrown;
    exited(exitCode());
  }
  throw new Exit(test.code);
};

function uncaught(err) {
  if (err instanceof Exit) return;
  if (test === null || test.exited) return;
  // The program's own listener decides, as in node.
  if (process.listenerCount('uncaughtException') > 1) return;
  let text;
  try {
    text = `${where(err)}${util.inspect(err)}\n\nNode.js ${process.version}\n`;
  } catch {
    text = `Uncaught exception\n`;
  }
  process.stderr.write(text);
  process.exitCode = 1;
  emitExit(1);
  exited(1);
}

// The program's line an error came from, as node prints it above the error.
function where(err) {
  const stack = err && typeof err.stack === 'string' ? err.stack : '';
  const m = /\(?((?:\/|file:\/\/)[^():]+):(\d+):(\d+)\)?/.exec(
    stack.split('\n').find((l) => !l.includes(SELF) && /\/[^:]+:\d+:\d+/.test(l)) || '',
  );
  if (!m) return '';
  try {
    const line = fs.readFileSync(m[1].replace(/^file:\/\//, ''), 'utf8').split('\n')[m[2] - 1];
    return `${m[1]}:${m[2]}\n${line}\n${' '.repeat(Math.max(0, m[3] - 1))}^\n\n`;
  } catch {
    return '';
  }
}

function withoutOurFrames(err) {
  if (err && typeof err.stack === 'string') {
    const lines = err.stack.split('\n').filter((l) => !l.includes(SELF));
    try {
      err.stack = lines.join('\n');
    } catch {}
  }
}

process.on('uncaughtException', (err) => {
  withoutOurFrames(err);
  uncaught(err);
});

process.on('beforeExit', () => {
  if (test === null) return;
  if (!test.exited && process.listenerCount('beforeExit') > 1) {
    // The program's own listeners run after this one and may schedule more work.
    process.nextTick(() => {
      if (process.getActiveResourcesInfo().length === 0) finish(false);
    });
    return;
  }
  finish(false);
});

for (const event of process.eventNames()) listenersBefore.set(event, process.listeners(event));

// The test is over: report it, put back what it changed, and take the next one.
function finish(leftOver) {
  if (test === null) return;
  const ended = test;
  if (!ended.exited) {
    // The event loop is empty: node's own ending.
    const thrown = emitExit(exitCode());
    if (thrown !== null) uncaught(thrown);
    if (!ended.exited) {
      ended.exited = true;
      ended.code = exitCode();
    }
  }
  if (ended.leftOver) real.clearTimeout(ended.leftOver);
  test = null;
  let restored = true;
  try {
    restore();
  } catch {
    restored = false;
  }
  // What could not be put back would be seen by the next test: a fresh process takes it.
  if (ended.warmUp) {
    // The warm-up said nothing of the program: the first test looks at its own file.
    commonJs = null;
    if (leftOver || !restored) exitBefore.call(process, 3);
    send(['ready']);
    next();
    return;
  }
  const last = leftOver || !commonJs || !restored;
  send(last ? ['tested', ended.code, 'last'] : ['tested', ended.code]);
  if (!last) next();
}

function restore() {
  for (const k of Reflect.ownKeys(globalThis)) {
    // Node's own lazily made globals (undici's dispatcher, a non-configurable symbol) stay.
    if (!globalsBefore.has(k) && Object.getOwnPropertyDescriptor(globalThis, k).configurable) {
      delete globalThis[k];
    }
  }
  for (const k of Object.keys(require.cache)) {
    if (!cacheBefore.has(k)) delete require.cache[k];
  }
  for (const event of process.eventNames()) {
    const keep = listenersBefore.get(event) || [];
    for (const l of process.listeners(event)) {
      if (!keep.includes(l)) process.removeListener(event, l);
    }
  }
  if (process.cwd() !== cwdBefore) process.chdir(cwdBefore);
  for (const k of Object.keys(process.env)) if (!(k in envBefore)) delete process.env[k];
  for (const [k, v] of Object.entries(envBefore)) if (process.env[k] !== v) process.env[k] = v;
  for (const s of gated) delete s.write;
  gated = [];
  made = new Set();
  process.exitCode = undefined;
  process.exit = exit;
  collect();
}
const exit = process.exit;

// Block until the next test and start it from the event loop.
function next() {
  const message = receive();
  if (message === null || message[0] !== 'test') exitBefore.call(process, 0);
  const argv = message.slice(2);
  const at = entryOf(argv);
  if (at === null) exitBefore.call(process, 3);
  real.setImmediate(() => start(argv, at));
}

// Whether the program is a CommonJS module. Node runs one with import or export syntax as an
// ES module, which its loader keeps for good: the next test would not run it again, so such a
// program runs here once and the rest of its tests run fresh.
let commonJs = null;
function isCommonJs(main) {
  try {
    require('vm').compileFunction(fs.readFileSync(main, 'utf8'), [], { filename: main });
    return !main.endsWith('.mjs');
  } catch {
    return false;
  }
}

function start(argv, at, warmUp = false) {
  const main = path.resolve(argv[at]);
  if (commonJs === null) commonJs = isCommonJs(main);
  test = {
    warmUp,
    exited: false,
    exiting: false,
    code: 0,
    stdin: null,
    leftOver: null,
  };
  process.argv = [...argvBefore, main, ...argv.slice(at + 1)];
  freshStdin();
  try {
    Module.runMain(main);
  } catch (err) {
    if (!(err instanceof Exit)) {
      withoutOurFrames(err);
      uncaught(err);
    }
  }
}

// A full collection after a test that left a large heap gives it back, so that it does not count
// in the next test's memory (a small one is not worth the few ms).
const LARGE_HEAP = 32 * 1024 * 1024;
let gc = null;
function collect() {
  const v8 = require('v8');
  if (v8.getHeapStatistics().used_heap_size < LARGE_HEAP) return;
  try {
    if (gc === null) {
      v8.setFlagsFromString('--expose-gc');
      gc = require('vm').runInNewContext('gc');
    }
    gc();
  } catch {}
}

if (early) {
  // Said ready once the warm-up ran as a test (the launcher is not listening before).
  const warmUp = path.join(__dirname, 'onpyrunner_judge_warmup.js');
  real.setImmediate(() => start([process.argv[0], ...flags, warmUp], flags.length + 1, true));
} else {
  send(['ready']);
  next();
}
