#!/usr/bin/env bash
# Piston's and Judge0's own client libraries, unmodified and pinned (tests/compat/: piston-client
# from npm, Judge0's Python SDK from PyPI; scripts/setup.sh installs them), against a real
# server: it starts `onpyrunner serve` on a free loopback port under its own instance name, runs
# each client's tests (tests/compat/*test*), then stops the server with SIGTERM and checks that
# it exits 0 and leaves no container behind. Prints one cargo-style "test result:" line per
# client, so that scripts/test.sh's closing count includes them.
# Each client has at most 10 minutes.
#
#   bash scripts/clients.sh
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${ONPYRUNNER_BIN:-target/release/onpyrunner}
venv=$PWD/target/compat-venv
artifacts=$PWD/target/compat-artifacts
say() { printf '==> %s\n' "$*" >&2; }
# The harness itself failed: one failure in the count, so it is not mistaken for no tests.
broken() {
    say "$*"
    echo "test result: FAILED. 0 passed; 1 failed; 0 ignored (compat clients: the harness failed)"
    exit 1
}
[ -x "$bin" ] || broken "no $bin: run bash scripts/setup.sh first"
[ -d tests/compat/node_modules/piston-client ] || broken "no piston-client: run bash scripts/setup.sh first"
[ -x "$venv/bin/python" ] || broken "no $venv: run bash scripts/setup.sh first"

rm -rf "$artifacts"
mkdir -p "$artifacts"
. scripts/lib/server.sh
# Every language runs, most of them once or twice: no pools but CPython's. No pace on starting
# runs: the clients post faster than a person.
start_server "compat-$$" "$artifacts/server.log" \
    --pool python=1 --pool pypy=0 --pool node=0 --pool java=0 --pool c=0 --pool cpp=0 --pool rust=0 --pool go=0 \
    --runs-per-minute 0 --max-runs-per-client 64
say "server at $url"

status=0
# node:test's summary: "# pass N" and "# fail N".
say "piston-client (npm) against $url"
piston=0
(cd tests/compat && ONPYRUNNER_URL=$url timeout 600 node --test --test-concurrency=1 piston.test.js) \
    >"$artifacts/piston.log" 2>&1 || piston=$?
cat "$artifacts/piston.log"
pass=$(awk '/^# pass/ {print $3}' "$artifacts/piston.log")
fail=$(awk '/^# fail/ {print $3}' "$artifacts/piston.log")
if [ "$piston" = 0 ] && [ "${fail:-1}" = 0 ]; then
    echo "test result: ok. ${pass:-0} passed; 0 failed; 0 ignored (piston-client against the Piston routes)"
else
    echo "test result: FAILED. ${pass:-0} passed; ${fail:-1} failed; 0 ignored (piston-client against the Piston routes)"
    status=1
fi

# unittest's summary: "Ran N tests", then "OK" or "FAILED (failures=F, errors=E)".
say "judge0 (PyPI) against $url"
judge=0
(cd tests/compat && ONPYRUNNER_URL=$url PYTHONDONTWRITEBYTECODE=1 timeout 600 "$venv/bin/python" -m unittest -v judge0_test) \
    >"$artifacts/judge0.log" 2>&1 || judge=$?
cat "$artifacts/judge0.log"
ran=$(awk '/^Ran [0-9]+ test/ {print $2}' "$artifacts/judge0.log")
failed=$({ grep -oE '(failures|errors)=[0-9]+' "$artifacts/judge0.log" || true; } | awk -F= '{s += $2} END {print s + 0}')
if [ "$judge" = 0 ]; then
    echo "test result: ok. ${ran:-0} passed; 0 failed; 0 ignored (Judge0's Python SDK against the Judge0 routes)"
else
    [ "$failed" = 0 ] && failed=1
    echo "test result: FAILED. $(( ${ran:-0} - failed < 0 ? 0 : ${ran:-0} - failed )) passed; $failed failed; 0 ignored (Judge0's Python SDK against the Judge0 routes)"
    status=1
fi

stop_server_checked || { status=1; echo "test result: FAILED. 0 passed; 1 failed; 0 ignored (compat clients: the server's exit)"; }
exit "$status"
