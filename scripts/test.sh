#!/usr/bin/env bash
# The whole test suite: setup (daemon, build, images), formatting and lints, unit and property
# tests, end-to-end tests against the real daemon and images, the web IDE's tests in headless
# Chromium (scripts/e2e.sh), schemathesis against the OpenAPI document (scripts/schemathesis.sh),
# Piston's and Judge0's own client libraries against the service (scripts/clients.sh) and a
# bounded fuzzing run.
#   ST_SECONDS=N     seconds of schemathesis (default 150; 0 skips it)
#   FUZZ_SECONDS=N   seconds per fuzz target (default 20; 0 skips fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --locked --all-targets -q -- -D warnings
echo "==> cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --locked --workspace 2>&1 | tee "$log"
echo "==> end-to-end tests of the web IDE (headless Chromium)"
e2e=0
bash scripts/e2e.sh 2>&1 | tee -a "$log" || e2e=$?
st=0
if [ "${ST_SECONDS:-150}" != 0 ]; then
    echo "==> schemathesis against the OpenAPI document (${ST_SECONDS:-150} s)"
    bash scripts/schemathesis.sh 2>&1 | tee -a "$log" || st=$?
fi
echo "==> Piston's and Judge0's client libraries against the service"
clients=0
bash scripts/clients.sh 2>&1 | tee -a "$log" || clients=$?
if [ "${FUZZ_SECONDS:-20}" != 0 ]; then
    echo "==> fuzzing (${FUZZ_SECONDS:-20} s per target)"
    bash scripts/fuzz.sh
fi
# One closing line for the whole suite (cargo prints one per test binary, the last often a
# doc-test group with nothing in it).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
[ "$e2e" != 0 ] && exit "$e2e"
[ "$clients" != 0 ] && exit "$clients"
exit "$st"
