#!/usr/bin/env bash
# D1 (L1 data cache) miss rates of the kernel mix under valgrind's cachegrind,
# for scratch from the thread arena against malloc/free per buffer (and the
# shared arena). Deterministic: cachegrind simulates the caches, so the numbers
# do not depend on machine load (hardware counters are not needed).
#
#   scripts/cachegrind.sh [OPS] [STRATEGIES] [KERNELS]
#       defaults: 100 "thread malloc shared" "mix spread decay"
#
# Builds bench/c/kernel_mix.c (the mix in C, no Python: the simulation sees the
# kernels and their scratch, not the interpreter) into $BUILD (default
# /tmp/tlalloc-cachegrind) and runs it once per kernel and strategy, plus once
# with --ops 0 (setup only), which is subtracted for the "kernel" columns. Under valgrind the
# CPU reports no AVX-512, so the kernels take their AVX2 path.
set -euo pipefail
ops=${1:-100}
strategies=${2:-"thread malloc shared"}
kernels=${3:-"mix spread decay"}
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-/tmp/tlalloc-cachegrind}
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
make -C "$root" --no-print-directory -s "$build/bench/kernel_mix" BUILD="$build" >/dev/null
# One run that only sets up the workload (--ops 0): subtracted from every run,
# so that the "kernels only" columns count the kernel calls and nothing else.
run() {
    valgrind --tool=cachegrind --cache-sim=yes --cachegrind-out-file=/dev/null \
        "$build/bench/kernel_mix" "$@" 2>&1
}
field() { echo "$1" | grep -E "$2" | head -1 | sed -E 's/.*: *([0-9,.]+%?).*/\1/' | tr -d ','; }
base=$(run --ops 0)
base_refs=$(field "$base" "D +refs:")
base_miss=$(field "$base" "D1 +misses:")
printf "%-7s %-8s %10s %14s %12s %16s %14s %12s\n" kernel strategy "D1 miss %" "kernel D refs" \
    "kernel D1 misses" "kernel D1 miss %" "kernel D1 hit %" checksum
for k in $kernels; do
    for s in $strategies; do
        out=$(run --strategy "$s" --ops "$ops" --kernel "$k")
        refs=$(field "$out" "D +refs:")
        miss=$(field "$out" "D1 +misses:")
        rate=$(field "$out" "D1 +miss rate:")
        sum=$(echo "$out" | grep -oE "checksum [0-9.]+" | awk '{print $2}')
        kr=$((refs - base_refs))
        km=$((miss - base_miss))
        krate=$(awk -v m="$km" -v r="$kr" 'BEGIN { printf "%.2f%%", 100 * m / r }')
        khit=$(awk -v m="$km" -v r="$kr" 'BEGIN { printf "%.2f%%", 100 - 100 * m / r }')
        printf "%-7s %-8s %10s %14s %12s %16s %14s %12s\n" "$k" "$s" "$rate" "$kr" "$km" "$krate" "$khit" "$sum"
    done
done
cfg=$(valgrind --tool=cachegrind --cache-sim=yes -v --cachegrind-out-file=/dev/null \
      "$build/bench/kernel_mix" --ops 1 2>&1 | grep -A3 "Cache configuration used" | tail -3 \
      | sed -E 's/^==[0-9]+== +//' | paste -sd ';' -)
echo "valgrind $(valgrind --version | sed 's/valgrind-//'), $ops operations per run, one thread"
echo "simulated caches: $cfg"
