#!/usr/bin/env bash
# Set up (daemon, build, images), then serve on http://127.0.0.1:8080 until Ctrl-C or SIGTERM.
# Flags are passed to `onpyrunner serve` (see `onpyrunner serve --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec target/release/onpyrunner serve "$@"
