# Sourced by the scripts that test a running server (schemathesis.sh, clients.sh): starts
# `onpyrunner serve` on a free loopback port under its own instance name, and stops it with
# SIGTERM at the end, checking that it exits 0 and leaves no container behind.
#
#   start_server INSTANCE LOG [serve flags...]   sets $url and $server, or exits 1
#   stop_server_checked                          0, or 1 with what went wrong on stderr
# Needs $bin (the onpyrunner binary) and say().

host=${DOCKER_HOST:-unix:///var/run/docker.sock}
sock=${host#unix://}

start_server() {
    local name=$1 log=$2
    shift 2
    instance=$name
    server_log=$log
    "$bin" serve --listen 127.0.0.1:0 --instance "$instance" "$@" 2>"$log" &
    server=$!
    trap 'stop_server >/dev/null 2>&1 || true' EXIT
    url=
    local line
    for _ in $(seq 1 600); do
        line=$(grep -m1 '^onpyrunner: listening on http://' "$log" || true)
        if [ -n "$line" ]; then url=${line#onpyrunner: listening on }; break; fi
        kill -0 "$server" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$url" ]; then
        cat "$log" >&2
        say "the server did not start (its log is above; is the Docker daemon up? bash scripts/setup.sh)"
        exit 1
    fi
}

stop_server() {
    if kill -0 "$server" 2>/dev/null; then
        kill -TERM "$server"
        wait "$server"
        return $?
    fi
    return 0
}

# SIGTERM: the server ends every run, removes its containers and exits 0.
stop_server_checked() {
    trap - EXIT
    local status=0 server_status=0 left
    stop_server || server_status=$?
    if [ "$server_status" != 0 ]; then
        say "the server exited with $server_status after SIGTERM; its log is $server_log"
        status=1
    fi
    left=$(curl -sf --max-time 5 --unix-socket "$sock" -G http://docker/containers/json \
        --data-urlencode all=1 --data-urlencode 'filters={"label":["onpyrunner.owner"]}' |
        python3 -c 'import json, sys
print(sum(1 for c in json.load(sys.stdin) if c["Labels"].get("onpyrunner.owner", "").startswith(sys.argv[1] + ".")))' "$instance")
    if [ "$left" != 0 ]; then
        say "$left container(s) of instance $instance left behind"
        status=1
    fi
    return "$status"
}
