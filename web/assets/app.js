// onpyrunner IDE: an editor, a live terminal and one WebSocket (/api/v1/ws, see docs/protocol.md).
// Plain script, no build step; the vendored CodeMirror 5 and xterm.js are loaded before it.
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
  const inputToggle = $('input-toggle');
  const inputBox = $('input-box');
  const stdinInput = $('stdin-input');
  const shareButton = $('share');
  const shareBox = $('share-box');
  const shareUrlField = $('share-url');
  const shareStatus = $('share-status');
  const errorBox = $('error');
  const summaryBox = $('summary');
  const tokenBox = $('token-box');
  const tokenInput = $('token-input');
  const tokenStatus = $('token-status');

  // ---------------------------------------------------------------- storage
  const PREFIX = 'onpyrunner.';
  const store = {
    get(key) {
      try { return localStorage.getItem(PREFIX + key); } catch (_) { return null; }
    },
    set(key, value) {
      try { localStorage.setItem(PREFIX + key, value); } catch (_) { /* private mode, quota */ }
    },
  };

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
    tokenStatus.textContent = refused ? 'The server refused this token; give another.' : '';
    tokenInput.value = '';
    tokenBox.hidden = false;
    tokenInput.focus();
  }

  // ------------------------------------------------ languages: mode and sample
  // Keyed by the entry file's extension, so a new language of a known kind needs nothing here.
  const KINDS = {
    py: {
      mode: 'python', indent: 4,
      sample: 'name = input("What is your name? ")\nprint(f"Hello, {name}!")\n',
    },
    js: {
      mode: 'javascript', indent: 2,
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
      mode: 'text/x-java', indent: 4,
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
    c: { mode: 'text/x-csrc', indent: 4, sample: '#include <stdio.h>\n\nint main(void) {\n    printf("Hello, world!\\n");\n    return 0;\n}\n' },
    cpp: { mode: 'text/x-c++src', indent: 4, sample: '#include <iostream>\n\nint main() {\n    std::cout << "Hello, world!\\n";\n}\n' },
  };
  const PLAIN = { mode: 'text/plain', indent: 4, sample: '' };

  function kindOf(lang) {
    const file = (lang && lang.source_file) || '';
    const ext = file.includes('.') ? file.split('.').pop().toLowerCase() : '';
    return KINDS[ext] || PLAIN;
  }

  // ----------------------------------------------------------------- editor
  const editor = CodeMirror($('editor'), {
    value: '',
    theme: 'material-darker',
    lineNumbers: true,
    indentUnit: 4,
    tabSize: 4,
    indentWithTabs: false,
    matchBrackets: true,
    autoCloseBrackets: true,
    lineWrapping: window.matchMedia('(max-width: 899px)').matches,
    viewportMargin: 20,
    // Spaces, not tab characters: Python cares, the others do not mind.
    extraKeys: {
      Tab: (cm) => (cm.somethingSelected() ? cm.indentSelection('add') : cm.execCommand('insertSoftTab')),
      'Shift-Tab': (cm) => cm.indentSelection('subtract'),
    },
    inputStyle: 'contenteditable',
    spellcheck: false,
    autocorrect: false,
    autocapitalize: false,
  });

  // ---------------------------------------------------------------- terminal
  const term = new Terminal({
    convertEol: true, // programs write "\n"; the terminal needs "\r\n"
    cursorBlink: true,
    fontSize: 14,
    fontFamily: 'ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace',
    scrollback: 5000,
    theme: { background: '#121212', foreground: '#e6e6e6', cursor: '#7fd962', selectionBackground: '#3a4150' },
    // Program output can make links (OSC 8) whose text says one thing and whose target is
    // another, or a javascript: URL that would run in this page's origin. Only http(s) links
    // open, after the user has seen the real address, in a tab that cannot reach this one.
    linkHandler: {
      allowNonHttpProtocols: false,
      activate(event, uri) {
        let url;
        try { url = new URL(uri); } catch { return; }
        if (url.protocol !== 'http:' && url.protocol !== 'https:') return;
        if (!window.confirm(`The program's output links to\n\n${url.href}\n\nOpen it in a new tab?`)) return;
        window.open(url.href, '_blank', 'noopener,noreferrer');
      },
    },
  });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open($('terminal'));
  // Ctrl+C with a selection copies, as everywhere else; without one it stops the run.
  term.attachCustomKeyEventHandler((ev) => !(ev.type === 'keydown' && ev.ctrlKey && ev.key === 'c' && term.hasSelection()));

  const DIM = '\x1b[2m';
  const RESET = '\x1b[0m';
  const STDERR_COLOR = '\x1b[91m';
  const DEFAULT_COLOR = '\x1b[39m';

  let atLineStart = true; // whether the terminal's last written byte ended a line
  let outStream = 1; // the stream whose color the terminal is in

  function termNotice(text) {
    term.write((atLineStart ? '' : '\r\n') + RESET + DIM + text + RESET + '\r\n');
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

  // On a phone, the pane being typed into gets more of the height.
  editor.on('focus', () => { app.classList.add('focus-editor'); app.classList.remove('focus-terminal'); });
  term.textarea.addEventListener('focus', () => { app.classList.add('focus-terminal'); app.classList.remove('focus-editor'); });

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

  function setBadge(state, text, failed) {
    stateBadge.dataset.state = state;
    stateBadge.textContent = text;
    stateBadge.classList.toggle('failed', !!failed);
  }

  function setConn(conn) {
    connDot.dataset.conn = conn;
    const label = { open: 'connected', connecting: 'connecting…', closed: 'disconnected, reconnecting…' }[conn];
    connDot.title = 'Server: ' + label;
    connDot.setAttribute('aria-label', 'Connection: ' + label);
  }

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
    runButton.disabled = busy || !language || !language.available;
    stopButton.disabled = !busy;
    eofButton.disabled = !run || run.eofSent;
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
      showError('The server refused the connection: ' + message);
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
        showError('The server refused a message larger than its limit (2 MiB) and closed the connection; reconnecting…');
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
        setBadge('ready', 'READY');
        termNotice('connection lost before the run started; press Run to try again');
      } else if (run.id !== null) {
        setBadge('reconnecting', 'RECONNECTING');
        summaryBox.textContent = 'Connection lost: the run goes on on the server; reconnecting…';
      }
    }
    if (run && code !== 1009) {
      showError('Lost the connection to the server; reconnecting…');
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

  // Taken back after a drop: what follows is exactly what came after run.seq.
  function onResumed(msg) {
    if (!run || msg.run !== run.id) return;
    run.resuming = false;
    const s = String(msg.state || '').toUpperCase();
    setBadge(s.toLowerCase(), s);
    summaryBox.textContent = '';
    const outbox = run.outbox;
    run.outbox = [];
    for (const m of outbox) sendToRun(m);
    updateButtons();
  }

  function onState(msg) {
    if (!ours(msg)) return;
    const s = String(msg.state || '').toUpperCase();
    setBadge(s.toLowerCase(), s);
    if (run.eofOnStart && !run.eofSent) {
      // The batch input went with the run; end it so the program does not wait for more.
      run.eofSent = true;
      sendToRun({ type: 'eof' });
    }
    updateButtons();
  }

  function onQueued(msg) {
    if (!ours(msg)) return;
    setBadge('queued', 'QUEUED #' + msg.position);
  }

  function onOutput(bytes) {
    if (!run || bytes.length === 0) return;
    const stream = bytes[0];
    const data = bytes.subarray(1);
    run.seq += data.length;
    if (data.length === 0) return;
    if (stream !== outStream) {
      term.write(stream === 2 ? STDERR_COLOR : DEFAULT_COLOR);
      outStream = stream;
    }
    term.write(data);
    atLineStart = data[data.length - 1] === 0x0a;
  }

  function onSummary(msg) {
    if (!ours(msg)) return;
    endRun();
    // The run is over: a close frame on a socket given up on can no longer kill it.
    for (const sock of abandoned) sock.close();
    abandoned = [];
    const state = String(msg.state || 'FINISHED').toUpperCase();
    const failed = state === 'FINISHED' && (msg.reason !== 'exited' || (msg.exit_code !== 0 && msg.exit_code !== null) || msg.signal != null);
    setBadge(state.toLowerCase(), state, failed);
    renderSummary(msg);
    termNotice(summaryLine(msg));
    if (msg.reason === 'internal_error' && msg.error) showError('The server could not finish the run: ' + msg.error);
  }

  function onServerError(msg) {
    let text = msg.error || 'error';
    if (msg.field) text += ' (field: ' + msg.field + (msg.limit != null ? ', limit: ' + msg.limit : '') + ')';
    if (run && run.id === null) {
      // The run was refused: nothing started.
      endRun();
      setBadge('error', 'ERROR');
      showError(text);
      termNotice('not started: ' + text);
    } else if (run && run.resuming) {
      // Not taken back (404: gone, killed after the grace period or the server restarted).
      endRun();
      setBadge('ready', 'READY');
      showError('The run could not be resumed: ' + text);
      termNotice('connection lost and the run could not be resumed: ' + text);
    } else {
      showError(text);
    }
  }

  function endRun() {
    run = null;
    lineBuffer = '';
    if (outStream !== 1) term.write(DEFAULT_COLOR);
    outStream = 1;
    updateButtons();
  }

  // ------------------------------------------------------------- summaries
  const SIGNALS = { 1: 'SIGHUP', 2: 'SIGINT', 3: 'SIGQUIT', 4: 'SIGILL', 6: 'SIGABRT', 8: 'SIGFPE', 9: 'SIGKILL', 11: 'SIGSEGV', 13: 'SIGPIPE', 14: 'SIGALRM', 15: 'SIGTERM', 24: 'SIGXCPU', 25: 'SIGXFSZ' };
  const REASONS = {
    compile_error: 'compile error',
    memory_limit: 'memory limit exceeded',
    output_limit: 'output limit exceeded',
    timeout: 'time limit exceeded',
    stopped: 'stopped',
    shutdown: 'server shutting down',
    client_gone: 'connection lost',
    internal_error: 'internal error',
  };

  function fmtMs(ms) {
    if (ms == null) return '–';
    return ms < 1000 ? ms + ' ms' : (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + ' s';
  }
  function fmtKib(kib) {
    if (!kib) return '–';
    return kib < 1024 ? kib + ' KiB' : (kib / 1024).toFixed(1) + ' MiB';
  }
  function fmtExit(s) {
    if (s.signal != null) return 'signal ' + s.signal + (SIGNALS[s.signal] ? ' (' + SIGNALS[s.signal] + ')' : '');
    if (s.exit_code != null) return 'exit ' + s.exit_code;
    return 'no exit code';
  }

  function summaryParts(s) {
    const parts = [];
    // STOPPED and TIMEOUT say it on the badge already; other reasons need saying.
    if (s.reason && !['exited', 'stopped', 'timeout'].includes(s.reason)) parts.push(['reason', REASONS[s.reason] || s.reason]);
    if (s.exit_code != null || s.signal != null) parts.push(['exit', fmtExit(s)]);
    parts.push(['wall', 'wall ' + fmtMs(s.wall_ms)], ['cpu', 'cpu ' + fmtMs(s.cpu_ms)]);
    if (s.memory_kib) parts.push(['memory', 'mem ' + fmtKib(s.memory_kib)]);
    if (s.stage === 'compile' && s.reason !== 'compile_error') parts.unshift(['stage', 'while compiling']);
    if (s.oom_killed && s.reason !== 'memory_limit') parts.push(['oom', 'out of memory']);
    if (s.output_truncated) parts.push(['truncated', 'output truncated']);
    if (s.queued_ms > 0) parts.push(['queued', 'queued ' + fmtMs(s.queued_ms)]);
    return parts;
  }

  function summaryLine(s) {
    return '[' + String(s.state || '').toUpperCase() + ': ' + summaryParts(s).map((p) => p[1]).join(', ') + ']';
  }

  function renderSummary(s) {
    summaryBox.textContent = '';
    summaryParts(s).forEach(([key, text], i) => {
      if (i) summaryBox.append(' · ');
      const span = document.createElement('span');
      span.dataset.testid = 'summary-' + key;
      span.textContent = text;
      if (key === 'reason' || key === 'stage' || key === 'oom' || key === 'truncated' || (key === 'exit' && text !== 'exit 0')) span.className = 'bad';
      summaryBox.append(span);
    });
  }

  // ------------------------------------------------------------------ runs
  function sendRun(msg) {
    if (!send(msg)) {
      // Not connected: send it once the connection opens.
      pendingRun = msg;
      connect();
    }
  }

  function startRun() {
    if (run || pendingRun || !language || !language.available) return;
    hideError();
    saveCode();
    const msg = { type: 'run', language: language.id, code: editor.getValue() };
    const batch = !inputBox.hidden && stdinInput.value !== '';
    if (batch) msg.stdin = stdinInput.value;
    run = { id: null, seq: 0, resuming: false, outbox: [], eofSent: false, eofOnStart: batch };
    lineBuffer = '';
    term.reset();
    atLineStart = true;
    outStream = 1;
    summaryBox.textContent = '';
    setBadge('ready', 'READY');
    sendRun(msg);
    updateButtons();
    // Ready to type into the program; on touch screens only when asked (the keyboard would pop up).
    if (!batch && window.matchMedia('(pointer: fine)').matches) term.focus();
  }

  function stopRun() {
    if (pendingRun) {
      // Never sent: nothing to stop on the server.
      pendingRun = null;
      endRun();
      setBadge('stopped', 'STOPPED');
      termNotice('stopped before it started');
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
  stopButton.addEventListener('click', stopRun);
  eofButton.addEventListener('click', () => { sendEof(); term.focus(); });

  // Ctrl+Enter / Cmd+Enter runs from anywhere (capture: before the editor or terminal sees it).
  window.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      ev.stopPropagation();
      startRun();
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
    if (run.eofSent) return; // stdin is closed
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
  term.onData(onTerminalData);

  // ------------------------------------------------------------ batch input
  function setInputOpen(open) {
    inputBox.hidden = !open;
    inputToggle.setAttribute('aria-expanded', String(open));
    if (open) stdinInput.focus();
  }
  inputToggle.addEventListener('click', () => setInputOpen(inputBox.hidden));
  stdinInput.addEventListener('input', () => store.set('input', stdinInput.value));

  // ---------------------------------------------------------- code storage
  let saveTimer = null;
  let sharedFragmentShown = false; // the URL still holds the share fragment that was loaded

  function saveCode() {
    clearTimeout(saveTimer);
    saveTimer = null;
    if (language) store.set('code.' + language.id, editor.getValue());
  }
  editor.on('change', (cm, change) => {
    if (change.origin === 'setValue') return; // loaded, not typed
    clearTimeout(saveTimer);
    saveTimer = setTimeout(saveCode, 300);
    if (sharedFragmentShown) {
      // Edited: the link no longer describes this code, and a reload should keep the edits.
      sharedFragmentShown = false;
      history.replaceState(null, '', location.pathname + location.search);
    }
  });
  window.addEventListener('pagehide', saveCode);

  function applyLanguage(lang, code) {
    language = lang;
    const kind = kindOf(lang);
    editor.setOption('mode', kind.mode);
    editor.setOption('indentUnit', kind.indent);
    editor.setOption('tabSize', kind.indent);
    if (code === undefined) {
      const saved = store.get('code.' + lang.id);
      code = saved !== null ? saved : kind.sample;
    }
    editor.setValue(code);
    editor.clearHistory();
    languageSelect.value = lang.id;
    store.set('language', lang.id);
    updateButtons();
  }

  languageSelect.addEventListener('change', () => {
    saveCode();
    const lang = languages.find((l) => l.id === languageSelect.value);
    if (lang) applyLanguage(lang);
  });

  // ---------------------------------------------------------------- sharing
  // The link's fragment holds the code, language and input; nothing is stored on the server
  // and fragments are never sent to it. `z=`: deflate-raw compressed JSON; `j=`: plain JSON.
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
    const data = { v: 1, l: language ? language.id : '', c: editor.getValue() };
    if (!inputBox.hidden && stdinInput.value) data.i = stdinInput.value;
    return location.origin + location.pathname + '#' + (await encodeShare(data));
  }

  shareButton.addEventListener('click', async () => {
    let url;
    try {
      url = await shareLink();
    } catch (e) {
      showError('Cannot make a link: ' + e.message);
      return;
    }
    shareUrlField.value = url;
    shareBox.hidden = false;
    shareStatus.textContent = 'Length ' + url.length + ' characters.';
    shareUrlField.focus();
    shareUrlField.select();
    try {
      await navigator.clipboard.writeText(url);
      shareStatus.textContent = 'Copied to the clipboard.';
    } catch (_) {
      shareStatus.textContent = 'Select the link and copy it.';
    }
  });
  $('share-close').addEventListener('click', () => { shareBox.hidden = true; });

  async function loadShared() {
    if (!location.hash || location.hash === '#') return false;
    let data;
    try {
      data = await decodeShare(location.hash);
    } catch (e) {
      showError('Cannot open this link: ' + e.message);
      return false;
    }
    if (!data) return false;
    const lang = languages.find((l) => l.id === data.l);
    if (!lang) showError('This link is for a language this server does not have: ' + data.l);
    saveCode();
    applyLanguage(lang || language, data.c);
    stdinInput.value = typeof data.i === 'string' ? data.i : '';
    setInputOpen(stdinInput.value !== '');
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
    } catch (e) {
      showError('Cannot load the languages (' + e.message + '); retrying…');
      setTimeout(loadLanguages, 3000);
      return;
    }
    hideError();
    languages = list;
    languageSelect.textContent = '';
    for (const lang of list) {
      const option = document.createElement('option');
      option.value = lang.id;
      option.textContent = lang.name + ' ' + lang.version + (lang.available ? '' : ' (unavailable)');
      option.disabled = !lang.available;
      languageSelect.append(option);
    }
    languageSelect.disabled = false;
    const wanted = store.get('language');
    const lang = list.find((l) => l.id === wanted && l.available)
      || list.find((l) => l.id === 'python' && l.available)
      || list.find((l) => l.available)
      || list[0];
    if (lang) applyLanguage(lang);
    await loadShared();
    updateButtons();
  }

  takeTokenFromUrl();
  stdinInput.value = store.get('input') || '';
  fitTerminal();
  termNotice('Press Run (Ctrl+Enter). When the program reads input, type here and press Enter; Ctrl+D ends the input.');
  updateButtons();
  connect();
  loadLanguages();

  // For tests and the curious: read-only views of the parts.
  window.onpyrunnerIDE = {
    editor,
    term,
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
    get running() { return !!run; },
    get connected() { return connected(); },
    // The current run's id and log position (what a resume would send).
    get run() { return run && { id: run.id, seq: run.seq }; },
    // Drops the connection as a network would (tests of the reconnection).
    dropConnection() { if (ws) ws.close(); },
  };
})();
