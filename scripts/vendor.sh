#!/usr/bin/env bash
# Refresh the IDE's vendored front-end libraries in web/assets/vendor/ from the npm registry.
# The versions are pinned here; to update one, change its version below, run this script, look
# at the diff, build, and run the e2e tests (bash scripts/e2e.sh). See web/assets/vendor/README.md.
#
#   bash scripts/vendor.sh
#
# Files are copied byte for byte from the published packages (`npm pack`), LICENSE included,
# and the tarballs' SHA-512 integrity (npm's) is recorded in web/assets/vendor/VERSIONS. CodeMirror 6
# is the exception: its pinned packages are bundled once here with esbuild (see below).
set -euo pipefail
cd "$(dirname "$0")/.."

XTERM=6.0.0
XTERM_FIT=0.11.0
# CodeMirror 6 is many small packages: they are pinned in scripts/codemirror/package-lock.json
# (to update: `npm install PACKAGE@VERSION` there) and bundled here, once, with esbuild, into
# codemirror.js (the core) and lang-NAME.js (one language each); see scripts/codemirror/build.mjs.

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
# CodeMirror 6: `npm ci` from the lock (integrity-checked), then the one-time bundle.
cp scripts/codemirror/package.json scripts/codemirror/package-lock.json scripts/codemirror/*.mjs "$work/"
mkdir -p "$work/cm-out"
(cd "$work" && npm ci --silent --no-audit --no-fund && node build.mjs cm-out)

rm -rf "$dest/xterm" "$dest/xterm-addon-fit" "$dest/codemirror"
mkdir -p "$dest/xterm" "$dest/xterm-addon-fit" "$dest/codemirror"

cp "$work/xterm/lib/xterm.js" "$work/xterm/css/xterm.css" "$work/xterm/LICENSE" "$dest/xterm/"
cp "$work/xterm-addon-fit/lib/addon-fit.js" "$work/xterm-addon-fit/LICENSE" "$dest/xterm-addon-fit/"
cp "$work"/cm-out/*.js "$work/node_modules/@codemirror/view/LICENSE" "$dest/codemirror/"
# Every package in the CodeMirror bundles, as the lock pinned it (esbuild only built them).
while read -r line; do versions+=("$line"); done < <(node -e '
const lock = require(process.argv[1]);
for (const [path, p] of Object.entries(lock.packages)) {
  if (!path || p.dev) continue;
  console.log(path.replace(/^.*node_modules\//, "") + "@" + p.version + " " + p.integrity);
}' "$work/package-lock.json")

{
    echo "# Written by scripts/vendor.sh: package@version and the npm tarball's integrity."
    printf '%s\n' "${versions[@]}"
    echo "# The CodeMirror bundles as built (sha256):"
    (cd "$dest/codemirror" && sha256sum -- *.js | sed 's/^/# /')
} >"$dest/VERSIONS"

echo "vendored into $dest:" >&2
cat "$dest/VERSIONS" >&2
echo "remember: web/src/assets.rs lists every served file (its tests say which are missing)" >&2
