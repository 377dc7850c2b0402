#!/usr/bin/env bash
# Start, or restart, the Docker daemon the way onpyrunner runs it: sandboxes have no network, so
# no bridge and no iptables rules. Used by setup.sh (ensure) and by the daemon-restart test.
#
#   bash scripts/dockerd.sh ensure    # start dockerd unless the socket answers; wait for it
#   bash scripts/dockerd.sh restart   # stop the running dockerd, start it again, wait for it
set -euo pipefail

host=${DOCKER_HOST:-unix:///var/run/docker.sock}
sock=${host#unix://}
log=/var/log/onpyrunner-dockerd.log

say() { printf '==> %s\n' "$*" >&2; }
answers() { curl -sf --max-time 3 --unix-socket "$sock" http://docker/_ping >/dev/null 2>&1; }

start() {
    if [ "$sock" != /var/run/docker.sock ]; then
        say "DOCKER_HOST=$host does not answer; start that daemon, or unset DOCKER_HOST"; exit 1
    fi
    say "starting dockerd (log: $log)"
    setsid nohup dockerd --bridge=none --iptables=false --ip6tables=false >>"$log" 2>&1 </dev/null &
    for _ in $(seq 1 60); do
        answers && return 0
        sleep 1
    done
    say "dockerd did not answer within 60 s; last lines of $log:"; tail -n 20 "$log" >&2; exit 1
}

case "${1:-ensure}" in
    ensure)
        answers || start
        ;;
    restart)
        # This daemon's pid (its default pid file), not every dockerd: a second one
        # (scripts/second-dockerd.sh) keeps running.
        pid=$(cat /var/run/docker.pid 2>/dev/null || true)
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then pid=; fi
        if [ -n "$pid" ]; then
            say "stopping dockerd ($pid)"
            kill -TERM $pid
            for _ in $(seq 1 60); do
                kill -0 $pid 2>/dev/null || break
                sleep 0.5
            done
            if kill -0 $pid 2>/dev/null; then say "dockerd did not stop within 30 s"; exit 1; fi
        fi
        start
        ;;
    *)
        say "usage: $0 ensure|restart"; exit 2
        ;;
esac
say "Docker daemon answers on $sock"
