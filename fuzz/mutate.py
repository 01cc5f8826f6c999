"""The sanitized phase of fuzz/run.py's gcc fallback mode: every input of the
corpus, then random mutations of them (bit flips, interesting bytes,
insertions, deletions, splices; atheris.Mutate needs atheris.Fuzz running),
round-robin over the whole corpus until the time is up. No coverage feedback
(see run.py); a sanitizer report or an unexpected exception ends the run with
the input saved under build/fuzz/crashes/.

    python fuzz/mutate.py TARGET SECONDS CORPUS_DIR...
"""

from __future__ import annotations

import hashlib
import importlib
import os
import random
import sys
import time

INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x20, 0x28, 40, 41, 255, 254]


def mutate(data: bytes, rng: random.Random, other: bytes) -> bytes:
    """One random edit of data (other: a second corpus input, for splices)."""
    b = bytearray(data)
    k = rng.randrange(6)
    if k == 0 and b:
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    elif k == 1 and b:
        b[rng.randrange(len(b))] = rng.choice(INTERESTING)
    elif k == 2:
        i = rng.randrange(len(b) + 1)
        b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
    elif k == 3 and b:
        i = rng.randrange(len(b))
        del b[i:i + rng.randrange(1, 9)]
    elif k == 4 and b and other:
        i, j = rng.randrange(len(b)), rng.randrange(len(other))
        b = b[:i] + other[j:j + rng.randrange(1, 64)] + b[i:]
    elif b:  # a little-endian 32-bit field set to an edge value
        i = rng.randrange(len(b))
        b[i:i + 4] = rng.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, len(b)]).to_bytes(4, "little")
    return bytes(b[:4096])


def main() -> int:
    target, seconds, dirs = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
    mod = importlib.import_module(f"fuzz_{target}")
    inputs = []
    for d in dirs:
        for name in sorted(os.listdir(d)):
            with open(os.path.join(d, name), "rb") as f:
                inputs.append(f.read())
    inputs = inputs or [b""]
    crashes = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "build",
                           "fuzz", "crashes")
    os.makedirs(crashes, exist_ok=True)
    rng = random.Random(0)
    deadline = time.monotonic() + seconds
    runs = 0

    def run(data: bytes) -> None:
        path = os.path.join(crashes, f"{target}-current")
        with open(path, "wb") as f:  # survives a sanitizer's _exit: the input at fault
            f.write(data)
        try:
            mod.TestOneInput(data)
        except BaseException:
            keep = os.path.join(crashes, f"{target}-crash-{hashlib.sha1(data).hexdigest()}")
            os.replace(path, keep)
            print(f"input saved to {keep}", file=sys.stderr)
            raise

    for data in inputs:
        run(data)
        runs += 1
    while time.monotonic() < deadline:
        data = inputs[rng.randrange(len(inputs))]
        for _ in range(16):
            data = mutate(data, rng, inputs[rng.randrange(len(inputs))])
            run(data)
            runs += 1
    os.remove(os.path.join(crashes, f"{target}-current"))
    print(f"{target}: {runs} inputs ({len(inputs)} from the corpus) in {seconds:g} s, no finding")
    return 0


if __name__ == "__main__":
    sys.exit(main())
