"""NumPy arrays of 1 B to 2 MB allocated and dropped by 4 threads: resident
memory and allocation rate with tlalloc's pool allocator against NumPy's
default, each run in its own process, alternating.

    python bench/numpy_churn_ab.py [--seconds 20] [--rounds 2] [--threads 4]

Each thread keeps 16 live arrays and replaces a random one per step with a
new array of a log-uniform size in [1, 2e6] bytes (np.ones: touched). RSS is
sampled from /proc/self/statm every 50 ms; printed: the mean and the maximum
after the first second, and allocations per second. Measurement only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

CHILD = r"""
import json, os, random, sys, threading, time
import numpy as np
from tlalloc import numpy_alloc
pool, seconds, nthreads = sys.argv[1] == "pool", float(sys.argv[2]), int(sys.argv[3])
if pool:
    numpy_alloc.install()
page = os.sysconf("SC_PAGESIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page
stop = False
counts = [0] * nthreads
def work(k):
    if pool:
        numpy_alloc.install()
    rng = random.Random(k)
    live = [None] * 16
    n = 0
    while not stop:
        size = int(2e6 ** rng.random())
        live[rng.randrange(16)] = np.ones(size, dtype=np.uint8)
        n += 1
    counts[k] = n
ts = [threading.Thread(target=work, args=(k,)) for k in range(nthreads)]
t0 = time.monotonic()
for t in ts: t.start()
samples = []
while time.monotonic() - t0 < seconds:
    time.sleep(0.05)
    if time.monotonic() - t0 > 1.0:
        samples.append(rss())
stop = True
for t in ts: t.join()
el = time.monotonic() - t0
print(json.dumps({"mean": sum(samples) / len(samples), "max": max(samples), "rate": sum(counts) / el}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4)
    args = ap.parse_args()
    res: dict[str, list[dict]] = {"pool": [], "default": []}
    for r in range(args.rounds):
        for kind in (("pool", "default") if r % 2 == 0 else ("default", "pool")):
            out = subprocess.run([sys.executable, "-c", CHILD, kind, str(args.seconds),
                                  str(args.threads)], capture_output=True, text=True, check=True)
            res[kind].append(json.loads(out.stdout))
    for r in range(args.rounds):
        p, d = res["pool"][r], res["default"][r]
        print(f"round {r}: RSS mean pool {p['mean'] / 2**20:6.1f} MiB default {d['mean'] / 2**20:6.1f} "
              f"MiB ratio {p['mean'] / d['mean']:.2f} | max {p['max'] / 2**20:6.1f} / "
              f"{d['max'] / 2**20:6.1f} MiB | allocs/s pool {p['rate']:8.0f} default "
              f"{d['rate']:8.0f} ratio {p['rate'] / d['rate']:.2f}")


if __name__ == "__main__":
    _ = (os, threading, time)
    main()
