#!/usr/bin/env bash
# Property-based tests of the HTTP API from its OpenAPI document: schemathesis reads the
# document the server serves (/api/v1/openapi.json, from web/openapi.json), generates requests
# from it, valid and invalid, and fails on a 5xx, or on an answer the document does not describe
# (status, content type, headers, body schema), or on valid data refused / invalid data
# accepted. Bounded in time. It starts `onpyrunner serve` on a free loopback port under its own
# instance name, and stops it with SIGTERM at the end (it must exit 0 and leave no container).
#
# It installs what it needs itself: python3's venv module (Debian's python3-venv, as root) and
# schemathesis, at a pinned version, into a venv under target/ (PyPI must be reachable).
#
#   bash scripts/schemathesis.sh
#   ST_SECONDS=60 ST_EXAMPLES=20 bash scripts/schemathesis.sh   # shorter
set -euo pipefail
cd "$(dirname "$0")/.."

version=4.32.5
seconds=${ST_SECONDS:-150}
examples=${ST_EXAMPLES:-50}
bin=${ONPYRUNNER_BIN:-target/release/onpyrunner}
venv=${ST_VENV:-target/schemathesis-venv}
report=${ST_REPORT:-target/schemathesis-report}
case $venv in /*) ;; *) venv=$PWD/$venv ;; esac
config=$PWD/scripts/schemathesis.toml
hooks=$PWD/scripts/schemathesis_hooks.py
instance=schemathesis-$$

say() { printf '==> %s\n' "$*" >&2; }

[ -x "$bin" ] || { say "no $bin: run bash scripts/setup.sh first"; exit 1; }

# 1. schemathesis, pinned, in its own venv (made again if it is not this version).
if ! "$venv/bin/st" --version 2>/dev/null | grep -qF "$version"; then
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        if [ "$(id -u)" != 0 ]; then
            say "python3 with its venv module is needed (Debian: apt-get install python3-venv)"
            exit 1
        fi
        say "installing python3-venv"
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv
    fi
    say "installing schemathesis $version into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi

# 2. The server, on a free port (port 0: it says which on its "listening" line). Small pools
# and one running slot: the generated runs are many and short. No pace on starting runs and
# room for more of them in the queue: schemathesis posts much faster than a person, and runs
# refused with 429 for that would go untested.
rm -rf "$report"
mkdir -p "$report"
. scripts/lib/server.sh
start_server "$instance" "$report/server.log" \
    --pool python=1 --pool pypy=0 --pool node=0 --pool java=0 --pool c=0 --pool cpp=0 --pool rust=0 --pool go=0 --max-running 1 \
    --runs-per-minute 0 --max-runs-per-client 64 --max-queued 128
say "server at $url (instance $instance); schemathesis for at most ${seconds}s"

# 3. Every check (schemathesis runs them all unless told otherwise), every phase, within the
# time budget. One worker: the server runs one program
# at a time, and a refusal for being busy (429) is documented but says nothing of the schema.
# It runs in the report directory, where it keeps what it needs to replay a failure; what it
# leaves out, and why, is in scripts/schemathesis.toml.
status=0
st=$venv/bin/st
(
    cd "$report"
    PYTHONDONTWRITEBYTECODE=1 SCHEMATHESIS_HOOKS=$hooks "$st" --no-color --config-file "$config" run "$url/api/v1/openapi.json" \
        --url "$url" \
        --max-examples "$examples" \
        --max-time "$seconds" \
        --workers 1 \
        --request-timeout 60 \
        --seed "${ST_SEED:-1}" \
        --generation-database none \
        --report junit --report-dir . \
        --wait-for-schema 30
) || status=$?

# 4. SIGTERM: the server ends every run, removes its containers and exits 0.
stop_server_checked || status=1
# In cargo's format, so that scripts/test.sh's closing count includes this.
if [ "$status" = 0 ]; then
    echo "test result: ok. 1 passed; 0 failed; 0 ignored (schemathesis against the OpenAPI document)"
else
    say "schemathesis: FAILED (report in $report)"
    echo "test result: FAILED. 0 passed; 1 failed; 0 ignored (schemathesis against the OpenAPI document)"
fi
exit "$status"
