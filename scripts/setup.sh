#!/usr/bin/env bash
# Make a Docker daemon answer on its Unix socket, then build onpyrunner and any missing language
# image. Nothing needs to be installed by hand first. Idempotent: when everything is already
# there it only checks, and takes a few seconds.
#
#   bash scripts/setup.sh            # everything
#   SKIP_IMAGES=1 bash scripts/setup.sh   # daemon and build only
#   SKIP_E2E=1 bash scripts/setup.sh      # without what the IDE's browser tests need
#   SKIP_GVISOR=1 bash scripts/setup.sh   # without gVisor (runsc) for `serve --runtime runsc`
#   SKIP_COMPAT=1 bash scripts/setup.sh   # without the Piston and Judge0 client libraries (scripts/clients.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

host=${DOCKER_HOST:-unix:///var/run/docker.sock}
sock=${host#unix://}

say() { printf '==> %s\n' "$*" >&2; }
answers() { curl -sf --max-time 3 --unix-socket "$sock" http://docker/_ping >/dev/null 2>&1; }

apt_updated=0
apt_install() {
    if [ "$(id -u)" != 0 ]; then
        say "need to install $*: run this script as root (or install them yourself)"; exit 1
    fi
    if [ "$apt_updated" = 0 ]; then apt-get update -q; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

# 1. Tools: the Docker engine (Debian's docker.io), debootstrap for the images, curl and xz for us.
missing=()
command -v curl >/dev/null || missing+=(curl ca-certificates)
if ! answers; then command -v dockerd >/dev/null || missing+=(docker.io); fi
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v xz >/dev/null || missing+=(xz-utils)
# The cluster tests (tests/tests/cluster.rs) start Redis servers of their own; none runs here.
command -v redis-server >/dev/null || missing+=(redis-server)
# The IDE's end-to-end tests (scripts/e2e.sh): Debian's Chromium, driven by playwright-core.
if [ -z "${SKIP_E2E:-}" ]; then
    [ -x /usr/bin/chromium ] || missing+=(chromium)
    # A Korean font, so that the Korean interface's screenshots show Hangul, not boxes.
    fc-list :lang=ko 2>/dev/null | grep -q . || missing+=(fonts-nanum)
fi
# npm for those tests and for the compatibility clients' (scripts/clients.sh).
if [ -z "${SKIP_E2E:-}" ] || [ -z "${SKIP_COMPAT:-}" ]; then
    command -v npm >/dev/null || missing+=(nodejs npm)
fi
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    apt_install "${missing[@]}"
fi

# 2. A daemon that answers.
bash scripts/dockerd.sh ensure

# 2b. gVisor: Debian's runsc, registered with the local daemon as runtime "runsc" for
# `serve --runtime runsc` and its tests. dockerd reads "runtimes" from daemon.json again on
# SIGHUP, so no restart (which would end every container). The ptrace platform is the one
# that works in a VM without nested virtualisation; --network=none because sandboxes have no
# network (runsc refuses Docker's "none" network otherwise).
has_runsc() { curl -sf --max-time 3 --unix-socket "$sock" http://docker/info | grep -q '"runsc":'; }
register_gvisor() {
    local conf=/etc/docker/daemon.json
    if [ "$(id -u)" != 0 ]; then
        say "gVisor skipped: installing and registering runsc needs root"; return
    fi
    if ! command -v runsc >/dev/null; then
        if ! apt-cache policy runsc 2>/dev/null | grep -q 'Candidate: [0-9]'; then
            say "gVisor skipped: no runsc package for this system (its tests say so)"; return
        fi
        say "installing runsc (gVisor)"
        apt_install runsc
    fi
    local entry
    entry="\"runsc\": {\"path\": \"$(command -v runsc)\", \"runtimeArgs\": [\"--platform=ptrace\", \"--network=none\"]}"
    if [ ! -s "$conf" ]; then
        say "registering runsc in $conf"
        mkdir -p /etc/docker
        printf '{\n  "runtimes": {\n    %s\n  }\n}\n' "$entry" >"$conf"
    elif ! grep -q '"runsc"' "$conf"; then
        # Never rewrite an operator's file: say what to add.
        say "gVisor skipped: $conf has no runsc; add to its \"runtimes\": $entry"; return
    fi
    say "reloading dockerd's configuration (SIGHUP)"
    kill -HUP "$(pgrep -x dockerd)"
    for _ in $(seq 1 20); do
        has_runsc && return
        sleep 0.5
    done
    say "dockerd did not pick up runsc from $conf (see its log)"
}
if [ -z "${SKIP_GVISOR:-}" ] && [ "$sock" = /var/run/docker.sock ] && ! has_runsc; then
    register_gvisor
fi

# 3. Build the binaries (the launcher goes into the images).
say "building onpyrunner (release)"
cargo build --release --locked --bins -q

# 3b. The e2e tests' node packages (web/e2e/package-lock.json), installed again only when the
# lock file changed.
if [ -z "${SKIP_E2E:-}" ] &&
    ! cmp -s web/e2e/package-lock.json web/e2e/node_modules/.onpyrunner-lock 2>/dev/null; then
    say "installing the e2e test packages (npm ci in web/e2e)"
    (cd web/e2e && npm ci --no-audit --no-fund --loglevel=error && cp package-lock.json node_modules/.onpyrunner-lock)
fi

# 3c. Piston's and Judge0's own client libraries (tests/compat/, scripts/clients.sh): the npm
# one from its lock file, the PyPI one into a venv, each installed again only when its pins
# changed.
if [ -z "${SKIP_COMPAT:-}" ]; then
    if ! cmp -s tests/compat/package-lock.json tests/compat/node_modules/.onpyrunner-lock 2>/dev/null; then
        say "installing Piston's client (npm ci in tests/compat)"
        (cd tests/compat && npm ci --no-audit --no-fund --loglevel=error && cp package-lock.json node_modules/.onpyrunner-lock)
    fi
    venv=target/compat-venv
    if ! cmp -s tests/compat/requirements.txt "$venv/.onpyrunner-requirements" 2>/dev/null; then
        if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
            say "installing python3-venv"
            apt_install python3 python3-venv
        fi
        say "installing Judge0's client (pip, tests/compat/requirements.txt, into $venv)"
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/compat/requirements.txt
        cp tests/compat/requirements.txt "$venv/.onpyrunner-requirements"
    fi
fi

# 4. Images: built only when missing or out of date (tagged by a hash of their recipe).
if [ -z "${SKIP_IMAGES:-}" ]; then
    target/release/onpyrunner images
fi
