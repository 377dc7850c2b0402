#!/usr/bin/env bash
# Runs every fuzz target in fuzz/Cargo.toml (`cargo fuzz list`: the protocol's decoders and
# messages, the judge's output comparison, and a posted run through the web crate) for a bounded
# time; exits non-zero if any finds a crash.
# FUZZ_SECONDS sets the time per target (default 20). Crashing inputs land in fuzz/artifacts/.
set -euo pipefail

cd "$(dirname "$0")/.."
FUZZ_SECONDS="${FUZZ_SECONDS:-20}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# cargo fuzz passes nightly-only flags (-Z sanitizer=...); this lets a stable toolchain take them.
export RUSTC_BOOTSTRAP=1

targets=$(cargo fuzz list)
for target in $targets; do
    echo "== fuzzing $target for ${FUZZ_SECONDS}s"
    args=(-max_total_time="$FUZZ_SECONDS")
    # Tokens such as the status marker, which random mutation would take long to find.
    dict="$PWD/fuzz/dicts/$target.dict"
    if [ -f "$dict" ]; then
        args+=(-dict="$dict")
    fi
    cargo fuzz run "$target" -- "${args[@]}"
done
echo "== all fuzz targets ran ${FUZZ_SECONDS}s each without a crash:" $targets
