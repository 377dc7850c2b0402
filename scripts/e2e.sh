#!/usr/bin/env bash
# End-to-end tests of the web IDE: start `onpyrunner serve` on a free loopback port under its own
# instance name (and a second one with API tokens, for the IDE's token path), drive the IDE in
# headless Chromium (web/e2e/, playwright-core + node:test), then stop the servers with SIGTERM
# and check that they exit 0 and leave no container behind.
# Screenshots go to target/e2e-artifacts/. Needs what scripts/setup.sh installs (the binary, the
# images, Debian's chromium, `npm ci` in web/e2e).
#
#   bash scripts/e2e.sh                 # prints a closing cargo-style "test result:" line
#   E2E_FILTER='share' bash scripts/e2e.sh   # only tests whose name matches
#   E2E_FILES='perf.test.js' bash scripts/e2e.sh   # only these files of web/e2e/
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

bin=${ONPYRUNNER_BIN:-target/release/onpyrunner}
artifacts=$root/target/e2e-artifacts
instance=e2e-ide-$$
host=${DOCKER_HOST:-unix:///var/run/docker.sock}
sock=${host#unix://}

say() { printf '==> %s\n' "$*" >&2; }
# The harness itself failed: one failure in the count, so it is not mistaken for no tests.
broken() {
    say "$*"
    echo "test result: FAILED. 0 passed; 1 failed; 0 ignored (e2e: the harness failed)"
    exit 1
}

[ -x "$bin" ] || broken "no $bin: run bash scripts/setup.sh first"
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || broken "no chromium: run bash scripts/setup.sh first"
[ -d web/e2e/node_modules/playwright-core ] || broken "no playwright-core: run bash scripts/setup.sh first"

rm -rf "$artifacts"
mkdir -p "$artifacts"
log=$artifacts/server.log

# Port 0: the kernel picks a free port; the server says which on its "listening" line. One
# run at a time, so that a test can see a run wait in the queue.
"$bin" serve --listen 127.0.0.1:0 --instance "$instance" \
    --pool python=1 --pool pypy=0 --pool node=0 --pool java=0 --pool c=0 --pool cpp=0 --pool rust=0 --pool go=0 --max-running 1 2>"$log" &
server=$!
# The second server needs a token; no pools (its few runs make their containers on demand).
token=e2e$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
tokens_file=$artifacts/tokens.toml
printf '[[token]]\nname = "e2e"\nsecret = "%s"\n' "$token" >"$tokens_file"
token_log=$artifacts/server-tokens.log
"$bin" serve --listen 127.0.0.1:0 --instance "$instance-tokens" --tokens "$tokens_file" \
    --pool python=0 --pool pypy=0 --pool node=0 --pool java=0 --pool c=0 --pool cpp=0 --pool rust=0 --pool go=0 2>"$token_log" &
token_server=$!

stop_server() { # pid
    if kill -0 "$1" 2>/dev/null; then
        kill -TERM "$1"
        wait "$1"
        return $?
    fi
    return 0
}
trap 'stop_server "$server" >/dev/null 2>&1 || true; stop_server "$token_server" >/dev/null 2>&1 || true' EXIT

listening() { # log pid: prints the server's URL once it listens
    for _ in $(seq 1 600); do
        line=$(grep -m1 '^onpyrunner: listening on http://' "$1" || true)
        if [ -n "$line" ]; then echo "${line#onpyrunner: listening on }"; return; fi
        if ! kill -0 "$2" 2>/dev/null; then return; fi
        sleep 0.1
    done
}
url=$(listening "$log" "$server")
token_url=$(listening "$token_log" "$token_server")
if [ -z "$url" ] || [ -z "$token_url" ]; then
    cat "$log" "$token_log" >&2
    broken "a server did not start (the logs are above; is the Docker daemon up? bash scripts/setup.sh)"
fi
say "server at $url (instance $instance); with tokens at $token_url"

# Both reporters: the spec one for people, TAP into a file for the counts.
tap=$artifacts/results.tap
status=0
(
    cd web/e2e
    ONPYRUNNER_URL=$url ONPYRUNNER_TOKEN_URL=$token_url ONPYRUNNER_TOKEN=$token \
        E2E_ARTIFACTS=$artifacts \
        node --test --test-concurrency=1 \
        ${E2E_FILTER:+--test-name-pattern="$E2E_FILTER"} \
        --test-reporter=spec --test-reporter-destination=stdout \
        --test-reporter=tap --test-reporter-destination="$tap" \
        ${E2E_FILES:-ide.test.js phone.test.js judge.test.js perf.test.js}
) || status=$?

# SIGTERM: a server ends every run, removes its containers and exits 0.
trap - EXIT
for pair in "$server:$log:$instance" "$token_server:$token_log:$instance-tokens"; do
    IFS=: read -r pid its_log its_instance <<<"$pair"
    server_status=0
    stop_server "$pid" || server_status=$?
    if [ "$server_status" != 0 ]; then
        say "the server exited with $server_status after SIGTERM; its log is $its_log"
        status=1
    fi
    left=$(curl -sf --max-time 5 --unix-socket "$sock" -G http://docker/containers/json \
        --data-urlencode all=1 --data-urlencode 'filters={"label":["onpyrunner.owner"]}' |
        node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const c=JSON.parse(s||"[]");
          console.log(c.filter(x=>(x.Labels["onpyrunner.owner"]||"").startsWith(process.argv[1]+".")).length)})' "$its_instance")
    if [ "$left" != 0 ]; then
        say "$left container(s) of instance $its_instance left behind"
        status=1
    fi
done

passed=$(awk '/^# pass /{print $3}' "$tap" 2>/dev/null | tail -1)
failed=$(awk '/^# fail /{print $3}' "$tap" 2>/dev/null | tail -1)
passed=${passed:-0}
failed=${failed:-0}
# A broken harness (server, containers) counts as one more failure.
if [ "$status" != 0 ] && [ "$failed" = 0 ]; then failed=1; fi
result=ok
[ "$status" = 0 ] || result=FAILED
say "screenshots and logs in $artifacts"
# In cargo's format, so that scripts/test.sh's closing count includes these.
echo "test result: $result. $passed passed; $failed failed; 0 ignored (e2e: web IDE in headless Chromium)"
exit "$status"
