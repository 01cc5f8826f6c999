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
# /tmp/tlalloc-cachegrind) and runs it once per strategy. Under valgrind the
# CPU reports no AVX-512, so the kernels take their AVX2 path.
set -euo pipefail
ops=${1:-100}
strategies=${2:-"thread malloc shared"}
kernels=${3:-"mix spread decay"}
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-/tmp/tlalloc-cachegrind}
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
make -C "$root" --no-print-directory -s "$build/bench/kernel_mix" BUILD="$build" >/dev/null
printf "%-7s %-8s %14s %14s %10s %11s %12s %12s\n" kernel strategy "D refs" "D1 misses" "D1 miss %" "LLd miss %" "I refs" "checksum"
for k in $kernels; do
for s in $strategies; do
    out=$(valgrind --tool=cachegrind --cache-sim=yes --cachegrind-out-file=/dev/null \
          "$build/bench/kernel_mix" --strategy "$s" --ops "$ops" --kernel "$k" 2>&1)
    num() { echo "$out" | grep -E "$1" | head -1 | sed -E 's/.*: *([0-9,.]+%?).*/\1/' | tr -d ','; }
    drefs=$(num "D +refs:")
    d1m=$(num "D1 +misses:")
    d1r=$(num "D1 +miss rate:")
    lldr=$(num "LLd +miss rate:")
    irefs=$(num "I +refs:")
    sum=$(echo "$out" | grep -oE "checksum [0-9.]+" | awk '{print $2}')
    printf "%-7s %-8s %14s %14s %10s %11s %12s %12s\n" "$k" "$s" "$drefs" "$d1m" "$d1r" "$lldr" "$irefs" "$sum"
done
done
cfg=$(valgrind --tool=cachegrind --cache-sim=yes -v --cachegrind-out-file=/dev/null \
      "$build/bench/kernel_mix" --ops 1 2>&1 | grep -A3 "Cache configuration used" | tail -3 \
      | sed -E 's/^==[0-9]+== +//' | paste -sd ';' -)
echo "valgrind $(valgrind --version | sed 's/valgrind-//'), $ops operations per run, one thread"
echo "simulated caches: $cfg"
