#!/usr/bin/env bash
# A second Docker daemon on this machine, for `onpyrunner cluster-bench --second-docker-host`:
# its own data root, exec root (so its own containerd), pid file and socket; no bridge and no
# iptables, as the first (sandboxes have no network). The CPython image is copied from the
# first daemon (built by setup.sh), so nothing is pulled. Run as root; idempotent.
#
#   bash scripts/second-dockerd.sh         # start it unless it answers, copy the image
#   bash scripts/second-dockerd.sh stop    # stop it (its data root stays for the next start)
set -euo pipefail
cd "$(dirname "$0")/.."

sock=/run/onpyrunner-docker2.sock
root=/var/lib/onpyrunner-docker2
exec_root=/run/onpyrunner-docker2
pidfile=/run/onpyrunner-docker2.pid
log=/var/log/onpyrunner-dockerd2.log
bin=./target/release/onpyrunner

say() { printf '==> %s\n' "$*" >&2; }
answers() { curl -sf --max-time 3 --unix-socket "$sock" http://docker/_ping >/dev/null 2>&1; }

if [ "${1:-start}" = stop ]; then
    if [ -f "$pidfile" ] && kill -TERM "$(cat "$pidfile")" 2>/dev/null; then
        for _ in $(seq 1 60); do answers || break; sleep 0.5; done
        say "second dockerd stopped"
    fi
    exit 0
fi

[ -x "$bin" ] || { say "build onpyrunner first: bash scripts/setup.sh"; exit 1; }
if ! answers; then
    say "starting a second dockerd on $sock (log: $log)"
    mkdir -p "$root" "$exec_root"
    setsid nohup dockerd --data-root "$root" --exec-root "$exec_root" --pidfile "$pidfile" \
        -H "unix://$sock" --bridge=none --iptables=false --ip6tables=false \
        >>"$log" 2>&1 </dev/null &
    for _ in $(seq 1 60); do answers && break; sleep 1; done
    answers || { say "it did not answer within 60 s:"; tail -n 20 "$log" >&2; exit 1; }
fi
# The image as this build names it (its recipe hash), from the first daemon's list.
image=$("$bin" images --check --lang python | awk '$1 == "python" { print $4 }')
if ! "$bin" --docker-host "unix://$sock" images --check --lang python >/dev/null 2>&1; then
    say "copying $image to the second daemon"
    curl -sf --unix-socket /var/run/docker.sock "http://docker/images/$image/get" |
        curl -sf --unix-socket "$sock" -X POST -H 'Content-Type: application/x-tar' \
            --data-binary @- http://docker/images/load >/dev/null
fi
"$bin" --docker-host "unix://$sock" images --check --lang python >/dev/null
say "second Docker daemon answers on unix://$sock with $image"
