// onpyrunner IDE: an editor, a live terminal and one WebSocket (/api/v1/ws, see docs/protocol.md).
// Plain script, no build step here: the vendored CodeMirror 6 bundle (global `CM`, built once by
// scripts/vendor.sh), xterm.js and i18n.js (every string) are loaded before it.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const app = $('app');
  const languageSelect = $('language');
  const stateBadge = $('state');
  const connDot = $('conn');
  const runButton = $('run');
  const stopButton = $('stop');
  const eofButton = $('eof');
  const stdinInput = $('stdin-input');
  const shareButton = $('share');
  const shareBox = $('share-box');
  const shareUrlField = $('share-url');
  const shareStatus = $('share-status');
  const errorBox = $('error');
  const summaryBox = $('summary');
  const stdinNote = $('stdin-note');
  const tokenBox = $('token-box');
  const tokenInput = $('token-input');
  const tokenStatus = $('token-status');
  const desktop = window.matchMedia('(min-width: 900px)');

  // ---------------------------------------------------------------- storage
  const PREFIX = 'onpyrunner.';
  const store = {
    get(key) {
      try { return localStorage.getItem(PREFIX + key); } catch (_) { return null; }
    },
    set(key, value) {
      try { localStorage.setItem(PREFIX + key, value); } catch (_) { /* private mode, quota */ }
    },
    remove(key) {
      try { localStorage.removeItem(PREFIX + key); } catch (_) { /* private mode */ }
    },
  };

  // ------------------------------------------------------------ strings
  // i18n.js holds every string; the browser's language picks the table unless the user chose.
  const STRINGS = window.ONPY_STRINGS;
  function browserLanguage() {
    for (const l of navigator.languages || [navigator.language || 'en']) {
      const base = String(l).slice(0, 2).toLowerCase();
      if (STRINGS[base]) return base;
    }
    return 'en';
  }
  let uiLang = STRINGS[store.get('ui')] ? store.get('ui') : browserLanguage();
  function t(key, vars) {
    let s = (STRINGS[uiLang] && STRINGS[uiLang][key]) || STRINGS.en[key] || key;
    if (vars) for (const [k, v] of Object.entries(vars)) s = s.split('{' + k + '}').join(String(v));
    return s;
  }
  const rerenders = []; // what draws text from state, redrawn when the language changes
  function applyStrings() {
    document.documentElement.lang = uiLang;
    for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
    for (const el of document.querySelectorAll('[data-i18n-label]')) el.setAttribute('aria-label', t(el.dataset.i18nLabel));
    for (const el of document.querySelectorAll('[data-i18n-title]')) el.title = t(el.dataset.i18nTitle);
    $('ui-lang').value = uiLang;
    for (const f of rerenders) f();
  }
  $('ui-lang').addEventListener('change', () => {
    uiLang = $('ui-lang').value;
    store.set('ui', uiLang);
    applyStrings();
  });
  $('settings-toggle').addEventListener('click', () => {
    const open = $('settings').hidden;
    $('settings').hidden = !open;
    $('settings-toggle').setAttribute('aria-expanded', String(open));
  });

  // ------------------------------------------------------------- API token
  // A server started with --tokens wants one on the WebSocket and the run routes. It comes from
  // the token box or a `#token=...` link, is kept in localStorage, and goes on the WebSocket as
  // a subprotocol (browsers cannot set headers there; docs/protocol.md, "Authentication") and
  // on fetches as `Authorization: Bearer`.
  let token = store.get('token') || '';

  // `#token=...`: kept, and taken out of the address bar (and so out of shared links).
  function takeTokenFromUrl() {
    const m = /^#token=([A-Za-z0-9._~+-]+)$/.exec(location.hash);
    if (!m) return false;
    token = m[1];
    store.set('token', token);
    history.replaceState(null, '', location.pathname + location.search);
    return true;
  }

  function authHeaders() {
    return token ? { Authorization: 'Bearer ' + token } : {};
  }

  function askForToken(refused) {
    tokenStatus.textContent = refused ? t('tokenRefused') : '';
    tokenInput.value = '';
    tokenBox.hidden = false;
    tokenInput.focus();
  }

  // ------------------------------------------------ languages: kind and sample
  // Keyed by the entry file's extension, so a new language of a known kind needs nothing here.
  // Languages of one kind (CPython and PyPy) share one buffer: switching keeps the code.
  const KINDS = {
    py: {
      cm: 'python', indent: 4,
      sample: 'name = input("What is your name? ")\nprint(f"Hello, {name}!")\n',
    },
    js: {
      cm: 'javascript', indent: 2,
      sample: [
        'const readline = require("readline");',
        '',
        'const rl = readline.createInterface({ input: process.stdin });',
        'process.stdout.write("What is your name? ");',
        'rl.once("line", (name) => {',
        '  console.log(`Hello, ${name}!`);',
        '  rl.close();',
        '});',
        '',
      ].join('\n'),
    },
    java: {
      cm: 'java', indent: 4,
      sample: [
        'import java.util.Scanner;',
        '',
        'public class Main {',
        '    public static void main(String[] args) {',
        '        Scanner in = new Scanner(System.in);',
        '        System.out.print("What is your name? ");',
        '        System.out.flush();',
        '        String name = in.hasNextLine() ? in.nextLine() : "stranger";',
        '        System.out.println("Hello, " + name + "!");',
        '    }',
        '}',
        '',
      ].join('\n'),
    },
    c: { cm: 'cpp', indent: 4, sample: '#include <stdio.h>\n\nint main(void) {\n    printf("Hello, world!\\n");\n    return 0;\n}\n' },
    cpp: { cm: 'cpp', indent: 4, sample: '#include <iostream>\n\nint main() {\n    std::cout << "Hello, world!\\n";\n}\n' },
  };
  const PLAIN = { cm: null, indent: 4, sample: '' };

  function extOf(lang) {
    const file = (lang && lang.source_file) || '';
    return file.includes('.') ? file.split('.').pop().toLowerCase() : '';
  }
  function kindOf(lang) {
    return KINDS[extOf(lang)] || PLAIN;
  }

  // ----------------------------------------------------------------- editor
  const { EditorState, EditorSelection, Compartment, RangeSetBuilder, Annotation } = CM.state;
  const V = CM.view;
  const L = CM.language;
  const C = CM.commands;
  const tags = CM.highlight.tags;
  const langConf = new Compartment();
  const indentConf = new Compartment();
  const wrapConf = new Compartment();
  const labelConf = new Compartment();
  const loaded = Annotation.define(); // a change the program made (loading code), not the user

  // Colours at least 4.5:1 on the editor's background (#1f2127) and its active line (#262a33).
  const highlightStyle = L.HighlightStyle.define([
    { tag: [tags.keyword, tags.controlKeyword, tags.operatorKeyword, tags.definitionKeyword, tags.moduleKeyword], color: '#d7a8ff' },
    { tag: [tags.comment, tags.lineComment, tags.blockComment], color: '#a9b1bf', fontStyle: 'italic' },
    { tag: [tags.string, tags.special(tags.string), tags.character], color: '#c3e88d' },
    { tag: [tags.number, tags.bool, tags.null, tags.atom], color: '#f9a77c' },
    { tag: [tags.function(tags.variableName), tags.function(tags.propertyName)], color: '#9cc2ff' },
    { tag: [tags.definition(tags.variableName), tags.className, tags.typeName, tags.definition(tags.typeName)], color: '#ffcb6b' },
    { tag: [tags.operator, tags.derefOperator], color: '#99e3ff' },
    { tag: [tags.meta, tags.annotation, tags.processingInstruction], color: '#ffcb6b' },
    { tag: tags.invalid, color: '#ff8080' },
  ]);
  const theme = V.EditorView.theme({
    '&': { color: '#e6e6e6', backgroundColor: '#1f2127' },
    '.cm-content': { caretColor: '#7fd962', padding: '4px 0' },
    '.cm-cursor, .cm-dropCursor': { borderLeftColor: '#7fd962', borderLeftWidth: '2px' },
    '.cm-gutters': { backgroundColor: '#1b1d23', color: '#a9b1bf', border: 'none' },
    '.cm-activeLine': { backgroundColor: '#262a33' },
    '.cm-activeLineGutter': { backgroundColor: '#262a33', color: '#e6e6e6' },
    '&.cm-focused .cm-selectionBackground, .cm-selectionBackground, .cm-content ::selection': { backgroundColor: '#3a4a6a' },
    '&.cm-focused .cm-matchingBracket': { backgroundColor: '#3a4a6a', outline: '1px solid #8a94a8' },
  }, { dark: true });

  // Wrapped lines keep their indent: a line starting with N columns of blanks wraps at column
  // N (in Python a continuation at column 0 would read as a dedent).
  const wrapIndentDecos = new Map();
  function wrapIndentDeco(cols) {
    let d = wrapIndentDecos.get(cols);
    if (!d) {
      d = V.Decoration.line({ attributes: { style: `text-indent:-${cols}ch;padding-left:calc(${cols}ch + 6px)` } });
      wrapIndentDecos.set(cols, d);
    }
    return d;
  }
  const wrapIndent = V.ViewPlugin.fromClass(class {
    constructor(view) { this.decorations = this.build(view); }
    update(u) { if (u.docChanged || u.viewportChanged) this.decorations = this.build(u.view); }
    build(view) {
      const b = new RangeSetBuilder();
      const tab = view.state.tabSize;
      for (const { from, to } of view.visibleRanges) {
        for (let pos = from; pos <= to;) {
          const line = view.state.doc.lineAt(pos);
          const m = /^[ \t]+/.exec(line.text);
          if (m && m[0].length < line.length) {
            let cols = 0;
            for (const ch of m[0]) cols = ch === '\t' ? cols + tab - (cols % tab) : cols + 1;
            b.add(line.from, line.from, wrapIndentDeco(cols));
          }
          pos = line.to + 1;
        }
      }
      return b.finish();
    }
  }, { decorations: (v) => v.decorations });

  function indentWidth(state) { return L.getIndentUnit(state); }

  // Tab: spaces to the next indent stop (Python cares; the others do not mind), or with a
  // selection, indent the lines.
  function softTab(view) {
    const { state } = view;
    if (state.selection.ranges.some((r) => !r.empty)) return C.indentMore(view);
    const unit = indentWidth(state);
    view.dispatch(state.update(state.changeByRange((range) => {
      const line = state.doc.lineAt(range.head);
      const col = range.head - line.from;
      const spaces = ' '.repeat(unit - (col % unit));
      return { changes: { from: range.head, insert: spaces }, range: EditorSelection.cursor(range.head + spaces.length) };
    }), { scrollIntoView: true, userEvent: 'input.indent' }));
    return true;
  }

  // Backspace in the blanks that start a line removes back to the previous indent stop.
  function backspaceIndent(view) {
    const { state } = view;
    const unit = indentWidth(state);
    const inIndent = (r) => {
      if (!r.empty) return false;
      const line = state.doc.lineAt(r.head);
      const before = line.text.slice(0, r.head - line.from);
      return before.length > 0 && /^ +$/.test(before);
    };
    if (!state.selection.ranges.every(inIndent)) return false;
    view.dispatch(state.update(state.changeByRange((range) => {
      const col = range.head - state.doc.lineAt(range.head).from;
      const del = col % unit || unit;
      return { changes: { from: range.head - del, to: range.head }, range: EditorSelection.cursor(range.head - del) };
    }), { scrollIntoView: true, userEvent: 'delete.backward' }));
    return true;
  }

  let onEdited = () => {};
  function editorExtensions(kind) {
    return [
      V.lineNumbers(),
      V.highlightActiveLineGutter(),
      V.highlightActiveLine(),
      C.history(),
      L.indentOnInput(),
      L.bracketMatching(),
      CM.autocomplete.closeBrackets(),
      L.syntaxHighlighting(highlightStyle),
      theme,
      wrapIndent,
      wrapConf.of(desktop.matches ? [] : V.EditorView.lineWrapping),
      indentConf.of([L.indentUnit.of(' '.repeat(kind.indent)), EditorState.tabSize.of(kind.indent)]),
      langConf.of(kind.cm && CM.lang && CM.lang[kind.cm] ? CM.lang[kind.cm]() : []),
      labelConf.of(V.EditorView.contentAttributes.of({ 'aria-label': t('editorLabel') })),
      V.EditorView.contentAttributes.of({ autocorrect: 'off', autocapitalize: 'off', spellcheck: 'false' }),
      // Tab indents; Esc then Tab leaves the editor (CodeMirror's tab focus mode).
      V.keymap.of([
        ...CM.autocomplete.closeBracketsKeymap,
        { key: 'Tab', run: softTab, shift: C.indentLess },
        { key: 'Backspace', run: backspaceIndent },
        ...C.defaultKeymap,
        ...C.historyKeymap,
      ]),
      V.EditorView.updateListener.of((u) => {
        if (u.docChanged && !u.transactions.every((tr) => tr.annotation(loaded))) onEdited();
      }),
    ];
  }

  const editor = new V.EditorView({
    state: EditorState.create({ doc: '', extensions: editorExtensions(PLAIN) }),
    parent: $('editor'),
  });
  desktop.addEventListener('change', () => editor.dispatch({ effects: wrapConf.reconfigure(desktop.matches ? [] : V.EditorView.lineWrapping) }));
  rerenders.push(() => editor.dispatch({ effects: labelConf.reconfigure(V.EditorView.contentAttributes.of({ 'aria-label': t('editorLabel') })) }));

  const getCode = () => editor.state.doc.toString();
  // A fresh state: the code, its language's mode and indent, an empty undo history.
  function loadCode(code, kind) {
    editor.setState(EditorState.create({ doc: code, extensions: editorExtensions(kind) }));
    if (kind.cm && !(CM.lang && CM.lang[kind.cm])) {
      loadLanguageMode(kind.cm).then(() => {
        if (kindOf(language) === kind) editor.dispatch({ effects: langConf.reconfigure(CM.lang[kind.cm]()) });
      }, () => { /* plain text, then */ });
    }
  }
  // Other languages' modes are loaded when first needed (Python's comes with the page).
  const modeLoads = {};
  function loadLanguageMode(name) {
    if (!modeLoads[name]) {
      modeLoads[name] = new Promise((resolve, reject) => {
        const s = document.createElement('script');
        s.src = '/assets/vendor/codemirror/lang-' + name + '.js';
        s.onload = () => (CM.lang && CM.lang[name] ? resolve() : reject(new Error(name)));
        s.onerror = () => { delete modeLoads[name]; reject(new Error(name)); };
        document.head.append(s);
      });
    }
    return modeLoads[name];
  }
  // Replaces the code as if loaded (no save, undo history kept); tests use it too.
  function setCode(code) {
    editor.dispatch({ changes: { from: 0, to: editor.state.doc.length, insert: code }, annotations: loaded.of(true) });
  }

  // ------------------------------------------------------------- key row
  // What phone keyboards lack. The buttons never take the focus, so the keyboard stays up.
  const keyrow = $('keyrow');
  for (const type of ['pointerdown', 'mousedown']) {
    keyrow.addEventListener(type, (ev) => { if (ev.target.closest('button')) ev.preventDefault(); });
  }
  const KEYS = {
    tab: softTab,
    'shift-tab': C.indentLess,
    left: C.cursorCharLeft,
    right: C.cursorCharRight,
    up: C.cursorLineUp,
    down: C.cursorLineDown,
    undo: C.undo,
  };
  keyrow.addEventListener('click', (ev) => {
    const button = ev.target.closest('button');
    if (!button) return;
    const view = editor;
    if (button.dataset.key) {
      KEYS[button.dataset.key](view);
    } else if (button.dataset.insert) {
      const text = button.dataset.insert;
      const { from, to } = view.state.selection.main;
      const next = view.state.sliceDoc(to, to + 1);
      if (text.length === 1 && next === text && from === to && ')]}'.includes(text)) {
        view.dispatch({ selection: { anchor: to + 1 }, userEvent: 'select' }); // step over the closing one
      } else if (text.length === 2) {
        const inner = view.state.sliceDoc(from, to);
        view.dispatch({
          changes: { from, to, insert: text[0] + inner + text[1] },
          selection: inner ? { anchor: from + 1, head: to + 1 } : { anchor: from + 1 },
          userEvent: 'input.type',
        });
      } else {
        view.dispatch(view.state.replaceSelection(text), { userEvent: 'input.type' });
      }
    }
    view.focus();
  });

  // ---------------------------------------------------------------- terminal
  const SCROLLBACK = 5000;
  const term = new Terminal({
    convertEol: true, // programs write "\n"; the terminal needs "\r\n"
    cursorBlink: true,
    fontSize: 14,
    fontFamily: 'ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace',
    scrollback: SCROLLBACK,
    screenReaderMode: store.get('sr') === '1',
    theme: { background: '#121212', foreground: '#e6e6e6', cursor: '#7fd962', selectionBackground: '#3a4a6a', brightBlack: '#a9b1bf', brightRed: '#ff7b7b', red: '#ff6b6b', blue: '#8fb0ff' },
    // Program output can make links (OSC 8) whose text says one thing and whose target is
    // another, or a javascript: URL that would run in this page's origin. Only http(s) links
    // open, after the user has seen the real address, in a tab that cannot reach this one.
    linkHandler: {
      allowNonHttpProtocols: false,
      activate(event, uri) {
        let url;
        try { url = new URL(uri); } catch { return; }
        if (url.protocol !== 'http:' && url.protocol !== 'https:') return;
        if (!window.confirm(t('linkConfirm', { url: url.href }))) return;
        window.open(url.href, '_blank', 'noopener,noreferrer');
      },
    },
  });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open($('terminal'));
  rerenders.push(() => term.textarea && term.textarea.setAttribute('aria-label', t('terminalLabel')));
  $('screen-reader').checked = store.get('sr') === '1';
  $('screen-reader').addEventListener('change', () => {
    term.options.screenReaderMode = $('screen-reader').checked;
    store.set('sr', $('screen-reader').checked ? '1' : '0');
  });
  // Ctrl+C with a selection copies, as everywhere else; without one it stops the run. Esc then
  // Tab (within 2 s, as in the editor) leaves the terminal; so does Tab when nothing runs.
  let escapeAt = 0;
  term.attachCustomKeyEventHandler((ev) => {
    if (ev.type !== 'keydown') return true;
    if (ev.key === 'Escape') { escapeAt = Date.now(); return true; }
    if (ev.key === 'Tab' && (!run || Date.now() - escapeAt < 2000)) return false;
    return !(ev.ctrlKey && ev.key === 'c' && term.hasSelection());
  });

  // The IDE's own notes in the terminal: grey (the theme's bright black, 7:1), not faint.
  const DIM = '\x1b[90m';
  const RESET = '\x1b[0m';
  const STDERR_COLOR = '\x1b[91m';
  const DEFAULT_COLOR = '\x1b[39m';

  let atLineStart = true; // whether the terminal's last written byte ended a line
  let outStream = 1; // the stream whose color the terminal is in
  // The whole output of the current run, for Copy all and Download (the terminal keeps only its
  // last SCROLLBACK lines), and where its first stderr line is.
  let outChunks = [];
  let outLines = 0;
  let errorLine = null;

  // The IDE's notes are wrapped between words (the terminal would cut words at its edge).
  function wrapWords(text, cols) {
    const width = (word) => Array.from(word).reduce((n, c) => n + (WIDE.test(c) ? 2 : 1), 0);
    const lines = [];
    let line = '';
    let used = 0;
    for (const word of text.split(' ')) {
      const w = width(word);
      if (line && used + 1 + w > cols) {
        lines.push(line);
        line = word;
        used = w;
      } else {
        used += (line ? 1 : 0) + w;
        line = line ? line + ' ' + word : word;
      }
    }
    lines.push(line);
    return lines.join('\r\n');
  }

  function termNotice(text, then) {
    term.write((atLineStart ? '' : '\r\n') + RESET + DIM + wrapWords(text, term.cols) + RESET + '\r\n', then);
    atLineStart = true;
  }

  function fitTerminal() {
    try { fit.fit(); } catch (_) { /* not laid out yet */ }
  }
  let fitQueued = false;
  new ResizeObserver(() => {
    if (fitQueued) return;
    fitQueued = true;
    requestAnimationFrame(() => { fitQueued = false; fitTerminal(); });
  }).observe($('terminal'));

  // The visible height, on-screen keyboard excluded (browsers without interactive-widget).
  function fitApp() {
    const h = window.visualViewport ? window.visualViewport.height : window.innerHeight;
    document.documentElement.style.setProperty('--app-height', Math.round(h) + 'px');
  }
  if (window.visualViewport) window.visualViewport.addEventListener('resize', fitApp);
  window.addEventListener('resize', fitApp);
  fitApp();

  // Touch: xterm.js 6 does not scroll by finger (xtermjs/xterm.js#5489), so we do, with
  // momentum; a long press copies the line under the finger.
  (function touchScrolling() {
    const el = $('terminal');
    let lastY = 0; let startX = 0; let startY = 0; let lastT = 0;
    let velocity = 0; let carry = 0; let moved = false; let anim = 0; let pressTimer = null;
    const rowHeight = () => {
      const screen = el.querySelector('.xterm-screen');
      return screen && term.rows ? screen.getBoundingClientRect().height / term.rows : 17;
    };
    function scrollByPixels(dy) {
      carry += dy;
      const h = rowHeight();
      const lines = Math.trunc(carry / h);
      if (lines) {
        carry -= lines * h;
        term.scrollLines(-lines);
      }
    }
    el.addEventListener('touchstart', (ev) => {
      cancelAnimationFrame(anim);
      clearTimeout(pressTimer);
      if (ev.touches.length !== 1) return;
      const p = ev.touches[0];
      lastY = startY = p.clientY;
      startX = p.clientX;
      lastT = ev.timeStamp;
      velocity = 0; carry = 0; moved = false;
      pressTimer = setTimeout(() => { pressTimer = null; if (!moved) copyLineAt(startY); }, 550);
    }, { passive: true, capture: true });
    el.addEventListener('touchmove', (ev) => {
      if (ev.touches.length !== 1) return;
      const p = ev.touches[0];
      if (!moved && Math.abs(p.clientY - startY) < 6 && Math.abs(p.clientX - startX) < 6) return;
      moved = true;
      clearTimeout(pressTimer);
      ev.preventDefault();
      ev.stopPropagation();
      const dy = p.clientY - lastY;
      const dt = Math.max(1, ev.timeStamp - lastT);
      velocity = 0.7 * (dy / dt) + 0.3 * velocity;
      lastY = p.clientY;
      lastT = ev.timeStamp;
      scrollByPixels(dy);
    }, { passive: false, capture: true });
    el.addEventListener('touchend', () => {
      clearTimeout(pressTimer);
      if (!moved) return; // a tap: xterm focuses its input (the program may want some)
      let v = velocity * 16; // px per frame
      const step = () => {
        if (Math.abs(v) < 0.5) return;
        scrollByPixels(v);
        v *= 0.94;
        anim = requestAnimationFrame(step);
      };
      anim = requestAnimationFrame(step);
    }, { capture: true });
  }());

  async function copyText(text, done) {
    try {
      await navigator.clipboard.writeText(text);
      toast(done);
      return true;
    } catch (_) {
      toast(t('copyFailed'));
      return false;
    }
  }
  function copyLineAt(clientY) {
    const screen = $('terminal').querySelector('.xterm-screen');
    if (!screen) return;
    const r = screen.getBoundingClientRect();
    const row = Math.floor((clientY - r.top) / (r.height / term.rows));
    if (row < 0 || row >= term.rows) return;
    const line = term.buffer.active.viewportY + row;
    term.selectLines(line, line);
    const text = term.getSelection().replace(/\s+$/, '');
    if (text) copyText(text, t('lineCopied'));
  }
  function wholeOutput() {
    const decoder = new TextDecoder();
    return outChunks.map((c) => decoder.decode(c, { stream: true })).join('') + decoder.decode();
  }
  $('copy-all').addEventListener('click', () => copyText(wholeOutput(), t('copied')));
  $('download').addEventListener('click', () => {
    const a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob(outChunks, { type: 'text/plain' }));
    a.download = 'output.txt';
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
  });
  function showDropped() {
    const dropped = outLines - SCROLLBACK;
    const note = $('dropped');
    note.hidden = dropped <= 0;
    if (dropped > 0) note.textContent = t('dropped', { keep: SCROLLBACK.toLocaleString(), dropped: dropped.toLocaleString() });
  }
  rerenders.push(showDropped);

  let toastTimer = null;
  function toast(text) {
    const el = $('toast');
    el.textContent = text;
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { el.hidden = true; }, 2000);
  }

  // ------------------------------------------------------------------ tabs
  // Phones show one panel at a time; from 900px the editor is always there and the tabs choose
  // what is beside it (Input, Output or Tests).
  const TABS = ['code', 'input', 'output', 'tests'];
  function showTab(name) {
    if (desktop.matches && name === 'code') name = 'output';
    app.dataset.tab = name;
    for (const tab of TABS) {
      const button = $('tab-' + tab);
      button.setAttribute('aria-selected', String(tab === name));
      button.tabIndex = tab === name ? 0 : -1;
    }
    if (name === 'output') fitTerminal();
  }
  for (const tab of TABS) {
    $('tab-' + tab).addEventListener('click', () => {
      showTab(tab);
      if (tab === 'code') editor.focus();
    });
  }
  $('tabs').addEventListener('keydown', (ev) => {
    if (ev.key !== 'ArrowLeft' && ev.key !== 'ArrowRight') return;
    const shown = TABS.filter((tb) => $('tab-' + tb).offsetParent !== null);
    const i = shown.indexOf(app.dataset.tab === 'code' && desktop.matches ? 'output' : app.dataset.tab);
    const next = shown[(i + (ev.key === 'ArrowRight' ? 1 : shown.length - 1)) % shown.length];
    showTab(next);
    $('tab-' + next).focus();
  });
  desktop.addEventListener('change', () => showTab(app.dataset.tab));
  showTab('code');

  // -------------------------------------------------------------- UI helpers
  function showError(text) {
    errorBox.textContent = text;
    errorBox.hidden = false;
  }
  function hideError() {
    errorBox.hidden = true;
    errorBox.textContent = '';
  }
  errorBox.addEventListener('click', hideError);

  function showNotice(text, action, onAction) {
    $('notice-text').textContent = text;
    const button = $('notice-action');
    button.hidden = !action;
    button.textContent = action || '';
    button.onclick = onAction || null;
    $('notice').hidden = false;
  }

  // The badge: what the run is doing, or its verdict in the judge's words.
  let badge = { state: 'idle', key: null, vars: null, verdict: null };
  function setBadge(state, key, vars) {
    badge = { state, key, vars, verdict: null };
    renderBadge();
  }
  function renderBadge() {
    stateBadge.dataset.state = badge.state;
    if (badge.verdict) stateBadge.dataset.verdict = badge.verdict;
    else delete stateBadge.dataset.verdict;
    stateBadge.textContent = badge.key ? t(badge.key, badge.vars) : '…';
  }
  rerenders.push(renderBadge);

  function setConn(conn) {
    connDot.dataset.conn = conn;
    const key = { open: 'connOpen', connecting: 'connConnecting', closed: 'connClosed' }[conn];
    connDot.setAttribute('aria-label', t(key));
    connDot.title = t(key);
  }
  rerenders.push(() => setConn(connDot.dataset.conn));

  // ----------------------------------------------------------------- state
  let languages = [];
  let language = null; // the selected entry of `languages`
  // The current run, from sending it to its summary. Null between runs.
  //   id: the server's run id (null until its first message), seq: the log position just after
  //   the last thing heard of it (docs/protocol.md, "Sequence numbers"), resuming: a `resume` is
  //   on its way, outbox: stdin/eof/stop typed while the connection was down, sent once resumed.
  let run = null;
  let pendingRun = null; // a run message waiting for the connection to open
  let lineBuffer = ''; // cooked-mode line being typed, not yet sent

  function updateButtons() {
    const busy = !!run || !!pendingRun;
    // Run and Stop share one place: the keyboard's focus moves with them.
    const focusMoves = (busy && document.activeElement === runButton) || (!busy && document.activeElement === stopButton);
    runButton.disabled = busy || !language || !language.available;
    runButton.hidden = busy;
    stopButton.hidden = !busy;
    stopButton.disabled = !busy;
    eofButton.disabled = !run || run.eofSent || !!run.judged;
    runTestsButton.disabled = busy || !language || !language.available || !tests.length;
    if (focusMoves) (busy ? stopButton : runButton).focus();
    renderStdinNote();
  }

  // --------------------------------------------------------------- WebSocket
  // A connection that went silent (a phone that lost signal keeps its TCP connection open) is
  // only noticed by listening: we ping every PING_MS and give up after SILENT_MS of hearing
  // nothing at all, then reconnect and resume the run (docs/protocol.md, "Heartbeat from the
  // client").
  const PING_MS = 2000;
  const SILENT_MS = 6000;
  const CHECK_MS = 500; // how often silence is checked: it is noticed within SILENT_MS + CHECK_MS
  const CONNECT_TIMEOUT_MS = 8000;
  let ws = null;
  let backoffMs = 250;
  let reconnectTimer = null;
  let heartbeatTimer = null;
  let lastHeard = 0; // when the current socket last delivered anything
  let lastTick = 0; // when the heartbeat last ran (a late tick means the page was frozen)
  let lastPing = 0;
  let lostBanner = false; // the error box says the connection is lost (ours to hide)
  // Sockets given up on while their run went on. Closing one would send a close frame, and a
  // close frame that gets through late (the network comes back) kills the run on the server; so
  // they are only left unheard, and closed once that run has its summary.
  let abandoned = [];

  function wsUrl() {
    return (location.protocol === 'https:' ? 'wss:' : 'ws:') + '//' + location.host + '/api/v1/ws';
  }

  // `onpyrunner` is answered by the server; the second offer carries the token.
  function wsProtocols() {
    return token ? ['onpyrunner', 'onpyrunner.token.' + token] : ['onpyrunner'];
  }

  // A browser is not told why a handshake failed: ask the same URL with a plain GET, which the
  // server answers as it would have answered the handshake (401 bad token, 429 too many
  // WebSockets), or with 400 (not an upgrade) when the handshake would have passed. Resolves
  // true when reconnecting is worth it.
  async function whyRefused() {
    let response;
    try {
      response = await fetch('/api/v1/ws', { headers: authHeaders(), cache: 'no-store' });
    } catch (_) {
      return true; // the network: keep trying
    }
    if (response.status === 401) {
      askForToken(!!token);
      return false;
    }
    if (response.status === 429 || response.status === 403) {
      let message = 'HTTP ' + response.status;
      try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
      showError(t('refusedConnection', { e: message }));
      lostBanner = true;
    }
    return true;
  }

  function connected() {
    return ws && ws.readyState === WebSocket.OPEN;
  }

  function connect() {
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    if (ws && (ws.readyState === WebSocket.CONNECTING || ws.readyState === WebSocket.OPEN)) return;
    setConn('connecting');
    let sock;
    try {
      sock = new WebSocket(wsUrl(), wsProtocols());
    } catch (e) {
      scheduleReconnect();
      return;
    }
    sock.binaryType = 'arraybuffer';
    ws = sock;
    let opened = false;
    // A handshake that hangs (no network, but the request was taken) is given up on; closing a
    // socket that is still connecting sends nothing.
    const connectTimer = setTimeout(() => {
      if (ws === sock && sock.readyState === WebSocket.CONNECTING) {
        sock.close();
        lost(sock);
      }
    }, CONNECT_TIMEOUT_MS);
    sock.onopen = () => {
      clearTimeout(connectTimer);
      opened = true;
      if (ws !== sock) return;
      backoffMs = 250;
      setConn('open');
      startHeartbeat();
      if (lostBanner) { lostBanner = false; hideError(); }
      if (run && run.id !== null) {
        run.resuming = true;
        send({ type: 'resume', run: run.id, seq: run.seq });
      } else if (pendingRun) {
        const msg = pendingRun;
        pendingRun = null;
        sendRun(msg);
      }
      updateButtons();
    };
    sock.onmessage = (ev) => {
      if (ws !== sock) return;
      lastHeard = Date.now();
      if (typeof ev.data === 'string') onText(ev.data);
      else onOutput(new Uint8Array(ev.data));
    };
    sock.onclose = (ev) => {
      clearTimeout(connectTimer);
      abandoned = abandoned.filter((s) => s !== sock);
      if (ws !== sock) return;
      if (ev.code === 1009) {
        showError(t('messageTooLarge'));
      }
      if (!opened) {
        // The handshake failed: find out why before trying again.
        ws = null;
        setConn('closed');
        whyRefused().then((retry) => { if (retry) scheduleReconnect(); });
        return;
      }
      lost(sock, ev.code);
    };
    sock.onerror = () => { /* a close event follows */ };
  }

  function startHeartbeat() {
    clearInterval(heartbeatTimer);
    lastHeard = lastTick = lastPing = Date.now();
    heartbeatTimer = setInterval(heartbeat, CHECK_MS);
  }

  function heartbeat() {
    const now = Date.now();
    // A tick far too late: the page was frozen (a phone's background tab), not the network
    // silent. Whatever arrived meanwhile may not have been delivered yet: ask again first.
    if (now - lastTick > 2 * PING_MS) lastHeard = Math.max(lastHeard, now - SILENT_MS + PING_MS + 1000);
    lastTick = now;
    if (!connected()) return;
    if (now - lastHeard > SILENT_MS) {
      const sock = ws;
      if (run) abandoned.push(sock);
      else sock.close(); // no run on it: a close frame harms nothing
      lost(sock);
      return;
    }
    if (now - lastPing >= PING_MS) {
      lastPing = now;
      send({ type: 'ping' });
    }
  }

  // `sock` is gone (closed, or silent for too long): stop listening to it, say so, and
  // reconnect; the run, if it had one, waits on the server to be resumed.
  function lost(sock, code) {
    if (ws !== sock) return;
    ws = null;
    clearInterval(heartbeatTimer);
    heartbeatTimer = null;
    setConn('closed');
    if (run) {
      run.resuming = false;
      if (run.id === null && !pendingRun) {
        // Sent, but not a word back: there is no id to resume it by.
        endRun();
        setBadge('ready', 'stateReady');
        termNotice(t('lostBeforeStart'));
      } else if (run.id !== null) {
        setBadge('reconnecting', 'stateReconnecting');
        figures = { key: 'reconnectingFigures' };
        renderFigures();
      }
    }
    if (run && code !== 1009) {
      showError(t('lostConnection'));
      lostBanner = true;
    }
    scheduleReconnect();
  }

  function scheduleReconnect() {
    if (reconnectTimer) return;
    reconnectTimer = setTimeout(connect, backoffMs);
    backoffMs = Math.min(backoffMs * 2, 8000);
  }

  // Back from the background or offline: try at once instead of waiting out the backoff.
  function reconnectNow() {
    if (connected() || (ws && ws.readyState === WebSocket.CONNECTING)) return;
    backoffMs = 250;
    connect();
  }
  window.addEventListener('online', reconnectNow);
  document.addEventListener('visibilitychange', () => { if (!document.hidden) reconnectNow(); });

  function send(obj) {
    if (!connected()) return false;
    ws.send(JSON.stringify(obj));
    return true;
  }

  // stdin, eof and stop of the current run: kept while the connection is down or the run is
  // being resumed, and sent in order once it is back.
  function sendToRun(obj) {
    if (!run) return;
    if (run.resuming || !send(obj)) run.outbox.push(obj);
  }

  // -------------------------------------------------------- server messages
  function onText(text) {
    let msg;
    try { msg = JSON.parse(text); } catch (_) { return; }
    switch (msg.type) {
      case 'state': onState(msg); break;
      case 'queued': onQueued(msg); break;
      case 'compiled': onCompiled(msg); break;
      case 'test': onTest(msg); break;
      case 'summary': onSummary(msg); break;
      case 'resumed': onResumed(msg); break;
      case 'error': onServerError(msg); break;
      default: break;
    }
  }

  // Messages of a run other than ours (one that ended on our side already) are dropped.
  // Those of ours move the run's position on.
  function ours(msg) {
    if (!run) return false;
    if (run.id === null && msg.run !== undefined) run.id = msg.run;
    if (msg.run !== undefined && msg.run !== run.id) return false;
    if (typeof msg.seq === 'number') run.seq = msg.seq;
    return true;
  }

  const STATE_KEYS = { READY: 'stateReady', RUNNING: 'stateRunning', QUEUED: 'stateQueued' };
  function showRunState(s) {
    setBadge(s.toLowerCase(), STATE_KEYS[s] || 'stateRunning');
    if (s === 'RUNNING') startClock();
    else { figures = { key: null }; renderFigures(); }
  }

  // Taken back after a drop: what follows is exactly what came after run.seq.
  function onResumed(msg) {
    if (!run || msg.run !== run.id) return;
    run.resuming = false;
    showRunState(String(msg.state || '').toUpperCase());
    const outbox = run.outbox;
    run.outbox = [];
    for (const m of outbox) sendToRun(m);
    updateButtons();
  }

  function onState(msg) {
    if (!ours(msg)) return;
    showRunState(String(msg.state || '').toUpperCase());
    if (run.judged && String(msg.state).toUpperCase() === 'RUNNING') markRunning();
    if (run.eofOnStart && !run.eofSent) {
      // The batch input went with the run; end it so the program does not wait for more.
      run.eofSent = true;
      sendToRun({ type: 'eof' });
    }
    updateButtons();
  }

  function onQueued(msg) {
    if (!ours(msg)) return;
    setBadge('queued', 'stateQueued', { n: msg.position });
    figures = { key: 'queuedFigures' };
    renderFigures();
  }

  function onOutput(bytes) {
    if (!run || bytes.length === 0) return;
    const stream = bytes[0];
    const data = bytes.subarray(1);
    run.seq += data.length;
    if (data.length === 0) return;
    run.lastOutputAt = performance.now();
    if (stream !== outStream) {
      term.write(stream === 2 ? STDERR_COLOR : DEFAULT_COLOR);
      outStream = stream;
    }
    if (stream === 2 && errorLine === null) {
      // Where the error starts: the line the cursor is on once what came before is drawn.
      errorLine = -1;
      term.write('', () => { const b = term.buffer.active; errorLine = b.baseY + b.cursorY; });
    }
    term.write(data);
    atLineStart = data[data.length - 1] === 0x0a;
    outChunks.push(data);
    if (run.judged) judgedOutput(stream, data);
    for (let i = 0; i < data.length; i++) if (data[i] === 0x0a) outLines++;
    if (outLines > SCROLLBACK) showDropped();
  }

  function onSummary(msg) {
    if (!ours(msg)) return;
    const judged = run.judged;
    const compiler = run.compiler;
    run.summarized = true;
    endRun();
    // The run is over: a close frame on a socket given up on can no longer kill it.
    for (const sock of abandoned) sock.close();
    abandoned = [];
    const state = String(msg.state || 'FINISHED').toUpperCase();
    badge = { state: state.toLowerCase(), key: null, vars: null, verdict: verdictOf(msg) };
    if (judged) {
      endJudged(judged, msg, compiler);
      // A judged run's verdict is the judge's (its program may well exit 0 with a wrong answer).
      if (msg.judge && msg.judge.verdict) badge.verdict = JUDGE_VERDICTS[msg.judge.verdict] || 'internal';
    }
    badge.key = VERDICT_KEYS[badge.verdict];
    renderBadge();
    figures = { summary: msg };
    renderFigures();
    const failed = badge.verdict !== 'ok';
    // The start of the error in view (a long traceback or javac's first lines would be above).
    termNotice('[' + t(badge.key) + ': ' + summaryParts(msg).map((p) => p[1]).join(', ') + ']', () => {
      if (failed) term.scrollToLine(Math.max(0, errorLine === null || errorLine < 0 ? 0 : errorLine));
    });
    if (msg.reason === 'internal_error' && msg.error) showError(t('serverCouldNotFinish', { e: msg.error }));
  }

  function onServerError(msg) {
    let text = msg.error || 'error';
    if (msg.field) text += ' (field: ' + msg.field + (msg.limit != null ? ', limit: ' + msg.limit : '') + ')';
    if (run && run.id === null) {
      // The run was refused: nothing started.
      endRun();
      setBadge('error', 'stateError');
      showError(text);
      termNotice(t('notStarted', { e: text }));
    } else if (run && run.resuming) {
      // Not taken back (404: gone, killed after the grace period or the server restarted).
      endRun();
      setBadge('ready', 'stateReady');
      showError(t('notResumed', { e: text }));
      termNotice(t('notResumed', { e: text }));
    } else {
      showError(text);
    }
  }

  function endRun() {
    // A judged run that ends without its summary (refused, lost before it started, stopped
    // before it was sent) leaves its tests as they were before it.
    if (run && run.judged && !run.summarized) abandonJudged(run.judged);
    run = null;
    lineBuffer = '';
    stopClock();
    if (outStream !== 1) term.write(DEFAULT_COLOR);
    outStream = 1;
    updateButtons();
  }

  // ------------------------------------------------------------- figures
  // The verdict in the judge's words (Baekjoon's, in Korean), with its colour (app.css).
  const VERDICT_KEYS = {
    ok: 'verdictOk', accepted: 'verdictAccepted', wrong: 'verdictWrong', ran: 'verdictRan', compile: 'verdictCompile', runtime: 'verdictRuntime', time: 'verdictTime',
    memory: 'verdictMemory', output: 'verdictOutput', stopped: 'verdictStopped',
    internal: 'verdictInternal', shutdown: 'verdictShutdown', gone: 'verdictGone',
  };
  function verdictOf(s) {
    switch (s.reason) {
      case 'compile_error': return 'compile';
      case 'timeout': return 'time';
      case 'memory_limit': return 'memory';
      case 'output_limit': return 'output';
      case 'stopped': return 'stopped';
      case 'shutdown': return 'shutdown';
      case 'client_gone': return 'gone';
      case 'internal_error': return 'internal';
      default: break;
    }
    const state = String(s.state || '').toUpperCase();
    if (state === 'TIMEOUT') return 'time';
    if (state === 'STOPPED') return 'stopped';
    if (s.oom_killed) return 'memory';
    if (s.signal != null || (s.exit_code != null && s.exit_code !== 0)) return 'runtime';
    return 'ok';
  }

  const SIGNALS = { 1: 'SIGHUP', 2: 'SIGINT', 3: 'SIGQUIT', 4: 'SIGILL', 6: 'SIGABRT', 8: 'SIGFPE', 9: 'SIGKILL', 11: 'SIGSEGV', 13: 'SIGPIPE', 14: 'SIGALRM', 15: 'SIGTERM', 24: 'SIGXCPU', 25: 'SIGXFSZ' };

  function fmtMs(ms) {
    if (ms == null) return '–';
    return ms < 1000 ? Math.round(ms) + ' ms' : (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + ' s';
  }
  function fmtKib(kib) {
    if (!kib) return '–';
    return kib < 1024 ? kib + ' KiB' : (kib / 1024).toFixed(1) + ' MiB';
  }
  function fmtMib(mib) {
    return mib >= 1024 ? (mib / 1024).toFixed(mib % 1024 ? 1 : 0) + ' GiB' : mib + ' MiB';
  }

  function summaryParts(s) {
    const parts = [];
    const j = s.judge;
    if (j && j.verdict !== 'compile_error') {
      // A judged run: how many passed and the first that did not; each test has its figures.
      parts.push(['passed', t('testsPassed', { passed: j.passed, total: j.total })]);
      const first = (j.tests || []).find((r) => r.verdict !== 'accepted');
      if (first) parts.push(['failing', t('testsFirstFailing', { n: first.index + 1, v: t(testVerdictKey(first)) })]);
      if (s.queued_ms > 0) parts.push(['queued', t('figQueued', { v: fmtMs(s.queued_ms) })]);
      return parts;
    }
    if (s.stage === 'compile' && s.reason !== 'compile_error') parts.push(['stage', t('figWhileCompiling')]);
    parts.push(['time', t('figTime', { v: fmtMs(s.wall_ms) })], ['cpu', t('figCpu', { v: fmtMs(s.cpu_ms) })]);
    if (s.memory_kib) parts.push(['memory', t('figMemory', { v: fmtKib(s.memory_kib) })]);
    if (s.signal != null) parts.push(['exit', t('figSignal', { v: s.signal + (SIGNALS[s.signal] ? ' (' + SIGNALS[s.signal] + ')' : '') })]);
    else if (s.exit_code != null) parts.push(['exit', t('figExit', { v: s.exit_code })]);
    if (s.output_truncated) parts.push(['truncated', t('figTruncated')]);
    if (s.queued_ms > 0) parts.push(['queued', t('figQueued', { v: fmtMs(s.queued_ms) })]);
    return parts;
  }

  // What the run bar's figures show: the limits before a run, the clock during it, the
  // summary after it, or a message.
  let figures = { key: null };
  let clock = null;
  function startClock() {
    if (!run) return;
    if (!run.startedAt) run.startedAt = performance.now();
    figures = { running: true };
    renderFigures();
    if (!clock) clock = setInterval(renderFigures, 100);
  }
  function stopClock() {
    clearInterval(clock);
    clock = null;
  }
  function span(key, text, cls) {
    const el = document.createElement('span');
    el.dataset.testid = 'summary-' + key;
    el.textContent = text;
    if (cls) el.className = cls;
    return el;
  }
  function renderFigures() {
    summaryBox.textContent = '';
    const limits = (language && language.limits) || {};
    if (figures.summary) {
      summaryParts(figures.summary).forEach(([key, text], i) => {
        if (i) summaryBox.append(' · ');
        const bad = key === 'stage' || key === 'truncated' || key === 'failing' || (key === 'exit' && !/ 0$/.test(text));
        summaryBox.append(span(key, text, bad ? 'bad' : ''));
      });
    } else if (figures.running && run && run.startedAt) {
      const now = performance.now();
      summaryBox.append(span('elapsed', t('running', { t: fmtMs(now - run.startedAt), limit: fmtMs(limits.wall_ms) })));
      if (run.judged) summaryBox.append(' · ', span('test', t('testsProgress', { i: Math.min(run.heard + 1, run.judged.length), n: run.judged.length })));
      // No output for a while, input still open and none given: most likely it reads stdin.
      else if (!run.eofSent && !lineBuffer && now - Math.max(run.lastOutputAt || 0, run.startedAt) > 600) {
        summaryBox.append(' · ', span('waiting', t('waitingInput'), 'waiting'));
      }
    } else if (figures.key) {
      summaryBox.append(span('message', t(figures.key)));
    } else if (limits.wall_ms) {
      summaryBox.append(span('limits', t('limits', { time: fmtMs(limits.wall_ms), mem: fmtMib(limits.memory_mib) })));
    }
  }
  rerenders.push(renderFigures);

  // What the program's stdin will be, said plainly.
  function inputLines() {
    const v = stdinInput.value;
    return v ? v.replace(/\n$/, '').split('\n').length : 0;
  }
  function renderStdinNote() {
    const n = inputLines();
    const lines = (k) => (k === 1 ? t('line') : t('lines', { n: k }));
    if (run && run.judged) stdinNote.textContent = t('stdinTests');
    else if (run && run.eofOnStart) stdinNote.textContent = t('stdinFromBox', { n: lines(run.batchLines) });
    else if (run && run.eofSent) stdinNote.textContent = t('stdinClosed');
    else stdinNote.textContent = n ? t('stdinFromBox', { n: lines(n) }) : t('stdinTyped');
    $('input-dot').hidden = n === 0;
    $('input-dot').title = n ? t('inputHasText', { n: lines(n) }) : '';
  }
  rerenders.push(renderStdinNote);

  // ------------------------------------------------------------------ runs
  function sendRun(msg) {
    if (!send(msg)) {
      // Not connected: send it once the connection opens.
      pendingRun = msg;
      setBadge('waiting', 'stateWaiting');
      figures = { key: 'waitingConnection' };
      renderFigures();
      connect();
    }
  }

  function startRun() {
    if (run || pendingRun || !language || !language.available) return;
    const msg = { type: 'run', language: language.id, code: getCode() };
    // The Input tab's text is the program's input whenever there is any.
    const batch = stdinInput.value !== '';
    if (batch) msg.stdin = stdinInput.value;
    beginRun(msg, { eofOnStart: batch, batchLines: inputLines() });
    showTab('output');
    // Ready to type into the program; on touch screens only when asked (the keyboard would pop up).
    if (!batch && window.matchMedia('(pointer: fine)').matches) term.focus();
  }

  // What every run starts with: a fresh terminal and run bar. `extra`: an ordinary run's
  // input, or a judged run's tests (`judged`, and `heard`: the verdicts had so far).
  function beginRun(msg, extra) {
    hideError();
    saveCode();
    run = { id: null, seq: 0, resuming: false, outbox: [], eofSent: false, eofOnStart: false, batchLines: 0, startedAt: 0, lastOutputAt: 0, judged: null, ...extra };
    lineBuffer = '';
    term.reset();
    atLineStart = true;
    outStream = 1;
    outChunks = [];
    outLines = 0;
    errorLine = null;
    showDropped();
    setBadge('ready', 'stateReady');
    figures = { key: null };
    sendRun(msg);
    updateButtons();
  }

  function stopRun() {
    if (pendingRun) {
      // Never sent: nothing to stop on the server.
      pendingRun = null;
      endRun();
      badge = { state: 'stopped', key: 'verdictStopped', vars: null, verdict: 'stopped' };
      renderBadge();
      figures = { key: null };
      renderFigures();
      termNotice(t('stoppedBeforeStart'));
      return;
    }
    if (run) sendToRun({ type: 'stop' });
  }

  function sendEof() {
    if (!run || run.eofSent) return;
    if (lineBuffer) {
      sendToRun({ type: 'stdin', data: lineBuffer });
      lineBuffer = '';
    }
    run.eofSent = true;
    sendToRun({ type: 'eof' });
    updateButtons();
  }

  runButton.addEventListener('click', startRun);
  stopButton.addEventListener('click', () => { stopRun(); });
  eofButton.addEventListener('click', () => { sendEof(); term.focus(); });

  // Ctrl+Enter / Cmd+Enter runs from anywhere (capture: before the editor or terminal sees it).
  window.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      ev.stopPropagation();
      if (ev.shiftKey) startJudgedRun();
      else startRun();
    }
  }, true);

  // -------------------------------------- terminal input: cooked-mode line editing
  // The program's stdin is a pipe, not a tty: we echo, edit the pending line, and send whole
  // lines, as a terminal's line discipline would.
  const WIDE = /[\u1100-\u115F\u2E80-\u303E\u3041-\u33FF\u3400-\u4DBF\u4E00-\u9FFF\uA000-\uA4CF\uAC00-\uD7A3\uF900-\uFAFF\uFE30-\uFE4F\uFF00-\uFF60\uFFE0-\uFFE6]|[\u{1F300}-\u{1F64F}\u{1F900}-\u{1F9FF}\u{20000}-\u{3FFFD}]/u;

  function skipEscape(data, i) {
    // ESC [ params intermediates final | ESC O x | ESC x
    if (data[i + 1] === '[') {
      let j = i + 2;
      while (j < data.length && data.charCodeAt(j) >= 0x20 && data.charCodeAt(j) <= 0x3f) j++;
      while (j < data.length && data.charCodeAt(j) >= 0x20 && data.charCodeAt(j) <= 0x2f) j++;
      return Math.min(j + 1, data.length);
    }
    if (data[i + 1] === 'O') return Math.min(i + 3, data.length);
    return Math.min(i + 2, data.length);
  }

  function onTerminalData(data) {
    if (!run) return;
    if (run.eofSent || run.judged) return; // stdin is closed, or a judged run's tests give it
    let lines = ''; // complete lines of this input event, sent as one message
    let i = 0;
    while (i < data.length) {
      const ch = data[i];
      const code = data.charCodeAt(i);
      if (ch === '\r' || ch === '\n') {
        term.write('\r\n');
        atLineStart = true;
        lines += lineBuffer + '\n';
        lineBuffer = '';
        i += ch === '\r' && data[i + 1] === '\n' ? 2 : 1;
      } else if (ch === '\x7f' || ch === '\b') {
        if (lineBuffer) {
          const chars = Array.from(lineBuffer);
          const last = chars.pop();
          lineBuffer = chars.join('');
          term.write(WIDE.test(last) ? '\b\b  \b\b' : '\b \b');
        }
        i++;
      } else if (ch === '\x04') { // Ctrl-D
        if (lines) { sendToRun({ type: 'stdin', data: lines }); lines = ''; }
        sendEof();
        return;
      } else if (ch === '\x03') { // Ctrl-C
        term.write('^C');
        atLineStart = false;
        stopRun();
        return;
      } else if (ch === '\x15') { // Ctrl-U: erase the pending line
        for (const c of Array.from(lineBuffer)) term.write(WIDE.test(c) ? '\b\b  \b\b' : '\b \b');
        lineBuffer = '';
        i++;
      } else if (ch === '\x1b') {
        i = skipEscape(data, i); // arrows and other keys: no line history here
      } else if (code < 0x20 && ch !== '\t') {
        i++;
      } else {
        let j = i;
        while (j < data.length && (data.charCodeAt(j) >= 0x20 || data[j] === '\t') && data[j] !== '\x7f') j++;
        const text = data.slice(i, j);
        lineBuffer += text;
        term.write(text);
        atLineStart = false;
        i = j;
      }
    }
    if (lines) sendToRun({ type: 'stdin', data: lines });
  }
  term.onData((data) => { onTerminalData(data); if (run && figures.running) renderFigures(); });

  // ------------------------------------------------------------ batch input
  stdinInput.addEventListener('input', () => {
    if (viewingDraft) saveCode();
    else store.set('input', stdinInput.value);
    renderStdinNote();
  });
  $('input-clear').addEventListener('click', () => {
    stdinInput.value = '';
    stdinInput.dispatchEvent(new Event('input'));
    stdinInput.focus();
  });

  // ------------------------------------------------------------- judge mode's tests
  // The problem's samples, each an input and an expected output, kept with the code (one list
  // per code buffer), carried by share links, and run together by Run all: a judged run
  // (docs/protocol.md, "Judged runs") that compiles once, runs every test as a fresh process
  // and sends each test's verdict as it ends. Run stays an ordinary, interactive run.
  const MAX_TESTS = 64; // the server's limit
  const TEST_OUTPUT_KEPT = 64 * 1024; // bytes of a test's output the panel keeps and shows
  const testsList = $('tests-list');
  const runTestsButton = $('run-tests');
  let tests = []; // {key, input, expected, status, result, pieces, kept, cut, card}
  let testKeys = 0;
  // The last judged run's outcome for the panel's summary: null before one.
  //   {running, verdict, passed, total, compile: pieces or null, stopped}
  let judgeOutcome = null;

  function newTest(input, expected) {
    return { key: ++testKeys, input: input || '', expected: expected || '', status: 'idle', result: null, pieces: [], kept: 0, cut: false, card: null };
  }
  function testsFromStored(list) {
    return Array.isArray(list)
      ? list.filter((x) => x && typeof x.i === 'string').slice(0, MAX_TESTS).map((x) => newTest(x.i, typeof x.o === 'string' ? x.o : ''))
      : [];
  }
  // As kept and shared: `i` the input, `o` the expected output (left out when empty).
  function testsForStore() {
    return tests.map((tc) => (tc.expected ? { i: tc.input, o: tc.expected } : { i: tc.input }));
  }
  function setTests(list) {
    tests = list;
    judgeOutcome = null;
    renderTests();
  }

  // Samples as copied from a problem's page: Baekjoon ("예제 입력 1 복사"), Codeforces ("Input",
  // "Output", after "Examples"), AtCoder ("Sample Input 1", "入力例 1"). Each input heading starts a
  // test, each output heading gives its expected output. Headings that name a sample (a word
  // or a number) win over bare ones, which a whole copied page also has for its Input and
  // Output sections. Null when there is no heading at all.
  const SAMPLE_HEADING = /^\s*(sample\s*|example\s*|예제\s*)?(input|output|입력|출력|入力例|出力例)\s*#?\s*(\d+)?\s*(?:복사|copy)?\s*:?\s*$/i;
  const SAMPLES_START = /^\s*(examples?|samples?|sample tests?|예제)\s*:?\s*$/i;
  const SAMPLES_END = /^\s*(notes?|hints?|explanations?|노트|힌트|설명|출처|note\s*:)\s*$/i;
  const COPY_LINE = /^\s*(copy|복사)\s*$/i;
  function parseSamples(text) {
    let lines = text.replace(/\r\n?/g, '\n').split('\n');
    const start = lines.findIndex((l) => SAMPLES_START.test(l));
    if (start >= 0) lines = lines.slice(start + 1);
    const heading = (l) => {
      const m = SAMPLE_HEADING.exec(l);
      return m && { input: /input|입력|入力/i.test(m[2]), strong: !!(m[1] || m[3] || /例/.test(m[2])) };
    };
    const strong = lines.some((l) => { const h = heading(l); return h && h.strong; });
    const pairs = [];
    let cur = null;
    let into = null;
    let found = false;
    for (const line of lines) {
      const h = heading(line);
      if (h && (h.strong || !strong)) {
        found = true;
        if (h.input) {
          cur = { input: [], output: null };
          pairs.push(cur);
          into = cur.input;
        } else {
          if (!cur || cur.output !== null) { cur = { input: null, output: null }; pairs.push(cur); }
          cur.output = [];
          into = cur.output;
        }
      } else if (SAMPLES_END.test(line)) {
        into = null;
      } else if (into && !(into.length === 0 && COPY_LINE.test(line))) {
        into.push(line);
      }
    }
    if (!found) return null;
    const block = (ls) => {
      if (!ls) return '';
      let a = 0;
      let b = ls.length;
      while (a < b && !ls[a].trim()) a++;
      while (b > a && !ls[b - 1].trim()) b--;
      return a < b ? ls.slice(a, b).join('\n') + '\n' : '';
    };
    return pairs.map((p) => ({ input: block(p.input), expected: block(p.output) })).filter((p) => p.input || p.expected);
  }

  // Adds `pairs` after the last test (or into `into`, an empty test, first); says how many fit.
  function addTests(pairs, into) {
    let added = 0;
    for (const p of pairs) {
      if (into) {
        into.input = p.input;
        into.expected = p.expected;
        into = null;
      } else if (tests.length < MAX_TESTS) {
        tests.push(newTest(p.input, p.expected));
      } else {
        toast(t('testsMax', { n: MAX_TESTS }));
        break;
      }
      added++;
    }
    renderTests();
    saveSoon();
    return added;
  }

  $('test-add').addEventListener('click', () => {
    if (tests.length >= MAX_TESTS) { toast(t('testsMax', { n: MAX_TESTS })); return; }
    const tc = newTest();
    tests.push(tc);
    renderTests();
    saveSoon();
    tc.card.querySelector('textarea').focus();
    tc.card.scrollIntoView({ block: 'nearest' });
  });
  function showSamples(open) {
    $('samples-box').hidden = !open;
    $('samples-toggle').setAttribute('aria-expanded', String(open));
    if (open) $('samples-text').focus();
  }
  $('samples-toggle').addEventListener('click', () => showSamples($('samples-box').hidden));
  $('samples-cancel').addEventListener('click', () => { showSamples(false); $('samples-toggle').focus(); });
  $('samples-add').addEventListener('click', () => {
    const text = $('samples-text').value;
    if (!text.trim()) { toast(t('samplesNone')); return; }
    const pairs = parseSamples(text) || [{ input: text.endsWith('\n') ? text : text + '\n', expected: '' }];
    const empty = tests.length === 1 && !tests[0].input && !tests[0].expected ? tests[0] : null;
    const n = addTests(pairs, empty);
    toast(t('samplesAdded', { n }));
    $('samples-text').value = '';
    showSamples(false);
    $('samples-toggle').focus();
  });

  let noticeTimer = null;
  function removeTest(tc) {
    const at = tests.indexOf(tc);
    if (at < 0) return;
    tests.splice(at, 1);
    renderTests();
    saveSoon();
    const focus = tests[Math.min(at, tests.length - 1)];
    (focus ? focus.card.querySelector('.test-remove') : $('test-add')).focus();
    // A slip of the finger must not cost the samples: the notice takes it back.
    showNotice(t('testRemoved', { n: at + 1 }), t('undo'), () => {
      $('notice').hidden = true;
      if (tests.length >= MAX_TESTS) return;
      tests.splice(Math.min(at, tests.length), 0, tc);
      renderTests();
      saveSoon();
    });
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => { $('notice').hidden = true; }, 8000);
  }

  function field(tc, which, labelKey) {
    const label = document.createElement('label');
    label.className = 'test-field';
    const name = document.createElement('span');
    name.textContent = t(labelKey);
    const area = document.createElement('textarea');
    area.dataset.testid = 'test-' + which;
    area.spellcheck = false;
    area.setAttribute('autocapitalize', 'off');
    area.setAttribute('autocomplete', 'off');
    area.rows = 2;
    area.value = tc[which];
    if (which === 'expected') area.placeholder = t('testExpectedPlaceholder');
    area.addEventListener('input', () => { tc[which] = area.value; saveSoon(); });
    if (which === 'input') {
      // A whole sample block pasted into an empty test is split into its tests.
      area.addEventListener('paste', (ev) => {
        if (tc.input || tc.expected || !ev.clipboardData) return;
        const pairs = parseSamples(ev.clipboardData.getData('text/plain'));
        if (!pairs || !pairs.length) return;
        ev.preventDefault();
        const n = addTests(pairs, tc);
        toast(t('samplesAdded', { n }));
      });
    }
    label.append(name, area);
    return label;
  }

  const tspan = (testid, text) => Object.assign(el('span', '', testid), { textContent: text });
  function el(tag, cls, testid) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (testid) e.dataset.testid = testid;
    return e;
  }

  // The whole list, from `tests` (after adding, removing or loading them).
  function renderTests() {
    testsList.textContent = '';
    tests.forEach((tc, i) => {
      const card = el('li', 'test', 'test');
      // The group (named by its title) inside the item: a list's children must stay items.
      const group = el('div');
      group.setAttribute('role', 'group');
      const head = el('div', 'test-head');
      const title = el('h3', 'test-title');
      title.id = 'test-title-' + tc.key;
      title.textContent = t('testTitle', { n: i + 1 });
      group.setAttribute('aria-labelledby', title.id);
      const chip = el('span', 'verdict', 'test-verdict');
      const figs = el('div', 'test-figs', 'test-figures');
      const remove = el('button', 'test-remove', 'test-remove');
      remove.type = 'button';
      remove.setAttribute('aria-label', t('testRemove', { n: i + 1 }));
      remove.innerHTML = '<span aria-hidden="true">✕</span>';
      remove.addEventListener('click', () => removeTest(tc));
      head.append(title, chip, remove);
      const fields = el('div', 'test-fields');
      fields.append(field(tc, 'input', 'testInput'), field(tc, 'expected', 'testExpected'));
      const diff = el('div', 'test-diff', 'test-diff');
      const output = el('details', 'test-output', 'test-output');
      output.append(el('summary'), el('pre'));
      output.addEventListener('toggle', () => renderTestOutput(tc));
      group.append(head, figs, fields, diff, output);
      card.append(group);
      tc.card = card;
      testsList.append(card);
      renderTestResult(tc);
    });
    $('tests-empty').hidden = tests.length > 0;
    $('tests-count').hidden = tests.length === 0;
    $('tests-count').textContent = String(tests.length);
    $('test-add').disabled = tests.length >= MAX_TESTS;
    renderTestsVerdict();
    updateButtons();
  }
  rerenders.push(renderTests);

  // Judge verdicts (docs/protocol.md) as the run bar's verdicts: the same words and colours.
  const JUDGE_VERDICTS = {
    accepted: 'accepted', wrong_answer: 'wrong', time_limit: 'time', memory_limit: 'memory',
    output_limit: 'output', runtime_error: 'runtime', compile_error: 'compile', internal_error: 'internal',
  };
  function testVerdictKey(r) {
    if (r.verdict === 'accepted' && !r.compared) return 'verdictRan';
    return VERDICT_KEYS[JUDGE_VERDICTS[r.verdict] || 'internal'];
  }

  function testFigures(r) {
    const parts = [fmtMs(r.wall_ms), t('figCpu', { v: fmtMs(r.cpu_ms) })];
    if (r.memory_kib) parts.push(fmtKib(r.memory_kib));
    if (r.signal != null) parts.push(t('figSignal', { v: r.signal + (SIGNALS[r.signal] ? ' (' + SIGNALS[r.signal] + ')' : '') }));
    else if (r.exit_code != null && r.exit_code !== 0) parts.push(t('figExit', { v: r.exit_code }));
    return parts.join(' · ');
  }

  // One test's verdict, figures, difference and output, as text (never HTML: it is the
  // program's output).
  function renderTestResult(tc) {
    const card = tc.card;
    if (!card) return;
    const chip = card.querySelector('.verdict');
    const r = tc.result;
    chip.hidden = tc.status === 'idle';
    chip.dataset.state = tc.status;
    if (r) {
      chip.dataset.verdict = r.verdict === 'accepted' && !r.compared ? 'ran' : (JUDGE_VERDICTS[r.verdict] || 'internal');
      chip.textContent = t(testVerdictKey(r));
    } else {
      delete chip.dataset.verdict;
      chip.textContent = { pending: t('testPending'), running: t('testRunning'), notrun: t('testNotRun') }[tc.status] || '';
    }
    const figs = card.querySelector('.test-figs');
    figs.textContent = r ? testFigures(r) : '';
    figs.hidden = !r;
    const diff = card.querySelector('.test-diff');
    diff.textContent = '';
    const d = r && r.difference;
    diff.hidden = !d;
    if (d) {
      diff.append(Object.assign(el('p', 'diff-at', 'test-diff-at'), { textContent: t('diffAt', { line: d.line, column: d.column }) }));
      const rows = el('div', 'diff-rows');
      for (const [key, text, cls] of [['diffExpected', d.expected, 'exp'], ['diffActual', d.actual, 'act']]) {
        const name = el('span', 'diff-name ' + cls);
        name.textContent = t(key);
        const line = el('code', 'diff-line ' + cls + (text == null ? ' missing' : ''), 'test-diff-' + cls);
        line.textContent = text == null ? t('diffMissing') : text;
        rows.append(name, line);
      }
      diff.append(rows);
      if (d.diff) {
        const pre = el('pre', 'diff', 'test-diff-text');
        for (const line of d.diff.split('\n')) {
          const s = el('span', line.startsWith('-') ? 'exp' : line.startsWith('+') ? 'act' : '');
          s.textContent = line + '\n';
          pre.append(s);
        }
        diff.append(pre);
      }
    }
    renderTestOutput(tc);
  }

  function piecesText(pieces, into) {
    const decoder = new TextDecoder();
    for (const [stream, bytes] of pieces) {
      const s = el('span', stream === 2 ? 'stderr' : '');
      s.textContent = decoder.decode(bytes, { stream: true });
      into.append(s);
    }
    into.append(decoder.decode());
  }
  function countLines(pieces) {
    let n = 0;
    let last = 0x0a;
    for (const [, b] of pieces) {
      for (let i = 0; i < b.length; i++) if (b[i] === 0x0a) n++;
      if (b.length) last = b[b.length - 1];
    }
    return n + (last !== 0x0a ? 1 : 0);
  }
  const linesText = (k) => (k === 1 ? t('line') : t('lines', { n: k }));

  // The output between this test's start and its verdict (see onOutput), drawn when opened.
  function renderTestOutput(tc) {
    const details = tc.card && tc.card.querySelector('.test-output');
    if (!details) return;
    details.hidden = tc.status === 'idle' || tc.status === 'pending' || tc.status === 'notrun';
    const n = countLines(tc.pieces);
    details.querySelector('summary').textContent = n ? t('testOutput', { n: linesText(n) }) : t('testOutputNone');
    const pre = details.querySelector('pre');
    pre.textContent = '';
    if (!details.open) return;
    piecesText(tc.pieces, pre);
    if (tc.cut) pre.append(Object.assign(el('span', 'cut'), { textContent: '\n' + t('testOutputCut', { n: fmtKib(TEST_OUTPUT_KEPT / 1024) }) }));
  }

  // The panel's judge-like summary: "2/3 passed", the first failing test; a compile error once.
  function renderTestsVerdict() {
    const box = $('tests-verdict');
    box.textContent = '';
    const o = judgeOutcome;
    if (!o) return;
    if (o.running) {
      const heard = o.heard || 0;
      box.append(tspan('tests-progress', t('testsProgress', { i: Math.min(heard + 1, o.total), n: o.total })));
      return;
    }
    const chip = el('span', 'verdict', 'tests-verdict-chip');
    const v = o.verdict ? JUDGE_VERDICTS[o.verdict] || 'internal' : o.badge;
    chip.dataset.verdict = v;
    chip.textContent = t(VERDICT_KEYS[v] || 'verdictStopped');
    box.append(chip, ' ');
    if (o.verdict === 'compile_error') {
      box.append(tspan('tests-compile', t('testsCompileError')));
      const details = el('details', 'test-output compile-output', 'tests-compile-output');
      details.open = true;
      const summary = el('summary');
      summary.textContent = t('compileOutput');
      const pre = el('pre');
      piecesText(o.compile || [], pre);
      details.append(summary, pre);
      box.append(details);
      return;
    }
    box.append(tspan('tests-passed', t('testsPassed', { passed: o.passed, total: o.total })));
    if (o.warnings && o.warnings.length) {
      // The compiler's warnings of a run that compiled, folded.
      const details = el('details', 'test-output compile-output', 'tests-compile-warnings');
      const summary = el('summary');
      summary.textContent = t('compileOutput');
      const pre = el('pre');
      piecesText(o.warnings, pre);
      details.append(summary, pre);
      box.append(details);
    }
    if (!o.verdict) box.append(' · ', tspan('tests-stopped', t('testsStopped', { n: o.ran, total: o.total })));
    const first = o.verdict && o.verdict !== 'accepted' && tests.find((tc) => tc.result && tc.result.verdict !== 'accepted');
    if (first) {
      const at = tests.indexOf(first);
      const jump = el('button', 'linkish', 'tests-first-failing');
      jump.type = 'button';
      jump.textContent = t('testsFirstFailing', { n: at + 1, v: t(testVerdictKey(first.result)) });
      jump.addEventListener('click', () => {
        first.card.scrollIntoView({ block: 'start', behavior: 'smooth' });
        first.card.querySelector('.test-remove').focus({ preventScroll: true });
      });
      box.append(jump);
    }
  }

  // Run all: the code once, every test; verdicts come as `test` messages (onTest).
  function startJudgedRun() {
    if (run || pendingRun || !language || !language.available || !tests.length) return;
    const sent = tests.slice();
    const msg = {
      type: 'run',
      language: language.id,
      code: getCode(),
      // A judge's input file ends its last line; a pasted sample often does not.
      tests: sent.map((tc) => {
        const input = tc.input && !tc.input.endsWith('\n') ? tc.input + '\n' : tc.input;
        return tc.expected ? { input, expected_output: tc.expected } : { input };
      }),
    };
    for (const tc of tests) {
      tc.status = 'pending';
      tc.result = null;
      tc.pieces = [];
      tc.kept = 0;
      tc.cut = false;
    }
    judgeOutcome = { running: true, heard: 0, total: sent.length };
    const compiles = Array.isArray(language.compile) && language.compile.length > 0;
    const compiler = { pieces: [], kept: 0, cut: false };
    beginRun(msg, { judged: sent, heard: 0, compiling: compiles, compiler });
    showTab('tests');
    for (const tc of tests) renderTestResult(tc);
    renderTestsVerdict();
  }
  runTestsButton.addEventListener('click', startJudgedRun);

  // Output of a judged run belongs to the test whose verdict has not come yet.
  function judgedOutput(stream, data) {
    // Before `compiled`, the compiler's output: shown as such, not as the first test's.
    const tc = run.compiling ? run.compiler : run.judged[run.heard];
    if (!tc) return;
    const room = TEST_OUTPUT_KEPT - tc.kept;
    if (room <= 0) { tc.cut = true; return; }
    const kept = data.length > room ? data.slice(0, room) : data.slice();
    if (kept.length < data.length) tc.cut = true;
    tc.pieces.push([stream, kept]);
    tc.kept += kept.length;
    if (tc.card && tc.card.querySelector('.test-output').open) renderTestOutput(tc);
  }

  function markRunning() {
    const tc = run && run.judged && run.judged[run.heard];
    if (tc && tc.status === 'pending') { tc.status = 'running'; renderTestResult(tc); }
  }

  // The compile ended well: what came before was the compiler's (warnings), what follows the
  // program's.
  function onCompiled(msg) {
    if (!ours(msg)) return;
    run.compiling = false;
    if (run.compiler && run.compiler.kept > 0) {
      termNotice('[' + t('compiledNotice', { ms: msg.wall_ms }) + ']');
    }
  }

  function onTest(msg) {
    if (!ours(msg) || !run.judged) return;
    const tc = run.judged[msg.index];
    run.heard = msg.index + 1;
    if (tc) {
      tc.status = 'done';
      tc.result = msg;
      renderTestResult(tc);
    }
    termNotice('[' + t('testTitle', { n: msg.index + 1 }) + ': ' + t(testVerdictKey(msg)) + ', ' + testFigures(msg) + ']');
    markRunning();
    if (judgeOutcome) judgeOutcome.heard = run.heard;
    renderTestsVerdict();
    renderFigures();
  }

  // The summary ends a judged run: verdicts the server gave only there (a test cut by the
  // run's own limits), tests that never ran, the compiler's output for a compile error.
  function endJudged(sent, msg, compiler) {
    const j = msg.judge || { verdict: null, passed: 0, total: sent.length, tests: [] };
    for (const r of j.tests || []) {
      const tc = sent[r.index];
      if (tc && !tc.result) { tc.result = r; tc.status = 'done'; }
    }
    const compile = j.verdict === 'compile_error';
    const compilerPieces = compiler ? compiler.pieces : [];
    for (const tc of sent) {
      if (!tc.result) {
        tc.status = compile ? 'idle' : 'notrun';
        tc.pieces = [];
      }
      renderTestResult(tc);
    }
    judgeOutcome = {
      running: false, verdict: j.verdict, passed: j.passed, total: j.total,
      ran: (j.tests || []).length, compile: compile ? compilerPieces : null,
      warnings: compile ? null : compilerPieces, badge: verdictOf(msg),
    };
    renderTestsVerdict();
  }

  // Saved as an edit of the code is (and a share link's fragment no longer describes them).
  function abandonJudged(sent) {
    for (const tc of sent) {
      if (!tc.result) { tc.status = 'idle'; tc.pieces = []; }
      renderTestResult(tc);
    }
    judgeOutcome = null;
    renderTestsVerdict();
  }

  function saveSoon() {
    onEdited();
  }

  // ---------------------------------------------------------- code storage
  // The user's code, one buffer per kind of language (`code.py` for CPython and PyPy alike).
  // A shared link opens as a separate draft (`draft`), so the user's own code is never
  // overwritten by opening one.
  let saveTimer = null;
  let sharedFragmentShown = false; // the URL still holds the share fragment that was loaded
  let viewingDraft = false;

  function codeKey(lang) {
    return 'code.' + (extOf(lang) || lang.id);
  }
  // The tests go with the code: one list per buffer.
  function testsKey(lang) {
    return 'tests.' + (extOf(lang) || lang.id);
  }
  function savedTests(lang) {
    try { return testsFromStored(JSON.parse(store.get(testsKey(lang)))); } catch (_) { return []; }
  }
  function storeTests(lang) {
    if (tests.length) store.set(testsKey(lang), JSON.stringify(testsForStore()));
    else store.remove(testsKey(lang));
  }
  function savedCode(lang) {
    const saved = store.get(codeKey(lang));
    // Before buffers were shared, code was kept per language id.
    return saved !== null ? saved : store.get('code.' + lang.id);
  }
  function saveCode() {
    clearTimeout(saveTimer);
    saveTimer = null;
    if (!language) return;
    if (viewingDraft) store.set('draft', JSON.stringify({ l: language.id, c: getCode(), i: stdinInput.value, t: testsForStore() }));
    else {
      store.set(codeKey(language), getCode());
      storeTests(language);
    }
  }
  onEdited = () => {
    clearTimeout(saveTimer);
    saveTimer = setTimeout(saveCode, 300);
    if (sharedFragmentShown) {
      // Edited: the link no longer describes this code, and a reload should keep the edits.
      sharedFragmentShown = false;
      history.replaceState(null, '', location.pathname + location.search);
    }
  };
  window.addEventListener('pagehide', saveCode);
  document.addEventListener('visibilitychange', () => { if (document.hidden) saveCode(); });

  // Selects `lang`. Code of the same kind stays in the editor (CPython <-> PyPy); another kind
  // loads `code` and `testList`, or that kind's saved code and tests, or its sample.
  function applyLanguage(lang, code, testList) {
    const before = language;
    language = lang;
    const kind = kindOf(lang);
    if (code !== undefined) {
      loadCode(code, kind);
      setTests(testList || []);
    } else if (!before || kindOf(before) !== kind) {
      const saved = savedCode(lang);
      loadCode(saved !== null ? saved : kind.sample, kind);
      setTests(savedTests(lang));
    }
    languageSelect.value = lang.id;
    if (!viewingDraft) store.set('language', lang.id);
    updateButtons();
    renderFigures();
  }

  languageSelect.addEventListener('change', () => {
    saveCode();
    const lang = languages.find((l) => l.id === languageSelect.value);
    if (!lang) return;
    if (viewingDraft && kindOf(lang) !== kindOf(language)) {
      leaveDraft();
    }
    applyLanguage(lang);
    if (!viewingDraft) saveCode();
  });

  function storedDraft() {
    try {
      const d = JSON.parse(store.get('draft'));
      return d && typeof d.c === 'string' ? d : null;
    } catch (_) { return null; }
  }
  function openDraft(d) {
    saveCode();
    viewingDraft = true;
    const lang = languages.find((l) => l.id === d.l);
    if (!lang) showError(t('linkLanguage', { l: d.l }));
    applyLanguage(lang || language, d.c, testsFromStored(d.t));
    stdinInput.value = typeof d.i === 'string' ? d.i : '';
    saveCode();
    renderStdinNote();
    renderDraftBar();
  }
  function leaveDraft() {
    saveCode();
    viewingDraft = false;
    sharedFragmentShown = false;
    if (location.hash) history.replaceState(null, '', location.pathname + location.search);
    stdinInput.value = store.get('input') || '';
    renderStdinNote();
    renderDraftBar();
  }
  function backToMine() {
    leaveDraft();
    const wanted = languages.find((l) => l.id === store.get('language') && l.available) || language;
    const lang = language;
    language = null; // reload the user's buffer even if the kind is the same
    applyLanguage(wanted || lang);
  }
  function renderDraftBar() {
    const bar = $('draft-bar');
    const draft = storedDraft();
    bar.hidden = !viewingDraft && !draft;
    if (bar.hidden) return;
    const primary = $('draft-primary');
    const secondary = $('draft-secondary');
    if (viewingDraft) {
      $('draft-text').textContent = t('draftViewing');
      primary.textContent = t('draftBack');
      primary.onclick = backToMine;
      secondary.textContent = t('draftKeep');
      secondary.onclick = () => {
        store.set(codeKey(language), getCode());
        storeTests(language);
        store.set('language', language.id);
        store.set('input', stdinInput.value);
        store.remove('draft');
        viewingDraft = false;
        sharedFragmentShown = false;
        if (location.hash) history.replaceState(null, '', location.pathname + location.search);
        renderDraftBar();
      };
    } else {
      $('draft-text').textContent = t('draftOpen');
      primary.textContent = t('draftShow');
      primary.onclick = () => openDraft(storedDraft());
      secondary.textContent = t('draftDiscard');
      secondary.onclick = () => { store.remove('draft'); renderDraftBar(); };
    }
  }
  rerenders.push(renderDraftBar);

  // ---------------------------------------------------------------- sharing
  // The link's fragment holds the code, language, input and tests; nothing is stored on the
  // server and fragments are never sent to it. `z=`: deflate-raw compressed JSON; `j=`: plain
  // JSON, `{v: 1, l, c, i?, t?: [{i, o?}]}` (links from before the tests have no `t`).
  function toBase64Url(bytes) {
    let bin = '';
    for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }
  function fromBase64Url(text) {
    const b64 = text.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((text.length + 3) % 4);
    const bin = atob(b64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return bytes;
  }
  async function pipeThrough(bytes, stream) {
    const out = new Response(new Blob([bytes]).stream().pipeThrough(stream));
    return new Uint8Array(await out.arrayBuffer());
  }

  async function encodeShare(data) {
    const json = new TextEncoder().encode(JSON.stringify(data));
    if (typeof CompressionStream === 'function') {
      return 'z=' + toBase64Url(await pipeThrough(json, new CompressionStream('deflate-raw')));
    }
    return 'j=' + toBase64Url(json);
  }

  async function decodeShare(fragment) {
    const m = /^#?([zj])=([A-Za-z0-9_-]*)$/.exec(fragment);
    if (!m) return null;
    let bytes = fromBase64Url(m[2]);
    if (m[1] === 'z') {
      if (typeof DecompressionStream !== 'function') throw new Error('this browser cannot read compressed links');
      bytes = await pipeThrough(bytes, new DecompressionStream('deflate-raw'));
    }
    const data = JSON.parse(new TextDecoder().decode(bytes));
    if (typeof data !== 'object' || data === null || typeof data.c !== 'string') throw new Error('malformed link');
    return data;
  }

  async function shareLink() {
    const data = { v: 1, l: language ? language.id : '', c: getCode() };
    if (stdinInput.value) data.i = stdinInput.value;
    if (tests.length) data.t = testsForStore();
    return location.origin + location.pathname + '#' + (await encodeShare(data));
  }

  // The phone's share sheet where there is one (Web Share API), else the link, copied.
  shareButton.addEventListener('click', async () => {
    let url;
    try {
      url = await shareLink();
    } catch (e) {
      showError(t('shareError', { e: e.message }));
      return;
    }
    if (navigator.share && window.matchMedia('(pointer: coarse)').matches) {
      try {
        await navigator.share({ title: 'onpyrunner', url });
        toast(t('shareShared'));
        return;
      } catch (e) {
        if (e && e.name === 'AbortError') return; // the user closed the sheet
      }
    }
    shareUrlField.value = url;
    shareBox.hidden = false;
    shareStatus.textContent = '';
    shareUrlField.focus();
    shareUrlField.select();
    try {
      await navigator.clipboard.writeText(url);
      shareStatus.textContent = t('shareCopied');
    } catch (_) {
      shareStatus.textContent = t('shareSelect');
    }
  });
  $('share-close').addEventListener('click', () => { shareBox.hidden = true; shareButton.focus(); });
  document.addEventListener('keydown', (ev) => {
    if (ev.key !== 'Escape') return;
    if (!shareBox.hidden) { shareBox.hidden = true; shareButton.focus(); }
    if (!$('settings').hidden) { $('settings').hidden = true; $('settings-toggle').setAttribute('aria-expanded', 'false'); }
  });

  async function loadShared() {
    if (!location.hash || location.hash === '#') return false;
    let data;
    try {
      data = await decodeShare(location.hash);
    } catch (e) {
      showError(t('linkError', { e: e.message }));
      return false;
    }
    if (!data) return false;
    openDraft(data);
    showTab('code');
    sharedFragmentShown = true;
    return true;
  }
  window.addEventListener('hashchange', () => { loadShared(); });

  // ------------------------------------------------------------- start-up
  let languagesWanted = false; // the languages wait for a token

  tokenBox.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const given = tokenInput.value.trim();
    if (!given) return;
    token = given;
    store.set('token', token);
    tokenBox.hidden = true;
    tokenInput.value = '';
    if (languagesWanted) { languagesWanted = false; loadLanguages(); }
    reconnectNow();
  });

  window.addEventListener('hashchange', () => {
    if (takeTokenFromUrl()) {
      tokenBox.hidden = true;
      // An open connection was admitted already; the token goes on the next one.
      if (!connected()) reconnectNow();
      if (languagesWanted) { languagesWanted = false; loadLanguages(); }
    }
  });

  function renderLanguageOptions() {
    const selected = languageSelect.value;
    languageSelect.textContent = '';
    for (const lang of languages) {
      const option = document.createElement('option');
      option.value = lang.id;
      option.textContent = lang.name + ' ' + lang.version + (lang.available ? '' : ' ' + t('unavailable'));
      option.disabled = !lang.available;
      languageSelect.append(option);
    }
    if (selected) languageSelect.value = selected;
  }
  rerenders.push(() => { if (languages.length) renderLanguageOptions(); });

  // The list is kept, so that the IDE opens offline (runs wait for the connection).
  async function loadLanguages() {
    let list;
    try {
      const response = await fetch('/api/v1/languages', { headers: authHeaders(), cache: 'no-store' });
      if (response.status === 401) {
        // The server's tokens file has require_for_reads: ask, and load once there is one.
        askForToken(!!token);
        languagesWanted = true;
        return;
      }
      if (!response.ok) throw new Error('HTTP ' + response.status);
      list = await response.json();
      store.set('languages', JSON.stringify(list));
    } catch (e) {
      setTimeout(loadLanguages, 3000);
      let kept = null;
      try { kept = JSON.parse(store.get('languages')); } catch (_) { /* none */ }
      if (languages.length) return;
      if (!Array.isArray(kept)) {
        showError(t('cannotLoadLanguages', { e: e.message }));
        return;
      }
      list = kept;
    }
    hideError();
    const first = !languages.length;
    languages = list;
    renderLanguageOptions();
    languageSelect.disabled = false;
    if (first) {
      const wanted = store.get('language');
      const lang = list.find((l) => l.id === wanted && l.available)
        || list.find((l) => l.id === 'python' && l.available)
        || list.find((l) => l.available)
        || list[0];
      if (lang) applyLanguage(lang);
      if (!(await loadShared())) renderDraftBar();
    } else if (language) {
      language = list.find((l) => l.id === language.id) || language;
    }
    updateButtons();
  }

  // --------------------------------------------------------- offline app
  // The service worker keeps the page's files, so the IDE opens without a network, and tells
  // the page when the server's files changed (they are fetched again in the background).
  if ('serviceWorker' in navigator && window.isSecureContext) {
    navigator.serviceWorker.addEventListener('message', (ev) => {
      if (ev.data && ev.data.type === 'updated') {
        showNotice(t('updateReady'), t('reload'), () => { saveCode(); location.reload(); });
      }
    });
    window.addEventListener('load', () => {
      navigator.serviceWorker.register('/assets/sw.js', { scope: '/' }).catch(() => { /* no offline then */ });
    });
  }

  takeTokenFromUrl();
  stdinInput.value = store.get('input') || '';
  applyStrings();
  fitTerminal();
  termNotice(t('terminalHelp'));
  setBadge('ready', 'stateReady');
  updateButtons();
  connect();
  loadLanguages();

  // For tests and the curious: read-only views of the parts.
  window.onpyrunnerIDE = {
    editor,
    term,
    getCode,
    setCode,
    // A change as the user's typing makes it (saved, drops a share link's fragment).
    typeCode(text, at = 0) { editor.dispatch({ changes: { from: at, insert: text }, userEvent: 'input.type' }); },
    terminalText() {
      const buffer = term.buffer.active;
      const lines = [];
      for (let i = 0; i < buffer.length; i++) {
        const line = buffer.getLine(i);
        if (!line) continue;
        const text = line.translateToString(true);
        if (line.isWrapped && lines.length) lines[lines.length - 1] += text;
        else lines.push(text);
      }
      return lines.join('\n').replace(/\n+$/, '');
    },
    wholeOutput,
    parseSamples,
    get tests() { return tests.map((tc) => ({ input: tc.input, expected: tc.expected, verdict: tc.result ? tc.result.verdict : null })); },
    get running() { return !!run; },
    get connected() { return connected(); },
    // The current run's id and log position (what a resume would send).
    get run() { return run && { id: run.id, seq: run.seq }; },
    // Drops the connection as a network would (tests of the reconnection).
    dropConnection() { if (ws) ws.close(); },
  };
})();
