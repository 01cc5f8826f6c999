#!/usr/bin/env bash
# Build the extension into an isolated directory without touching src/ or other
# builders: OUTDIR/tlalloc is a copy of src/tlalloc plus the compiled module.
# Use:  scripts/dev-build.sh /tmp/mybuild && PYTHONPATH=/tmp/mybuild python -m pytest tests
# Toggles: TLALLOC_DEBUG=1, TLALLOC_SANITIZE=1 (as in setup.py).
set -euo pipefail
out=${1:?usage: scripts/dev-build.sh OUTDIR}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$root"
python setup.py -q build_ext -b "$out/lib" -t "$out/tmp" >"$out/build.log" 2>&1 || { cat "$out/build.log"; exit 1; }
grep -E "warning|error" "$out/build.log" || true
rm -rf "$out/tlalloc.new"
cp -r src/tlalloc "$out/tlalloc.new"
find "$out/tlalloc.new" -name '*.so' -delete
cp "$out"/lib/tlalloc/_tlalloc*.so "$out/tlalloc.new/"
rm -rf "$out/tlalloc.old"
[ -d "$out/tlalloc" ] && mv "$out/tlalloc" "$out/tlalloc.old"
mv "$out/tlalloc.new" "$out/tlalloc"
echo "built into $out (PYTHONPATH=$out)"
