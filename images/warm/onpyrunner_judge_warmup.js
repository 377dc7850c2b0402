// Run once by the judge process (onpyrunner_judge.js) at container start, as a test would run:
// node's module loader, fs on fd 0, the usual string work and the stdout and stderr streams
// (made, not written to) are then warm for the first real test. It prints nothing.
'use strict';
const input = require('fs').readFileSync(0, 'utf8');
const numbers = input.trim().split(/\s+/).filter(Boolean).map(Number);
process.exitCode = numbers.length >= 0 && process.stdout.writable && process.stderr.writable ? 0 : 1;
