"""Resident memory over many escapes: arrays that leave their scope (or are
allocated at the top of the thread arena) and are kept alive by a consumer
window of 64, then dropped. Prints RSS, mapped chunks and escaped bytes every
100,000 escapes; with the arena's chunks coming back, RSS stays flat.

    python bench/arena_escape_rss.py scope 65536        # escapes from scopes
    python bench/arena_escape_rss.py top 65536          # top-level allocations
    python bench/arena_escape_rss.py scope 65536 200000 # fewer escapes
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

import tlalloc


def rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def main(mode: str, size: int, escapes: int) -> None:
    if mode not in ("scope", "top"):
        raise SystemExit(f"mode must be 'scope' or 'top', got {mode!r}")
    a = tlalloc.thread_arena()
    window: list[np.ndarray] = []
    holder: list[np.ndarray] = []
    t0 = time.thread_time()
    for it in range(escapes):
        if mode == "scope":
            try:
                with a.scope():
                    holder.append(a.empty(size, np.uint8))
                    holder[-1][:1] = 1
            except BufferError:  # the array escaped: expected, its memory comes back later
                pass
            window.append(holder.pop())
        else:
            x = a.empty(size, np.uint8)
            x[:1] = 1
            window.append(x)
            del x
        if len(window) > 64:
            window.pop(0)
        if it % 100_000 == 99_999:
            s = a.stats()
            print(f"escapes={it + 1} rss_kib={rss_kib()} chunks={s.num_chunks} "
                  f"escaped_bytes={s.escaped_bytes}")
    st = a.stats()
    print(f"mode={mode} size={size} capacity={st.capacity_bytes} overflows={st.num_overflows} "
          f"escapes={st.num_escapes} cpu_s={time.thread_time() - t0:.1f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "scope",
         int(sys.argv[2]) if len(sys.argv) > 2 else 65536,
         int(sys.argv[3]) if len(sys.argv) > 3 else 1_000_000)
