#!/usr/bin/env bash
# Refresh the IDE's vendored front-end libraries in web/assets/vendor/ from the npm registry.
# The versions are pinned here; to update one, change its version below, run this script, look
# at the diff, build, and run the e2e tests (bash scripts/e2e.sh). See web/assets/vendor/README.md.
#
#   bash scripts/vendor.sh
#
# Files are copied byte for byte from the published packages (`npm pack`), LICENSE included,
# and the tarballs' SHA-512 integrity (npm's) is recorded in web/assets/vendor/VERSIONS.
set -euo pipefail
cd "$(dirname "$0")/.."

XTERM=6.0.0
XTERM_FIT=0.11.0
CODEMIRROR=5.65.21

# Only these CodeMirror 5 files are served (no build step: plain scripts in load order).
CM_FILES=(
    lib/codemirror.js lib/codemirror.css
    mode/python/python.js mode/javascript/javascript.js mode/clike/clike.js
    addon/edit/matchbrackets.js addon/edit/closebrackets.js
    theme/material-darker.css
)

dest=web/assets/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# npm pack SPEC -> extracts into $work/NAME, prints nothing; records name, version, integrity.
versions=()
fetch() {
    local spec=$1 name=$2
    local json
    json=$(cd "$work" && npm pack --json --silent "$spec")
    local file integrity
    file=$(node -e 'const j=JSON.parse(process.argv[1]);console.log(j[0].filename)' "$json")
    integrity=$(node -e 'const j=JSON.parse(process.argv[1]);console.log(j[0].integrity)' "$json")
    mkdir -p "$work/$name"
    tar xzf "$work/$file" -C "$work/$name" --strip-components=1
    versions+=("$spec $integrity")
}

fetch "@xterm/xterm@$XTERM" xterm
fetch "@xterm/addon-fit@$XTERM_FIT" xterm-addon-fit
fetch "codemirror@$CODEMIRROR" codemirror

rm -rf "$dest/xterm" "$dest/xterm-addon-fit" "$dest/codemirror"
mkdir -p "$dest/xterm" "$dest/xterm-addon-fit" "$dest/codemirror"

cp "$work/xterm/lib/xterm.js" "$work/xterm/css/xterm.css" "$work/xterm/LICENSE" "$dest/xterm/"
cp "$work/xterm-addon-fit/lib/addon-fit.js" "$work/xterm-addon-fit/LICENSE" "$dest/xterm-addon-fit/"
cp "$work/codemirror/LICENSE" "$dest/codemirror/"
for f in "${CM_FILES[@]}"; do
    mkdir -p "$dest/codemirror/$(dirname "$f")"
    cp "$work/codemirror/$f" "$dest/codemirror/$f"
done

{
    echo "# Written by scripts/vendor.sh: package@version and the npm tarball's integrity."
    printf '%s\n' "${versions[@]}"
} >"$dest/VERSIONS"

echo "vendored into $dest:" >&2
cat "$dest/VERSIONS" >&2
echo "remember: web/src/assets.rs lists every served file (its tests say which are missing)" >&2
