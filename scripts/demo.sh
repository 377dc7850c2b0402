#!/usr/bin/env bash
# Set up (daemon, build, images), then run a sample program in every language, each in its own
# fresh sandbox, through the CLI.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
for example in examples/hello.py:python examples/hello.py:pypy examples/hello.js:node examples/Main.java:java; do
    file=${example%%:*} lang=${example##*:}
    printf '\n$ onpyrunner run --lang %s %s <<< "onpyrunner"\n' "$lang" "$file"
    echo onpyrunner | target/release/onpyrunner run --lang "$lang" "$file"
done
