#!/usr/bin/env bash
# Larson without Python: build the two larson binaries and run glibc, jemalloc,
# mimalloc (LD_PRELOAD, when installed) and the tlalloc pool with and without its
# per-thread caches, side by side, printing larson's result lines.
# `tlalloc bench larson` does the same with medians, ratios and a table.
#
#   scripts/larson.sh [--install] [SECONDS] [THREADS...]
#   scripts/larson.sh 3 1 2 4 16
#
# --install: apt-get install libjemalloc2 libmimalloc2.0 if missing (needs root).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
install=0
if [ "${1:-}" = "--install" ]; then install=1; shift; fi
seconds=${1:-5}
shift || true
threads=("$@")
[ ${#threads[@]} -eq 0 ] && threads=(1 2 4 16)
build=${LARSON_BUILD:-$root/build/larson}

find_lib() {
    for d in /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu /usr/lib64 /usr/lib /usr/local/lib; do
        [ -e "$d/$1" ] && { echo "$d/$1"; return 0; }
    done
    return 1
}

if [ $install = 1 ] && { ! find_lib libjemalloc.so.2 >/dev/null || ! find_lib libmimalloc.so.2 >/dev/null; }; then
    apt-get update -qq && apt-get install -y -qq libjemalloc2 libmimalloc2.0
fi
make -s -C "$root" BUILD="$build" "$build/bench/larson" "$build/bench/larson-system"

configs=(glibc)
je=$(find_lib libjemalloc.so.2 || true)
mi=$(find_lib libmimalloc.so.2 || true)
if [ -n "$je" ]; then configs+=(jemalloc); echo "jemalloc: $je"; else echo "jemalloc: not found, skipped (--install)"; fi
if [ -n "$mi" ]; then configs+=(mimalloc); echo "mimalloc: $mi"; else echo "mimalloc: not found, skipped (--install)"; fi
configs+=(tlalloc tlalloc-nocache)

args=(8 1000 5000 100 4141)
for t in "${threads[@]}"; do
    for c in "${configs[@]}"; do
        case $c in
        glibc) line=$("$build/bench/larson-system" "$seconds" "${args[@]}" "$t") ;;
        jemalloc) line=$(LD_PRELOAD=$je "$build/bench/larson-system" "$seconds" "${args[@]}" "$t") ;;
        mimalloc) line=$(LD_PRELOAD=$mi "$build/bench/larson-system" "$seconds" "${args[@]}" "$t") ;;
        tlalloc) line=$(TLALLOC_POOL_CACHE=1 "$build/bench/larson" "$seconds" "${args[@]}" "$t") ;;
        tlalloc-nocache) line=$(TLALLOC_POOL_CACHE=0 "$build/bench/larson" "$seconds" "${args[@]}" "$t") ;;
        esac
        echo "$c: $line"
    done
done
